"""Decode-once cache: every chip decoded, resized to the backbone's input size and stored as uint8."""

from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from geotune.data.bands import BandLayout, BandRequest, check_layout, resolve_layout
from geotune.data.cache import RESIDENT, ArrayCache
from geotune.data.folder import SceneFolder, cache_root, default_workers
from geotune.data.raster import raster_info, read_raster, resize_bands
from geotune.errors import ConfigError, DataError

CACHE_VERSION = 1


_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


# PIL modes that hold 8-bit RGB or lose nothing on the way there (grey, palette, YCbCr).
_RGB_LOSSLESS = ("RGB", "L", "P", "YCbCr")


def read_rgb(path: Path) -> Image.Image:
    """Open one chip as 8-bit RGB, or raise DataError naming the file and the problem.

    Conversions that would drop information are refused rather than applied silently: a
    transparent alpha band, a fourth band (CMYK or multispectral) and 16/32-bit pixels.
    """
    try:
        with Image.open(path) as im:
            im.load()  # decode now: truncated files fail here, not in the middle of an epoch
            return _to_rgb(im, path)
    except UnidentifiedImageError:
        raise DataError(
            f"{path} is not a readable image; delete it or pass --skip-bad-images"
        ) from None
    except Image.DecompressionBombError as err:
        raise DataError(
            f"{path} is too large to decode safely ({err.args[0].split('(')[0].strip()}); "
            "cut it into chips or pass --skip-bad-images"
        ) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(
            f"{path} is corrupt or truncated ({' '.join(str(err).split())}); re-export it or "
            "pass --skip-bad-images"
        ) from None


def _to_rgb(im: Image.Image, path: Path) -> Image.Image:
    mode = im.mode
    if mode in _RGB_LOSSLESS:
        return im.convert("RGB")
    if mode in ("RGBA", "LA") and im.getchannel("A").getextrema()[0] == 255:
        return im.convert("RGB")  # an opaque alpha band carries nothing
    if mode in ("RGBA", "LA", "PA"):
        why = "has a transparent alpha band"
    elif mode == "CMYK" or len(im.getbands()) > 3:
        why = f"has {len(im.getbands())} bands ({mode})"
    else:
        why = f"has {mode} pixels (not 8-bit)"
    raise DataError(
        f"{path} {why}; geotune reads 8-bit RGB chips: export 8-bit RGB, or pass --skip-bad-images"
    )


def resize_chip(im: Image.Image, size: int, interpolation: str) -> np.ndarray:
    """Whole chip to size x size (CHW uint8).

    Scene chips are framed as a whole, so unlike ImageNet evaluation we do not centre-crop away
    a border (timm's crop_pct); a non-square chip is resized on its short side and centre-cropped.
    """
    return np.asarray(fit_square(im, size, interpolation), dtype=np.uint8).transpose(2, 0, 1)


def fit_square(im: Image.Image, size: int, interpolation: str) -> Image.Image:
    """The geometry of resize_chip, for any PIL mode (multispectral bands go through mode F)."""
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), _RESAMPLE.get(interpolation, Image.Resampling.BICUBIC))
    left, top = (nw - size) // 2, (nh - size) // 2
    if (nw, nh) != (size, size):
        im = im.crop((left, top, left + size, top + size))
    return im


