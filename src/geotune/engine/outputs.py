"""The files that define and finish a run folder, shared by trained and cached-feature runs."""

from __future__ import annotations

import numpy as np
import torch
from rich.console import Console

from geotune.config import save_config
from geotune.data.splits import write_split
from geotune.engine.calibrate import calibrate_run
from geotune.engine.prepare import Prepared, RunResult
from geotune.fileio import atomic_torch_save, atomic_write_csv, atomic_write_json, atomic_write_text
from geotune.metrics.calibration import fit_label_temperatures, label_calibration
from geotune.metrics.classification import classification_metrics, metrics_table, save_metrics
from geotune.metrics.multilabel import (
    multilabel_metrics,
    multilabel_table,
    save_multilabel_metrics,
)
from geotune.metrics.selection import (
    DEFAULT_THRESHOLD,
    macro_average_precision,
    validation_thresholds,
)
from geotune.runs.artifacts import DATA_FILE, SUMMARY_FILE, RunSummary
from geotune.runs.rundir import RunDir


def write_run_header(run: RunDir, prep: Prepared) -> None:
    """The files that define a run: resolved config, split, skipped inputs."""
    path = run.path
    save_config(prep.config, path / "config.yaml")
    folder = prep.images.folder
    record = {"root": str(folder.root), "chips": len(folder), "fingerprint": folder.fingerprint()}
    atomic_write_json(path / DATA_FILE, record)
    write_split(path / "split.csv", prep.images.folder, prep.split)
    if prep.images.folder.skipped:
        # Tab-separated, reasons whole: a reason may itself contain ';' or ','.
        atomic_write_text(
            path / "skipped_files.txt",
            "".join(f"{p}\t{r}\n" for p, r in prep.images.folder.skipped),
        )


def write_test_predictions(run: RunDir, prep: Prepared, probs: torch.Tensor) -> None:
    """Per-chip predictions: what bootstrap intervals, confused pairs and thumbnails use."""
    test_idx = prep.indices("test")
    labels = prep.images.folder.labels[test_idx]
    pred = probs.argmax(1).numpy()
    atomic_write_csv(
        run.path / "test_predictions.csv",
        ["path", "true", "predicted", "confidence"],
        (
            (prep.images.folder.paths[i], prep.classes[t], prep.classes[p], f"{float(c):.4f}")
            for i, t, p, c in zip(test_idx, labels, pred, probs.max(1).values.numpy(), strict=True)
        ),
    )


def _multilabel_metrics(run: RunDir, prep: Prepared, probs, plain, val_probs) -> dict:
    """Thresholds from the validation probabilities (F1-optimal per label, shrunk towards the
    shared one: metrics.selection.validation_thresholds; 0.5 without validation), stored in
    checkpoints/best.pt; the test figures at those thresholds."""
    Y = prep.targets
    val_idx, test_idx = prep.indices("val"), prep.indices("test")
    if val_probs is not None and len(val_idx):
        thresholds = validation_thresholds(Y[val_idx], torch.as_tensor(val_probs).numpy())
        chosen = (
            "F1-optimal per label on the validation chips, shrunk towards the threshold best "
            "for all labels by n_pos / (n_pos + 10)"
        )
    else:
        thresholds = np.full(len(prep.classes), DEFAULT_THRESHOLD)
        chosen = "0.5: no validation chips"
    metrics = multilabel_metrics(Y[test_idx], probs.numpy(), thresholds, prep.classes)
    metrics["thresholds_chosen"] = chosen
    temps = np.ones(len(prep.classes))
    if val_probs is not None and len(val_idx):
        temps = fit_label_temperatures(Y[val_idx], torch.as_tensor(val_probs).numpy())
    metrics["calibration"] = label_calibration(Y[test_idx], probs.numpy(), temps, prep.classes)
    # Trained runs report logits of the plain view; probes report their probabilities.
    plain_p = plain if prep.config.uses_cached_features() else torch.as_tensor(plain).sigmoid()
    metrics["map_macro_without_tta"] = macro_average_precision(Y[test_idx], plain_p.numpy())
    ckpt_path = run.path / "checkpoints" / "best.pt"
    if ckpt_path.is_file():  # the decision rule travels with the weights
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        ckpt["thresholds"] = [float(t) for t in thresholds]  # on the uncalibrated scale
        ckpt["label_temperatures"] = [float(t) for t in temps]
        atomic_torch_save(ckpt, ckpt_path)
    return metrics


