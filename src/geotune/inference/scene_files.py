"""The files of a scene prediction: class map and probability GeoTIFFs (tiled, compressed,
georeferenced like the scene), and a PNG preview with a legend.

A multi-label model's map has one 0/1 band per label instead (1 where the label's blended
probability reaches its threshold; 255 nodata), and its preview one small map per label."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine
from rasterio.windows import Window

from geotune.inference.outputs import OutputSet

PROB_NODATA = -1.0


def scene_outputs(output: Path, probabilities: bool) -> dict[str, Path]:
    """``map.tif`` -> map, ``map.json``, ``map.png`` and (optionally) ``map.probabilities.tif``."""
    files = {
        "map": output,
        "json": output.with_suffix(".json"),
        "preview": output.with_suffix(".png"),
    }
    if probabilities:
        files["probabilities"] = output.with_name(f"{output.stem}.probabilities.tif")
    return files


def class_colours(n: int) -> list[list[int]]:
    """One distinct RGB colour per class (matplotlib's qualitative maps)."""
    import matplotlib

    names = ["tab10"] if n <= 10 else ["tab20", "tab20b", "tab20c"]
    colours = [c for name in names for c in matplotlib.colormaps[name].colors]
    return [[round(255 * v) for v in colours[i % len(colours)][:3]] for i in range(n)]


class SceneWriter:
    """Writes finished cell rows into the class map (and probability) GeoTIFFs.

    Also keeps the stride-resolution class grid (for the preview; one byte per cell, or per
    cell and label) and the pixel count of every class (multi-label: pixels where the label is
    present, beside ``valid_pixels``, the mapped ones).

    Args:
        thresholds: a multi-label model's per-label thresholds (None: single-label map).
    """

    def __init__(
        self, src, grid, classes: list[str], full_res: bool, outputs: OutputSet, files,
        thresholds: list[float] | None = None,
    ):  # fmt: skip
        self.src, self.grid, self.classes, self.full_res = src, grid, classes, full_res
        self.thresholds = None if thresholds is None else np.asarray(thresholds, np.float32)
        multilabel = self.thresholds is not None
        self.dtype = "uint8" if multilabel or len(classes) < 255 else "uint16"
        self.nodata = 255 if self.dtype == "uint8" else 65535
        shape = (grid.nrows, grid.ncols, len(classes)) if multilabel else (grid.nrows, grid.ncols)
        self.cells = np.full(shape, self.nodata, dtype=self.dtype)
        self.class_pixels = np.zeros(len(classes), dtype=np.int64)
        self.valid_pixels = 0
        self.colours = class_colours(len(classes))
        if full_res:
            self.width, self.height, self.transform = grid.width, grid.height, src.transform
        else:
            self.width, self.height = grid.ncols, grid.nrows
            self.transform = src.transform @ Affine.scale(grid.stride)
        self.outputs, self.files = outputs, files
        self.map = self.probs = None

    def profile(self, count: int, dtype: str, nodata) -> dict:
        block = (
            256
            if min(self.width, self.height) >= 256
            else 16 * max(1, min(self.width, self.height) // 16)
        )
        return {
            "driver": "GTiff", "width": self.width, "height": self.height, "count": count,
            "dtype": dtype, "nodata": nodata, "crs": self.src.crs, "transform": self.transform,
            "tiled": True, "blockxsize": block, "blockysize": block, "compress": "deflate",
            "BIGTIFF": "IF_SAFER",
        }  # fmt: skip

    def __enter__(self) -> SceneWriter:
        if self.thresholds is not None:
            self.open_label_map()
        else:
            self.open_class_map()
        if "probabilities" in self.files:
            self.probs = rasterio.open(
                self.outputs.temp(self.files["probabilities"]), "w",
                **self.profile(len(self.classes), "float32", PROB_NODATA),
            )  # fmt: skip
            for i, name in enumerate(self.classes, start=1):
                self.probs.set_band_description(i, name)
        return self

    def open_label_map(self) -> None:
        """Multi-label: one 0/1 band per label, named after it."""
        n = len(self.classes)
        self.map = rasterio.open(
            self.outputs.temp(self.files["map"]), "w", **self.profile(n, "uint8", self.nodata)
        )
        self.map.update_tags(
            LABEL_NAMES=json.dumps(self.classes),
            THRESHOLDS=json.dumps([float(t) for t in self.thresholds]),
        )
        for i, name in enumerate(self.classes, start=1):
            self.map.set_band_description(i, f"{name} (1 present, 0 absent)")

    def open_class_map(self) -> None:
        self.map = rasterio.open(
            self.outputs.temp(self.files["map"]), "w", **self.profile(1, self.dtype, self.nodata)
        )
        if self.dtype == "uint8":  # GeoTIFF colour tables are 8-bit only
            colours = {i: (*c, 255) for i, c in enumerate(self.colours)}
            self.map.write_colormap(1, colours | {self.nodata: (0, 0, 0, 0)})
        self.map.update_tags(
            CLASS_NAMES=json.dumps(self.classes),
            **{f"CLASS_{i}": name for i, name in enumerate(self.classes)},
        )
        self.map.set_band_description(1, "class index (names: CLASS_NAMES tag, sidecar JSON)")

    def __exit__(self, *exc) -> None:
        for ds in (self.map, self.probs):
            if ds is not None:
                ds.close()

    def write_row(self, r: int, probs: np.ndarray, seen: np.ndarray, masked: bool) -> None:
        """One finished row of cells: class = argmax of the blended probabilities."""
        g = self.grid
        y0, y1 = r * g.stride, min((r + 1) * g.stride, g.height)
        valid = seen.copy()
        mask = None
        if masked:
            mask = self.src.dataset_mask(window=Window(0, y0, g.width, y1 - y0)) > 0
            valid &= self.cell_fraction(mask) >= 0.5
        if self.thresholds is not None:
            self.write_label_row(r, probs, valid, mask, y0, y1)
            return
        labels = np.where(valid, probs.argmax(1), self.nodata).astype(self.dtype)
        self.cells[r] = labels
        probs = np.where(valid[:, None], probs, PROB_NODATA).astype(np.float32)
        if not self.full_res:
            widths = np.minimum(g.stride, g.width - np.arange(g.ncols) * g.stride)
            np.add.at(self.class_pixels, labels[valid].astype(np.int64), widths[valid] * (y1 - y0))
            self.map.write(labels[None, None, :], window=Window(0, r, g.ncols, 1))
            if self.probs is not None:
                self.probs.write(probs.T[:, None, :], window=Window(0, r, g.ncols, 1))
            return
        full = np.repeat(labels, g.stride)[: g.width]
        block = np.broadcast_to(full, (y1 - y0, g.width)).copy()
        if mask is not None:
            block[~mask] = self.nodata  # full resolution: nodata pixel by pixel
        good = block[block != self.nodata].astype(np.int64)
        self.class_pixels += np.bincount(good, minlength=len(self.classes))
        self.map.write(block[None], window=Window(0, y0, g.width, y1 - y0))
        if self.probs is not None:
            self.write_full_probabilities(probs, y0, y1, mask)

    def write_label_row(self, r, probs: np.ndarray, valid: np.ndarray, mask, y0: int, y1: int):
        """Multi-label: one finished row of cells, a 0/1 band per label."""
        g = self.grid
        present = (probs >= self.thresholds) & valid[:, None]  # (ncols, L)
        bands = np.where(valid[:, None], present, self.nodata).astype(np.uint8).T  # (L, ncols)
        self.cells[r] = bands.T
        probs = np.where(valid[:, None], probs, PROB_NODATA).astype(np.float32)
        if not self.full_res:
            area = np.minimum(g.stride, g.width - np.arange(g.ncols) * g.stride) * (y1 - y0)
            self.class_pixels += (present * area[:, None]).sum(0)
            self.valid_pixels += int(area[valid].sum())
            self.map.write(bands[:, None, :], window=Window(0, r, g.ncols, 1))
            if self.probs is not None:
                self.probs.write(probs.T[:, None, :], window=Window(0, r, g.ncols, 1))
            return
        full = np.repeat(bands, g.stride, axis=1)[:, : g.width]
        block = np.broadcast_to(full[:, None, :], (len(bands), y1 - y0, g.width)).copy()
        if mask is not None:
            block[:, ~mask] = self.nodata  # full resolution: nodata pixel by pixel
        self.class_pixels += (block == 1).sum((1, 2))
        self.valid_pixels += int((block[0] != self.nodata).sum())
        self.map.write(block, window=Window(0, y0, g.width, y1 - y0))
        if self.probs is not None:
            self.write_full_probabilities(probs, y0, y1, mask)

    def write_full_probabilities(self, probs: np.ndarray, y0: int, y1: int, mask) -> None:
        """Full-resolution probabilities of one cell row, in column chunks: K bands x stride
        rows x the whole width at once could be hundreds of MB."""
        g = self.grid
        chunk = g.stride * max(1, 2048 // g.stride)  # whole cells per chunk
        for x0 in range(0, g.width, chunk):
            x1 = min(x0 + chunk, g.width)
            cells = probs[x0 // g.stride : -(-x1 // g.stride)]
            full = np.repeat(cells, g.stride, axis=0)[: x1 - x0]
            block = np.broadcast_to(full.T[:, None, :], (len(self.classes), y1 - y0, x1 - x0))
            block = np.ascontiguousarray(block)
            if mask is not None:
                block[:, ~mask[:, x0:x1]] = PROB_NODATA
            self.probs.write(block, window=Window(x0, y0, x1 - x0, y1 - y0))

    def cell_fraction(self, mask: np.ndarray) -> np.ndarray:
        """Share of valid pixels in each cell of a row (``mask``: the row's pixel rows)."""
        s, w = self.grid.stride, self.grid.width
        cols = mask.sum(0)
        sums = np.add.reduceat(cols, np.arange(0, w, s))
        widths = np.minimum(s, w - np.arange(0, w, s))
        return sums / (widths * mask.shape[0])


def write_preview(path: Path, cells: np.ndarray, classes: list[str], max_px: int = 1600) -> None:
    """A PNG of the stride-resolution map with a legend (class colour and area share)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    step = max(1, int(np.ceil(max(cells.shape) / max_px)))
    view = cells[::step, ::step]
    nodata = np.iinfo(cells.dtype).max
    colours = np.array(class_colours(len(classes))) / 255
    shown = np.ma.masked_equal(view, nodata)
    counts = np.bincount(cells[cells != nodata].astype(np.int64), minlength=len(classes))
    share = counts / max(counts.sum(), 1)
    h, w = view.shape
    fig, ax = plt.subplots(figsize=(min(10, 3 + 6 * w / max(h, w)), min(8, 1 + 6 * h / max(h, w))))
    ax.imshow(shown, cmap=ListedColormap(colours), vmin=-0.5, vmax=len(classes) - 0.5,
              interpolation="nearest")  # fmt: skip
    ax.set_axis_off()
    legend = [
        Patch(color=colours[i], label=f"{c} ({100 * share[i]:.1f}%)")
        for i, c in enumerate(classes) if counts[i]
    ]  # fmt: skip
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_label_preview(path: Path, cells: np.ndarray, labels: list[str], max_px: int = 400):
    """Multi-label: a PNG of small maps, one per label (present / absent / nodata), each titled
    with the label and its share of the mapped area."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    step = max(1, int(np.ceil(max(cells.shape[:2]) / max_px)))
    view = cells[::step, ::step]
    n = len(labels)
    cols = min(n, 5)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows), squeeze=False)
    valid = cells[..., 0] != 255
    for j, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if j >= n:
            continue
        share = float((cells[..., j] == 1)[valid].mean()) if valid.any() else 0.0
        ax.imshow(np.ma.masked_equal(view[..., j], 255), cmap=ListedColormap(["#d9d9d9", "#d62728"]),
                  vmin=0, vmax=1, interpolation="nearest")  # fmt: skip
        ax.set_title(f"{labels[j]} ({100 * share:.1f}%)", fontsize=8)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
