"""Typed run configuration, validated once at the edge (CLI flags or a YAML file).

``TrainConfig`` is made of sections (dataset, model, transfer, augmentation, optimisation, probe,
runtime), each a model of its own that code needing one concern can take. Every key is a
``geotune train`` option of the same name: the CLI's flags are flat, a YAML file may group keys by
section (as a run's saved ``config.yaml`` does) or list them flat (as files before sections did).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from geotune.fileio import atomic_write_text
from geotune.models.names import DEFAULT_BACKBONE, backbone_members
from geotune.transfer.batchnorm import BN_POLICIES
from geotune.transfer.stem import BAND_INITS
from geotune.transfer.strategies import STRATEGIES
from geotune.validation import (
    MAX_IMAGE_SIZE,
    MAX_WORKERS,
    StrictConfig,
    build_config,
    format_validation_error,
    load_yaml_mapping,
    optional_duration,
    path_field,
    register_config_model,
)

__all__ = [
    "SECTIONS",
    "AugmentationSection",
    "DatasetSection",
    "ModelSection",
    "OptimisationSection",
    "ProbeSection",
    "RuntimeSection",
    "TrainConfig",
    "TransferSection",
    "flatten_sections",
    "build_config",
    "format_validation_error",
    "load_config",
    "load_yaml_mapping",
    "make_config",
    "register_config_model",
    "save_config",
]


# Strategies that handle multi-label data (--labels): the one-vs-rest probe, kNN voting per
# label, every strategy of the training loop (BCE with logits), and auto choosing among them.
MULTILABEL_STRATEGIES = (
    "auto",
    "linear-probe",
    "knn",
    "full",
    "partial",
    "lp-ft",
    "feature-extraction",
    "gradual",
)


class DatasetSection(StrictConfig):
    """Section ``dataset``: which chips, their labels and bands, and the split."""

    section: ClassVar[str] = "dataset"

    data: Path = path_field(
        "input-dir",
        description="ImageFolder root: DATA/<class>/<image> (with --labels: chips at any depth), "
        "or an index file DATA.csv of chip paths and labels",
    )
    split: Path | None = path_field(
        "input",
        None,
        description="reuse a split file (split.csv of a run), a folder of train.csv / "
        "val.csv / test.csv chip lists (e.g. BigEarthNet's official split files), or "
        "BigEarthNet v2.0's metadata.parquet",
    )
    labels: Path | None = path_field(
        "input-file",
        None,
        description="multi-label chips: a CSV with one row per chip (column path, relative to "
        "data) and a labels column of ';'-separated names or one 0/1 column per label",
    )
    train_fraction: float | None = Field(
        0.2, gt=0, lt=1, description="labelled share of each class (the rest is test)"
    )
    labels_per_class: int | None = Field(
        None, ge=1, description="labelled images per class (few-shot); overrides train_fraction"
    )
    val_fraction: float = Field(
        0.2, ge=0, lt=1, description="share of the labelled part held out for validation"
    )
    seed: int = Field(0, ge=0, description="seed for the split, initialisation and batches")
    skip_bad_images: bool = Field(
        False, description="skip unreadable images (listed in the run folder) instead of failing"
    )
    # Multispectral GeoTIFF chips.
    band_names: str | None = Field(
        None,
        description="names of the chips' bands when the files carry none: a preset "
        "(sentinel2-13 = EuroSAT MS file order, rgb, rgbn = NAIP) or a comma-separated list",
    )
    bands: list[str] | None = Field(
        None,
        min_length=1,
        description="bands to use, by name and in this order, e.g. B04,B03,B02,B08 (default: all)",
    )

    @field_validator("split")
    @classmethod
    def _split_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).exists():  # a split.csv, or a folder of chip lists
            raise ValueError(f"{v} not found; give a split.csv or a folder of split lists")
        return v


class ModelSection(StrictConfig):
    """Section ``model``: the backbone, its weights and input size, the head, the stem's bands."""

    section: ClassVar[str] = "model"

    backbone: str = Field(
        DEFAULT_BACKBONE,
        description="any timm model name; a+b+c: an ensemble of frozen backbones (features "
        "concatenated; linear-probe and knn)",
    )
    weights: str = Field(
        "auto", description="auto | offline | hub | random | PATH to .pth/.pt/.safetensors"
    )
    image_size: int | None = Field(
        None,
        ge=16,
        le=MAX_IMAGE_SIZE,
        description="override the weights' input size (pixels, square)",
    )
    head: Literal["linear", "mlp"] = Field("linear", description="classification head")
    head_dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the head")
    band_init: str | None = Field(
        None,
        description="how RGB-pretrained stems initialise bands other than red, green, blue "
        "(default when a stem is adapted: mean where the stem trains; for frozen stems zero, or "
        "composites for knn, which keep what the RGB kernels see)",
    )

    band_statistics: bool | None = Field(
        None,
        description="multispectral chips with RGB weights: each band's mean and std of "
        "log(1 + DN) beside the pooled features, so the head sees the bands the RGB stem does "
        "not (default: on for linear-probe and feature-extraction when there are such bands)",
    )

    @field_validator("band_init")
    @classmethod
    def _known_band_init(cls, v: str | None) -> str | None:
        if v is not None:
            BAND_INITS.get(v)  # ConfigError (a ValueError) when unknown
        return v


