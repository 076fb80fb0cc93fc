"""Discriminative learning rates, optimizers over trainable groups only, and schedules."""

from __future__ import annotations

import torch

from geotune.errors import ConfigError
from geotune.transfer.groups import LayerGroup
from geotune.transfer.options import TransferOptions
from geotune.transfer.strategies import Phase


def lr_multipliers(config: TransferOptions, groups: list[LayerGroup]) -> list[float]:
    """Per-group LR factors relative to the head: discriminative learning rates.

    Backbone groups get ``backbone_lr_scale``, times ``layer_decay ** depth`` (depth 0 for the
    top backbone group) when layer-wise decay is on, times any ``group_lr`` override by name.
    """
    names = [g.name for g in groups]
    unknown = sorted(set(config.group_lr) - set(names))
    if unknown:
        raise ConfigError(
            f"group_lr names unknown layer group(s) {', '.join(unknown)}; groups are: {', '.join(names)}"
        )
    n_backbone = len(groups) - 1
    factors = []
    for i, g in enumerate(groups):
        if i == n_backbone:
            f = 1.0
        else:
            f = config.backbone_lr_scale
            if config.layer_decay is not None:
                f *= config.layer_decay ** (n_backbone - 1 - i)
        factors.append(f * config.group_lr.get(g.name, 1.0))
    return factors


def param_groups(
    groups: list[LayerGroup],
    flags: tuple[bool, ...] | list[bool],
    base_lr: float,
    multipliers: list[float],
    weight_decay: float,
) -> list[dict]:
    """Optimizer groups over trainable layer groups only, each at base_lr x its multiplier.

    No weight decay on biases and norm weights (1-D tensors), as in timm.
    """
    out = []
    for g, trainable, mult in zip(groups, flags, multipliers, strict=True):
        if not trainable:
            continue
        decay = [p for p in g.params if p.ndim > 1]
        no_decay = [p for p in g.params if p.ndim <= 1]
        for params, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if params:
                out.append(
                    {"params": params, "lr": base_lr * mult, "weight_decay": wd, "group": g.name}
                )
    return out


def build_optimizer(
    config: TransferOptions, groups: list[LayerGroup], phase: Phase
) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    lr = config.resolved_lr(phase.head_only)
    pg = param_groups(
        groups, phase.trainable, lr, lr_multipliers(config, groups), config.weight_decay
    )
    return create_optimizer_v2(pg, opt=config.optimizer, lr=lr, weight_decay=config.weight_decay)


def build_scheduler(optimizer, config: TransferOptions, steps_per_epoch: int, epochs: int):
    """Linear warmup then cosine / step / constant, per optimizer step.

    torch's schedulers scale each group's own base LR, so per-group LR ratios hold throughout.
    """
    from torch.optim.lr_scheduler import (
        ConstantLR,
        CosineAnnealingLR,
        LinearLR,
        SequentialLR,
        StepLR,
    )

    total = steps_per_epoch * epochs
    warmup = (
        config.warmup_steps
        if config.warmup_steps is not None
        else round(config.warmup_epochs * steps_per_epoch)
    )
    warmup = min(warmup, max(total - 1, 0))
    if config.schedule == "cosine":
        decay = CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
    elif config.schedule == "step":
        decay = StepLR(
            optimizer, step_size=config.step_epochs * steps_per_epoch, gamma=config.step_gamma
        )
    else:
        decay = ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup == 0:
        return decay
    warm = LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    return SequentialLR(optimizer, [warm, decay], milestones=[warmup])


def resize_schedule(scheduler, config: TransferOptions, steps_per_epoch: int, epochs: int) -> None:
    """Give a running ``build_scheduler`` schedule a new length of ``epochs`` (--epochs-by-time).

    torch's cosine annealing steps by a recursive rule from the current rate, so a new
    ``T_max`` continues smoothly from where the schedule is and still reaches its minimum at
    the new end; step and constant schedules do not depend on the length.
    """
    from torch.optim.lr_scheduler import CosineAnnealingLR

    if config.schedule != "cosine":
        return
    parts = getattr(scheduler, "_schedulers", [scheduler])
    cosine = next(s for s in parts if isinstance(s, CosineAnnealingLR))
    warmup = getattr(scheduler, "_milestones", [0])[0]  # SequentialLR: warmup, then cosine
    cosine.T_max = max(1, steps_per_epoch * epochs - warmup, cosine.last_epoch + 1)
