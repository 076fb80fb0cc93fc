"""The linear probe's first run with the frozen feature pass in PyTorch vs ONNX Runtime, side by side.

Each run is `geotune train --strategy linear-probe` with an empty feature cache (and no exported
graph: the ONNX export is part of the first run's cost); the decoded chips are shared, so the runs
differ only in the feature pass. Engines alternate (torch, onnxruntime, torch, ...) so that load
on the machine falls on both alike.

    python benchmarks/feature_pass.py --data ../shared/datasets/rsscn7_dev200 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(data: str, engine: str, decoded: Path, out: Path, name: str, extra: list[str]) -> dict:
    cache = Path(tempfile.mkdtemp(prefix="geotune-fp-"))
    (cache / "images").symlink_to(decoded)  # the decoded chips are shared; features are not
    env = {**os.environ, "GEOTUNE_CACHE": str(cache), "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "geotune.cli", "train", "--data", data, "--strategy",
           "linear-probe", "--feature-engine", engine, "--train-fraction", "0.2", "--seed", "0",
           "--output", str(out), "--name", name, *extra]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    wall = time.perf_counter() - t0
    s = json.loads((out / name / "summary.json").read_text())
    n = s["n_train"] + s["n_val"] + s["n_test"]
    return {"engine": s["feature_engine"], "wall_s": wall, "feature_time_s": s["feature_time_s"],
            "images_per_s": n / s["feature_time_s"], "test_oa": s["test_overall_accuracy"], "n": n}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/datasets/rsscn7_dev200")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/feature_pass")
    ap.add_argument("extra", nargs="*", help="more geotune train options (e.g. --tta rot2)")
    args = ap.parse_args()
    decoded = Path(tempfile.mkdtemp(prefix="geotune-fp-decoded-"))
    rows = []
    for rep in range(args.repeats):
        for engine in ("torch", "onnxruntime"):
            name = f"{Path(args.data).name}-{engine}-{rep}-{time.strftime('%H%M%S')}"
            row = one_run(args.data, engine, decoded, args.out, name, args.extra)
            rows.append(row)
            print(json.dumps(row), flush=True)
    for engine in ("torch", "onnxruntime"):
        t = [r["feature_time_s"] for r in rows if r["engine"] == engine]
        print(f"{engine}: feature pass {min(t):.1f}-{max(t):.1f} s", flush=True)
    pairs = zip(rows[::2], rows[1::2], strict=True)
    print(
        "speed-up per pair:",
        [round(a["feature_time_s"] / b["feature_time_s"], 2) for a, b in pairs],
    )


if __name__ == "__main__":
    main()
