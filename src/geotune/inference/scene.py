"""`geotune predict --scene`: a sliding-window class map over a GeoTIFF of any size.

The scene is read one strip of windows (one tile row) at a time with rasterio windows, never
whole. Each window is resized to the model's input like a training chip
(geotune.data.decode.resize_chip) and classified; overlapping windows are blended on a grid of
stride-sized cells (mean of probabilities, or weighted by each cell's distance from the window
centre). A cell row is written as soon as no later window can touch it, so memory holds one
strip of pixels and a few rows of cells, whatever the scene's size.
"""

from __future__ import annotations

import math
import resource
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import torch
from PIL import Image
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window
from rich.console import Console

from geotune.data.decode import resize_chip
from geotune.data.folder import default_workers
from geotune.errors import ConfigError, DataError
from geotune.fileio import atomic_write_json
from geotune.inference.chips import predictor_inputs, progress_bar
from geotune.inference.config import PredictOptions
from geotune.inference.model import Predictor
from geotune.inference.outputs import OutputSet
from geotune.inference.scene_files import (
    SceneWriter,
    scene_outputs,
    write_label_preview,
    write_preview,
)

GDAL_CACHE_MB = 64


def window_starts(length: int, tile: int, stride: int) -> list[int]:
    """Window offsets along one axis: every ``stride``, plus one flush with the far edge."""
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


@dataclass
class SceneGrid:
    """Windows of ``tile`` px every ``stride`` px, and the stride-sized cells of the map."""

    width: int
    height: int
    tile: int
    stride: int

    def __post_init__(self) -> None:
        self.xs = window_starts(self.width, self.tile, self.stride)
        self.ys = window_starts(self.height, self.tile, self.stride)
        self.ncols = math.ceil(self.width / self.stride)
        self.nrows = math.ceil(self.height / self.stride)
        self.cx = self.centres(self.ncols, self.width)
        self.cy = self.centres(self.nrows, self.height)

    def centres(self, n: int, length: int) -> np.ndarray:
        lo = np.arange(n) * self.stride
        return (lo + np.minimum(lo + self.stride, length)) / 2

    def covered(self, centres: np.ndarray, start: int) -> np.ndarray:
        """The cells (along one axis) whose centre lies inside the window at ``start``."""
        return np.flatnonzero((centres >= start) & (centres < start + self.tile))

    def weights(self, centres: np.ndarray, start: int, blend: str) -> np.ndarray:
        if blend == "mean":
            return np.ones(len(centres), dtype=np.float32)
        half = self.tile / 2  # a tent: 1 at the window's centre, near 0 at its edge
        return np.clip(1 - np.abs(centres - (start + half)) / half, 1e-3, 1).astype(np.float32)


@dataclass
class Blender:
    """Weighted sums of window probabilities per cell, for the cell rows still open."""

    grid: SceneGrid
    n_classes: int
    blend: str
    rows: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    next_row: int = 0  # rows above it have been handed out

    def add(self, x0: int, y0: int, probs: np.ndarray) -> None:
        g = self.grid
        cols, rows = g.covered(g.cx, x0), g.covered(g.cy, y0)
        wx, wy = g.weights(g.cx[cols], x0, self.blend), g.weights(g.cy[rows], y0, self.blend)
        for r, w in zip(rows, wy, strict=True):
            acc, wsum = self.rows.setdefault(
                int(r),
                (np.zeros((g.ncols, self.n_classes), np.float32), np.zeros(g.ncols, np.float32)),
            )
            acc[cols] += (w * wx)[:, None] * probs[None, :]
            wsum[cols] += w * wx

    def finished(self, before_y: float) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Pop the cell rows whose centre lies above ``before_y`` (no later window reaches
        them): (row, probabilities (ncols, K), seen (ncols,)). Every row comes out once, in
        order, even one that no window reached (all nodata): it is written as nodata."""
        g = self.grid
        while self.next_row < g.nrows and g.cy[self.next_row] < before_y:
            r = self.next_row
            self.next_row += 1
            empty = (np.zeros((g.ncols, self.n_classes), np.float32), np.zeros(g.ncols, np.float32))
            acc, wsum = self.rows.pop(r, empty)
            yield r, acc / np.maximum(wsum, 1e-12)[:, None], wsum > 0


@dataclass
class SceneResult:
    """What `predict_scene` wrote and measured (also in the sidecar JSON)."""

    map_path: Path
    json_path: Path
    preview_path: Path
    probabilities_path: Path | None
    info: dict


def open_scene(path: Path, bands: int, tile: int, stride: int):
    """Open and check the scene: band count, 8-bit pixels, a tile that fits."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path)
    except RasterioIOError as err:
        raise DataError(f"cannot open scene {path} ({' '.join(str(err).split())})") from None
    if src.count != bands:
        src.close()
        raise DataError(
            f"scene {path} has {src.count} bands; the model takes {bands} (RGB): "
            "write a 3-band RGB GeoTIFF (e.g. gdal_translate -b 1 -b 2 -b 3)"
        )
    if any(d != "uint8" for d in src.dtypes):
        src.close()
        raise DataError(
            f"scene {path} has {src.dtypes[0]} pixels; the model was trained on 8-bit chips: "
            "scale it to 8-bit (e.g. gdal_translate -ot Byte -scale)"
        )
    if tile > min(src.width, src.height):
        src.close()
        raise ConfigError(
            f"tile {tile} px is larger than the scene ({src.width} x {src.height} px); "
            "pass a smaller --tile"
        )
    if stride > tile:
        src.close()
        raise ConfigError(f"stride {stride} > tile {tile} leaves gaps; pass --stride <= --tile")
    return src


