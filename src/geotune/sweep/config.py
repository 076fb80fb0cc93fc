"""Options of `geotune compare`, validated once at the edge with every run's train options."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from geotune.config import build_config, flatten_sections, make_config, register_config_model
from geotune.errors import ConfigError
from geotune.sweep.pretrainings import Pretraining, parse_pretrainings
from geotune.sweep.statistics import ALL
from geotune.validation import StrictConfig, optional_duration, path_field


@register_config_model
class CompareConfig(StrictConfig):
    """A strategy x label-budget x seed grid; ``train`` holds options for every run."""

    data: Path = path_field("input-dir")
    labels: Path | None = path_field(
        "input-file",
        None,
        description="multi-label chips: their label table (as for geotune train --labels); the "
        "sweep then ranks strategies by macro mAP",
    )
    strategies: list[str] = Field(["linear-probe", "feature-extraction", "lp-ft"], min_length=1)
    backbones: list[str] = Field(
        [],
        description="pretrainings to compare, backbone[:weights] entries (e.g. "
        "tf_efficientnet_lite0,geoembed_resnet18,resnet50:ckpt.pth); each runs the same grid, "
        "and the report ranks them with paired statistics (default: the train options' backbone)",
    )
    labels_per_class: list[int | str] = Field([5, 20, ALL], min_length=1)
    seeds: int = Field(3, ge=1, description="number of seeds (0, 1, ...); each gets its own split")
    pool_fraction: float = Field(
        0.2, gt=0, lt=1, description="labelled pool per class; the rest is test"
    )
    val_fraction: float = Field(0.2, ge=0, lt=1)
    test_per_class: int | None = Field(
        None,
        ge=1,
        description="cap the shared test set at this many chips per class (faster; wider CIs)",
    )
    min_steps: int = Field(
        0,
        ge=0,
        description="train every trained cell for at least this many optimizer steps: small "
        "budgets get more epochs, so they are not compared under-trained",
    )
    time_budget: str | None = Field(
        None,
        description="also run `geotune train --time-budget T` in every cell, as one more row "
        "(time-budget-T), so the budget's choice is compared with the strategies on the same "
        "splits and seeds",
    )
    output: Path = path_field("output-dir", Path("sweeps"))
    name: str | None = None
    train: dict[str, Any] = Field({}, description="geotune train options applied to every run")

    _budget_is_a_duration = field_validator("time_budget")(optional_duration)

    @field_validator("train", mode="before")
    @classmethod
    def _flat_train(cls, v: Any) -> Any:
        # A train config file may group its keys by section, as a run's config.yaml does.
        return flatten_sections(v) if isinstance(v, dict) else v

    def units(self) -> list[str]:
        """What the sweep compares: the strategies, then the time budget's row."""
        return [*self.strategies, *([budget_unit(self.time_budget)] if self.time_budget else [])]

    @field_validator("strategies", "labels_per_class", "backbones", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v

    @field_validator("labels_per_class")
    @classmethod
    def _budgets(cls, v: list) -> list:
        out = []
        for b in v:
            if isinstance(b, str) and b != ALL:
                if not b.isdigit():
                    raise ValueError(f"label budgets are positive integers or 'all', got {b!r}")
                b = int(b)
            if isinstance(b, int) and b < 1:
                raise ValueError(f"label budgets must be >= 1, got {b}")
            out.append(b)
        return sorted(set(out), key=lambda b: math.inf if b == ALL else b)


BUDGET_PREFIX = "time-budget-"


def budget_unit(budget: str) -> str:
    return f"{BUDGET_PREFIX}{budget.strip()}"


def make_compare_config(**values: Any) -> CompareConfig:
    """Build and validate `geotune compare` options, and every run's train options with them.

    Args:
        **values: CompareConfig fields (``data``, ``strategies``, ``labels_per_class``, ...).

    Returns:
        The validated CompareConfig.
    """
    config = build_config(CompareConfig, what="compare option", **values)
    _check_train_options(config)
    if config.labels is not None:  # one home for every run's options: the train options
        if "labels" in config.train:
            raise ConfigError("labels given twice (--labels and the train options); give one")
        train = {**config.train, "labels": str(Path(config.labels).resolve())}
        config = config.model_copy(update={"train": train})
    if "auto" in config.strategies:
        raise ConfigError(
            "compare measures strategies side by side and auto picks one of them; compare "
            "the ones auto chooses among (linear-probe, lp-ft, full) instead"
        )
    if config.time_budget is not None and config.backbones:
        raise ConfigError(
            "--time-budget chooses the backbone itself, so it cannot run per pretraining; leave "
            "out --backbones or --time-budget"
        )
    # Validate the per-run options once, up front, with the same messages as `geotune train`.
    for p in pretrainings(config):
        extra = {} if p is None else p.train_options()
        for s in config.strategies:
            make_config(data=config.data, strategy=s, **{**config.train, **extra})
    if config.time_budget is not None:
        from geotune.engine.budget import check_budget_config

        check_budget_config(
            make_config(data=config.data, time_budget=config.time_budget, **config.train)
        )
    return config


# Options compare sets for every run itself: in the `train` options they would collide.
_SET_BY_COMPARE = {
    "data": "--data",
    "strategy": "--strategies",
    "time_budget": "--time-budget (one more row per cell)",
    "seed": "--seeds (seeds 0..N-1)",
    "split": "its own split per seed and budget",
    "labels_per_class": "--labels-per-class",
    "train_fraction": "--pool-fraction",
    "val_fraction": "--val-fraction",
    "output": "--output",
    "name": "--name",
}


def _check_train_options(config: CompareConfig) -> None:
    """Refuse train options that compare sets per run, naming the compare option to use."""
    for key, instead in _SET_BY_COMPARE.items():
        if key in config.train:
            raise ConfigError(
                f"'{key}' in the train options: compare sets it for every run from {instead}; "
                "remove it from the config file"
            )
    if config.backbones:
        for key in ("backbone", "weights"):
            if key in config.train:
                raise ConfigError(
                    f"'{key}' in the train options conflicts with --backbones, which sets it "
                    "for each pretraining; give one or the other"
                )


def pretrainings(config: CompareConfig) -> list[Pretraining | None]:
    """The sweep's pretrainings (``[None]``: one, from the train options)."""
    return parse_pretrainings(config.backbones) if config.backbones else [None]
