"""Transfer strategies as phases: which layer groups train, for how long, at which learning rates.

A strategy is a short list of phases. Each phase has its own set of trainable groups, its own
optimizer over exactly those parameters, and its own warmup + decay schedule:

- ``feature-extraction``: one phase, head only, backbone frozen;
- ``partial``: one phase, the head and the last groups (``freeze_until`` / ``unfreeze_last``);
- ``full``: one phase, everything;
- ``lp-ft``: a head-only phase (linear probing) then fine-tuning, the head carried over
  (Kumar et al., 2022: a random head distorts pretrained features when both train at once);
- ``gradual``: head only, then one more group from the top every ``unfreeze_every`` epochs
  (ULMFiT / fastai style).

``linear-probe`` and ``knn`` train no network: see geotune.probe.
"""

from __future__ import annotations

from dataclasses import dataclass

from geotune.config import TrainConfig
from geotune.errors import ConfigError
from geotune.freezing import LayerGroup, trainable_groups


@dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    trainable: tuple[bool, ...]  # one flag per layer group, head last

    @property
    def head_only(self) -> bool:
        return not any(self.trainable[:-1])


def plan_phases(config: TrainConfig, groups: list[LayerGroup]) -> list[Phase]:
    s, epochs = config.strategy, config.epochs
    head = tuple(trainable_groups(groups, "feature-extraction"))
    if s in ("feature-extraction", "full", "partial"):
        flags = trainable_groups(groups, s, config.freeze_until, config.unfreeze_last)
        return [Phase(s, epochs, tuple(flags))]
    if s == "lp-ft":
        if config.freeze_until or config.unfreeze_last:
            ft = trainable_groups(groups, "partial", config.freeze_until, config.unfreeze_last)
        else:
            ft = trainable_groups(groups, "full")
        return [
            Phase("head", config.head_epochs, head),
            Phase("fine-tune", epochs - config.head_epochs, tuple(ft)),
        ]
    if s == "gradual":
        n_backbone = len(groups) - 1
        phases, used, k = [], 0, 0
        while used < epochs:
            flags = tuple([i >= n_backbone - k for i in range(n_backbone)] + [True])
            length = config.unfreeze_every if k < n_backbone else epochs - used
            length = min(length, epochs - used)
            phases.append(
                Phase(
                    "head" if k == 0 else f"unfreeze-{groups[n_backbone - k].name}", length, flags
                )
            )
            used += length
            k += 1
        return phases
    raise ConfigError(f"strategy '{s}' trains no network; it is handled by geotune.probe")


def lr_multipliers(config: TrainConfig, groups: list[LayerGroup]) -> list[float]:
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
