"""Benchmark of `geotune predict` and `geotune export` on CPU
(benchmarks/results/2026-11-29-using-a-model.md).

1. exports RUN to ONNX (parity check on 64 of its test chips);
2. chips/s of `predict` with PyTorch and with onnxruntime, side by side in one process
   (alternating, two rounds each, the best round of each counts);
3. scene throughput (megapixels/s) and peak memory of `geotune predict --scene` on virtual
   mosaics (GDAL VRTs tiling AID chips, never written out as pixels) of two sizes, each run
   under /usr/bin/time -v so the peak resident memory is the whole command's.

From the repository root, with a finished classifier run:
    .venv/bin/python benchmarks/use_model.py RUN [--chips 512] [--size 20000] [--tile 300]
        [--scene-model onnx|run] [--skip-chips]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
AID = REPO.parent / "shared" / "datasets" / "aid150"


def write_vrt(path: Path, size: int, chip: int = 150) -> int:
    """A size x size px RGB VRT whose tiles are AID chips (row-major over all classes)."""
    chips = sorted(AID.rglob("*.jpg"))
    per_row = -(-size // chip)
    sources = {b: [] for b in (1, 2, 3)}
    for k in range(per_row * per_row):
        r, c = divmod(k, per_row)
        f = chips[k % len(chips)]
        for b in (1, 2, 3):
            sources[b].append(
                f"<SimpleSource><SourceFilename relativeToVRT='0'>{f}</SourceFilename>"
                f"<SourceBand>{b}</SourceBand><SrcRect xOff='0' yOff='0' xSize='{chip}' "
                f"ySize='{chip}'/><DstRect xOff='{c * chip}' yOff='{r * chip}' xSize='{chip}' "
                f"ySize='{chip}'/></SimpleSource>"
            )
    colours = {1: "Red", 2: "Green", 3: "Blue"}
    bands = "".join(
        f"<VRTRasterBand dataType='Byte' band='{b}'><ColorInterp>{colours[b]}</ColorInterp>"
        + "".join(sources[b])
        + "</VRTRasterBand>"
        for b in (1, 2, 3)
    )
    path.write_text(
        f"<VRTDataset rasterXSize='{size}' rasterYSize='{size}'><SRS>EPSG:32633</SRS>"
        "<GeoTransform>500000, 2.0, 0, 4200000, 0, -2.0</GeoTransform>" + bands + "</VRTDataset>"
    )
    return per_row * per_row


def chip_throughput(run: Path, onnx: Path, n: int, out: Path) -> dict:
    from geotune.inference.chips import predict_chips
    from geotune.inference.model import load_predictor

    with open(run / "split.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    root = Path(json.loads((run / "data.json").read_text())["root"])
    listing = out / "chips.txt"
    step = max(1, len(rows) // n)
    listing.write_text("".join(f"{root / r['path']}\n" for r in rows[::step][:n]))
    predictors = {"torch": load_predictor(run, "cpu"), "onnxruntime": load_predictor(onnx, "cpu")}
    rounds: dict[str, list[float]] = {k: [] for k in predictors}
    for i in range(2):
        for name, p in predictors.items():
            r = predict_chips(p, [listing], out / f"{name}-{i}.csv", overwrite=True)
            rounds[name].append(r.chips_per_s)
    best = {k: max(v) for k, v in rounds.items()}
    return {
        "chips": n,
        "rounds_chips_per_s": rounds,
        "best_chips_per_s": best,
        "onnx_over_torch": best["onnxruntime"] / best["torch"],
    }


def scene_run(model: Path, vrt: Path, out: Path, tile: int, stride: int) -> dict:
    cmd = [
        "/usr/bin/time", "-v", str(REPO / ".venv/bin/geotune"), "predict", str(model), str(vrt),
        "--scene", "--tile", str(tile), "--stride", str(stride), "--batch-size", "32",
        "--output", str(out / f"{vrt.stem}-map.tif"), "--overwrite",
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(proc.stderr[-2000:])
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    info = json.loads((out / f"{vrt.stem}-map.json").read_text())
    return {
        "command": " ".join(cmd[2:]),
        "scene_px": info["scene_size"],
        "windows": info["windows"],
        "window_seconds": info["seconds"],
        "megapixels_per_s": info["megapixels_per_s"],
        "command_wall_s": wall,
        "peak_rss_mb": rss / 1024,
        "peak_rss_before_windows_mb": info["peak_rss_before_windows_mb"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--chips", type=int, default=512)
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--small", type=int, default=5000)
    ap.add_argument("--tile", type=int, default=300)
    ap.add_argument("--stride", type=int, default=300)
    ap.add_argument(
        "--scene-model", choices=["onnx", "run"], default="onnx",
        help="scenes with the exported ONNX model (faster on CPU) or the run folder (PyTorch)",
    )  # fmt: skip
    ap.add_argument("--skip-chips", action="store_true", help="only export and scenes")
    args = ap.parse_args()
    from geotune.inference.export import export_model

    out = REPO / "benchmarks" / "results" / f"use-model-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True)
    result: dict = {"run": str(args.run), "torch_threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    exported = export_model(args.run, "onnx", out / "model.onnx", check_chips=64)
    result["export"] = {**exported.parity, "seconds": time.perf_counter() - t0}
    if not args.skip_chips:
        result["chips"] = chip_throughput(args.run, exported.model_path, args.chips, out)
        print(json.dumps(result["chips"], indent=1), flush=True)
    model = exported.model_path if args.scene_model == "onnx" else args.run
    result["scenes"] = []
    for size in (args.small, args.size):
        vrt = out / f"mosaic{size}.vrt"
        result["scenes"].append(
            {
                "vrt_sources": write_vrt(vrt, size),
                **scene_run(model, vrt, out, args.tile, args.stride),
            }
        )
        print(json.dumps(result["scenes"][-1], indent=1), flush=True)
    (out / "use_model.json").write_text(json.dumps(result, indent=2))
    print(f"results: {out / 'use_model.json'}")


if __name__ == "__main__":
    main()