def write_multilabel_predictions(run: RunDir, prep: Prepared, probs, thresholds: dict) -> None:
    """Per-chip true and predicted label sets, and every label's probability."""
    test_idx, folder = prep.indices("test"), prep.images.folder
    th = np.array([thresholds[c] for c in prep.classes])
    p = probs.numpy()
    atomic_write_csv(
        run.path / "test_predictions.csv",
        ["path", "true", "predicted", *(f"p_{c}" for c in prep.classes)],
        (
            (
                folder.paths[i],
                folder.label_text(i),
                ";".join(c for c, hit in zip(prep.classes, row >= th, strict=True) if hit),
                *(f"{float(v):.4f}" for v in row),
            )
            for i, row in zip(test_idx, p, strict=True)
        ),
    )


def finish_run(
    run: RunDir,
    prep: Prepared,
    probs,
    plain,
    summary: dict,
    console: Console,
    best_epoch=None,
    val_scores=None,
) -> RunResult:
    """Test metrics (with and without TTA), summary.json, then the atomic rename into place.

    ``val_scores``: validation probabilities, when the checkpoint's own would be biased (see
    calibrate_run); for multi-label runs the ones that choose the label thresholds.
    """
    labels = prep.images.folder.labels[prep.indices("test")]
    if prep.multilabel:
        metrics = _multilabel_metrics(run, prep, probs, plain, val_scores)
        plain_oa, headline = None, metrics["subset_accuracy"]
    else:
        metrics = classification_metrics(labels, probs.argmax(1).numpy(), prep.classes)
        plain_oa = float((plain.argmax(1).numpy() == labels).mean()) if len(labels) else 0.0
        headline = metrics["overall_accuracy"]
    metrics.update(split="test", data=str(prep.config.data), tta=prep.config.tta)
    if not prep.multilabel:  # multi-label runs report map_macro_without_tta instead
        metrics.update(overall_accuracy_without_tta=plain_oa)
    metrics.update(best_epoch=best_epoch)
    if prep.multilabel:
        save_multilabel_metrics(metrics, run.path, "test")
        write_multilabel_predictions(run, prep, probs, metrics["thresholds"])
    else:
        metrics.update(calibrate_run(run.path, prep, probs, plain, val_scores))  # T into best.pt
        save_metrics(metrics, run.path, "test")
        write_test_predictions(run, prep, probs)
    record = RunSummary(
        **summary,
        strategy=prep.config.strategy,
        backbone=prep.config.backbone,
        weights=prep.weights,
        preprocessing=prep.preprocessing.to_dict(),
        bands=prep.band_record(),
        strategy_auto=prep.auto,
        layer_groups=prep.group_names,
        n_train=len(prep.indices("train")),
        n_val=len(prep.indices("val")),
        n_test=len(labels),
        epochs=None if prep.config.uses_cached_features() else prep.config.epochs,
        test_overall_accuracy=headline,
        tta=prep.config.tta,
        test_overall_accuracy_without_tta=plain_oa,
        torch_threads=torch.get_num_threads(),
        multilabel=prep.multilabel,
        test_map_macro=metrics.get("map_macro"),
        thresholds=metrics.get("thresholds"),
    )
    record.write(run.path / SUMMARY_FILE)
    try:
        from geotune.report.reports import run_report

        run_report(run.path, title=run.final.name)
    except Exception as err:  # noqa: BLE001 - a report must never cost the run it describes
        console.log(
            f"warning: report.html not written ({type(err).__name__}: {err}); "
            "`geotune report RUN` retries"
        )
    title = "test metrics" + (f", best epoch {best_epoch}" if best_epoch else "")
    console.print((multilabel_table if prep.multilabel else metrics_table)(metrics, title))
    final = run.commit()
    dumped = record.model_dump(mode="json")
    return RunResult(final, metrics, dumped["history"], dumped)
