"""Layer groups, freezing, and the BatchNorm policy.

Groups come from the backbone itself (timm's ``group_matcher``, coarse: stem, then one group
per stage), so "freeze up to ``layer3``" or "unfreeze the last 2 groups" works for any timm
backbone. The classification head is always its own, trainable group.

BatchNorm: ``requires_grad=False`` freezes a BN layer's affine weights but *not* its running
statistics, which keep updating in train mode. Only eval mode keeps the pretrained statistics.
``BatchNormPolicy.train_mode`` is therefore used instead of ``model.train()``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from timm.models import group_modules
from torch import nn

from geotune.errors import ConfigError


@dataclass
class LayerGroup:
    name: str
    modules: list[str]  # qualified module names inside the SceneClassifier
    params: list[nn.Parameter]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.params)


def _group_name(index: int, first_module: str) -> str:
    if index == 0:
        return "stem"
    parts = first_module.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])  # blocks.3
        if re.search(r"\d+$", part):
            return ".".join(parts[: i + 1])  # layer3, stages.2 handled above
    return parts[0]


def layer_groups(model: nn.Module) -> list[LayerGroup]:
    """Backbone groups in forward order (stem first), then the head.

    ``model`` is a SceneClassifier: ``model.backbone`` is a timm model, ``model.head`` the head.
    """
    backbone = model.backbone
    matcher = backbone.group_matcher(coarse=True)
    grouped = group_modules(backbone, matcher)
    groups: list[LayerGroup] = []
    seen: set[int] = set()
    named = dict(backbone.named_modules())
    for index, (_, names) in enumerate(sorted(grouped.items())):
        params = []
        for n in names:
            for p in named[n].parameters(recurse=False) if n in named else []:
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
            # Parameters registered directly on the backbone (ViT cls_token, pos_embed) come as names.
            if n not in named:
                p = backbone.get_parameter(n)
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        groups.append(
            LayerGroup(_group_name(index, names[0]), [f"backbone.{n}" for n in names], params)
        )
    leftover = [p for p in backbone.parameters() if id(p) not in seen]
    if leftover:  # anything the matcher missed (e.g. a final norm) joins the last group
        groups[-1].params.extend(leftover)
    # Unique names: a model may reuse a prefix across groups (e.g. conv_head joins blocks.6).
    counts: dict[str, int] = {}
    for g in groups:
        counts[g.name] = counts.get(g.name, 0) + 1
        if counts[g.name] > 1:
            g.name = f"{g.name}#{counts[g.name]}"
    groups.append(LayerGroup("head", ["head"], list(model.head.parameters())))
    return groups


def trainable_groups(
    groups: list[LayerGroup],
    strategy: str,
    freeze_until: str | None = None,
    unfreeze_last: int | None = None,
) -> list[bool]:
    """Which groups train under a strategy (the head always does)."""
    n_backbone = len(groups) - 1
    names = [g.name for g in groups[:-1]]
    if strategy == "full":
        flags = [True] * n_backbone
    elif strategy == "feature-extraction":
        flags = [False] * n_backbone
    elif strategy == "partial":
        if freeze_until is not None:
            if freeze_until not in names:
                raise ConfigError(
                    f"freeze_until '{freeze_until}' is not a layer group of this backbone; "
                    f"groups are: {', '.join(names)}"
                )
            cut = names.index(freeze_until) + 1
        else:
            if unfreeze_last is None or unfreeze_last > n_backbone:
                raise ConfigError(
                    f"unfreeze_last={unfreeze_last} but the backbone has {n_backbone} layer groups "
                    f"({', '.join(names)})"
                )
            cut = n_backbone - unfreeze_last
        flags = [i >= cut for i in range(n_backbone)]
    else:
        raise ConfigError(f"unknown strategy '{strategy}'")
    return [*flags, True]


def apply_trainable(groups: list[LayerGroup], flags: list[bool]) -> None:
    for group, flag in zip(groups, flags, strict=True):
        for p in group.params:
            p.requires_grad_(flag)


def _is_bn(m: nn.Module) -> bool:
    # timm's BatchNormAct2d subclasses BatchNorm2d, so this covers fused BN+activation too.
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


class BatchNormPolicy:
    """Which BatchNorm layers stay in eval mode (pretrained statistics) during training.

    - ``frozen-in-frozen-groups``: BN layers of frozen groups stay in eval mode (default);
    - ``frozen``: every BN layer stays in eval mode (its affine parameters may still train);
    - ``train``: plain train mode everywhere (statistics follow the new data).
    """

    def __init__(self, model: nn.Module, groups: list[LayerGroup], flags: list[bool], policy: str):
        self.policy = policy
        frozen_params = {
            id(p) for g, f in zip(groups, flags, strict=True) if not f for p in g.params
        }
        self.eval_modules: list[nn.Module] = []
        for _, m in model.named_modules():
            if not _is_bn(m):
                continue
            if policy == "frozen":
                self.eval_modules.append(m)
            elif policy == "frozen-in-frozen-groups":
                own = list(m.parameters(recurse=False))
                if own and all(id(p) in frozen_params for p in own):
                    self.eval_modules.append(m)
            elif policy != "train":
                raise ConfigError(f"unknown bn_policy '{policy}'")

    def train_mode(self, model: nn.Module) -> None:
        """model.train(), then put the protected BN layers back in eval mode."""
        model.train()
        for m in self.eval_modules:
            m.eval()

    def describe(self) -> dict:
        return {"policy": self.policy, "bn_layers_in_eval": len(self.eval_modules)}


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches) -> int:
    """AdaBN (Li et al., 2016): replace every BN layer's running statistics by the statistics of
    ``batches`` (unlabelled, preprocessed images), as a cumulative average over all of them.

    Only BN buffers change; weights do not. Returns the number of images used. Afterwards keep
    the BN layers in eval mode (policy ``frozen``) so the new statistics stay as estimated.
    """
    bns = [m for m in model.modules() if _is_bn(m)]
    momenta = [m.momentum for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    model.eval()
    for m in bns:
        m.train()
    n = 0
    for x in batches:
        model(x)
        n += len(x)
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return n
