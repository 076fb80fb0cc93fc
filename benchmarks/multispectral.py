"""13 bands vs the RGB bands alone on eurosat_ms_dev (issue 10), and what 13 bands cost.

Protocol: the same stratified 50/50 split per seed (``--train-fraction 0.5``; 20% of the labelled
half is validation), seeds 0-4, offline ImageNet EfficientNet-Lite0 with its stem adapted
(R, G, B kernels on B04, B03, B02; other bands ``--band-init mean``), for ``linear-probe`` and
``full`` fine-tuning. Prints mean OA with a 95% t-interval over seeds and a paired t-test
13-band vs RGB per strategy; results go to benchmarks/results/multispectral.json (a re-run
continues where it stopped).

    .venv/bin/python benchmarks/multispectral.py [--data DIR] [--only lp|lp-composites|ft|cost]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "eurosat_ms_dev"
OUT = REPO / "benchmarks" / "results" / "multispectral.json"
SEEDS = range(5)
BANDS = {"13-band": None, "RGB (B04,B03,B02)": ["B04", "B03", "B02"]}
STRATEGIES = {
    "lp": {"strategy": "linear-probe", "image_size": 224},
    # The RGB network unchanged, run on true colour and Sentinel-2's false-colour composites.
    "lp-composites": {"strategy": "linear-probe", "image_size": 224, "band_init": "composites"},
    # Native 64 px and 40 optimizer steps: what 2 shared CPU cores allow for 10 runs.
    "ft": {
        "strategy": "full",
        "image_size": 64,
        "epochs": 8,
        "batch_size": 16,
        "lr": 3e-3,
        "backbone_lr_scale": 0.3,
    },
}


def run_one(data: Path, runs: Path, key: str, bands, seed: int) -> dict:
    from geotune.config import make_config
    from geotune.engine.trainer import train

    cfg = make_config(
        data=data, output=runs, band_names="sentinel2-13", bands=bands, train_fraction=0.5,
        seed=seed, name=f"{key}-{'rgb' if bands else '13'}-s{seed}", **STRATEGIES[key],
    )  # fmt: skip
    t0 = time.perf_counter()
    result = train(cfg)
    s = result.summary
    return {
        "oa": result.test_metrics["overall_accuracy"],
        "wall_s": time.perf_counter() - t0,
        "train_images_per_s": s.get("train_images_per_s"),
        "n_train": s["n_train"],
        "n_test": s["n_test"],
    }


def interval(x: list[float]) -> str:
    x = np.asarray(x) * 100
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return f"{x.mean():.1f} ± {half:.1f}"


def measure_cost(data: Path) -> dict:
    """Decode-cache size and first (uncached) decode time of the 13-band set at 64 and 224 px."""
    from geotune.data.bands import BandRequest
    from geotune.data.decode import decode_folder
    from geotune.data.folder import scan_folder

    out = {}
    folder = scan_folder(data)
    for size in (64, 224):
        cache = Path(tempfile.mkdtemp(prefix="gt-cost-"))
        t0 = time.perf_counter()
        images = decode_folder(folder, size, cache_dir=cache, bands=BandRequest("sentinel2-13"))
        seconds = time.perf_counter() - t0
        npy = next((cache / "images").glob("*.npy"))
        out[f"{size}px"] = {
            "shape": list(images.pixels.shape),
            "dtype": str(images.pixels.dtype),
            "cache_mb": npy.stat().st_size / 1e6,
            "first_decode_s": seconds,
        }
        shutil.rmtree(cache)
    return out


def save(results: dict) -> dict:
    """Merge into the file (another --only may be running next to this one) and write it."""
    merged = {**(json.loads(OUT.read_text()) if OUT.is_file() else {}), **results}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(merged, indent=1))
    return merged


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--only", choices=["lp", "lp-composites", "ft", "cost"])
    args = ap.parse_args()
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    runs = Path(os.environ.get("GEOTUNE_BENCH_RUNS", tempfile.mkdtemp(prefix="gt-ms-runs-")))
    if args.only in (None, "cost"):
        results["cost"] = measure_cost(args.data)
        results = save(results)
        print(json.dumps(results["cost"], indent=1))
    for key in STRATEGIES if args.only != "cost" else ():
        if args.only not in (None, key):
            continue
        for seed in SEEDS:  # seed-major: a cut-short run still has paired seeds
            for label, bands in bands_of(key).items():
                cell = f"{key}|{label}|{seed}"
                if cell not in results:
                    results[cell] = run_one(args.data, runs, key, bands, seed)
                    results = save(results)
                print(cell, f"{100 * results[cell]['oa']:.1f}", flush=True)
    results = save(results)
    pairs = [(f"{k}|13-band", f"{k}|{RGB}") for k in ("lp", "ft")]
    pairs += [("lp-composites|13-band", f"lp|{RGB}"), ("lp-composites|13-band", "lp|13-band")]
    for first, second in pairs:
        done = [s for s in SEEDS if f"{first}|{s}" in results and f"{second}|{s}" in results]
        if len(done) < 2:
            continue
        a, b = ([results[f"{cell}|{s}"]["oa"] for s in done] for cell in (first, second))
        p = stats.ttest_rel(a, b).pvalue
        print(
            f"{first} {interval(a)} vs {second} {interval(b)} ({len(done)} seeds, same splits): "
            f"difference {interval(np.subtract(a, b))} points (paired t-test p = {p:.3f})"
        )


RGB = "RGB (B04,B03,B02)"


def bands_of(key: str) -> dict:
    """Composites need bands beyond true colour: 13 bands only."""
    return {"13-band": None} if STRATEGIES[key].get("band_init") == "composites" else BANDS


if __name__ == "__main__":
    main()