def has_nodata(src) -> bool:
    return any(MaskFlags.all_valid not in flags for flags in src.mask_flag_enums)


def window_chips(
    strip: np.ndarray, mask: np.ndarray | None, grid: SceneGrid, size: int, interp: str, pool
) -> tuple[list[int], list[np.ndarray]]:
    """The windows of one strip that are mostly data, resized like training chips."""
    keep = [
        x0 for x0 in grid.xs
        if mask is None or (mask[:, x0 : x0 + grid.tile] > 0).mean() >= 0.5
    ]  # fmt: skip

    def chip(x0: int) -> np.ndarray:
        window = strip[:, :, x0 : x0 + grid.tile].transpose(1, 2, 0)
        return resize_chip(Image.fromarray(np.ascontiguousarray(window)), size, interp)

    return keep, list(pool.map(chip, keep))


def predict_strip(
    predictor: Predictor, chips: list[np.ndarray], batch_size: int, tta: str, calibrated: bool
) -> np.ndarray:
    out = [
        predictor.probabilities(
            torch.from_numpy(np.stack(chips[i : i + batch_size])), tta, calibrated
        )
        for i in range(0, len(chips), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, len(predictor.classes)), np.float32)


def predict_scene(
    predictor: Predictor,
    scene: Path,
    output: Path,
    tile: int | None = None,
    stride: int | None = None,
    blend: str = "mean",
    full_res: bool = False,
    probabilities: bool = False,
    options: PredictOptions | None = None,
    overwrite: bool = False,
    console: Console | None = None,
) -> SceneResult:
    """Classify a GeoTIFF window by window into a georeferenced class map.

    Args:
        predictor: from :func:`geotune.inference.model.load_predictor` (a run or an exported
            model); its input size is the default window.
        scene: a 3-band 8-bit GeoTIFF (or any raster GDAL reads, e.g. a VRT) of any size.
        output: the class map GeoTIFF (a multi-label model's: one 0/1 band per label, present
            where the blended probability reaches the label's threshold); ``.json`` (classes,
            areas), ``.png`` (preview) and, with ``probabilities``, ``.probabilities.tif`` are
            written beside it.
        tile: window size in scene pixels (default: the model's input size).
        stride: window step (default: tile / 2); the map's cells are stride-sized.
        blend: ``mean`` or ``centre`` weighting of overlapping windows.
        full_res: write the map at the scene's pixel size (cells repeated, nodata per pixel).
        probabilities: also write per-class probabilities.
        options: views, calibration, windows per pass and resize threads (PredictOptions()).
        overwrite: replace existing outputs.
        console: progress and warnings.

    Returns:
        The written paths and the figures of the sidecar JSON.
    """
    console = console or Console(stderr=True)
    opts = options or PredictOptions()
    tta, calibrated = opts.tta, opts.calibrated
    tile = tile or predictor.preprocessing.size
    stride = stride or max(1, tile // 2)
    files = scene_outputs(Path(output), probabilities)
    outputs = OutputSet(
        list(files.values()), overwrite, predictor_inputs(predictor, [scene], "SCENE")
    )
    src = open_scene(Path(scene), len(predictor.preprocessing.mean), tile, stride)
    # Every pixel is read once, strip by strip: GDAL's block cache (5% of RAM by default) would
    # only make memory grow with the scene.
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), src, outputs.writing():
        grid = SceneGrid(src.width, src.height, tile, stride)
        notes = [] if src.crs else [f"scene {scene} has no CRS: the map is not georeferenced"]
        for note in notes:
            console.log(f"warning: {note}")
        writer = SceneWriter(
            src, grid, predictor.classes, full_res, outputs, files,
            predictor.decision_thresholds(calibrated),
        )  # fmt: skip
        with writer:
            stats = run_windows(
                predictor, src, grid, writer, blend, tta, calibrated, opts.batch_size,
                opts.workers or default_workers(), console,
            )  # fmt: skip
        preview = write_label_preview if predictor.multilabel else write_preview
        preview(outputs.temp(files["preview"]), writer.cells, predictor.classes)
        info = scene_info(predictor, scene, grid, writer, src, stats, notes)
        info.update(blend=blend, full_res=full_res, tta=tta, calibrated=calibrated)
        atomic_write_json(outputs.temp(files["json"]), info)
    return SceneResult(
        files["map"], files["json"], files["preview"], files.get("probabilities"), info
    )


