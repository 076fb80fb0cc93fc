"""`geotune evaluate`: re-evaluate a finished run on its test split or on another dataset."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator
from rich.console import Console

from geotune.data.bands import BandRequest
from geotune.data.classmap import label_remap, load_class_map, pair_classes, scored_labels
from geotune.data.dataset import is_dataset_source
from geotune.data.decode import decode_folder
from geotune.data.folder import cache_root
from geotune.data.multilabel import scan_labelled
from geotune.data.scan import scan_chips, single_label_chips
from geotune.data.splits import read_split
from geotune.engine.fabric import resolve_device
from geotune.engine.predict import predict
from geotune.errors import ConfigError, DataError
from geotune.metrics.classification import classification_metrics, metrics_table, save_metrics
from geotune.metrics.multilabel import multilabel_metrics, multilabel_table, save_multilabel_metrics
from geotune.metrics.selection import label_thresholds
from geotune.models.classifier import load_classifier
from geotune.runs.artifacts import SUMMARY_FILE, RunSummary, check_run_data, read_run_config
from geotune.runs.paths import CACHE, refuse_outputs_in_inputs
from geotune.runs.rundir import RunDir, require_complete_run
from geotune.validation import StrictConfig, path_field, register_config_model


@register_config_model
class EvaluateConfig(StrictConfig):
    """Options of `geotune evaluate`; its flags are generated from these fields."""

    run_dir: Path = path_field("input-dir", description="a run folder written by `geotune train`")
    data: Path | None = path_field(
        "input-dir", None, description="another ImageFolder dataset (cross-dataset evaluation)"
    )
    batch_size: int = Field(64, ge=1)
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    tta: Literal["none", "flip", "rot2", "rot4", "d4"] = Field(
        "none", description="test-time augmentation"
    )
    class_map: Path | None = path_field(
        "input-file",
        None,
        description="YAML 'their_class: model_class' pairs for --data (many-to-one ok)",
    )
    workers: int | None = Field(None, ge=1, description="decode workers (default: cores)")
    labels: Path | None = path_field(
        "input-file",
        None,
        description="multi-label runs: the label table of --data (path,labels or 0/1 columns)",
    )

    @model_validator(mode="after")
    def _class_map_needs_data(self) -> EvaluateConfig:
        if self.class_map is not None and self.data is None:
            raise ValueError("class_map pairs the classes of --data with the model's; give --data")
        if self.labels is not None and self.data is None:
            raise ValueError("labels is the label table of --data; give --data")
        return self


def evaluate_run(
    run_dir: Path,
    data: Path | None = None,
    batch_size: int = 64,
    device: str = "auto",
    workers: int | None = None,
    tta: str = "none",
    console: Console | None = None,
    class_map: Path | dict | None = None,
    labels: Path | None = None,
) -> tuple[dict, Path]:
    """Metrics of a run's best checkpoint; written to ``RUN/evaluations/<name>/``.

    Without ``data`` the run's own test split is used. With ``data`` every image of that
    ImageFolder dataset is evaluated (cross-dataset evaluation): its classes must be classes the
    model knows, or ``class_map`` (YAML ``their_class: model_class``, many-to-one allowed) pairs
    them; classes left unmapped are excluded and listed. The drop against the run's own test
    accuracy is reported.

    Args:
        run_dir: a finished run folder.
        data: another ImageFolder dataset (None: the run's own test split).
        batch_size: chips per forward pass.
        device: auto | cpu | cuda | cuda:N | mps.
        workers: decode threads.
        tta: test-time augmentation views.
        console: where the table goes.
        class_map: YAML file or mapping ``their_class: model_class``.
        labels: a multi-label run's label table for ``data`` (see
            :func:`geotune.data.multilabel.scan_labelled`); scored on the labels it names.

    Returns:
        (metrics, folder of this evaluation).
    """
    console = console or Console(stderr=True)
    _refuse_outputs_in_inputs(run_dir, data, class_map, labels)
    run = require_complete_run(run_dir)
    if not (run / "checkpoints" / "best.pt").is_file():
        strategy = read_run_config(run).strategy
        raise ConfigError(
            f"run {run} ({strategy}) keeps no classifier checkpoint: kNN predicts from its labelled "
            "features; train a linear-probe or fine-tuned run to evaluate elsewhere"
        )
    model, prep, ckpt = load_classifier(run / "checkpoints" / "best.pt")
    _check_label_kind(run, ckpt, class_map, labels)
    if ckpt.get("multilabel"):
        metrics, out = _evaluate_multilabel(
            run, model, prep, ckpt, data, labels, batch_size, device, workers, tta
        )
        console.print(multilabel_table(metrics, f"{run.name} on {metrics['split']}"))
        return metrics, out
    metrics, out = _evaluate_single_label(
        run, model, prep, ckpt, data, class_map, batch_size, device, workers, tta
    )
    _print_evaluation(console, metrics, f"{run.name} on {metrics['split']}", data is not None)
    return metrics, out


def _evaluate_single_label(
    run, model, prep, ckpt, data, class_map, batch_size, device, workers, tta
):
    """A single-label run on its own test split, or on ``data`` (classes paired by name or by
    ``class_map``): the classification metrics, saved in a new evaluation folder."""
    classes: list[str] = ckpt["classes"]
    if data is None:
        images, split = run_images(run, prep, workers)
        idx, name, labels = np.flatnonzero(split == "test"), "test", images.folder.labels
        mapping, excluded = {}, []
    else:
        images, labels, mapping, excluded = _other_dataset(data, classes, class_map, prep, workers)
        idx, name = np.flatnonzero(labels >= 0), Path(data).resolve().name
    dev = resolve_device(device)
    model.to(dev)
    t0 = time.perf_counter()
    probs, _ = predict(model, prep, images.pixels, idx, batch_size, dev, tta=tta)
    preds = probs.argmax(1).numpy()
    if data is not None:  # a chip whose class pairs with several of ours is right on any of them
        labels = labels.copy()
        labels[idx] = scored_labels(
            images.folder.labels[idx], preds, images.folder.classes, classes, mapping
        )
    metrics = classification_metrics(labels[idx], preds, classes)
    if data is not None:
        own = _in_domain_accuracy(run, tta)
        metrics.update(
            class_pairs=mapping,
            excluded_classes=excluded,
            in_domain_overall_accuracy=own,
            drop_vs_in_domain=None if own is None else own - metrics["overall_accuracy"],
        )
    record = (name, data or images.folder.root, ckpt, tta, t0)
    return metrics, _save_evaluation(run, metrics, save_metrics, *record)


def _save_evaluation(run, metrics: dict, save, name, data, ckpt, tta, t0) -> Path:
    """Add where the figures come from, then write RUN/evaluations/<name>-<time>/ with
    ``save`` (single- or multi-label metrics files), committed whole or removed."""
    metrics.update(split=name, data=str(data), checkpoint_epoch=ckpt.get("epoch"), tta=tta,
                   seconds=time.perf_counter() - t0)  # fmt: skip
    out = RunDir(run / "evaluations", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    with out.building():
        save(metrics, out.path, "eval")
    return out.final


def _check_label_kind(run: Path, ckpt: dict, class_map, labels) -> None:
    """--class-map is for single-label runs, --labels (a label table) for multi-label ones."""
    if ckpt.get("multilabel") and class_map is not None:
        raise ConfigError(
            "--class-map pairs single-label classes; a multi-label run takes --labels "
            "TABLE.csv for --data, named with the model's labels"
        )
    if not ckpt.get("multilabel") and labels is not None:
        raise ConfigError(f"--labels is for multi-label runs; {run.name} is single-label")


def _refuse_outputs_in_inputs(run_dir: Path, data: Path | None, class_map, labels) -> None:
    """The evaluation goes inside the run it reads, by design (geotune.runs.paths); it and the
    cache must not lie inside the other data, its class map or its label table."""
    refuse_outputs_in_inputs(
        {},
        {
            "--data": data,
            "--class-map": None if isinstance(class_map, dict) else class_map,
            "--labels": labels,
        },  # fmt: skip
        {"RUN_DIR/evaluations": Path(run_dir) / "evaluations", CACHE: cache_root()},
    )


def _evaluate_multilabel(run, model, prep, ckpt, data, labels, batch_size, device, workers, tta):
    """A multi-label run on its own test split, or on ``data`` with its label table: every
    multi-label figure at the thresholds stored in the checkpoint."""
    classes: list[str] = list(ckpt["classes"])
    if data is None:
        images, split = run_images(run, prep, workers)
        idx, name, cols = np.flatnonzero(split == "test"), "test", list(range(len(classes)))
        Y = images.folder.label_matrix
    else:
        if labels is None:
            raise ConfigError(
                f"run {run.name} is multi-label: pass --labels TABLE.csv with the labels of "
                f"the chips in {data}"
            )
        folder = scan_labelled(data, labels)
        unknown = [c for c in folder.classes if c not in classes]
        if unknown:
            raise DataError(
                f"label table {labels} names labels the model was not trained on "
                f"({', '.join(unknown[:5])}); the model's labels: {', '.join(classes[:8])}"
            )
        bands = BandRequest.for_run(prep.bands, "the run")
        images = decode_folder(folder, prep.size, prep.interpolation, workers, bands=bands)
        cols = [classes.index(c) for c in images.folder.classes]  # scored: the table's labels
        idx, name = np.arange(len(images.folder)), Path(data).resolve().name
        Y = images.folder.label_matrix
    dev = resolve_device(device)
    model.to(dev)
    t0 = time.perf_counter()
    probs, _ = predict(model, prep, images.pixels, idx, batch_size, dev, tta=tta, multilabel=True)
    thresholds = np.asarray(label_thresholds(ckpt, classes))[cols]
    names = [classes[j] for j in cols]
    metrics = multilabel_metrics(Y[idx], probs.numpy()[:, cols], thresholds, names)
    metrics["labels_not_scored"] = [c for c in classes if c not in names]
    record = (name, data or images.folder.root, ckpt, tta, t0)
    return metrics, _save_evaluation(run, metrics, save_multilabel_metrics, *record)


def _print_evaluation(console: Console, metrics: dict, title: str, cross: bool) -> None:
    console.print(metrics_table(metrics, title))
    if not cross:
        return
    if metrics["excluded_classes"]:
        console.print(
            f"left out (no class pair): {', '.join(metrics['excluded_classes'])}", markup=False
        )
    if metrics["drop_vs_in_domain"] is not None:
        console.print(
            f"in-domain test OA {100 * metrics['in_domain_overall_accuracy']:.2f}% -> "
            f"{100 * metrics['overall_accuracy']:.2f}% on {metrics['split']} "
            f"(drop {100 * metrics['drop_vs_in_domain']:.2f} points)"
        )


def _other_dataset(data: Path, classes: list[str], class_map, prep, workers):
    """Another dataset's chips, with labels mapped onto the model's classes (-1: left out)."""
    folder = single_label_chips(data, "a single-label model is evaluated on them")
    cmap = load_class_map(class_map)
    unknown = [c for c in folder.classes if c not in classes]
    if unknown and cmap is None:
        raise DataError(
            f"{data} has classes the model was not trained on ({', '.join(unknown[:5])}); "
            f"pass --class-map MAP.yaml pairing them with the model's classes "
            f"({', '.join(classes[:6])}{', ...' if len(classes) > 6 else ''})"
        )
    mapping, excluded = pair_classes(folder.classes, classes, cmap)
    bands = BandRequest.for_run(prep.bands, "the run")  # the bands it was trained on, or an error
    images = decode_folder(folder, prep.size, prep.interpolation, workers, bands=bands)
    labels = label_remap(images.folder.classes, classes, mapping)[images.folder.labels]
    return images, labels, mapping, excluded


def _in_domain_accuracy(run: Path, tta: str) -> float | None:
    """The run's own test accuracy under ``tta``; an adapted run has no test set of its own,
    so its source run's accuracy is the in-domain one."""
    if (run / SUMMARY_FILE).is_file():
        return RunSummary.read(run / SUMMARY_FILE).accuracy_under(tta)
    if (run / "adaptation.json").is_file():
        return json.loads((run / "adaptation.json").read_text()).get("source_test_overall_accuracy")
    return None


def run_images(run: Path, prep, workers: int | None = None):
    """A finished run's own decoded images (its config's data, at ``prep``) and its split."""
    config = read_run_config(run)
    if is_dataset_source(config.data):
        raise DataError(
            f"run {Path(run).name} was trained on a Python dataset ({config.data}); its own test "
            "split cannot be re-read: pass --data DIR of chips to evaluate it on"
        )
    skip = config.skip_bad_images
    folder = scan_chips(config.data, config.labels, skip)
    bands = BandRequest.for_run(prep.bands, run)
    images = decode_folder(folder, prep.size, prep.interpolation, workers, skip, bands=bands)
    check_run_data(run, images.folder)
    return images, read_split(run / "split.csv", images.folder)
