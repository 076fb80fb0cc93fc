"""Stronger frozen features for few labels on AID (issue 13): views and backbone ensembles.

Variants added later: pooled stage outputs (``--probe-stages``) and all eight D4 views.

Protocol: 5 and 20 labels per class (80% train / 20% validation of them, as geotune splits),
seeds 0-2, every other AID chip is test; the same split for every variant of a seed, so the
differences are paired. Variants: today's linear probe (offline Lite0, 224 px), the same with
rotation views averaged into the features (``--tta rot2`` / ``d4``), and an ensemble of the two
offline ImageNet backbones (Lite0 + MobileNetV2) with and without views. Prints mean OA with a
95% t-interval, the paired difference to today's probe, and each variant's first-run feature
time (the forward passes over all 10,000 chips; the fits take seconds). Results:
benchmarks/results/frozen_features.json (a re-run continues where it stopped).

    .venv/bin/python benchmarks/frozen_features.py [--data DIR] [--variants a,b]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "aid150"
OUT = REPO / "benchmarks" / "results" / "frozen_features.json"
LITE0, ENSEMBLE = "tf_efficientnet_lite0", "tf_efficientnet_lite0+mobilenetv2_100"
VARIANTS = {
    "lp": {},
    "lp-rot2": {"tta": "rot2"},
    "ensemble": {"backbone": ENSEMBLE},
    "ensemble-rot2": {"backbone": ENSEMBLE, "tta": "rot2"},
    # Pooled stage outputs (models/stages.py): forced to 3, or 1-3 chosen on validation.
    "lp-stages3": {"probe_stages": [3]},
    "lp-stages": {"probe_stages": [1, 2, 3]},
    "lp-d4": {"tta": "d4"},
    # The README's main command: today's default probe (3 stages) with two rotation views.
    "lp-stages3-rot2": {"probe_stages": [3], "tta": "rot2"},
}
BUDGETS, SEEDS = (5, 20), (0, 1, 2)


def run_cell(data: Path, runs: Path, variant: str, budget: int, seed: int) -> dict:
    from geotune.config import make_config
    from geotune.engine.trainer import train

    options = {"backbone": LITE0, **VARIANTS[variant]}
    cfg = make_config(
        data=data, output=runs, strategy="linear-probe", labels_per_class=budget, seed=seed,
        name=f"{variant}-{budget}-s{seed}", **options,
    )  # fmt: skip
    result = train(cfg)
    s = result.summary
    return {
        "oa": result.test_metrics["overall_accuracy"],
        "features_from_cache": s["features_from_cache"],
        "feature_time_s": s["feature_time_s"],
        "feature_dim": s["feature_dim"],
        "feature_engine": s.get("feature_engine"),
        "probe_stages": s.get("probe_stages"),
    }


def interval(x) -> str:
    x = 100 * np.asarray(x)
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else 0
    return f"{x.mean():.1f} ± {half:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    variants = args.variants.split(",")
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    runs = Path(os.environ.get("GEOTUNE_BENCH_RUNS", tempfile.mkdtemp(prefix="gt-ff-")))
    for variant in variants:
        for budget in BUDGETS:
            for seed in SEEDS:
                key = f"{variant}|{budget}|{seed}"
                if key not in results:
                    results[key] = run_cell(args.data, runs, variant, budget, seed)
                    OUT.parent.mkdir(parents=True, exist_ok=True)
                    OUT.write_text(json.dumps(results, indent=1))
                print(key, f"{100 * results[key]['oa']:.1f}", flush=True)
    print("| variant | labels/class | OA (3 seeds) | - lp (paired) | first-run features s |")
    print("|---|---|---|---|---|")
    for variant in variants:
        first = [r["feature_time_s"] for k, r in results.items()
                 if k.startswith(f"{variant}|") and not r["features_from_cache"]]  # fmt: skip
        for budget in BUDGETS:
            cells = [f"{variant}|{budget}|{s}" for s in SEEDS]
            base = [f"lp|{budget}|{s}" for s in SEEDS]
            if not all(c in results for c in cells):
                continue
            a = [results[c]["oa"] for c in cells]
            diff = ""
            if variant != "lp" and all(b in results for b in base):
                diff = interval(np.subtract(a, [results[b]["oa"] for b in base]))
            cost = f"{first[0]:.0f}" if first else "cached"
            print(f"| {variant} | {budget} | {interval(a)} | {diff} | {cost} |")


if __name__ == "__main__":
    main()
