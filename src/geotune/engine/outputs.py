"""The files that define and finish a run folder, shared by trained and cached-feature runs."""

from __future__ import annotations

import torch
from rich.console import Console

from geotune.config import save_config
from geotune.data.splits import write_split
from geotune.engine.prepare import Prepared, RunResult
from geotune.evaluation.calibration import calibrate_run
from geotune.evaluation.metrics import classification_metrics, metrics_table, save_metrics
from geotune.fileio import atomic_write_csv, atomic_write_json, atomic_write_text
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
    """Test metrics (with and without TTA), summary.json, then the atomic rename into place."""
    labels = prep.images.folder.labels[prep.indices("test")]
    metrics = classification_metrics(labels, probs.argmax(1).numpy(), prep.classes)
    plain_oa = float((plain.argmax(1).numpy() == labels).mean()) if len(labels) else 0.0
    metrics.update(
        split="test",
        data=str(prep.config.data),
        tta=prep.config.tta,
        overall_accuracy_without_tta=plain_oa,
        best_epoch=best_epoch,
    )
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
        test_overall_accuracy=metrics["overall_accuracy"],
        tta=prep.config.tta,
        test_overall_accuracy_without_tta=plain_oa,
        torch_threads=torch.get_num_threads(),
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
    console.print(metrics_table(metrics, title))
    final = run.commit()
    dumped = record.model_dump(mode="json")
    return RunResult(final, metrics, dumped["history"], dumped)
