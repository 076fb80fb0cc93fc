"""`geotune compare`: the transfer-strategy table, measured on the user's own data.

Runs a grid of strategies x label budgets x seeds as ordinary runs under one sweep folder.
For each seed every strategy and budget shares one test set, and smaller budgets are subsets of
larger ones (geotune.data.budget_split), so strategies can be compared pairwise on the same
chips. Finished cells are reused: an interrupted compare continues where it stopped, and
linear-probe / kNN cells share the feature cache.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console

from geotune.config import make_config
from geotune.data.folder import cache_root
from geotune.data.scan import scan_chips
from geotune.data.splits import budget_split, read_split, write_split
from geotune.engine.trainer import train
from geotune.errors import ConfigError
from geotune.fileio import atomic_write_csv, atomic_write_json, atomic_write_text
from geotune.report.reports import write_report
from geotune.runs.artifacts import (
    SUMMARY_FILE,
    TEST_METRICS_FILE,
    RunSummary,
    TestMetrics,
    read_run_config,
)
from geotune.runs.interrupt import on_interrupt
from geotune.runs.paths import CACHE, existing_file, refuse_outputs_in_inputs
from geotune.runs.rundir import RunDir, run_state
from geotune.sweep.config import (
    BUDGET_PREFIX,
    CompareConfig,
    pretrainings,
)
from geotune.sweep.pretrainings import (
    Pretraining,
    method_label,
    rank_pretrainings,
    ranking_lines,
)
from geotune.sweep.recommendation import auto_lines, recommend
from geotune.sweep.statistics import ALL, bootstrap_ci, summarize
from geotune.transfer.strategies import STRATEGIES
from geotune.validation import parse_duration


def cell_name(
    strategy: str, budget: int | str, seed: int, pretraining: Pretraining | None = None
) -> str:
    if pretraining is None:
        return f"{strategy}-{budget}-s{seed}"
    return f"{strategy}-{pretraining.slug}-{budget}-s{seed}"


def cell_row(
    run: Path, strategy: str, budget: int | str, seed: int, pretraining: Pretraining | None = None
) -> dict:
    """One results row from a finished run folder.

    ``strategy`` is the compared unit: the strategy, or ``strategy @ pretraining`` when the
    sweep compares pretrainings (``transfer_strategy`` and ``pretraining`` hold the parts).
    ``score`` is what the sweep ranks by (``metric``): overall accuracy, or macro mAP for
    multi-label runs, with its 95% bootstrap interval over the test chips.
    """
    s = RunSummary.read(run / SUMMARY_FILE)
    scores = _multilabel_scores(run) if s.multilabel else _single_label_scores(run)
    probes = s.val_map_by_power_and_C if s.multilabel else s.val_accuracy_by_power_and_C
    budget_row = strategy.startswith(BUDGET_PREFIX)
    return {
        "strategy": method_label(strategy, pretraining),
        # A time budget's row: the strategy it kept (its recipe is in the run's budget.json).
        "transfer_strategy": s.strategy if budget_row else strategy,
        "pretraining": s.backbone if pretraining is None else pretraining.label,
        "weights": s.weights,
        "labels_per_class": budget,
        "seed": seed,
        "n_train": s.n_train,
        "n_val": s.n_val,
        "n_test": s.n_test,
        # A probe's best validation score: the distance-to-pretraining that auto reads (auto's
        # own quick probe uses at most 20 chips per class; this one all the cell's chips).
        "probe_val_accuracy": max(probes.values()) if probes else None,
        "epochs": s.epochs,
        **scores,
        "train_accuracy": s.train_accuracy,
        "overfitting_gap": None
        if s.train_accuracy is None or s.multilabel
        else s.train_accuracy - scores["score"],
        "trainable_params": s.trainable_params,
        "total_params": s.total_params,
        # A budget's cost is all it spent (every candidate), not its kept run's fit.
        "train_time_s": _budget_spent(run) if budget_row else s.train_time_s,
        "peak_memory_mb": s.peak_memory_mb,
        "run": str(run),
    }


def _budget_spent(run: Path) -> float:
    return float(json.loads((run / "budget.json").read_text())["spent_s"])


def _single_label_scores(run: Path) -> dict:
    metrics = TestMetrics.read(run / TEST_METRICS_FILE)
    preds = np.genfromtxt(
        run / "test_predictions.csv", delimiter=",", dtype=str, skip_header=1, ndmin=2
    )
    correct = (preds[:, 1] == preds[:, 2]).astype(float) if len(preds) else np.array([])
    lo, hi = bootstrap_ci(correct)
    oa = metrics.overall_accuracy
    return {
        "n_classes": len(metrics.classes),
        "metric": "overall_accuracy",
        "score": oa,
        "score_ci_low": lo,
        "score_ci_high": hi,
        "overall_accuracy": oa,
        "average_accuracy": metrics.average_accuracy,
        "macro_f1": metrics.macro_f1,
        "kappa": metrics.kappa,
    }


def _multilabel_scores(run: Path) -> dict:
    metrics = json.loads((run / TEST_METRICS_FILE).read_text())
    lo, hi = metrics.get("map_macro_ci95") or (math.nan, math.nan)
    # What --strategy auto's multi-label rule reads: positives per label in the training part.
    with (run / "split.csv").open(newline="") as fh:
        train = [r["class"].split(";") for r in csv.DictReader(fh) if r["split"] == "train"]
    counts = [sum(name in t for t in train) for name in metrics["per_label"]]
    return {
        "train_positives_median": float(np.median([c for c in counts if c > 0] or [0])),
        "n_classes": len(metrics["per_label"]),
        "metric": "map_macro",
        "score": metrics["map_macro"],
        "score_ci_low": lo,
        "score_ci_high": hi,
        "map_micro": metrics["map_micro"],
        "macro_f1": metrics["f1_macro"],
        "subset_accuracy": metrics["subset_accuracy"],
        "kappa": None,
    }


def cell_epochs(config: CompareConfig, strategy: str, n_train: int) -> int | None:
    """Epochs for one cell: the configured epochs, raised so the cell gets ``min_steps``
    optimizer steps (None: the strategy does not train, or nothing to raise)."""
    if not STRATEGIES[strategy].trains_network or not config.min_steps:
        return None
    base = make_config(data=config.data, strategy=strategy, **config.train)
    per_step = base.batch_size * base.accumulate
    steps_per_epoch = max(1, math.ceil(n_train / per_step))
    needed = math.ceil(config.min_steps / steps_per_epoch)
    if "head_epochs" in STRATEGIES[strategy].options:
        needed += base.head_epochs  # the steps count for the phase after the head-only one
    return max(base.epochs, needed)


def sweep_folder(config: CompareConfig) -> Path:
    """The folder a sweep is written to: OUTPUT/NAME (default name compare-DATA)."""
    return Path(config.output) / (config.name or f"compare-{Path(config.data).resolve().name}")


def refuse_compare_outputs_in_inputs(config: CompareConfig, **more_inputs: Path | None) -> None:
    """The sweep folder (and cache) must not be, hold or lie inside an input (runs.paths);
    ``more_inputs`` adds e.g. the CLI's ``--config`` file."""
    inputs = {
        "--data": config.data,
        "--weights (train option)": existing_file(config.train.get("weights")),
        "--labels (train option)": config.train.get("labels"),
        **more_inputs,
    }
    refuse_outputs_in_inputs(
        {"--output/--name": sweep_folder(config)}, inputs, {CACHE: cache_root()}
    )


