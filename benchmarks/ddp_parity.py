"""Data parallelism changes the speed, not the result: 1 process vs 2 (DDP, gloo on CPU).

Issue 26 asks that a 2-process run match the 1-process accuracy within seed noise (3 seeds).
Each seed trains the same recipe twice, ``--devices 1`` and ``--devices 2`` (the same global
batch: 2 processes split every batch, gradients averaged), on the same split; the paired
difference is set beside the spread across seeds of the 1-process runs. BatchNorm keeps its
default (statistics updated per process on half the batch), so the two runs are not identical:
this measures whether that matters.

    python benchmarks/ddp_parity.py --data ../shared/datasets/aid150 --seeds 0 1 2 \
        --out benchmarks/results/ddp_parity.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run(data: Path, devices: int, seed: int, work: Path, extra: list[str]) -> dict:
    name = f"d{devices}-s{seed}"
    cmd = [sys.executable, "-m", "geotune.cli", "train", "--data", str(data), "--device", "cpu",
           "--devices", str(devices), "--seed", str(seed), "--output", str(work),
           "--name", name, *extra]  # fmt: skip
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "GEOTUNE_CACHE": str(work / "cache")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed: {proc.stderr.strip().splitlines()[-1:]}")
    metrics = json.loads((work / name / "test_metrics.json").read_text())
    return {
        "devices": devices,
        "seed": seed,
        "test_oa": metrics["overall_accuracy"],
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/ddp_parity.json")
    ap.add_argument("extra", nargs="*", help="more geotune train options")
    args = ap.parse_args()
    extra = args.extra or ["--strategy", "full", "--labels-per-class", "20", "--epochs", "3",
                           "--image-size", "64"]  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for devices in (1, 2):
                rows.append(run(args.data, devices, seed, Path(tmp), extra))
                print(json.dumps(rows[-1]), flush=True)
    one = np.array([r["test_oa"] for r in rows if r["devices"] == 1])
    two = np.array([r["test_oa"] for r in rows if r["devices"] == 2])
    diff = two - one
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.node()} ({os.cpu_count()} cores, {platform.machine()})",
        "command": " ".join(["python", *sys.argv]),
        "options": extra,
        "rows": rows,
        "mean_oa_1_process": float(one.mean()),
        "mean_oa_2_processes": float(two.mean()),
        "paired_difference_mean": float(diff.mean()),
        "paired_difference_max_abs": float(np.abs(diff).max()),
        "seed_sd_1_process": float(one.std(ddof=1)) if len(one) > 1 else None,
    }
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}), flush=True)


if __name__ == "__main__":
    main()
