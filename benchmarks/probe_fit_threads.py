"""The linear probe's fit (scikit-learn's lbfgs over the power x C grid) at several BLAS thread
counts: on the 16-core GPU machine the fit of 870 chips took 45 s while the features took 4 s.

    python benchmarks/probe_fit_threads.py FEATURES.npz [--threads 16,4,1]

FEATURES.npz holds ``x`` (chips x features, float32) and ``y`` (class indices); the script
splits them 870 / 210 (stratified, seed 0) like benchmarks/gpu_device.sh's runs.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_info, threadpool_limits

from geotune.engine.probe import fit_logistic
from geotune.models.classifier import signed_power


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("features")
    ap.add_argument("--threads", default=f"{os.cpu_count()},4,1")
    args = ap.parse_args()
    data = np.load(args.features)
    x, y = data["x"], data["y"]
    tr, va = train_test_split(np.arange(len(y)), train_size=870, test_size=210, stratify=y,
                              random_state=0)  # fmt: skip
    print("BLAS:", [(i["internal_api"], i["num_threads"]) for i in threadpool_info()])
    for n in [int(t) for t in args.threads.split(",")]:
        for warm in (False, True):
            t0 = time.perf_counter()
            with threadpool_limits(n):
                scores = fits(x, y, tr, va, warm)
            print(f"threads {n}, warm start {warm}: 10 fits in {time.perf_counter() - t0:.1f} s "
                  f"(val accuracy {', '.join(f'{s:.3f}' for s in scores)})", flush=True)  # fmt: skip


def fits(x, y, tr, va, warm: bool) -> list[float]:
    """The probe's 2 x 5 grid; ``warm``: each power's C path from strong to weak regularisation,
    each fit starting from the previous solution (sklearn's warm_start)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scores = []
    for power in (1.0, 0.5):
        z = signed_power(torch.from_numpy(x), power).numpy()
        if not warm:
            for C in (0.001, 0.01, 0.1, 1.0, 10.0):
                scaler, clf = fit_logistic(z[tr], y[tr], C)
                scores.append(float((clf.predict(scaler.transform(z[va])) == y[va]).mean()))
            continue
        scaler = StandardScaler().fit(z[tr])
        clf = LogisticRegression(max_iter=2000, warm_start=True)
        for C in (0.001, 0.01, 0.1, 1.0, 10.0):
            clf.set_params(C=C).fit(scaler.transform(z[tr]), y[tr])
            scores.append(float((clf.predict(scaler.transform(z[va])) == y[va]).mean()))
    return scores


if __name__ == "__main__":
    main()
