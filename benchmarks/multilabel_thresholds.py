"""Which per-label thresholds, chosen on validation, give the best test macro F1?

The multi-label benchmark's README probe (``benchmarks/multilabel.py``'s mosaics of real AID
chips, ``--strategy linear-probe --tta rot2``) holds 8-11 validation positives per label, so a
label's own F1-optimal threshold is noisy. For each seed this trains the run once, keeps the
validation probabilities that chose its thresholds and the test probabilities, and scores three
rules on the test chips: 0.5; each label's own F1-optimal threshold; and geotune's rule (the own
threshold shrunk towards the one threshold best for all labels, metrics.selection).

    python benchmarks/multilabel_thresholds.py --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import multilabel  # noqa: E402 - the benchmark's data


def macro_f1(y: np.ndarray, p: np.ndarray, th) -> float:
    pred, has = p >= th, y.sum(0) > 0
    f1 = 2 * (pred & (y > 0)).sum(0) / np.maximum(pred.sum(0) + y.sum(0), 1)
    return float(100 * f1[has].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/gt-thresholds"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("GEOTUNE_CACHE", str(args.work / "cache"))
    import geotune.engine.outputs as outputs
    from geotune.config import make_config
    from geotune.engine import train
    from geotune.metrics.selection import f1_thresholds, validation_thresholds

    seen = {}

    def keep(y, p):  # the validation chips the run's thresholds are chosen on
        seen["y"], seen["p"] = np.asarray(y), np.asarray(p)
        return validation_thresholds(y, p)

    outputs.validation_thresholds = keep
    chips, table, _ = multilabel.build(args.work, 500)
    rows = []
    for seed in args.seeds:
        run = train(make_config(data=chips, labels=table, train_fraction=0.4, seed=seed,
                                strategy="linear-probe", tta="rot2", output=args.work / "runs",
                                name=f"s{seed}-{time.strftime('%H%M%S')}"))  # fmt: skip
        names = run.test_metrics["labels"]
        pred = list(csv.DictReader((run.run_dir / "test_predictions.csv").open()))
        y = np.array([[c in r["true"].split(";") for c in names] for r in pred], dtype=np.uint8)
        p = np.array([[float(r[f"p_{c}"]) for c in names] for r in pred])
        yv, pv = seen["y"], seen["p"]
        row = {
            "seed": seed,
            "val_positives_per_label": yv.sum(0).tolist(),
            "f1_macro_at_0.5": macro_f1(y, p, 0.5),
            "f1_macro_own_f1_optimal": macro_f1(y, p, f1_thresholds(yv, pv)),
            "f1_macro_geotune_shrunk": macro_f1(y, p, validation_thresholds(yv, pv)),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    for rule in ("own_f1_optimal", "geotune_shrunk"):
        d = np.array([r[f"f1_macro_{rule}"] - r["f1_macro_at_0.5"] for r in rows])
        print(f"{rule} vs 0.5: {d.mean():+.2f} points, higher on {(d > 0).sum()}/{len(d)} seeds")
    if args.out:
        args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
