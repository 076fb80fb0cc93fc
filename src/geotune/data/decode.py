"""Decode-once cache: every chip decoded, resized to the backbone's input size and stored as uint8."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from geotune.data.cache import ArrayCache
from geotune.data.folder import SceneFolder, cache_root, default_workers
from geotune.errors import DataError

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
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), _RESAMPLE.get(interpolation, Image.Resampling.BICUBIC))
    left, top = (nw - size) // 2, (nh - size) // 2
    if (nw, nh) != (size, size):
        im = im.crop((left, top, left + size, top + size))
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def _folder_key(folder: SceneFolder, size: int, interpolation: str) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}|{folder.root.resolve()}|{size}|{interpolation}".encode())
    for rel in folder.paths:
        st = (folder.root / rel).stat()
        h.update(f"|{rel}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


@dataclass
class DecodedImages:
    """All chips of a folder as one uint8 array (N, 3, S, S), memory-mapped from the cache."""

    folder: SceneFolder
    pixels: np.ndarray
    size: int
    interpolation: str
    key: str


def decode_folder(
    folder: SceneFolder,
    size: int,
    interpolation: str = "bicubic",
    workers: int | None = None,
    skip_bad: bool = False,
    cache_dir: Path | None = None,
) -> DecodedImages:
    """Decode every chip once (threads; PIL releases the GIL) into a reusable uint8 cache.

    Args:
        folder: the scanned dataset.
        size: square output size in pixels; interpolation: PIL resampling name.
        workers: decode threads (default: all cores).
        skip_bad: drop unreadable files (recorded in ``folder.skipped`` of the result) instead
            of raising a one-line DataError for the first one.
        cache_dir: cache root (default: ``GEOTUNE_CACHE`` or ~/.cache/geotune).

    Returns:
        The decoded chips, memory-mapped from the cache.
    """
    cache = ArrayCache(Path(cache_dir or cache_root()) / "images")
    key = _folder_key(folder, size, interpolation)
    hit = cache.load(key)
    if hit is not None:
        pixels, meta = hit
        bad = {rel: reason for rel, reason in meta["bad"]}
        if bad and not skip_bad:
            rel, reason = next(iter(bad.items()))
            raise DataError(f"{folder.root / rel} {reason}; fix it or pass --skip-bad-images")
        return DecodedImages(_drop_bad(folder, bad), pixels, size, interpolation, key)

    def work(rel: str) -> np.ndarray | str:
        try:
            return resize_chip(read_rgb(folder.root / rel), size, interpolation)
        except DataError as err:
            if not skip_bad:
                raise
            # The whole reason, without the path and the generic fix.
            return str(err).removeprefix(str(folder.root / rel)).rsplit("; ", 1)[0].strip()

    workers = workers or default_workers()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(
            pool.map(work, folder.paths, chunksize=1) if workers > 1 else map(work, folder.paths)
        )
    bad = {rel: r for rel, r in zip(folder.paths, results, strict=True) if isinstance(r, str)}
    good = [r for r in results if not isinstance(r, str)]
    kept = _drop_bad(folder, bad)

    def fill(out: np.ndarray) -> None:
        for i, chip in enumerate(good):
            out[i] = chip

    meta = {"root": str(folder.root), "n": len(good), "bad": sorted(bad.items())}
    pixels = cache.save(key, (len(good), 3, size, size), np.uint8, fill, meta)
    return DecodedImages(kept, pixels, size, interpolation, key)


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
