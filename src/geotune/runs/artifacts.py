"""Typed run artifacts: ``summary.json``, ``test_metrics.json`` and ``config.yaml`` of a run folder.

Each file is written and read through one model, so a reader never guesses at keys with
``.get`` fallbacks, and a damaged file is a one-line error naming it instead of a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from geotune.errors import DataError
from geotune.fileio import atomic_write_json

if TYPE_CHECKING:
    from geotune.config import TrainConfig

SUMMARY_FILE = "summary.json"
TEST_METRICS_FILE = "test_metrics.json"
CONFIG_FILE = "config.yaml"
DATA_FILE = "data.json"

A = TypeVar("A", bound="Artifact")


class Artifact(BaseModel):
    """A JSON file of a run folder with a fixed schema."""

    model_config = ConfigDict(extra="ignore")  # older runs may carry keys we no longer write

    def write(self, path: Path) -> None:
        atomic_write_json(path, self.model_dump(mode="json"))

    @classmethod
    def read(cls: type[A], path: Path) -> A:
        """Parse ``path``; a missing, truncated or foreign file is a one-line DataError."""
        path = Path(path)
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except FileNotFoundError:
            raise DataError(f"{path} not found; is this a finished geotune run?") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValidationError) as err:
            what = type(err).__name__
            raise DataError(
                f"{path} is damaged or not written by geotune ({what}); "
                "re-run the command that wrote it"
            ) from None


class TestMetrics(Artifact):
    """``test_metrics.json`` (and ``eval_metrics.json``): the figures a paper reports."""

    __test__ = False  # not a pytest class

    n: int
    overall_accuracy: float
    average_accuracy: float
    macro_f1: float
    kappa: float
    per_class: dict[str, dict[str, Any]]
    classes: list[str]
    confusion_matrix: list[list[int]]
    split: str | None = None
    data: str | None = None
    tta: str = "none"
    overall_accuracy_without_tta: float | None = None
    best_epoch: int | None = None
    # Calibration (geotune.metrics.calibration): of the probabilities as reported, and the
    # validation-fitted temperature with test ECE / Brier before and after it.
    ece: float | None = None
    brier: float | None = None
    calibration: dict[str, Any] | None = None


class RunSummary(Artifact):
    """``summary.json``: what ran, how long it took, and what it cost."""

    strategy: str
    backbone: str
    weights: str
    preprocessing: dict[str, Any]
    layer_groups: list[str]
    n_train: int
    n_val: int
    n_test: int
    epochs: int | None = None
    test_overall_accuracy: float
    tta: str = "none"
    test_overall_accuracy_without_tta: float | None = None
    torch_threads: int | None = None
    trainable_params: int = 0
    total_params: int = 0
    train_accuracy: float | None = None
    train_time_s: float = 0.0
    peak_memory_mb: float | None = None
    device: str | None = None
    # trained strategies
    phases: list[dict[str, Any]] = []
    bn_policy: str | None = None
    bn_note: str | None = None
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    stopped_early: bool = False
    epochs_run: int = 0
    time_per_epoch_s: float | None = None
    train_images_per_s: float | None = None
    test_images_per_s: float | None = None
    precision: str | None = None
    compile: bool = False
    cudnn: bool = False  # CUDA convolutions through cuDNN (engine/fabric.resolve_cudnn)
    cudnn_benchmark: bool = False  # cuDNN autotuning (CUDA runs long enough to repay it)
    history: list[dict[str, Any]] = []
    # cached-feature strategies (linear-probe, knn)
    C: float | None = None
    feature_power: float | None = None
    probe_stages: int | None = None  # stages the probe's features pool (1 = the final ones)
    # lbfgs (scikit-learn, in RAM) or streamed (engine/streamed_probe, large labelled sets)
    probe_solver: str | None = None
    val_accuracy_by_power_and_C: dict[str, float] | None = None
    val_map_by_power_and_C: dict[str, float] | None = None  # multi-label probes
    k: int | None = None
    val_accuracy_by_k: dict[str, float] | None = None
    val_map_by_k: dict[str, float] | None = None  # multi-label kNN
    features_from_cache: bool | None = None
    feature_time_s: float | None = None
    feature_engine: str | None = None  # torch | onnxruntime: what computed the cached features
    fit_time_s: float | None = None
    feature_dim: int | None = None
    note: str | None = None
    # multispectral runs: the bands used and how an RGB stem was adapted (None: 8-bit RGB)
    bands: dict[str, Any] | None = None
    # --strategy auto: what it chose and why (None: the strategy was given)
    strategy_auto: dict[str, Any] | None = None
    # multi-label runs (--labels): test_overall_accuracy is then the subset accuracy (exact
    # match of the label set); mAP and the per-label thresholds are the figures to read
    multilabel: bool = False
    test_map_macro: float | None = None
    best_val_map: float | None = None
    thresholds: dict[str, float] | None = None

    def accuracy_under(self, tta: str) -> float | None:
        """The run's test accuracy under test-time augmentation ``tta``, when it is known."""
        if self.tta == tta:
            return self.test_overall_accuracy
        return self.test_overall_accuracy_without_tta if tta == "none" else None


def refuse_multilabel_run(run: Path, command: str) -> None:
    """A one-line ConfigError when ``run`` is a multi-label run (``command`` cannot read it)."""
    from geotune.errors import ConfigError

    path = Path(run) / SUMMARY_FILE
    try:
        multilabel = bool(json.loads(path.read_text()).get("multilabel"))
    except (OSError, ValueError, AttributeError):
        return  # not a finished run: the command's own checks say what is wrong
    if multilabel:
        raise ConfigError(
            f"{command} does not support multi-label runs ({Path(run)} was trained with "
            "--labels): its methods assume one softmax over the classes; evaluate, predict, "
            "export and shift do take it"
        )


def read_run_config(run: Path) -> TrainConfig:
    """A run's resolved ``config.yaml`` as a validated TrainConfig (one-line error if damaged)."""
    from geotune.config import load_config
    from geotune.errors import ConfigError

    path = Path(run) / CONFIG_FILE
    try:
        return load_config(path)
    except ConfigError as err:
        raise DataError(f"{path} cannot be read as a geotune run config ({err})") from None


def check_run_data(run: Path, folder) -> None:
    """Refuse when the dataset at the run's data path is no longer the one it was trained on.

    ``folder`` is the scanned (and, with --skip-bad-images, cleaned) SceneFolder of that path.
    Runs written before data.json existed are not checked.
    """
    path = Path(run) / DATA_FILE
    if not path.is_file():
        return
    try:
        then = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise DataError(f"{path} is damaged; the run's data cannot be checked") from None
    if then.get("fingerprint") != folder.fingerprint():
        raise DataError(
            f"the data at {folder.root} is not the data run {Path(run).name} was trained on "
            f"({len(folder)} chips now, {then.get('chips')} then, or other files); restore it, "
            "or evaluate on other data with --data"
        )
