"""The fine-tuning defaults, one knob at a time (issue 13): which of them are worth changing.

Protocol: `geotune train` with no option but the data and split (full fine-tuning; when the
knob sweep ran, commit d38d74f: head LR 1e-3, backbone at 0.5x, 10 epochs, 1 warmup epoch, label
smoothing 0.1, random resized crops at 0.5-1 of the area, flips and 90-degree rotations, the
weights' 224 px; crops are off since), and the same run with exactly
one knob moved per cell. Same split and seed for every cell of a (dataset, seed), so differences
are paired. Datasets: RSSCN7 (200 px RGB, 20% labelled: 32 train + 8 validation chips per class,
1,120 test) and eurosat_ms_dev (64 px, 13-band Sentinel-2, 50% labelled: 80 train + 20
validation, 99 test); AID's 20/80 defaults were measured separately (BENCHMARKS.md), and
``aid-10`` checks single knobs at 10 labels per class. Results:
benchmarks/results/recipe_sweep.json, or ``--out`` (a re-run continues where it stopped).

``--strategies`` runs the cells for other strategies at their defaults; the ``old-default`` cell
restores what each strategy's defaults were before issue 13 changed them, so ``--cells
default,old-default`` is the before/after table of every strategy's default, side by side.

    .venv/bin/python benchmarks/recipe_sweep.py [--datasets rsscn7,eurosat] [--seeds 0,1]
        [--cells default,lr-3e-4,...] [--strategies full,lp-ft,...] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
# GEOTUNE_DATASETS: another folder holding the datasets (the lent GPU machine has no ../shared).
SHARED = Path(os.environ.get("GEOTUNE_DATASETS", REPO.parent / "shared" / "datasets"))
OUT = REPO / "benchmarks" / "results" / "recipe_sweep.json"
# name -> (data folder, options every cell of it takes, the chips' own size in pixels)
DATASETS = {
    "rsscn7": (SHARED / "rsscn7_dev200", {"train_fraction": 0.2}, 200),
    "eurosat": (
        SHARED / "eurosat_ms_dev",
        {"train_fraction": 0.5, "band_names": "sentinel2-13"},
        64,
    ),
    # AID at 10 labels per class (8 train + 2 validation; 9,700 test): a check of a knob that
    # moved on the other two, at a fifth of the 20/80 protocol's training cost.
    "aid-10": (SHARED / "aid150", {"labels_per_class": 10}, 150),
}
# One knob per cell, moved from the default in both directions where both are plausible.
CELLS: dict[str, dict] = {
    "default": {},
    "lr-3e-4": {"lr": 3e-4},
    "lr-3e-3": {"lr": 3e-3},
    "lr-1e-2": {"lr": 1e-2},
    # Layer-wise decay instead of one backbone scale: the top backbone group at the head's rate.
    "layer-decay-0.7": {"backbone_lr_scale": 1.0, "layer_decay": 0.7},
    "epochs-5": {"epochs": 5},
    "epochs-20": {"epochs": 20},
    "warmup-0": {"warmup_epochs": 0.0},
    "smoothing-0": {"label_smoothing": 0.0},
    "crop-none": {"crop_scale": (1.0, 1.0)},
    "crop-0.25": {"crop_scale": (0.25, 1.0)},
    "size-native": {"image_size": "native"},
    # Three pooled stages asked for explicitly (kNN's default before it became its default).
    "stages-3": {"probe_stages": [3]},
    "old-default": {},  # filled per strategy by old_defaults()
    # Band handling on multispectral chips (issue 27): a rewired stem (mean / zero kernels for
    # the non-RGB bands), the stem left as trained seeing false-colour composites, or the three
    # RGB bands alone.
    "band-mean": {"band_init": "mean"},
    "band-zero": {"band_init": "zero"},
    "band-composites": {"band_init": "composites"},
    "band-rgb": {"bands": ["B04", "B03", "B02"]},
    # Per-band statistics beside the frozen features (models/band_statistics.py), off and on.
    "band-zero-no-statistics": {"band_init": "zero", "band_statistics": False},
    "band-statistics": {"band_statistics": True},
}
# Options a strategy needs beyond the data: partial has no default depth.
STRATEGIES: dict[str, dict] = {
    "full": {},
    "lp-ft": {},
    "gradual": {},
    "partial": {"unfreeze_last": 2},
    "feature-extraction": {},
    "linear-probe": {},
    "knn": {},
    "auto": {},  # what `--strategy auto` chooses for the data (engine/auto.py)
}


def old_defaults(strategy: str) -> dict:
    """The defaults that issue 13 changed, as they were before, for the options `strategy` reads.

    Backbone at 0.1x the head's LR (trained backbones), random resized crops at 0.5-1 of the
    area (trained strategies), final features only (the linear probe, kNN and feature
    extraction).
    """
    if strategy in ("linear-probe", "knn"):
        return {"probe_stages": [1]}
    old = {"crop_scale": (0.5, 1.0)}
    if strategy == "feature-extraction":
        old["probe_stages"] = [1]
    else:
        old["backbone_lr_scale"] = 0.1
    return old


def cell_key(strategy: str, cell: str) -> str:
    """The cell's name in the results: the full fine-tuning cells keep their first names."""
    return cell if strategy == "full" else f"{strategy}:{cell}"


