"""In-domain self-supervised pretraining on AID (issue 13): does it help the linear probe?

1. ``geotune pretrain`` on every AID chip, labels unused: offline ImageNet Lite0 continued with
   SimCLR (1 epoch by default, 128 px, batches of 64), timed.
2. Linear probes at 5 and 20 labels per class, seeds 0-2, 160 px, from the ImageNet weights and
   from the continued weights, on the same splits (paired).
Results: benchmarks/results/pretrain_ssl.json.

    .venv/bin/python benchmarks/pretrain_ssl.py [--epochs 1] [--method simclr]
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
DATA = REPO.parent / "shared" / "datasets" / "aid150"
OUT = REPO / "benchmarks" / "results" / "pretrain_ssl.json"
BUDGETS, SEEDS = (5, 20), (0, 1, 2)


def interval(x) -> str:
    x = 100 * np.asarray(x)
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return f"{x.mean():.1f} ± {half:.1f}"


def main() -> None:
    from geotune.config import build_config, make_config
    from geotune.engine.trainer import train
    from geotune.pretrain.config import PretrainConfig
    from geotune.pretrain.run import pretrain

    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--method", default="simclr")
    args = ap.parse_args()
    work = Path(os.environ.get("GEOTUNE_BENCH_RUNS", tempfile.mkdtemp(prefix="gt-ssl-")))
    work.mkdir(parents=True, exist_ok=True)
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    ckpt = work / f"{args.method}-{args.epochs}ep.pt"
    if not ckpt.is_file():
        t0 = time.perf_counter()
        record = pretrain(build_config(PretrainConfig, data=DATA, output=ckpt, method=args.method,
                                       epochs=args.epochs, image_size=128, batch_size=64))  # fmt: skip
        results["pretrain"] = {**record, "wall_s": time.perf_counter() - t0}
    weights = {"imagenet": "auto", args.method: str(ckpt)}
    for name, w in weights.items():
        for budget in BUDGETS:
            for seed in SEEDS:
                key = f"{name}|{budget}|{seed}"
                if key not in results:
                    cfg = make_config(
                        data=DATA, output=work / "runs", strategy="linear-probe", weights=w,
                        image_size=160, labels_per_class=budget, seed=seed,
                        name=f"{name}-{budget}-s{seed}",
                    )  # fmt: skip
                    r = train(cfg)
                    results[key] = {
                        "oa": r.test_metrics["overall_accuracy"],
                        "feature_time_s": r.summary["feature_time_s"],
                    }
                    OUT.parent.mkdir(parents=True, exist_ok=True)
                    OUT.write_text(json.dumps(results, indent=1, default=str))
                print(key, f"{100 * results[key]['oa']:.1f}", flush=True)
    for budget in BUDGETS:
        a = [results[f"{args.method}|{budget}|{s}"]["oa"] for s in SEEDS]
        b = [results[f"imagenet|{budget}|{s}"]["oa"] for s in SEEDS]
        p = stats.ttest_rel(a, b).pvalue
        print(f"{budget} labels/class: imagenet {interval(b)}, +{args.method} {interval(a)}, "
              f"difference {interval(np.subtract(a, b))} (paired t p = {p:.3f})")  # fmt: skip
    print("pretrain:", {k: results["pretrain"][k] for k in ("steps", "chips", "wall_s")})


if __name__ == "__main__":
    main()
