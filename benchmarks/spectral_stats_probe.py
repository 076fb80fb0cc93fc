"""Does a frozen RGB linear probe gain from per-band spectral statistics of all 13 bands?

Issue 27.1 asks that every frozen strategy's multispectral default beat the same strategy on the
RGB bands; the stem-preserving default (zero kernels) ties RGB by construction. This measures
the next candidate: the RGB probe's cached features (``geotune train --bands B04,B03,B02``)
with, concatenated, the mean and standard deviation of log(1 + DN) of each of the 13 bands (26
numbers per chip), fitted with the probe's own candidate grid (power x C chosen on validation)
on the run's own split per seed (paired).

    python benchmarks/spectral_stats_probe.py --work /tmp/spec --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "eurosat_ms_dev"


def probe_accuracy(X, y, tr, va, te) -> float:
    """Test OA of the probe's recipe: power and C chosen on validation, refit on train + val."""
    from geotune.engine.probe import fit_logistic

    best = None
    for a in (1.0, 0.5):
        Z = np.sign(X) * np.abs(X) ** a
        for C in (0.001, 0.01, 0.1, 1.0, 10.0):
            scaler, clf = fit_logistic(Z[tr], y[tr], C)
            score = clf.score(scaler.transform(Z[va]), y[va])
            if best is None or score > best[0]:
                best = (score, a, C)
    _, a, C = best
    Z = np.sign(X) * np.abs(X) ** a
    lab = np.concatenate([tr, va])
    scaler, clf = fit_logistic(Z[lab], y[lab], C)
    return float(clf.score(scaler.transform(Z[te]), y[te]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/spec"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = ap.parse_args()
    os.environ["GEOTUNE_CACHE"] = str(args.work / "cache")
    from geotune.data import decode_folder, scan_folder
    from geotune.data.bands import BandRequest

    folder = scan_folder(DATA)
    images = decode_folder(folder, 64, bands=BandRequest(band_names="sentinel2-13"))
    logs = np.log1p(np.asarray(images.pixels, dtype=np.float64))
    stats = np.concatenate([logs.mean((2, 3)), logs.std((2, 3))], 1)  # 26 per chip
    y = folder.labels
    rows = []
    for seed in args.seeds:
        name = f"rgb{seed}"
        run = args.work / "runs" / name
        cache = args.work / f"cache-{seed}"  # one per seed: band scaling is fitted per split
        if not run.exists():
            subprocess.run(
                [sys.executable, "-m", "geotune.cli", "train", "--data", str(DATA),
                 "--band-names", "sentinel2-13", "--bands", "B04,B03,B02",
                 "--strategy", "linear-probe", "--train-fraction", "0.5", "--seed", str(seed),
                 "--output", str(args.work / "runs"), "--name", name],
                check=True, capture_output=True, env={**os.environ, "GEOTUNE_CACHE": str(cache)},
            )  # fmt: skip
        summary = json.loads((run / "summary.json").read_text())
        with open(run / "split.csv") as f:
            where = {r["path"]: r["split"] for r in csv.DictReader(f)}
        split = np.array([where[p] for p in folder.paths])
        tr, va, te = (np.flatnonzero(split == k) for k in ("train", "val", "test"))
        (entry,) = (cache / "features").glob("*.npy")  # the run's RGB features
        feats = np.load(entry)
        row = {
            "seed": seed,
            "geotune_rgb": summary["test_overall_accuracy"],
            "rgb": probe_accuracy(feats, y, tr, va, te),
            "rgb+spectral_stats": probe_accuracy(np.hstack([feats, stats]), y, tr, va, te),
            "spectral_stats_only": probe_accuracy(stats, y, tr, va, te),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    for key in rows[0]:
        if key != "seed":
            print(key, round(100 * float(np.mean([r[key] for r in rows])), 2), flush=True)


if __name__ == "__main__":
    main()