def run_cell(dataset: str, strategy: str, cell: str, seed: int, runs: Path) -> dict:
    from geotune.config import make_config
    from geotune.engine.trainer import train

    data, base, native = DATASETS[dataset]
    options = {**STRATEGIES[strategy], **CELLS[cell]}
    if cell == "old-default":
        options.update(old_defaults(strategy))
    if options.get("image_size") == "native":
        options["image_size"] = native
    name = f"{dataset}-{cell_key(strategy, cell).replace(':', '-')}-s{seed}"
    cfg = make_config(
        data=data, output=runs, seed=seed, name=name, strategy=strategy, **base, **options
    )
    t0 = time.perf_counter()
    result = train(cfg)
    s = result.summary
    return {
        "oa": result.test_metrics["overall_accuracy"],
        "aa": result.test_metrics.get("average_accuracy"),
        "best_val": s.get("best_val_accuracy"),
        "best_epoch": s.get("best_epoch"),
        "wall_s": time.perf_counter() - t0,
    }


def interval(x) -> str:
    x = 100 * np.asarray(x)
    if len(x) < 2:
        return f"{x.mean():+.1f}" if len(x) else ""
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return f"{x.mean():+.1f} ± {half:.1f}"


def table(results: dict, datasets: list[str], cells: list[str], strategy: str = "full") -> None:
    """Per dataset: each cell's mean OA and its paired difference to the default."""
    cells = [cell_key(strategy, c) for c in cells]
    default = cell_key(strategy, "default")
    for dataset in datasets:
        print(
            f"\n{dataset}, {strategy}\n| cell | OA per seed | mean | - default (paired) | wall s |"
        )
        print("|---|---|---|---|---|")
        for cell in cells:
            got = {
                k.split("|")[2]: r for k, r in results.items() if k.startswith(f"{dataset}|{cell}|")
            }
            if not got:
                continue
            seeds = sorted(got)
            oa = [got[s]["oa"] for s in seeds]
            base = [results.get(f"{dataset}|{default}|{s}") for s in seeds]
            diff = ""
            if cell != default and all(base):
                diff = interval(np.subtract(oa, [b["oa"] for b in base]))
            per_seed = " / ".join(f"{100 * v:.2f}" for v in oa)
            wall = np.mean([got[s]["wall_s"] for s in seeds])
            print(f"| {cell} | {per_seed} | {100 * np.mean(oa):.2f} | {diff} | {wall:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="rsscn7,eurosat")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--cells", default=",".join(CELLS))
    ap.add_argument("--strategies", default="full", help=f"any of {','.join(STRATEGIES)}")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--table", action="store_true", help="print the table only")
    args = ap.parse_args()
    datasets, cells = args.datasets.split(","), args.cells.split(",")
    strategies = args.strategies.split(",")
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    runs = Path(os.environ.get("GEOTUNE_BENCH_RUNS", tempfile.mkdtemp(prefix="gt-sweep-")))
    for seed in [] if args.table else [int(s) for s in args.seeds.split(",")]:
        for dataset in datasets:
            for strategy in strategies:
                for cell in cells:
                    key = f"{dataset}|{cell_key(strategy, cell)}|{seed}"
                    if key not in results:
                        results[key] = run_cell(dataset, strategy, cell, seed, runs)
                        args.out.parent.mkdir(parents=True, exist_ok=True)
                        args.out.write_text(json.dumps(results, indent=1))
                    r = results[key]
                    print(key, f"{100 * r['oa']:.2f}", f"{r['wall_s']:.0f} s", flush=True)
    for strategy in strategies:
        table(results, datasets, cells, strategy)


if __name__ == "__main__":
    main()