class TransferSection(StrictConfig):
    """Section ``transfer``: the strategy, which layer groups train, and BatchNorm statistics."""

    section: ClassVar[str] = "transfer"

    strategy: str = Field(
        "full", description="transfer strategy, or auto: chosen from the data (README)"
    )
    freeze_until: str | None = Field(
        None, description="freeze layer groups up to and including this one"
    )
    unfreeze_last: int | None = Field(
        None,
        ge=1,
        description="train only the last N layer groups of the backbone",
    )
    head_epochs: int = Field(2, ge=1, description="epochs of the head-only phase before unfreezing")
    unfreeze_every: int = Field(
        1, ge=1, description="epochs between unfreezing one more group (from the top)"
    )
    bn_policy: str = Field(
        "frozen-in-frozen-groups",
        description="BatchNorm statistics during training",
    )

    @field_validator("bn_policy")
    @classmethod
    def _known_bn_policy(cls, v: str) -> str:
        BN_POLICIES.get(v)
        return v


class AugmentationSection(StrictConfig):
    """Section ``augmentation``: training views (overhead imagery has no canonical 'up') and
    test-time views."""

    section: ClassVar[str] = "augmentation"

    flips: bool = Field(True, description="random horizontal and vertical flips")
    rot90: bool = Field(True, description="random rotations by multiples of 90 degrees")
    # No crop by default: a scene label belongs to the whole chip at its ground resolution, and
    # the test sees whole chips. Random resized crops at 0.5-1 of the area lost to none on RSSCN7
    # (3 seeds, -4.3), AID (-4.5) and 13-band EuroSAT (-3.7):
    # benchmarks/results/2026-11-29-recipes.md.
    crop_scale: tuple[float, float] = Field(
        (1.0, 1.0),
        description="random resized crop area range (min max), e.g. 0.5 1; 1 1 = no crop",
    )
    tta: Literal["none", "flip", "rot2", "rot4", "d4"] = Field(
        "none", description="test-time augmentation: average over flips / 90-degree rotations"
    )

    @model_validator(mode="after")
    def _check_crop(self) -> AugmentationSection:
        lo, hi = self.crop_scale
        if not (0 < lo <= hi <= 1):
            raise ValueError(
                f"crop_scale must satisfy 0 < min <= max <= 1, got {list(self.crop_scale)}"
            )
        return self


