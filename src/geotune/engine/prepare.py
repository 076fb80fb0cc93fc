"""Everything a run needs, built and validated before a run folder exists."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from geotune.config import TrainConfig
from geotune.data.bands import BandRequest
from geotune.data.dataset import dataset_classes, dataset_source, materialise
from geotune.data.decode import DecodedImages, decode_folder, detect_layout
from geotune.data.folder import SceneFolder
from geotune.data.scan import scan_chips
from geotune.data.splits import make_split, read_split
from geotune.engine.bands import (
    band_model,
    band_preprocessing,
    fit_band_statistics,
    refuse_band_options,
)
from geotune.errors import ConfigError, DataError
from geotune.models.classifier import SceneClassifier, build_classifier, wrap_stages
from geotune.models.preprocessing import Preprocessing
from geotune.models.stages import stage_candidates, stages_of
from geotune.transfer.groups import LayerGroup, layer_groups
from geotune.transfer.optim import lr_multipliers
from geotune.transfer.strategies import Phase, plan_phases


@dataclass
class Prepared:
    """A validated run: config, decoded chips, split, model, layer groups and phases."""

    config: TrainConfig
    images: DecodedImages
    split: np.ndarray
    model: SceneClassifier
    preprocessing: Preprocessing
    weights: str
    groups: list[LayerGroup]
    phases: list[Phase]
    stem: dict | None = None  # how an RGB stem was adapted to the bands (engine.bands)
    auto: dict | None = None  # what --strategy auto chose and why (engine.auto)
    # The clock --epochs-by-time counts from: the run is set up (chips decoded, model built).
    created: float = field(default_factory=time.monotonic)

    @property
    def classes(self) -> list[str]:
        return self.images.folder.classes

    @property
    def multilabel(self) -> bool:
        """Chips with any number of labels (--labels): multi-hot targets, sigmoid outputs."""
        return self.images.folder.multilabel

    @property
    def targets(self) -> np.ndarray:
        """Training targets of every chip: int labels, or the (N, L) multi-hot matrix."""
        return self.images.folder.target_array

    @property
    def group_names(self) -> list[str]:
        return [g.name for g in self.groups]

    def indices(self, part: str) -> np.ndarray:
        return np.flatnonzero(self.split == part)

    def checkpoint_meta(self) -> dict:
        """What a classifier checkpoint needs besides its weights (see load_classifier)."""
        c = self.config
        return {
            "backbone": c.backbone,
            "weights": self.weights,
            "classes": self.classes,
            "head": c.head,
            "head_dropout": c.head_dropout,
            "preprocessing": self.preprocessing.to_dict(),
            **({"bands": self.band_record()} if self.images.layout else {}),
            **({"probe_stages": self.stages} if self.stages > 1 else {}),
            **({"multilabel": True} if self.multilabel else {}),
        }

    @property
    def stages(self) -> int:
        """Pooled stages the head reads (feature extraction; 1 = the final features)."""
        return stages_of(self.model.backbone)

    def band_record(self) -> dict | None:
        """The bands a multispectral run used (checkpoint and summary); None for RGB runs."""
        layout = self.images.layout
        return None if layout is None else {**layout.to_dict(), "stem": self.stem}


@dataclass
class RunResult:
    """What `train` returns: the finished run folder and its figures.

    Attributes:
        run_dir: the run folder (complete; renamed into place).
        test_metrics: the contents of ``test_metrics.json`` (empty on non-lead DDP ranks).
        history: one dict per epoch (metrics.csv).
        summary: the contents of ``summary.json``.
    """

    run_dir: Path
    test_metrics: dict
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def prepare(
    config: TrainConfig,
    console: Console | None = None,
    split_file: Path | None = None,
    dataset=None,
) -> Prepared:
    """Scan and decode the data, build the model, make or read the split, plan the phases.

    ``dataset``: a map-style Python dataset used instead of ``config.data``
    (geotune.data.dataset.materialise). Every check that can fail does so here, before
    anything is written.
    """
    console = console or Console(stderr=True)
    folder = _scan(config, dataset)
    if len(folder.classes) < 2:
        raise DataError(
            f"{config.data} has one class folder ({folder.classes[0]}); a scene classifier "
            "needs at least two classes"
        )
    request = BandRequest(config.band_names, tuple(config.bands) if config.bands else None)
    layout = None if dataset is not None else detect_layout(folder, request)[0]
    if layout is None:
        refuse_band_options(config)
    torch.manual_seed(config.seed)  # the new head's initialisation is part of the run's seed
    stem = None
    if layout is None:
        model, prep, weights = build_classifier(
            config.backbone,
            config.weights,
            len(folder.classes),
            config.head,
            config.head_dropout,
            config.image_size,
        )
    else:
        model, prep, weights, stem = band_model(config, layout, len(folder.classes))
    if config.strategy == "feature-extraction":
        pool_stages(model, config)
    t0 = time.perf_counter()
    if dataset is not None:
        images = materialise(dataset, prep.size, prep.interpolation)
    else:
        images = decode_folder(
            folder,
            prep.size,
            prep.interpolation,
            config.num_workers,
            config.skip_bad_images,
            bands=request,
        )
    console.log(
        f"{len(images.folder)} images in {len(folder.classes)} classes at {prep.size} px "
        f"(decoded/cached in {time.perf_counter() - t0:.1f}s)"
    )
    split_file = split_file or config.split
    if split_file is not None:
        split = read_split(split_file, images.folder)
    else:
        split = make_split(
            images.folder,
            config.train_fraction if config.labels_per_class is None else None,
            config.labels_per_class,
            config.val_fraction,
            config.seed,
        )
    _check_split(split, config)
    if images.folder.multilabel:
        _check_label_positives(images.folder, split, config)
    if layout is not None:  # per-band statistics of the training chips only
        train_idx = np.flatnonzero(split == "train")
        prep = band_preprocessing(prep, layout, stem, weights, images.pixels, train_idx)
        fit_band_statistics(model, prep, images.pixels, train_idx)
    groups = layer_groups(model)
    lr_multipliers(config, groups)  # validates group_lr names before anything is written
    phases = [] if config.uses_cached_features() else plan_phases(config, groups)
    return Prepared(config, images, split, model, prep, weights, groups, phases, stem)


def _scan(config: TrainConfig, dataset) -> SceneFolder:
    """The chips and labels: a Python dataset, a folder with a label table, BigEarthNet's
    patch folders, or class folders."""
    if dataset is not None:
        return _dataset_folder(dataset, config)
    folder = scan_chips(config.data, config.labels, config.skip_bad_images)
    if folder.multilabel and config.labels is None:  # BigEarthNet: multi-label without --labels
        try:
            config.check_multilabel()
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return folder


def _dataset_folder(dataset, config: TrainConfig) -> SceneFolder:
    """The classes of a Python dataset (``.classes``, else its label indices), as a folder."""
    if config.bands or config.band_names:
        raise ConfigError(
            "--bands and --band-names apply to GeoTIFF folders; a Python dataset yields RGB "
            "images: leave them out, or select the bands in the dataset"
        )
    if config.skip_bad_images:
        raise ConfigError(
            "--skip-bad-images applies to folders; drop bad samples in the Python dataset"
        )
    if config.labels is not None:
        raise ConfigError(
            "--labels applies to folders of chips; a Python dataset gives its own labels"
        )
    classes = dataset_classes(dataset)
    if classes is None:  # the classes are the labels seen (materialise reads every sample)
        classes = materialise(dataset, 8).classes
    n = len(dataset)
    return SceneFolder(Path(dataset_source(dataset)), classes, [], np.zeros(n, dtype=np.int64))


def pool_stages(model: SceneClassifier, config: TrainConfig) -> None:
    """Feature extraction's head reads the same pooled stages as the linear probe's default:
    the frozen backbone's layers are the probe's, and only the head differs (BENCHMARKS.md)."""
    stages = max(stage_candidates(config.probe_stages, model.backbone))  # one value (checked)
    if stages > 1:
        wrap_stages(model, stages, config.head, config.head_dropout)


def _check_split(split: np.ndarray, config: TrainConfig) -> None:
    counts = {part: int((split == part).sum()) for part in ("train", "test")}
    for part, n in counts.items():
        if n == 0:
            raise DataError(
                f"the split of {config.data} has no {part} chips; "
                "use another --split, --train-fraction or --labels-per-class"
            )


def _check_label_positives(folder: SceneFolder, split: np.ndarray, config: TrainConfig) -> None:
    """Every label needs a positive training chip: a one-vs-rest head cannot learn it otherwise."""
    n_pos = folder.label_matrix[split == "train"].sum(0)
    if (n_pos == 0).any():
        j = int(np.flatnonzero(n_pos == 0)[0])
        total = int(folder.label_matrix[:, j].sum())
        raise ConfigError(
            f"label '{folder.classes[j]}' of {config.labels} has no positive chip in the training "
            f"split ({total} in all); raise --train-fraction, use --labels-per-class, or label "
            "more chips with it"
        )
