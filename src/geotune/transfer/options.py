"""The options a transfer strategy and its optimizer read: a view of the train config.

A Protocol rather than an import of ``geotune.config.TrainConfig``: the config validates against
the strategy registry (it imports this package), so this package must not import it back.
"""

from __future__ import annotations

from typing import Literal, Protocol


class TransferOptions(Protocol):
    """What strategies (phases, option checks) and optimizers read; TrainConfig provides it."""

    strategy: str
    epochs: int
    head_epochs: int
    freeze_until: str | None
    unfreeze_last: int | None
    unfreeze_every: int
    probe_stages: list[int] | None
    optimizer: Literal["adamw", "sgd", "adam"]
    weight_decay: float
    backbone_lr_scale: float
    layer_decay: float | None
    group_lr: dict[str, float]
    schedule: Literal["cosine", "step", "constant"]
    step_epochs: int
    step_gamma: float
    warmup_epochs: float
    warmup_steps: int | None

    def resolved_lr(self, head_only: bool) -> float: ...
