"""--time-budget beside the plain commands, side by side on one dataset, seed and split.

For each budget: `geotune train --time-budget B` (wall time of the whole process, what it kept,
its test OA); beside it `geotune train` (the default strategy) and `--strategy linear-probe`
with the same seed, so all runs share the split (the split depends on the data and the seed
only). Each run starts from an empty cache, as a new user's would.

    python benchmarks/time_budget.py --data ../shared/datasets/rsscn7_dev200 --budgets 3m 6m \
        --out benchmarks/results/time_budget.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Plain runs to set beside the budgets, on the same seed and so the same split.
BASELINES = {
    "default": [],
    "linear-probe": ["--strategy", "linear-probe"],
    "readme": ["--strategy", "linear-probe", "--tta", "rot2"],
}


def run(args: list[str], work: Path, name: str) -> dict:
    cache = work / f"cache-{name}"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "GEOTUNE_CACHE": str(cache), "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "geotune.cli", "train", *args, "--output", str(work / "runs"),
           "--name", name]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed: {proc.stderr.strip().splitlines()[-1:]}")
    folder = work / "runs" / name
    summary = json.loads((folder / "summary.json").read_text())
    row = {
        "name": name,
        "command": " ".join(["geotune", "train", *args]),
        "wall_s": round(wall, 1),
        "test_oa": summary.get("test_overall_accuracy"),
        "strategy": summary.get("strategy"),
        "backbone": summary.get("backbone"),
    }
    budget = folder / "budget.json"
    if budget.is_file():
        record = json.loads(budget.read_text())
        row["kept"] = record["kept"]
        row["spent_s"] = record["spent_s"]
        row["candidates"] = [
            {k: c[k] for k in ("name", "status", "estimate_s", "seconds", "val_accuracy",
                               "test_overall_accuracy")}
            for c in record["candidates"]
        ]  # fmt: skip
    shutil.rmtree(cache, ignore_errors=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--budgets", nargs="+", default=["3m", "6m"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/geotune-budget"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/time_budget.json")
    ap.add_argument(
        "--baselines",
        nargs="*",
        default=["default", "linear-probe"],
        choices=sorted(BASELINES),
        help="plain runs beside the budgets (readme = the README main job)",
    )
    ap.add_argument("extra", nargs="*", help="more geotune train options, for every run")
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    common = ["--data", str(args.data), "--seed", str(args.seed), *args.extra]
    rows = [run([*common, "--time-budget", b], args.work, f"budget-{b}") for b in args.budgets]
    rows += [run([*common, *BASELINES[b]], args.work, b) for b in args.baselines]
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.node()} ({os.cpu_count()} cores, {platform.machine()})",
        "command": " ".join(["python", *sys.argv]),
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for r in rows:
        print(json.dumps({k: v for k, v in r.items() if k != "candidates"}), flush=True)


if __name__ == "__main__":
    main()