class OptimisationSection(StrictConfig):
    """Section ``optimisation``: epochs, learning rates and schedule, loss weighting, time limits."""

    section: ClassVar[str] = "optimisation"

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    optimizer: Literal["adamw", "sgd", "adam"] = "adamw"
    lr: float | None = Field(
        None, gt=0, description="head learning rate; default depends on the strategy"
    )
    # 0.5, not 0.1: full fine-tuning gained 4.6 points on AID and 6.5 on RSSCN7 (BENCHMARKS.md);
    # at 0.1 the backbone barely moves in a 10-epoch budget.
    backbone_lr_scale: float = Field(
        0.5, gt=0, le=1, description="backbone LR = lr x this (pretrained layers move slower)"
    )
    layer_decay: float | None = Field(
        None, gt=0, le=1, description="layer-wise LR decay: each group below the top gets x this"
    )
    group_lr: dict[str, float] = Field(
        {}, description="per-group LR multipliers by group name, e.g. {stem: 0.1, layer4: 2}"
    )
    schedule: Literal["cosine", "step", "constant"] = Field(
        "cosine", description="LR decay after warmup (per phase)"
    )
    step_epochs: int = Field(3, ge=1, description="step schedule: epochs between LR drops")
    step_gamma: float = Field(0.1, gt=0, le=1, description="step schedule: LR factor per drop")
    weight_decay: float = Field(0.01, ge=0)
    warmup_epochs: float = Field(
        1.0, ge=0, description="linear LR warmup before the decay (per phase)"
    )
    warmup_steps: int | None = Field(
        None, ge=0, description="warmup length in optimizer steps (overrides warmup_epochs)"
    )
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    label_pos_weight: Literal["balanced", "none"] = Field(
        "balanced",
        description="multi-label: BCE weight of each label's positives; balanced = n_neg / n_pos "
        "of the training chips (clipped to [1, 100]), none = plain BCE",
    )
    class_weights: Literal["none", "balanced"] = Field(
        "none",
        description="balanced: loss (and linear-probe) weights n / (k * n_class), for "
        "imbalanced labels; validation then chooses on average accuracy",
    )
    sampler: Literal["shuffle", "balanced"] = Field(
        "shuffle",
        description="balanced: draw training chips so every class is equally likely (with "
        "replacement; same epoch length)",
    )
    accumulate: int = Field(
        1, ge=1, description="gradient accumulation: batches per optimizer step"
    )
    patience: int | None = Field(
        None, ge=1, description="early stopping: epochs without a better validation accuracy"
    )
    max_time: float | None = Field(
        None,
        gt=0,
        description="seconds of fine-tuning at most: stop when the next epoch would end past "
        "it, then test the best epoch so far",
    )
    epochs_by_time: bool = Field(
        False,
        description="with --max-time: after the last phase's first epoch, run as many epochs "
        "(at most --epochs) as end, with the test pass, within --max-time of the run's start, "
        "and fit the learning-rate schedule to them",
    )
    time_budget: str | None = Field(
        None,
        description="wall-clock budget (90s, 10m, 1.5h): geotune tries recipes (backbones, "
        "probe, ensemble, views, lp-ft epochs) cheapest first and keeps the best on validation",
    )

    _budget_is_a_duration = field_validator("time_budget")(optional_duration)

    @model_validator(mode="after")
    def _check_time(self) -> OptimisationSection:
        if self.epochs_by_time and self.max_time is None:
            raise ValueError("epochs_by_time fits the epochs to max_time; give --max-time too")
        return self

    def resolved_lr(self, head_only: bool) -> float:
        """Head learning rate: larger when only a head trains on fixed features."""
        if self.lr is not None:
            return self.lr
        return 3e-3 if head_only else 1e-3


class ProbeSection(StrictConfig):
    """Section ``probe``: what validation chooses among for linear probes and kNN."""

    section: ClassVar[str] = "probe"

    probe_c: list[float] = Field(
        [0.001, 0.01, 0.1, 1.0, 10.0],
        min_length=1,
        description="inverse regularisation strengths tried on validation data",
    )
    probe_power: list[float] = Field(
        [1.0, 0.5],
        min_length=1,
        description="signed power normalisation exponents tried on validation "
        "(0.5 = square root, which evens out bursty pooled features; 1 = none)",
    )
    probe_stages: list[int] | None = Field(
        None,
        min_length=1,
        description="stages whose pooled outputs the probe concatenates, tried on validation "
        "(1 = the final features; 3 = final + the last two stages); default: 3 for a linear "
        "probe, knn or feature extraction (one value: its head's input) on one backbone that "
        "exposes its stages, else 1",
    )
    probe_solver: Literal["auto", "lbfgs", "streamed"] = Field(
        "auto",
        description="how the linear probe is fitted: lbfgs (scikit-learn, features in RAM), "
        "streamed (minibatch, features read from the cache); auto = streamed from 4,096 "
        "labelled chips (multi-label: 20,000), where it is the faster",
    )
    feature_engine: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto",
        description="what runs the frozen backbone over the chips; auto = ONNX Runtime on CPU "
        "for 512+ forward passes (4.8x faster there), PyTorch otherwise",
    )
    knn_k: list[int] = Field(
        [1, 5, 10, 20, 50],
        min_length=1,
        description="neighbour counts tried on validation data",
    )

    @model_validator(mode="after")
    def _check_candidates(self) -> ProbeSection:
        if any(c <= 0 for c in self.probe_c) or any(k < 1 for k in self.knn_k):
            raise ValueError("probe_c values must be > 0 and knn_k values >= 1")
        if any(not 0 < a <= 1 for a in self.probe_power):
            raise ValueError("probe_power values must be in (0, 1]")
        if any(k < 1 for k in self.probe_stages or [1]):
            raise ValueError("probe_stages values must be >= 1 (1 = the final features)")
        return self


