"""Imbalanced labels on AID (issue 13): what --class-weights / --sampler balanced recover.

Protocol per seed: 5 of the 30 AID classes (drawn by the seed) get 10x fewer labels than the
others (4 train + 1 validation chips against 40 + 10); every class has the same 50 test chips;
the other chips are unused. Offline Lite0 at 160 px. Cells: linear-probe with and without
balanced class weights (cached features, so every probe cell shares one feature pass), and
feature-extraction (4 epochs) plain, with balanced loss weights, and with the balanced sampler.
Reports OA, AA and macro F1 (what imbalance hurts), and the minority classes' mean accuracy;
mean and 95% t-interval over seeds, results in benchmarks/results/imbalance.json.

    .venv/bin/python benchmarks/imbalance.py [--data DIR] [--seeds 3] [--only lp|fe]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "aid150"
OUT = REPO / "benchmarks" / "results" / "imbalance.json"
CELLS = {
    "lp": {"strategy": "linear-probe"},
    "lp+weights": {"strategy": "linear-probe", "class_weights": "balanced"},
    "fe": {"strategy": "feature-extraction", "epochs": 4},
    "fe+weights": {"strategy": "feature-extraction", "epochs": 4, "class_weights": "balanced"},
    "fe+sampler": {"strategy": "feature-extraction", "epochs": 4, "sampler": "balanced"},
}
MINORITY, MAJOR, MINOR, TEST = 5, (40, 10), (4, 1), 50


def write_split(data: Path, seed: int, path: Path) -> list[str]:
    """An imbalanced split file; returns the minority classes."""
    from geotune.data.folder import scan_folder

    folder = scan_folder(data)
    rng = np.random.default_rng(seed)
    minority = sorted(rng.choice(folder.classes, MINORITY, replace=False).tolist())
    rows = []
    for c, name in enumerate(folder.classes):
        idx = rng.permutation(np.flatnonzero(folder.labels == c))
        n_train, n_val = MINOR if name in minority else MAJOR
        parts = ["train"] * n_train + ["val"] * n_val + ["test"] * TEST
        parts += ["unused"] * (len(idx) - len(parts))
        rows += [(folder.paths[i], name, s) for i, s in zip(idx, parts, strict=True)]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "class", "split"])
        w.writerows(sorted(rows))
    return minority


def run_cell(data: Path, runs: Path, split: Path, cell: str, seed: int, minority) -> dict:
    from geotune.config import make_config
    from geotune.engine.trainer import train

    cfg = make_config(
        data=data, output=runs, split=split, seed=seed, image_size=160,
        name=f"{cell}-s{seed}", **CELLS[cell],
    )  # fmt: skip
    m = train(cfg).test_metrics
    per = m["per_class"]
    return {
        "oa": m["overall_accuracy"],
        "aa": m["average_accuracy"],
        "macro_f1": m["macro_f1"],
        "minority_accuracy": float(np.mean([per[c]["accuracy"] for c in minority])),
    }


def interval(x) -> str:
    x = 100 * np.asarray(x)
    if len(x) < 2:
        return f"{x.mean():.1f}"
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return f"{x.mean():.1f} ± {half:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only", choices=["lp", "fe"])
    args = ap.parse_args()
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    runs = Path(os.environ.get("GEOTUNE_BENCH_RUNS", tempfile.mkdtemp(prefix="gt-imb-")))
    runs.mkdir(parents=True, exist_ok=True)
    cells = [c for c in CELLS if args.only is None or c.split("+")[0] == args.only]
    for seed in range(args.seeds):
        split = runs / f"split-s{seed}.csv"
        minority = write_split(args.data, seed, split)
        for cell in cells:
            key = f"{cell}|{seed}"
            if key not in results:
                results[key] = run_cell(args.data, runs, split, cell, seed, minority)
                OUT.parent.mkdir(parents=True, exist_ok=True)
                OUT.write_text(json.dumps(results, indent=1))
            print(key, {k: round(100 * v, 1) for k, v in results[key].items()}, flush=True)
    print("| cell | OA | AA | macro F1 | minority classes' accuracy |")
    print("|---|---|---|---|---|")
    for cell in CELLS:
        rows = [results[f"{cell}|{s}"] for s in range(args.seeds) if f"{cell}|{s}" in results]
        if rows:
            cols = [
                interval([r[k] for r in rows])
                for k in ("oa", "aa", "macro_f1", "minority_accuracy")
            ]
            print(f"| {cell} ({len(rows)} seeds) | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    main()
