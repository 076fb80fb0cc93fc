"""Multi-label evidence on real imagery: geotune's recipes against the obvious baselines.

The development set is built from real AID chips (no real multi-label set ships here): each
chip is a 2 x 2 mosaic of 150 px aid150 chips drawn from one to three of ten AID classes (every
third class in sorted order), and its labels are exactly those classes. Each aid150 chip is used
once. All runs of a seed share one split (the split depends on the data and the seed only).

Recipes, each as a user runs it (`geotune train --data M --labels labels.csv ...`):
- ``default``: no strategy flag (full fine-tuning, BCE with per-label positive weights, label
  smoothing, thresholds chosen per label on validation);
- ``probe-rot2``: the README main job (``--strategy linear-probe --tta rot2``);
- baseline ``ovr-final``: a one-vs-rest logistic probe on the final pooled features
  (``--probe-stages 1 --probe-power 1``);
- baseline ``full-bce``: full fine-tuning with plain BCE (``--label-pos-weight none
  --label-smoothing 0``), scored at a 0.5 threshold.

Reported per seed: macro mAP, macro F1 at the validation thresholds and at 0.5; then paired
differences (mean and 95% t-interval over seeds).

    python benchmarks/multilabel.py --seeds 0 1 2 --out benchmarks/results/multilabel.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
AID = Path(os.environ.get("GEOTUNE_AID150", ROOT.parent / "shared" / "datasets" / "aid150"))
RECIPES = {
    "default": [],
    "probe-rot2": ["--strategy", "linear-probe", "--tta", "rot2"],
    "ovr-final": ["--strategy", "linear-probe", "--probe-stages", "1", "--probe-power", "1"],
    "full-bce": ["--strategy", "full", "--label-pos-weight", "none", "--label-smoothing", "0"],
}


def build(out: Path, n: int, seed: int = 0) -> tuple[Path, Path, list[str]]:
    """``n`` mosaics under ``out/chips`` and their label table; returns (chips, table, labels)."""
    rng = np.random.default_rng(seed)
    classes = sorted(p.name for p in AID.iterdir() if p.is_dir())[::3]
    pools = {c: list(rng.permutation(sorted((AID / c).iterdir()))) for c in classes}
    chips, table = out / "chips", out / "labels.csv"
    if table.is_file():
        return chips, table, classes
    chips.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        chosen = rng.choice(len(classes), size=int(rng.integers(1, 4)), replace=False)
        tiles = [classes[chosen[t % len(chosen)]] for t in rng.permutation(4)]
        mosaic = Image.new("RGB", (300, 300))
        for t, c in enumerate(tiles):
            f = pools[c].pop()
            mosaic.paste(
                Image.open(f).convert("RGB").resize((150, 150)), (150 * (t % 2), 150 * (t // 2))
            )
        name = f"m{i:04d}.jpg"
        mosaic.save(chips / name, quality=95)
        rows.append([name, ";".join(sorted({classes[j] for j in chosen}))])
    with table.open("w", newline="") as fh:
        csv.writer(fh).writerows([["path", "labels"], *rows])
    return chips, table, classes


def macro_f1_at(run: Path, labels: list[str], threshold: float | None) -> float:
    """Macro F1 over the test chips at ``threshold`` (None: the run's own thresholds)."""
    from geotune.metrics.multilabel import multilabel_metrics

    rows = list(csv.DictReader((run / "test_predictions.csv").open()))
    names = json.loads((run / "test_metrics.json").read_text())["labels"]
    y = np.array([[c in r["true"].split(";") for c in names] for r in rows], dtype=np.uint8)
    p = np.array([[float(r[f"p_{c}"]) for c in names] for r in rows])
    own = json.loads((run / "test_metrics.json").read_text())["thresholds"]
    th = np.array([own[c] if threshold is None else threshold for c in names])
    return float(multilabel_metrics(y, p, th, names)["f1_macro"])


def train(chips: Path, table: Path, work: Path, recipe: str, seed: int, extra: list[str]) -> dict:
    name = f"{recipe}-s{seed}"
    run = work / "runs" / name
    if not (run / "test_metrics.json").is_file():
        cmd = [sys.executable, "-m", "geotune.cli", "train", "--data", str(chips), "--labels",
               str(table), "--train-fraction", "0.4", "--seed", str(seed), "--output",
               str(work / "runs"), "--name", name, *RECIPES[recipe], *extra]  # fmt: skip
        t0 = time.perf_counter()
        env = {**os.environ, "GEOTUNE_CACHE": str(work / "cache"), "PYTHONWARNINGS": "ignore"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
        (run / "wall_s.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    m = json.loads((run / "test_metrics.json").read_text())
    return {
        "recipe": recipe,
        "seed": seed,
        "map_macro": m["map_macro"],
        "f1_macro_val_thresholds": m["f1_macro"],
        "f1_macro_at_0.5": macro_f1_at(run, m["labels"], 0.5),
        "wall_s": float((run / "wall_s.txt").read_text()),
        "n_test": m["n"],
    }


def paired(rows: list[dict], a: str, b: str, key: str) -> dict:
    da = {r["seed"]: r[key] for r in rows if r["recipe"] == a}
    db = {r["seed"]: r[key] for r in rows if r["recipe"] == b}
    d = np.array([da[s] - db[s] for s in sorted(da) if s in db])
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else None
    return {"a": a, "b": b, "metric": key, "mean_diff": float(d.mean()), "ci95_half": half,
            "wins": int((d > 0).sum()), "n": len(d)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/gt-multilabel"))
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES))
    ap.add_argument(
        "--epochs", type=int, default=None, help="fine-tuning epochs (default: geotune's)"
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    chips, table, classes = build(args.work, args.n)
    rows = []
    for seed in args.seeds:
        for recipe in args.recipes:
            extra = (
                ["--epochs", str(args.epochs)]
                if args.epochs and recipe in ("default", "full-bce")
                else []
            )
            rows.append(train(chips, table, args.work, recipe, seed, extra))
            print(json.dumps(rows[-1]), flush=True)
    comparisons = [paired(rows, "default", b, "map_macro") for b in ("ovr-final", "full-bce")]
    comparisons += [paired(rows, "probe-rot2", b, "map_macro") for b in ("ovr-final", "full-bce")]
    for r in args.recipes:
        per = [x for x in rows if x["recipe"] == r]
        d = np.array([x["f1_macro_val_thresholds"] - x["f1_macro_at_0.5"] for x in per])
        half = (
            stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else None
        )
        comparisons.append({"a": f"{r} thresholds", "b": f"{r} at 0.5", "metric": "f1_macro",
                            "mean_diff": float(d.mean()), "ci95_half": half,
                            "wins": int((d > 0).sum()), "n": len(d)})  # fmt: skip
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.node()} ({os.cpu_count()} cores, CPU)",
        "command": " ".join(sys.argv),
        "data": f"{args.n} 2x2 mosaics of aid150 chips, labels = their classes ({', '.join(classes)})",
        "rows": rows,
        "comparisons": comparisons,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