def run_windows(
    predictor, src, grid: SceneGrid, writer, blend, tta, calibrated, batch_size, workers, console
) -> dict:
    """Every strip of windows: read, classify, blend, write the finished cell rows."""
    prep = predictor.preprocessing
    blender = Blender(grid, len(predictor.classes), blend)
    masked = has_nodata(src)
    n_windows = n_skipped = 0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # model loaded
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool, progress_bar(console) as bar:
        task = bar.add_task("scene", total=len(grid.ys) * len(grid.xs))
        for j, y0 in enumerate(grid.ys):
            window = Window(0, y0, grid.width, grid.tile)
            strip = src.read(window=window)
            mask = src.dataset_mask(window=window) if masked else None
            keep, chips = window_chips(strip, mask, grid, prep.size, prep.interpolation, pool)
            probs = predict_strip(predictor, chips, batch_size, tta, calibrated)
            for x0, p in zip(keep, probs, strict=True):
                blender.add(x0, y0, p)
            n_windows += len(keep)
            n_skipped += len(grid.xs) - len(keep)
            limit = grid.ys[j + 1] if j + 1 < len(grid.ys) else math.inf
            for r, cell_probs, seen in blender.finished(limit):
                writer.write_row(r, cell_probs, seen, masked)
            bar.update(task, advance=len(grid.xs))
    seconds = time.perf_counter() - t0
    return {
        "windows": n_windows,
        "windows_skipped_nodata": n_skipped,
        "seconds": seconds,
        "megapixels_per_s": grid.width * grid.height / 1e6 / max(seconds, 1e-9),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_before_windows_mb": rss_before,
    }


def scene_info(predictor, scene, grid: SceneGrid, writer, src, stats: dict, notes) -> dict:
    """The sidecar JSON: classes, georeferencing, class areas and run figures."""
    crs = src.crs
    projected = bool(crs and crs.is_projected)
    t = src.transform
    pixel_m2 = abs(t.a * t.e - t.b * t.d) * crs.linear_units_factor[1] ** 2 if projected else None
    # Multi-label: a label's share of the mapped pixels (labels overlap, shares do not sum to 1).
    total = max(writer.valid_pixels if predictor.multilabel else int(writer.class_pixels.sum()), 1)
    areas = [
        {
            "index": i,
            "class": name,
            "pixels": int(writer.class_pixels[i]),
            "share": float(writer.class_pixels[i] / total),
            "km2": float(writer.class_pixels[i] * pixel_m2 / 1e6) if projected else None,
        }
        for i, name in enumerate(predictor.classes)
    ]
    return {
        "scene": str(scene),
        "model": str(predictor.source),
        "classes": predictor.classes,
        "multilabel": predictor.multilabel,
        "thresholds": predictor.thresholds,  # uncalibrated scale (see Predictor)
        "label_temperatures": predictor.label_temperatures,
        "nodata": writer.nodata,
        "colours": writer.colours,
        "crs": crs.to_string() if crs else None,
        "georeferenced": crs is not None,
        "map_transform": list(writer.transform)[:6],
        "map_size": [writer.width, writer.height],
        "scene_size": [grid.width, grid.height],
        "tile": grid.tile,
        "stride": grid.stride,
        "temperature": predictor.temperature,
        "class_areas": areas,
        "area_units": "km2 from the projected CRS"
        if projected
        else "pixels only (no projected CRS)",
        "warnings": notes,
        **stats,
    }


def describe_scene(result: SceneResult) -> str:
    info = result.info
    top = sorted(info["class_areas"], key=lambda a: -a["pixels"])[:3]
    shares = ", ".join(f"{a['class']} {100 * a['share']:.1f}%" for a in top)
    what = "labels present most" if info.get("multilabel") else "largest classes"
    return (
        f"{info['windows']} windows in {info['seconds']:.1f}s "
        f"({info['megapixels_per_s']:.2f} MP/s); {what}: {shares}"
    )
