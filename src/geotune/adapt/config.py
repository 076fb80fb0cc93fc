"""Options of one adaptation (`geotune adapt`), validated once at the edge."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from geotune.adapt.registry import ADAPT_METHODS
from geotune.config import build_config, register_config_model
from geotune.validation import StrictConfig, path_field


@register_config_model
class AdaptConfig(StrictConfig):
    """Options of one adaptation; ``geotune adapt``'s flags are generated from these fields."""

    target: Path = path_field(
        "input-dir", description="unlabelled target chips (class folders allowed, ignored)"
    )
    method: str = Field(
        "adabn",
        description="adaptation method, or several applied in order joined by '+' (e.g. "
        "label-set+shot); on the command line several, comma-separated",
    )
    eval_data: Path | None = path_field(
        "input-dir",
        None,
        description="labelled target data for before/after (default: target, if labelled)",
    )
    class_map: Path | None = path_field(
        "input-file", None, description="YAML 'their_class: model_class' pairs"
    )
    max_target: int | None = Field(None, ge=1, description="use at most this many target chips")
    epochs: int = Field(1, ge=1, description="tent / dann: passes over the target chips")
    lr: float | None = Field(None, gt=0, description="tent: 1e-3; dann: 1e-4 (head x10)")
    batch_size: int = Field(32, ge=2)
    trainable_groups: int = Field(2, ge=1, description="dann: last backbone groups trained")
    source_gsd: float | None = Field(
        None, gt=0, description="rescale: metres per pixel of the source run's chips"
    )
    target_gsd: float | None = Field(
        None, gt=0, description="rescale: metres per pixel of the target chips"
    )
    zooms: list[float] = Field(
        [0.5, 0.71, 1.0, 1.41, 2.0], min_length=1, description="rescale: zooms searched"
    )
    unknown_quantile: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="open set: target chips less confident than this quantile of the source "
        "run's test confidences count as unknown classes and are left out of adaptation "
        "(0: keep all)",
    )
    target_labels_per_class: list[int] = Field(
        [],
        description="few-shot: also fine-tune with k labelled target chips per class (e.g. "
        "1,5,10), against a probe on the pretrained backbone; needs labelled target data",
    )
    few_shot_seeds: int = Field(3, ge=1, description="few-shot: draws of the k chips")
    seed: int = Field(0, ge=0)
    device: str = Field("auto", description="auto | cpu | cuda | mps")
    output: Path | None = path_field(
        "output-dir", None, description="folder for the new run (default: beside RUN)"
    )
    name: str | None = Field(None, description="name of the new run (default: RUN-METHOD)")

    @field_validator("zooms", "target_labels_per_class", mode="before")
    @classmethod
    def _split(cls, v):
        return [x for x in v.split(",") if x.strip()] if isinstance(v, str) else v

    @field_validator("zooms", "target_labels_per_class")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(z <= 0 for z in v):
            raise ValueError("values must be > 0")
        return v

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        steps = v.split("+")
        for step in steps:
            if step not in ADAPT_METHODS:
                raise ValueError(f"{ADAPT_METHODS.unknown(step)}, or several joined by '+'")
        if len(set(steps)) < len(steps):
            raise ValueError(f"'{v}' names a method twice; name each step once")
        return v

    @property
    def steps(self) -> list[str]:
        """The methods applied in order (one, or several joined by '+')."""
        return self.method.split("+")

    def resolved_lr(self) -> float | None:
        """``--lr``, or the default of the (single) method this config is a step of."""
        return self.lr if self.lr is not None else ADAPT_METHODS[self.steps[-1]].default_lr


def make_adapt_config(**values) -> AdaptConfig:
    """Build and validate adaptation options; raises ConfigError with a one-line message."""
    import geotune.adapt.methods  # noqa: F401 - registers the built-in methods
    import geotune.adapt.real_shift  # noqa: F401

    return build_config(AdaptConfig, what="adapt option", **values)