class RuntimeSection(StrictConfig):
    """Section ``runtime``: devices, precision, workers, and where the run folder goes."""

    section: ClassVar[str] = "runtime"

    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"
    num_workers: int | None = Field(
        None, ge=0, le=MAX_WORKERS, description="decode workers (default: cores)"
    )
    devices: int = Field(
        1, ge=1, description="processes per node (GPUs, or CPU processes with gloo)"
    )
    num_nodes: int = Field(1, ge=1, description="nodes for multi-node DDP (Lightning Fabric)")
    compile: bool = Field(
        False, description="torch.compile the model (measure before relying on it)"
    )
    deterministic: bool = Field(
        False, description="deterministic algorithms: bit-identical reruns and resumes"
    )
    cudnn_benchmark: Literal["auto", "on", "off"] = Field(
        "auto",
        description="CUDA: cuDNN autotuning (faster steps after a one-off warm-up); auto = on "
        "when epochs x training chips >= 100,000",
    )
    cudnn: Literal["auto", "on", "off"] = Field(
        "auto",
        description="CUDA: cuDNN convolutions; auto = off for depthwise models (EfficientNet, "
        "MobileNet) in runs under 20,000 chip passes, which cannot repay its warm-up",
    )
    output: Path = path_field(
        "output-dir", Path("runs"), description="folder that holds run folders"
    )
    name: str | None = Field(None, description="run folder name (default: generated)")


# The sections of a `geotune train` config, in the order config.yaml and --help show them.
SECTIONS: tuple[type[StrictConfig], ...] = (
    DatasetSection,
    ModelSection,
    TransferSection,
    AugmentationSection,
    OptimisationSection,
    ProbeSection,
    RuntimeSection,
)


def section_of(key: str) -> str | None:
    """The section that holds a `geotune train` option (None: no such option)."""
    return next((s.section for s in SECTIONS if key in s.model_fields), None)


def flatten_sections(values: dict[str, Any]) -> dict[str, Any]:
    """``{section: {key: value}}`` (config.yaml's form) and flat ``{key: value}`` (the CLI's, and
    config files before sections) -> flat; a key under the wrong section is refused in one line."""
    names = {s.section for s in SECTIONS}
    out: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if key in out:
            raise ValueError(f"'{key}' given twice (in its section and at the top level)")
        out[key] = value

    for key, value in values.items():
        if key not in names or not isinstance(value, dict):
            put(key, value)
            continue
        for k, v in value.items():
            home = section_of(k)
            if home is None:
                close = difflib.get_close_matches(k, [f for x in SECTIONS for f in x.model_fields])
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ValueError(f"unknown key '{k}' in section {key}:{hint}")
            if home != key:
                raise ValueError(f"'{k}' belongs in section {home}:, not {key}:; move it")
            put(k, v)
    return out