def run_compare(config: CompareConfig, console: Console | None = None) -> Path:
    """Run (or continue) the grid; write results.csv / results.json, statistics and the report.

    A re-run into an existing sweep continues it: finished cells are reused only when their
    resolved run config equals what this sweep would run now; other settings are refused.

    Args:
        config: the sweep (``make_compare_config``).
        console: where progress goes.

    Returns:
        The sweep folder.
    """
    console = console or Console(stderr=True)
    refuse_compare_outputs_in_inputs(config)
    config = config.model_copy(update={"data": Path(config.data).resolve()})
    labels = config.train.get("labels")
    skip = bool(config.train.get("skip_bad_images"))
    folder = scan_chips(config.data, None if labels is None else Path(labels), skip)
    sweep = sweep_folder(config)
    _check_sweep_splits(sweep, config)
    (sweep / "splits").mkdir(parents=True, exist_ok=True)
    (sweep / "runs").mkdir(exist_ok=True)
    cells = [
        (s, b, seed, p)
        for seed in range(config.seeds)
        for b in config.labels_per_class
        for p in pretrainings(config)
        for s in config.units()
    ]
    plans = [_plan_cell(config, folder, sweep, *cell) for cell in cells]
    for cell in plans:
        _check_cell(sweep / "runs" / cell.name, cell)
    atomic_write_text_yaml(sweep / "compare.yaml", config.model_dump(mode="json"))
    rows = []
    kept = (
        f"finished cells are kept in {sweep / 'runs'}; run the same `geotune compare` command "
        "again to continue (finished cells are reused, the interrupted one starts over)"
    )
    with on_interrupt(kept):
        for k, ((strategy, budget, seed, pre), cell) in enumerate(
            zip(cells, plans, strict=True), 1
        ):
            run = sweep / "runs" / cell.name
            if (run / "status.json").is_file():
                console.log(
                    f"[{k}/{len(cells)}] {cell.name}: done earlier with these settings, reused"
                )
            else:
                stale = RunDir(sweep / "runs", cell.name)
                stale.lock()  # refuses if another process runs this cell right now
                if stale.staging.is_dir():
                    state, why = run_state(stale.staging)
                    why = f" ({why})" if why else ""
                    console.log(f"{cell.name} was {state or 'left unfinished'}{why}; redone")
                console.log(f"[{k}/{len(cells)}] {cell.name}")
                stale.discard()  # a cell killed earlier starts over
                train(cell, console)
            rows.append(cell_row(run, strategy, budget, seed, pre))
    write_results(sweep, rows)
    write_report(sweep)
    return sweep


