"""Several adaptation methods on one target, and the one to keep without target labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console

from geotune.adapt.config import AdaptConfig
from geotune.adapt.run import (
    adapt_run,
    adaptation_markdown,
    evaluation_data,
    refuse_adapt_outputs_in_inputs,
)
from geotune.adapt.signals import choose
from geotune.errors import ConfigError
from geotune.fileio import atomic_write_json, atomic_write_text


def paired_interval(before: list[int], after: list[int], n_boot: int = 2000, seed: int = 0):
    """95% bootstrap interval of the accuracy change, resampling chips (paired)."""
    diff = np.asarray(after, float) - np.asarray(before, float)
    if not len(diff):
        return None
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (n_boot, len(diff)))].mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def adapt_methods(
    run: Path, configs: list[AdaptConfig], console: Console | None = None
) -> tuple[list[dict], dict, Path]:
    """Run every method of ``configs`` on the same target; choose one from label-free signals.

    Args:
        run: a finished run folder.
        configs: one AdaptConfig per method (same target and evaluation data).
        console: where progress goes.

    Returns:
        (summaries, choice, path of RUN-adaptation.md). ``choice`` names the method kept
        without labels ("none" = no adaptation), why, and, when labelled evaluation data was
        given, the best method by its labels and whether the two agree.
    """
    console = console or Console(stderr=True)
    table = Path(configs[0].output or Path(run).parent) / f"{Path(run).name}-adaptation.md"
    for cfg in configs:  # every output checked before the first method runs
        refuse_adapt_outputs_in_inputs(
            run, cfg, **{"--output (table)": table, "--output (record)": table.with_suffix(".json")}
        )
    summaries, before, source_views = [], None, None
    for cfg in configs:
        summary, out = adapt_run(run, cfg, console, before, source_views)
        before = summary.pop("target_before_metrics")
        source_views = summary.pop("source_views")  # the same for every method
        summary["run"] = str(out)
        summaries.append(summary)
    signals = {"none": harm_signals_of_source(summaries)} | {
        s["method"]: s["harm_signals"] for s in summaries
    }
    chosen, why = choose(signals)
    choice = {"unsupervised": chosen, "why": why}
    if before is not None:
        for s in summaries:
            s["gain_ci"] = paired_interval(before["chip_correct"], s.pop("chip_correct_after"))
        by_label = {"none": before["overall_accuracy"]} | {
            s["method"]: s["target_oa_after"] for s in summaries
        }
        best = max(by_label, key=lambda m: (by_label[m], m == "none"))
        choice.update(best_by_labels=best, matches=best == chosen, accuracy=by_label)
    few = _few_shot(run, configs[0], console)
    text = adaptation_markdown(summaries) + _choice_markdown(choice) + _few_shot_markdown(few)
    atomic_write_text(table, text)
    record = {"methods": summaries, "choice": choice, "few_shot": few}
    atomic_write_json(table.with_suffix(".json"), record)
    return summaries, choice, table


def harm_signals_of_source(summaries: list[dict]) -> dict:
    """The "no adaptation" candidate: the source model's own signals, no warnings."""
    before = summaries[0]["source_signals"]
    return {"before": before, "after": before, "agreement": 1.0, "warnings": []}


def _few_shot(run: Path, config: AdaptConfig, console: Console) -> dict | None:
    if not config.target_labels_per_class:
        return None
    from geotune.adapt.fewshot import few_shot, few_shot_table
    from geotune.engine.fabric import resolve_device
    from geotune.models.classifier import load_classifier
    from geotune.runs.artifacts import refuse_multilabel_run
    from geotune.runs.rundir import require_complete_run

    run = require_complete_run(run)
    refuse_multilabel_run(run, "adapt")
    _, prep, ckpt = load_classifier(run / "checkpoints" / "best.pt")
    evaluation = evaluation_data(config, prep, ckpt["classes"])
    if evaluation is None:
        raise ConfigError(
            "--target-labels-per-class needs labelled target data: pass --eval-data, or a "
            "--target with class folders"
        )
    device = resolve_device(config.device)
    rows = few_shot(
        run, evaluation, config.target_labels_per_class, config.few_shot_seeds, device, console
    )
    return {"rows": rows, "table": few_shot_table(rows)}


def _few_shot_markdown(few: dict | None) -> str:
    if few is None:
        return ""
    lines = [
        "",
        "## Few labelled target chips (held-out target chips; mean and 95% interval over draws)",
        "",
        "| labels per class | method | held-out OA |",
        "|---|---|---|",
    ]
    for r in few["table"]:
        ci = "" if np.isnan(r["ci_half"]) else f" ± {100 * r['ci_half']:.1f}"
        lines.append(f"| {r['k']} | {r['method']} | {100 * r['mean']:.1f}%{ci} |")
    return "\n".join(lines) + "\n"


def _choice_markdown(choice: dict) -> str:
    lines = ["", f"Kept without target labels: **{choice['unsupervised']}** ({choice['why']})."]
    if "best_by_labels" in choice:
        verdict = "the same" if choice["matches"] else "a different choice"
        lines.append(
            f"With the evaluation labels the best is **{choice['best_by_labels']}**: {verdict}."
        )
    return "\n".join(lines) + "\n"
