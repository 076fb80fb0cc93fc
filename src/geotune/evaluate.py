"""`geotune evaluate`: re-evaluate a finished run on its test split or on another dataset."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from rich.console import Console

from geotune.data import decode_folder, read_split, scan_folder
from geotune.errors import ConfigError, DataError
from geotune.metrics import classification_metrics, metrics_table, save_metrics
from geotune.model import load_classifier
from geotune.rundir import RunDir, require_complete_run
from geotune.shift import label_remap, load_class_map, pair_classes
from geotune.train import predict


def evaluate_run(
    run_dir: Path,
    data: Path | None = None,
    batch_size: int = 64,
    device: str = "auto",
    workers: int | None = None,
    tta: str = "none",
    console: Console | None = None,
    class_map: Path | dict | None = None,
) -> tuple[dict, Path]:
    """Metrics of a run's best checkpoint; written to ``RUN/evaluations/<name>/``.

    Without ``data`` the run's own test split is used. With ``data`` every image of that
    ImageFolder dataset is evaluated (cross-dataset evaluation): its classes must be classes the
    model knows, or ``class_map`` (YAML ``their_class: model_class``, many-to-one allowed) pairs
    them; classes left unmapped are excluded and listed. The drop against the run's own test
    accuracy is reported.
    """
    console = console or Console(stderr=True)
    run = require_complete_run(run_dir)
    if not (run / "checkpoints" / "best.pt").is_file():
        strategy = yaml.safe_load((run / "config.yaml").read_text()).get("strategy")
        raise ConfigError(
            f"run {run} ({strategy}) keeps no classifier checkpoint: kNN predicts from its labelled "
            "features; train a linear-probe or fine-tuned run to evaluate elsewhere"
        )
    model, prep, ckpt = load_classifier(run / "checkpoints" / "best.pt")
    classes: list[str] = ckpt["classes"]
    if data is None:
        images, split = run_images(run, prep, workers)
        idx = np.flatnonzero(split == "test")
        name = "test"
        labels = images.folder.labels
    else:
        folder = scan_folder(data)
        cmap = load_class_map(class_map)
        unknown = [c for c in folder.classes if c not in classes]
        if unknown and cmap is None:
            raise DataError(
                f"{data} has classes the model was not trained on ({', '.join(unknown[:5])}); "
                f"pass --class-map MAP.yaml pairing them with the model's classes "
                f"({', '.join(classes[:6])}{', ...' if len(classes) > 6 else ''})"
            )
        mapping, excluded = pair_classes(folder.classes, classes, cmap)
        images = decode_folder(folder, prep.size, prep.interpolation, workers)
        # Map the other dataset's label indices onto the model's class order; -1: left out.
        labels = label_remap(images.folder.classes, classes, mapping)[images.folder.labels]
        idx = np.flatnonzero(labels >= 0)
        name = Path(data).resolve().name
    dev = torch.device(
        "cuda"
        if device == "auto" and torch.cuda.is_available()
        else ("cpu" if device == "auto" else device)
    )
    model.to(dev)
    t0 = time.perf_counter()
    probs, _ = predict(model, prep, images.pixels, idx, batch_size, dev, tta=tta)
    metrics = classification_metrics(labels[idx], probs.argmax(1).numpy(), classes)
    metrics.update(
        split=name,
        data=str(data or images.folder.root),
        checkpoint_epoch=ckpt.get("epoch"),
        tta=tta,
        seconds=time.perf_counter() - t0,
    )
    if data is not None:
        # An adapted run has no test set of its own; its source run's accuracy is in-domain.
        own = _in_domain_accuracy(run, tta)
        if own is None and (run / "adaptation.json").is_file():
            own = json.loads((run / "adaptation.json").read_text()).get(
                "source_test_overall_accuracy"
            )
        metrics.update(
            class_pairs=mapping,
            excluded_classes=excluded,
            in_domain_overall_accuracy=own,
            drop_vs_in_domain=None if own is None else own - metrics["overall_accuracy"],
        )
    out = RunDir(run / "evaluations", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.create()
    save_metrics(metrics, out.path, "eval")
    final = out.commit()
    console.print(metrics_table(metrics, f"{run.name} on {name}"))
    if data is not None:
        if excluded:
            console.print(f"left out (no class pair): {', '.join(excluded)}")
        if metrics["drop_vs_in_domain"] is not None:
            console.print(
                f"in-domain test OA {100 * metrics['in_domain_overall_accuracy']:.2f}% -> "
                f"{100 * metrics['overall_accuracy']:.2f}% on {name} "
                f"(drop {100 * metrics['drop_vs_in_domain']:.2f} points)"
            )
    return metrics, final


def run_images(run: Path, prep, workers: int | None = None):
    """A finished run's own decoded images (its config's data, at ``prep``) and its split."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    skip = config.get("skip_bad_images", False)
    folder = scan_folder(config["data"], skip_bad=skip)
    images = decode_folder(folder, prep.size, prep.interpolation, workers, skip)
    return images, read_split(run / "split.csv", images.folder)


def _in_domain_accuracy(run: Path, tta: str) -> float | None:
    """The run's own test accuracy under the same test-time augmentation, when it is known."""
    summary_file = run / "summary.json"
    if not summary_file.is_file():
        return None
    summary = json.loads(summary_file.read_text())
    if summary.get("tta", "none") == tta:
        return summary.get("test_overall_accuracy")
    if tta == "none":
        return summary.get("test_overall_accuracy_without_tta")
    return None