def _folder_key(folder: SceneFolder, size: int, interpolation: str) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}|{folder.root.resolve()}|{size}|{interpolation}".encode())
    for rel in folder.paths:
        path = folder.root / rel
        st = path.stat()
        h.update(f"|{rel}|{st.st_size}|{st.st_mtime_ns}".encode())
        if path.is_dir():  # a folder of band files (BigEarthNet): its files' sizes and times
            for f in sorted(path.iterdir()):
                fs = f.stat()
                h.update(f"|{f.name}|{fs.st_size}|{fs.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


@dataclass
class DecodedImages:
    """All chips of a folder as one array (N, C, S, S), memory-mapped from the cache: uint8 RGB,
    or the selected bands of multispectral chips in their own dtype (``layout``).

    A map-style ``torch.utils.data.Dataset``: ``ds[i]`` is ``(image, label)``, image the CxSxS
    tensor of row ``i`` exactly as the engine's ``load_batch`` gives it, i.e. *before* the
    engine's on-device augmentation and normalisation (uint8 for RGB, the band dtype for
    multispectral chips; resized and band-selected already), label an int. ``transform``
    (e.g. ``geotune.data.normalize_transform(preprocessing)``) is applied to the image when set.
    Tuples, not torchgeo dicts: a plain ``DataLoader`` collates them as torchvision's
    ImageFolder samples. ``classes``, ``class_to_idx``, ``targets`` and ``samples`` are the
    folder's (torchvision's names).
    """

    folder: SceneFolder
    pixels: np.ndarray
    size: int
    interpolation: str
    key: str
    layout: BandLayout | None = None  # None: 8-bit RGB chips
    transform: Any = None  # image -> image, applied by __getitem__

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        import torch

        if not -len(self) <= i < len(self):
            raise IndexError(f"chip {i} out of range for {len(self)} chips")
        image = torch.from_numpy(np.array(self.pixels[i]))
        if self.transform is not None:
            image = self.transform(image)
        if self.folder.multilabel:
            return image, torch.from_numpy(np.array(self.folder.label_matrix[i]))
        return image, int(self.folder.labels[i])

    @property
    def classes(self) -> list[str]:
        return self.folder.classes

    @property
    def class_to_idx(self) -> dict[str, int]:
        return self.folder.class_to_idx

    @property
    def targets(self) -> list[int]:
        return self.folder.targets

    @property
    def samples(self) -> list[tuple[str, int]]:
        return self.folder.samples


# Chips decoded per block before they are written to the cache: bounds RAM, keeps threads busy.
DECODE_BLOCK = 256


def decode_folder(
    folder: SceneFolder,
    size: int,
    interpolation: str = "bicubic",
    workers: int | None = None,
    skip_bad: bool = False,
    cache_dir: Path | None = None,
    bands: BandRequest | None = None,
) -> DecodedImages:
    """Decode every chip once (threads; PIL and GDAL release the GIL) into a reusable cache.

    Args:
        folder: the scanned dataset.
        size: square output size in pixels; interpolation: PIL resampling name.
        workers: decode threads (default: all cores).
        skip_bad: drop unreadable files (recorded in ``folder.skipped`` of the result) instead
            of raising a one-line DataError for the first one.
        cache_dir: cache root (default: ``GEOTUNE_CACHE`` or ~/.cache/geotune).
        bands: band names / selection (``--band-names``, ``--bands``), or a trained run whose
            bands the data must give (one-line DataError otherwise, before any decoding).
            8-bit RGB data without band options decodes exactly as before (same key, uint8).

    Returns:
        The decoded chips, memory-mapped from the cache.
    """
    cache = ArrayCache(Path(cache_dir or cache_root()) / "images")
    layout, ref = detect_layout(folder, bands or BandRequest())
    if bands is not None and bands.run is not None:
        check_layout(layout, bands.expected, folder.root, bands.run)
    key = _folder_key(folder, size, interpolation)
    if layout is not None:  # keyed as RGB data plus the band layout
        layout_text = json.dumps(layout.to_dict(), sort_keys=True)
        key = hashlib.sha1(f"{key}|{layout_text}".encode()).hexdigest()[:20]
    hit = cache.load(key)
    if hit is not None:
        pixels, meta = hit
        pixels = pixels[: meta["n"]]  # rows past n belong to skipped chips
        bad = {rel: reason for rel, reason in meta["bad"]}
        if bad and not skip_bad:
            rel, reason = next(iter(bad.items()))
            raise DataError(f"{folder.root / rel} {reason}; fix it or pass --skip-bad-images")
        return DecodedImages(_drop_bad(folder, bad), pixels, size, interpolation, key, layout)

    read = _chip_reader(size, interpolation, layout, folder.root / ref)

    def work(rel: str) -> np.ndarray | str:
        try:
            return read(folder.root / rel)
        except DataError as err:
            if not skip_bad:
                raise
            # The whole reason, without the path and the generic fix.
            return str(err).removeprefix(str(folder.root / rel)).rsplit("; ", 1)[0].strip()

    workers = max(1, min(workers or default_workers(), len(folder.paths)))
    bad: dict[str, str] = {}

    def fill(out: np.ndarray) -> None:
        _decode_into(out, folder.paths, work, workers, bad)

    channels, dtype = (3, np.uint8) if layout is None else (layout.channels, layout.dtype)
    shape = (len(folder.paths), channels, size, size)

    def meta() -> dict:  # read after fill: the bad chips are known then
        return {
            "root": str(folder.root),
            "n": len(folder.paths) - len(bad),
            "bad": sorted(bad.items()),
        }

    pixels = cache.save(key, shape, dtype, fill, meta)
    kept = _drop_bad(folder, bad)
    pixels = pixels[: len(kept.paths)]
    return DecodedImages(kept, pixels, size, interpolation, key, layout)


def _decode_into(
    out: np.ndarray,
    paths: list[str],
    work: Callable[[str], np.ndarray | str],
    workers: int,
    bad: dict[str, str],
) -> None:
    """Decode ``paths`` straight into the memory-mapped ``out``, a block at a time, so RAM
    stays flat in the number of chips; a chip ``work`` reports as bad (a reason string) goes
    into ``bad`` and leaves the entry's last rows unused."""
    kept_rows = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(paths), DECODE_BLOCK):
            block = paths[start : start + DECODE_BLOCK]
            results = pool.map(work, block) if workers > 1 else map(work, block)
            for rel, chip in zip(block, results, strict=True):
                if isinstance(chip, str):
                    bad[rel] = chip
                else:
                    out[kept_rows] = chip
                    kept_rows += 1
            RESIDENT.touched(out)  # a block written: RSS flat in N (see data.cache)