# Bases in reverse: pydantic lists a model's fields from its last base to its first, so the
# CLI's --help and config.yaml show the dataset first and the runtime last.
@register_config_model("train")
class TrainConfig(
    RuntimeSection,
    ProbeSection,
    OptimisationSection,
    AugmentationSection,
    TransferSection,
    ModelSection,
    DatasetSection,
):
    """Everything that defines a `geotune train` run: the sections, and the rules across them.

    Code that needs one concern takes its section (e.g. ``ProbeSection``): a TrainConfig is
    an instance of every section.
    """

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, values: Any) -> Any:
        return flatten_sections(values) if isinstance(values, dict) else values

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainConfig:
        self._check_strategy()
        if self.max_time is not None and self.devices * self.num_nodes > 1:
            raise ValueError("max_time stops one process by its clock; give it with one device")
        if self.labels is not None:
            self.check_multilabel()
        ensemble = len(backbone_members(self.backbone)) > 1
        if max(self.probe_stages or [1]) > 1 and (ensemble or self.band_init == "composites"):
            raise ValueError(
                "probe_stages > 1 needs one plain backbone (not an ensemble or composites)"
            )
        return self

    def _check_strategy(self) -> None:
        """The strategy exists, and the options given belong to it."""
        if self.strategy == "auto":
            for key in ("freeze_until", "unfreeze_last"):
                if getattr(self, key) is not None:
                    raise ValueError(f"strategy auto chooses the layers to train; leave out {key}")
            return
        if self.strategy not in STRATEGIES:
            raise ValueError(STRATEGIES.unknown(self.strategy, extra=("auto",)))
        spec = STRATEGIES.get(self.strategy)
        # Options without a default belong to the strategies that declare them.
        for key in ("freeze_until", "unfreeze_last"):
            if getattr(self, key) is not None and key not in spec.options:
                users = [s.name for s in STRATEGIES.values() if key in s.options]
                raise ValueError(
                    f"{key} applies to strategies {', '.join(users)}, not '{self.strategy}'"
                )
        if self.freeze_until and self.unfreeze_last:
            raise ValueError("give either freeze_until or unfreeze_last, not both")
        if spec.check is not None:
            spec.check(self)
        if len(backbone_members(self.backbone)) > 1 and spec.trains_network:
            raise ValueError(
                f"a backbone ensemble ({self.backbone}) serves linear-probe and knn; fine-tune "
                "one backbone"
            )
        if spec.probe_kind == "knn" and self.class_weights != "none":
            raise ValueError("knn votes by neighbours and takes no class weights; use linear-probe")
        if spec.probe_kind is not None and self.sampler != "shuffle":
            raise ValueError(
                f"sampler applies to trained strategies, not '{self.strategy}' (it fits on "
                "every labelled chip once); use class_weights=balanced"
            )

    def check_multilabel(self) -> None:
        """What multi-label data supports; the rest refuses in one line (ValueError). Run here
        for --labels, and by the engine for BigEarthNet folders once it has found them."""
        if self.strategy not in MULTILABEL_STRATEGIES:
            raise ValueError(
                f"strategy {self.strategy} does not support multi-label data yet; use "
                "linear-probe, knn, auto or full (or partial, lp-ft, feature-extraction, gradual)"
            )
        if self.class_weights != "none" or self.sampler != "shuffle":
            raise ValueError(
                "class_weights and sampler apply to single-label data; multi-label runs weight "
                "each label's positives by n_neg / n_pos already"
            )

    def with_absolute_paths(self) -> TrainConfig:
        """The same config with absolute data, split and weights paths, so a saved config means
        the same from any working directory."""
        update: dict[str, Any] = {"data": Path(self.data).resolve()}
        if self.split is not None:
            update["split"] = Path(self.split).resolve()
        if self.labels is not None:
            update["labels"] = Path(self.labels).resolve()
        if Path(self.weights).is_file():
            update["weights"] = str(Path(self.weights).resolve())
        return self.model_copy(update=update)

    def uses_cached_features(self) -> bool:
        """Linear probe / kNN: a classifier on cached features, no network trained."""
        return not STRATEGIES[self.strategy].trains_network

    def to_yaml_dict(self) -> dict[str, Any]:
        """config.yaml's form: one mapping per section."""
        flat = self.model_dump(mode="json")
        return {s.section: {k: flat[k] for k in s.model_fields} for s in SECTIONS}


def make_config(**values: Any) -> TrainConfig:
    """Build and validate a `geotune train` configuration.

    Args:
        **values: any `geotune train` option by its config name (``data``, ``strategy``, ...).

    Returns:
        The validated TrainConfig.

    Raises:
        ConfigError: an unknown key or a bad value, in one line.
    """
    return build_config(TrainConfig, what="config key", **values)


def load_config(path: Path, **overrides: Any) -> TrainConfig:
    """Read a YAML config; explicit ``overrides`` (e.g. CLI flags) win over the file.

    Args:
        path: a YAML file of ``option: value`` pairs.
        **overrides: options that replace the file's values (None values are ignored).

    Returns:
        The validated TrainConfig.
    """
    values = load_yaml_mapping(path)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return make_config(**values)


def save_config(config: TrainConfig, path: Path) -> None:

    atomic_write_text(path, yaml.safe_dump(config.to_yaml_dict(), sort_keys=False))
