"""Multispectral GeoTIFF chips (any band count; uint8, uint16, int16 or float32) via rasterio.

8-bit RGB files (JPEG, PNG, 8-bit 1/3-band TIFF) keep the PIL path of ``decode.read_rgb``; a
TIFF of more bands or deeper pixels is read here, band by band, without losing precision.

A chip may also be a folder of single-band GeoTIFFs named ``<chip>_<band>.tif`` (BigEarthNet's
layout, geotune.data.bigearthnet): its bands are stacked in Sentinel-2 order and the coarser
ones resampled (bilinear) to the finest band's grid, the way torchgeo reads BigEarthNet.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from geotune.data.bands import COLOUR_ALIASES, BandLayout
from geotune.errors import DataError

TIFF_SUFFIXES = (".tif", ".tiff")
# Stored as read; any other pixel type (uint32, int32, float64, ...) is stored as float32.
KEPT_DTYPES = ("uint8", "uint16", "int16", "float32")


@dataclass(frozen=True)
class RasterInfo:
    count: int
    dtype: str
    descriptions: tuple[str | None, ...]
    nodata: float | None
    alpha: bool  # the last band is an alpha band

    @property
    def is_rgb(self) -> bool:
        """8-bit grey/RGB (with or without alpha): read by PIL as today."""
        return self.dtype == "uint8" and self.count - self.alpha in (1, 3)

    @property
    def storage(self) -> str:
        return self.dtype if self.dtype in KEPT_DTYPES else "float32"

    def describe(self) -> str:
        return "8-bit RGB" if self.is_rgb else f"{self.count} bands ({self.dtype})"


BAND_FILE = re.compile(r"_(B\d{2}|B8A)\.tiff?$", re.IGNORECASE)


def band_files(folder: Path) -> list[tuple[str, Path]]:
    """A patch folder's single-band files as (band name, path) in Sentinel-2 order (B8A after
    B08); empty when ``folder`` is not such a folder."""
    if not Path(folder).is_dir():
        return []
    found = []
    for f in Path(folder).iterdir():
        m = BAND_FILE.search(f.name)
        if m:
            found.append((m.group(1).upper(), f))

    def order(item):  # B01 < ... < B08 < B8A < B09 < ... < B12
        name = item[0]
        return 8.5 if name == "B8A" else int(name[1:])

    return sorted(found, key=order)


def _read_band_folder(folder: Path) -> tuple[np.ndarray, float | None]:
    """(C, H, W) of a patch folder's bands on the finest band's grid, and their nodata."""
    from rasterio.enums import Resampling

    with contextlib.ExitStack() as stack:  # every opened band file closed, even on an error
        sources = [stack.enter_context(_open(path)) for _, path in band_files(folder)]
        if not sources:
            raise DataError(f"{folder} holds no band files (<chip>_B02.tif, ...)")
        height = max(s.height for s in sources)
        width = max(s.width for s in sources)
        arr = np.stack([s.read(1, out_shape=(height, width), resampling=Resampling.bilinear)
                        for s in sources])  # fmt: skip
        return arr, sources[0].nodata


def _open(path: Path):
    """rasterio.open without the warning for chips that carry no georeference (most do not)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


def raster_info(path: Path) -> RasterInfo | None:
    """The header of a TIFF chip or a folder of band files (None: neither, or not one rasterio
    can open)."""
    files = band_files(path)
    if files:
        try:
            with _open(files[0][1]) as src:
                dtype, nodata = str(src.dtypes[0]), src.nodata
        except Exception:  # noqa: BLE001 - unreadable: read_raster says why
            return None
        return RasterInfo(len(files), dtype, tuple(name for name, _ in files), nodata, False)
    if Path(path).suffix.lower() not in TIFF_SUFFIXES:
        return None
    from rasterio.enums import ColorInterp

    try:
        with _open(path) as src:
            return RasterInfo(
                src.count,
                str(src.dtypes[0]),
                tuple(src.descriptions),
                src.nodata,
                src.colorinterp[-1] == ColorInterp.alpha,
            )
    except Exception:  # noqa: BLE001 - unreadable: the PIL path reports it in its own words
        return None