def detect_layout(folder: SceneFolder, request: BandRequest) -> tuple[BandLayout | None, str]:
    """The band layout of a dataset (None: 8-bit RGB) and a chip that has it.

    The kind of the first chip of every class decides (a single odd file cannot make the whole
    dataset look multispectral); every chip is checked against it while decoding.
    """
    firsts = {}
    for rel, label in zip(folder.paths, folder.labels, strict=True):
        firsts.setdefault(int(label), rel)
    infos = {rel: raster_info(folder.root / rel) for rel in firsts.values()}
    kinds = {
        rel: "rgb" if i is None or i.is_rgb else (i.count, i.storage) for rel, i in infos.items()
    }
    kind = Counter(kinds.values()).most_common(1)[0][0]
    ref = next(rel for rel, k in kinds.items() if k == kind)
    info = infos[ref]
    named = request.band_names or request.bands
    if kind == "rgb" and (not named or request.run is not None):
        return None, ref  # RGB images (for a run's bands: check_layout says what is wrong)
    if info is None:
        raise ConfigError(
            f"--band-names and --bands apply to GeoTIFF chips, but {folder.root / ref} is an "
            "8-bit RGB image; leave these options out for RGB images"
        )
    where = folder.root / ref
    return resolve_layout(
        info.count, info.storage, info.descriptions, where, request.band_names, request.bands
    ), ref


def read_chip(
    path: Path,
    size: int,
    interpolation: str,
    layout: BandLayout | None = None,
    reference: Path | str = "the model's input",
) -> np.ndarray:
    """One chip at ``size`` (CHW): 8-bit RGB (``layout`` None) or the layout's bands in their own
    dtype; a chip of another kind is a one-line DataError naming ``reference``."""
    if layout is not None:
        fit = functools.partial(fit_square, size=size, interpolation=interpolation)
        return resize_bands(read_raster(path, layout, reference), size, fit)
    try:
        return resize_chip(read_rgb(path), size, interpolation)
    except DataError:
        info = raster_info(path)  # a readable multispectral TIFF among RGB images
        if info is None or info.is_rgb:
            raise
        raise DataError(
            f"{path} has {info.describe()} but {reference} is 8-bit RGB; one band count per "
            "dataset and model: move one kind out, or pass --skip-bad-images"
        ) from None


def _chip_reader(size: int, interpolation: str, layout: BandLayout | None, ref: Path):
    """path -> decoded chip (CHW) of the dataset's kind; another kind is a one-line DataError."""
    return functools.partial(
        read_chip, size=size, interpolation=interpolation, layout=layout, reference=ref
    )


def _drop_bad(folder: SceneFolder, bad: dict[str, str]) -> SceneFolder:
    if not bad:
        return folder
    keep = np.array([p not in bad for p in folder.paths])
    kept = folder.subset(keep)
    kept.skipped = list(folder.skipped) + sorted(bad.items())
    empty = [c for c, n in kept.counts().items() if n == 0]
    if empty:
        raise DataError(f"class '{empty[0]}' has no readable images left after skipping bad files")
    return kept
