"""The fine-tuning defaults, one knob at a time (issue 13): which of them are worth changing.

Protocol: `geotune train` with no option but the data and split (full fine-tuning: head LR 1e-3,
backbone at 0.5x, 10 epochs, 1 warmup epoch, label smoothing 0.1, random resized crops at 0.5-1
of the area, flips and 90-degree rotations, the weights' 224 px), and the same run with exactly
one knob moved per cell. Same split and seed for every cell of a (dataset, seed), so differences
are paired. Datasets: RSSCN7 (200 px RGB, 20% labelled: 32 train + 8 validation chips per class,
1,120 test) and eurosat_ms_dev (64 px, 13-band Sentinel-2, 50% labelled: 80 train + 20
validation, 99 test); AID's 20/80 defaults were measured separately (BENCHMARKS.md), and
``aid-10`` checks single knobs at 10 labels per class. Results:
benchmarks/results/recipe_sweep.json (a re-run continues where it stopped).

    .venv/bin/python benchmarks/recipe_sweep.py [--datasets rsscn7,eurosat] [--seeds 0,1]
        [--cells default,lr-3e-4,...]
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
SHARED = REPO.parent / "shared" / "datasets"
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
    # Layer-wise decay instead of one backbone scale: the top backbone group at the head's rate.
    "layer-decay-0.7": {"backbone_lr_scale": 1.0, "layer_decay": 0.7},
    "epochs-5": {"epochs": 5},
    "epochs-20": {"epochs": 20},
    "warmup-0": {"warmup_epochs": 0.0},
    "smoothing-0": {"label_smoothing": 0.0},
    "crop-none": {"crop_scale": (1.0, 1.0)},
    "crop-0.25": {"crop_scale": (0.25, 1.0)},
    "size-native": {"image_size": "native"},
}


def run_cell(dataset: str, cell: str, seed: int, runs: Path) -> dict:
    from geotune.config import make_config
    from geotune.engine.trainer import train

    data, base, native = DATASETS[dataset]
    options = dict(CELLS[cell])
    if options.get("image_size") == "native":
        options["image_size"] = native
    cfg = make_config(
        data=data, output=runs, seed=seed, name=f"{dataset}-{cell}-s{seed}", **base, **options
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


def table(results: dict, datasets: list[str], cells: list[str]) -> None:
    """Per dataset: each cell's mean OA and its paired difference to the default."""
    for dataset in datasets:
        print(f"\n{dataset}\n| cell | OA per seed | mean | - default (paired) | wall s |")
        print("|---|---|---|---|---|")
        for cell in cells:
            got = {
                k.split("|")[2]: r for k, r in results.items() if k.startswith(f"{dataset}|{cell}|")
            }
            if not got:
                continue
            seeds = sorted(got)
            oa = [got[s]["oa"] for s in seeds]
            base = [results.get(f"{dataset}|default|{s}") for s in seeds]
            diff = ""
            if cell != "default" and all(base):
                diff = interval(np.subtract(oa, [b["oa"] for b in base]))
            per_seed = " / ".join(f"{100 * v:.2f}" for v in oa)
            wall = np.mean([got[s]["wall_s"] for s in seeds])
            print(f"| {cell} | {per_seed} | {100 * np.mean(oa):.2f} | {diff} | {wall:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="rsscn7,eurosat")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--cells", default=",".join(CELLS))
    ap.add_argument("--table", action="store_true", help="print the table only")
    args = ap.parse_args()
    datasets, cells = args.datasets.split(","), args.cells.split(",")
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    runs = Path(os.environ.get("GEOTUNE_BENCH_RUNS", tempfile.mkdtemp(prefix="gt-sweep-")))
    for seed in [] if args.table else [int(s) for s in args.seeds.split(",")]:
        for dataset in datasets:
            for cell in cells:
                key = f"{dataset}|{cell}|{seed}"
                if key not in results:
                    results[key] = run_cell(dataset, cell, seed, runs)
                    OUT.parent.mkdir(parents=True, exist_ok=True)
                    OUT.write_text(json.dumps(results, indent=1))
                r = results[key]
                print(key, f"{100 * r['oa']:.2f}", f"{r['wall_s']:.0f} s", flush=True)
    table(results, datasets, cells)


if __name__ == "__main__":
    main()