def read_raster(path: Path, layout: BandLayout, reference: Path | None = None) -> np.ndarray:
    """The selected bands of one chip, (C, H, W) in the layout's dtype; one-line DataErrors
    (``reference``: a chip of the layout, named when this one has another band count)."""
    try:
        if Path(path).is_dir():
            arr, nodata = _read_band_folder(path)
            count = len(arr)
            arr = arr if count == layout.file_bands else None
        else:
            with _open(path) as src:
                count = src.count
                arr = src.read() if count == layout.file_bands else None
                nodata = src.nodata
    except Exception as err:  # noqa: BLE001 - GDAL errors come in many types
        raise DataError(
            f"{path} is corrupt or truncated ({' '.join(str(err).split())[:120]}); re-export it "
            "or pass --skip-bad-images"
        ) from None
    if arr is None:
        raise DataError(
            f"{path} has {count} bands but {reference or 'the rest of the data'} has "
            f"{layout.file_bands}; "
            "a dataset needs one band count: move it out or pass --skip-bad-images"
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise DataError(
            f"{path} has {bad} NaN/infinite pixel values; fill or mask them when exporting "
            "(e.g. gdal_fillnodata) or pass --skip-bad-images"
        )
    fill = nodata if nodata is not None and not np.isnan(nodata) else 0
    if (arr == fill).all():
        what = (
            f"every pixel is the nodata value {nodata:g}"
            if nodata is not None
            else "every pixel is 0"
        )
        raise DataError(f"{path} is all nodata ({what}); remove it or pass --skip-bad-images")
    return arr[list(layout.select)].astype(layout.dtype, copy=False)


def resize_bands(arr: np.ndarray, size: int, fit) -> np.ndarray:
    """(C, H, W) -> (C, size, size), band by band through PIL's 32-bit float mode with the same
    resize-and-centre-crop geometry as RGB chips (``fit``: decode's image-to-square function);
    integer bands are rounded and clipped back to their type."""
    c, h, w = arr.shape
    if (h, w) == (size, size):
        return arr
    out = np.stack([np.asarray(fit(Image.fromarray(band.astype(np.float32)))) for band in arr])
    if arr.dtype.kind in "ui":
        info = np.iinfo(arr.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(arr.dtype)


def preview_image(path: Path) -> Image.Image:
    """An 8-bit RGB picture of any chip for reports: multispectral chips as a true-colour
    composite (bands named red/green/blue, or Sentinel-2's B04, B03, B02 in 13-band files),
    each band stretched between its 2nd and 98th percentile."""
    info = raster_info(path)
    if info is None or info.is_rgb:
        with Image.open(path) as im:
            return im.convert("RGB")
    if Path(path).is_dir():
        arr = _read_band_folder(path)[0].astype(np.float32)
    else:
        with _open(path) as src:
            arr = src.read().astype(np.float32)
    lowered = [str(d or "").lower() for d in info.descriptions]
    named = [next((i for i, d in enumerate(lowered) if d in a), None) for a in COLOUR_ALIASES]
    if None not in named:
        pick = named
    elif info.count == 13:
        pick = [3, 2, 1]
    else:
        pick = [min(i, info.count - 1) for i in range(3)]
    rgb = arr[pick]
    lo = np.percentile(rgb, 2, axis=(1, 2), keepdims=True)
    hi = np.percentile(rgb, 98, axis=(1, 2), keepdims=True)
    rgb = np.clip((rgb - lo) / np.maximum(hi - lo, 1e-6), 0, 1)
    return Image.fromarray((rgb * 255).astype(np.uint8).transpose(1, 2, 0))


def chip_side(path: Path) -> int:
    """The short side of a chip in pixels, any format (PIL cannot open 13-band 16-bit TIFFs)."""
    files = band_files(path)
    if files:  # the finest band's grid (see _read_band_folder)
        sides = []
        for _, f in files:
            with _open(f) as src:
                sides.append(min(src.width, src.height))
        return max(sides)
    if Path(path).suffix.lower() in TIFF_SUFFIXES:
        try:
            with _open(path) as src:
                return min(src.width, src.height)
        except Exception:  # noqa: BLE001 - not a raster GDAL reads: let PIL try (and say why)
            pass
    with Image.open(path) as im:
        return min(im.size)