# What decides a sweep's splits; a sweep folder holds one choice of them.
SPLIT_OPTIONS = ("data", "pool_fraction", "val_fraction", "test_per_class")


def _check_sweep_splits(sweep: Path, config: CompareConfig) -> None:
    saved = sweep / "compare.yaml"
    if not saved.is_file():
        return
    old = yaml.safe_load(saved.read_text()) or {}
    new = config.model_dump(mode="json")
    differ = [k for k in SPLIT_OPTIONS if old.get(k) != new[k]]
    if differ:
        raise ConfigError(
            f"sweep {sweep} was made with other {', '.join(differ)}; pass another --name "
            "or the sweep's own options"
        )


def _plan_cell(config: CompareConfig, folder, sweep: Path, strategy, budget, seed, pre=None):
    """The resolved run config of one cell (its split file is written when missing)."""
    split_file = sweep / "splits" / f"{budget}-s{seed}.csv"
    if split_file.is_file():
        split = read_split(split_file, folder)
    else:
        split = budget_split(
            folder,
            config.pool_fraction,
            None if budget == ALL else budget,
            config.val_fraction,
            seed,
            config.test_per_class,
        )
        write_split(split_file, folder, split)
    options = {**config.train, **({} if pre is None else pre.train_options())}
    if strategy.startswith(BUDGET_PREFIX):  # the budget chooses strategy and epochs itself
        options["time_budget"] = config.time_budget
    else:
        options["strategy"] = strategy
        epochs = cell_epochs(config, strategy, int((split == "train").sum()))
        if epochs is not None:
            options["epochs"] = epochs
    return make_config(
        data=config.data,
        split=split_file,
        seed=seed,
        output=sweep / "runs",
        name=cell_name(strategy, budget, seed, pre),
        **options,
    ).with_absolute_paths()


def _check_cell(run: Path, planned) -> None:
    """A finished cell is reused only if it ran with exactly the planned config."""
    if not (run / "status.json").is_file():
        return
    if planned.time_budget is not None:  # its saved config is the kept recipe's: the budget
        spent = json.loads((run / "budget.json").read_text())["budget_s"]
        if spent != parse_duration(planned.time_budget):
            raise ConfigError(
                f"cell {run.name} of this sweep ran with another --time-budget; pass another "
                "--name for a new sweep, or the budget it was run with"
            )
        return
    saved = read_run_config(run).model_dump(mode="json")
    now = planned.model_dump(mode="json")
    # Where the sweep lives may change (a moved or copied sweep); what its split says may not.
    differ = [k for k in now if k not in ("output", "split") and saved.get(k) != now[k]]
    # The run's copy lacks chips dropped by --skip-bad-images, and nothing else.
    ran = set((run / "split.csv").read_text().splitlines())
    if not ran <= set(Path(planned.split).read_text().splitlines()):
        differ.append("split")
    if differ:
        raise ConfigError(
            f"cell {run.name} of this sweep ran with other {', '.join(differ[:4])}; pass "
            "another --name for a new sweep, or the options it was run with"
        )


def atomic_write_text_yaml(path: Path, obj: Any) -> None:

    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


def write_results(sweep: Path, rows: list[dict]) -> dict:
    table, pairs = summarize(rows)
    results = {
        "cells": rows,
        "strategies": table,
        "paired": pairs,
        "recommendation": recommend(table, pairs) + auto_lines(rows, table, pairs),
    }
    if len({r["pretraining"] for r in rows}) > 1:  # several pretrainings: rank them
        results["backbones"] = rank_pretrainings(table, pairs, rows)
        results["recommendation"] += ranking_lines(results["backbones"])
    atomic_write_json(sweep / "results.json", results)
    atomic_write_csv(sweep / "results.csv", list(rows[0]), ([r[k] for k in rows[0]] for r in rows))
    atomic_write_csv(
        sweep / "summary.csv", list(table[0]), ([t[k] for k in table[0]] for t in table)
    )
    return results
