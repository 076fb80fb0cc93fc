"""Scale: wall time, time per chip, peak RSS and cache size as the number of chips grows.

Builds datasets of N chips from aid150 (the same real files repeated under new names, as
symlinks, so a 500k-chip set costs no disk beyond the decoded cache), then runs each strategy
with the default options plus ``--image-size`` on a cold cache, each in its own process, and
records what it cost. Last, it fits ``cost = a * N^b`` per strategy: b near 1 is linear, b near
0 flat (RAM), b near 2 quadratic; and ``time = fixed + per_chip * N``, whose residuals show
whether time is linear once the fixed start (imports, model, ONNX export) is set apart.

    python benchmarks/scale.py --sizes 10000 50000 200000 500000 --image-size 64 \
        --strategies linear-probe full --work /tmp/geotune-scale

Peak RSS is the child's own (``os.wait4``), cache size the bytes under its GEOTUNE_CACHE.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
AID = ROOT.parent / "shared" / "datasets" / "aid150"


def build(n: int, work: Path, source: Path = AID) -> Path:
    """A class-folder dataset of ``n`` chips: symlinks to the source files, repeated in turn."""
    out = work / f"chips-{n}"
    if (out / ".complete").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    images = sorted(p for p in source.rglob("*") if p.suffix.lower() in {".jpg", ".png", ".tif"})
    by_class: dict[str, list[Path]] = {}
    for p in images:
        by_class.setdefault(p.parent.name, []).append(p)
    # Classes interleaved, so every size holds every class in the source's proportions.
    files = [p for row in itertools.zip_longest(*by_class.values()) for p in row if p]
    for i in range(n):
        src = files[i % len(files)]
        dst = out / src.parent.name / f"{src.stem}_r{i // len(files)}{src.suffix}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(src.resolve())
    (out / ".complete").write_text(str(n))
    return out


def watch_memory(pid: int, peaks: dict[str, int], done: threading.Event) -> None:
    """Peak anonymous and file-backed resident KiB of ``pid`` (sampled every 0.2 s)."""
    while not done.wait(0.2):
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in peaks:
                peaks[key] = max(peaks[key], int(value.split()[0]))


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def one_run(data: Path, strategy: str, size: int, work: Path, extra: list[str]) -> dict:
    cache = work / f"cache-{data.name}-{strategy}"
    shutil.rmtree(cache, ignore_errors=True)  # cold: decode, features and fit all counted
    out = work / "runs"
    name = f"{data.name}-{strategy}-{time.strftime('%H%M%S')}"
    env = {**os.environ, "GEOTUNE_CACHE": str(cache), "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "geotune.cli", "train", "--data", str(data),
           "--strategy", strategy, "--image-size", str(size), "--seed", "0",
           "--output", str(out), "--name", name, *extra]  # fmt: skip
    t0 = time.perf_counter()
    log = (work / f"{name}.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    peaks = {"RssAnon": 0, "RssFile": 0}
    done = threading.Event()
    watcher = threading.Thread(target=watch_memory, args=(proc.pid, peaks, done), daemon=True)
    watcher.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    watcher.join()
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        tail = (work / f"{name}.log").read_text().strip().splitlines()[-1:]
        raise SystemExit(f"{name} failed: {tail}")
    s = json.loads((out / name / "summary.json").read_text())
    n = int(data.joinpath(".complete").read_text())
    row = {
        "n": n,
        "strategy": strategy,
        "image_size": size,
        "wall_s": round(wall, 1),
        "s_per_1k_chips": round(1000 * wall / n, 3),
        # CPU seconds of the child: less sensitive than wall time to other work on the machine.
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "cpu_s_per_1k_chips": round(1000 * (usage.ru_utime + usage.ru_stime) / n, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
        # RSS = anonymous memory (what the process holds) + file pages it maps (the memory-
        # mapped caches: page cache the kernel takes back under pressure).
        "peak_anon_mb": round(peaks["RssAnon"] / 1024, 1),
        "peak_file_mb": round(peaks["RssFile"] / 1024, 1),
        "cache_mb": round(disk_bytes(cache) / 1e6, 1),
        "test_oa": s.get("test_overall_accuracy"),
    }
    for k in ("feature_time_s", "fit_time_s", "train_time_s", "time_per_epoch_s"):
        if s.get(k) is not None:
            row[k] = round(float(s[k]), 1)
    shutil.rmtree(out / name, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    return row


def growth(rows: list[dict], key: str) -> dict[str, float]:
    """Exponent b of ``key = a * N^b`` per strategy (least squares on logs)."""
    fits = {}
    for strategy in sorted({r["strategy"] for r in rows}):
        pts = [(r["n"], r[key]) for r in rows if r["strategy"] == strategy and r[key] > 0]
        if len(pts) >= 2:
            n, v = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
            fits[strategy] = round(float(np.polyfit(n, v, 1)[0]), 3)
    return fits


def affine(rows: list[dict], key: str = "wall_s") -> dict[str, dict]:
    """``key = a + b * N`` per strategy (least squares): a is the fixed start (imports, model,
    ONNX export, the probe's minimum steps), b the cost per chip. Linear cost means the rows sit
    on the line; ``per_1k_after_start`` is each row's (key - a) / N, which a quadratic step would
    make grow with N while the plain per-chip figure falls as the fixed start is shared out."""
    fits = {}
    for strategy in sorted({r["strategy"] for r in rows}):
        pts = [(r["n"], r[key]) for r in rows if r["strategy"] == strategy]
        if len(pts) >= 2:
            n, v = np.array(pts, dtype=float).T
            b, a = np.polyfit(n, v, 1)
            fits[strategy] = {
                "fixed_s": round(float(a), 1),
                "per_1k_chips": round(1000 * float(b), 3),
                "per_1k_after_start": {int(k): round(1000 * (y - a) / k, 3) for k, y in pts},
                "max_relative_residual": round(float(np.max(np.abs(v - (a + b * n)) / v)), 3),
            }
    return fits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000, 500_000])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--strategies", nargs="+", default=["linear-probe", "full"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/geotune-scale"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/scale.json")
    ap.add_argument("extra", nargs="*", help="more geotune train options")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    full_epochs = ["--epochs", "1"]  # one epoch of fine-tuning: the cost per chip is the point
    rows = []
    for n in args.sizes:
        data = build(n, args.work)
        for strategy in args.strategies:
            extra = args.extra + (full_epochs if strategy not in {"linear-probe", "knn"} else [])
            row = one_run(data, strategy, args.image_size, args.work, extra)
            rows.append(row)
            print(json.dumps(row), flush=True)
            result = {
                "date": time.strftime("%Y-%m-%d"),
                "machine": f"{platform.node()} ({os.cpu_count()} cores, {platform.machine()})",
                "command": " ".join(["python", *sys.argv]),
                "rows": rows,
                "growth_exponent": {
                    k: growth(rows, k)
                    for k in ("wall_s", "cpu_s", "peak_rss_mb", "peak_anon_mb", "cache_mb")
                },
                "affine": {k: affine(rows, k) for k in ("wall_s", "cpu_s")},
            }
            args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["growth_exponent"]), flush=True)


if __name__ == "__main__":
    main()
