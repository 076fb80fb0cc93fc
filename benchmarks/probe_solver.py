"""The linear probe's two solvers side by side: scikit-learn's lbfgs (in RAM) and the streamed one.

Both fit the same candidates (power x C) on the same real cached features and the same
training rows, and are scored on the same validation and test rows; the fit times include
everything each solver needs (power normalisation and standardisation).

    python benchmarks/probe_solver.py --features CACHE/features/KEY.npy --split RUN/split.csv \
        --train-sizes 1600 4000 8000
"""

from __future__ import annotations

import argparse
import csv
import json
import time

import numpy as np
import torch

from geotune.engine.probe import fit_logistic
from geotune.engine.streamed_probe import fit_standardiser, fit_streamed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", required=True, help="a features .npy of the geotune cache")
    ap.add_argument("--split", required=True, help="split.csv of the run that cached them")
    ap.add_argument("--train-sizes", type=int, nargs="+", default=[1600, 4000, 8000])
    ap.add_argument("--C", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    ap.add_argument("--power", type=float, default=0.5)
    args = ap.parse_args()
    feats = np.load(args.features, mmap_mode="r")
    with open(args.split) as f:
        rows = list(csv.DictReader(f))
    classes = sorted({r["class"] for r in rows})
    y = np.array([classes.index(r["class"]) for r in rows])
    split = np.array([r["split"] for r in rows])
    rng = np.random.default_rng(0)
    va = np.flatnonzero(split == "val")
    pool = rng.permutation(np.flatnonzero(split != "val"))
    test = pool[: len(pool) // 4]  # a fixed test quarter; training rows come from the rest
    dev = torch.device("cpu")
    for n in args.train_sizes:
        tr = np.sort(pool[len(pool) // 4 :][:n])
        t0 = time.perf_counter()
        scaler, warm, streamed = fit_standardiser(feats, tr, args.power, feats.shape[1]), None, {}
        for c in args.C:
            warm = streamed[c] = fit_streamed(feats, y, tr, scaler, c, dev, init=warm)
        t_streamed = time.perf_counter() - t0
        t0 = time.perf_counter()
        Z = np.sign(feats) * np.abs(feats) ** args.power
        lbfgs = {c: fit_logistic(Z[tr], y[tr], c) for c in args.C}
        t_lbfgs = time.perf_counter() - t0
        for c in args.C:
            m, (s, clf) = streamed[c], lbfgs[c]
            row = {
                "train_rows": len(tr),
                "C": c,
                "streamed_val": float((m.classes_[m.predict_proba(feats, va, dev).argmax(1)] == y[va]).mean()),
                "lbfgs_val": float(clf.score(s.transform(Z[va]), y[va])),
                "streamed_test": float((m.classes_[m.predict_proba(feats, test, dev).argmax(1)] == y[test]).mean()),
                "lbfgs_test": float(clf.score(s.transform(Z[test]), y[test])),
            }  # fmt: skip
            print(json.dumps(row), flush=True)
        print(json.dumps({"train_rows": len(tr), "streamed_fit_s": round(t_streamed, 2),
                          "lbfgs_fit_s": round(t_lbfgs, 2)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
