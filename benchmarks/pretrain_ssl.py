"""In-domain self-supervised pretraining on AID (issue 13): does it help the linear probe?

1. ``geotune pretrain`` on every AID chip, labels unused: offline ImageNet Lite0 continued with
   SimCLR (1 epoch by default, 128 px, batches of 64), timed.
2. Linear probes (and with ``--strategies``, any other strategy at its defaults, e.g. lp-ft) at
   5 and 20 labels per class, seeds 0-2, 160 px, from the ImageNet weights and from the continued
   weights, on the same splits (paired).
Results: benchmarks/results/pretrain_ssl.json, or ``--out`` (a re-run continues where it stopped).
The checkpoint lives in $GEOTUNE_BENCH_RUNS (default: a new temporary folder, so a run without it
pretrains again).

    .venv/bin/python benchmarks/pretrain_ssl.py [--epochs 1] [--method simclr]
        [--strategies linear-probe,lp-ft] [--budgets 5,20] [--out FILE]
        [--checkpoint PATH --name NAME]   # a pretraining made elsewhere (the GPU: gpu_device.sh ssl)
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
    ap.add_argument("--strategies", default="linear-probe")
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--checkpoint", type=Path, help="probe these weights instead of pretraining")
    ap.add_argument("--name", help="their name in the results (default: the method)")
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    strategies = args.strategies.split(",")
    out = args.out
    work = Path(os.environ.get("GEOTUNE_BENCH_RUNS", tempfile.mkdtemp(prefix="gt-ssl-")))
    work.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.is_file() else {}
    ckpt = args.checkpoint or work / f"{args.method}-{args.epochs}ep.pt"
    name = args.name or args.method
    if not ckpt.is_file():
        t0 = time.perf_counter()
        record = pretrain(build_config(PretrainConfig, data=DATA, output=ckpt, method=args.method,
                                       epochs=args.epochs, image_size=128, batch_size=64))  # fmt: skip
        results["pretrain"] = {**record, "wall_s": time.perf_counter() - t0}
    weights = {"imagenet": "auto", name: str(ckpt)}
    for strategy in strategies:
        # The linear probe's keys predate --strategies: "weights|budget|seed".
        tag = "" if strategy == "linear-probe" else f"{strategy}|"
        # Both weights for a seed before the next seed: a run stopped early leaves pairs.
        for budget in budgets:
            for seed in SEEDS:
                for name, w in weights.items():
                    key = f"{tag}{name}|{budget}|{seed}"
                    if key not in results:
                        cfg = make_config(
                            data=DATA, output=work / "runs", strategy=strategy, weights=w,
                            image_size=160, labels_per_class=budget, seed=seed,
                            name=f"{strategy}-{name}-{budget}-s{seed}",
                        )  # fmt: skip
                        t0 = time.perf_counter()
                        r = train(cfg)
                        results[key] = {
                            "oa": r.test_metrics["overall_accuracy"],
                            "feature_time_s": r.summary.get("feature_time_s"),
                            "wall_s": time.perf_counter() - t0,
                        }
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_text(json.dumps(results, indent=1, default=str))
                    print(key, f"{100 * results[key]['oa']:.1f}", flush=True)
        for budget in budgets:
            a = [results[f"{tag}{name}|{budget}|{s}"]["oa"] for s in SEEDS]
            b = [results[f"{tag}imagenet|{budget}|{s}"]["oa"] for s in SEEDS]
            p = stats.ttest_rel(a, b).pvalue
            print(f"{strategy}, {budget} labels/class: imagenet {interval(b)}, +{name} "
                  f"{interval(a)}, difference {interval(np.subtract(a, b))} (paired t p = {p:.3f})")  # fmt: skip
    if "pretrain" in results:
        print("pretrain:", {k: results["pretrain"][k] for k in ("steps", "chips", "wall_s")})


if __name__ == "__main__":
    main()
