"""Decode-once cache: every chip decoded, resized to the backbone's input size and stored as uint8."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from geotune.data.folder import SceneFolder, cache_root, default_workers
from geotune.errors import DataError
from geotune.runs.io import atomic_write_json

CACHE_VERSION = 1


_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def read_rgb(path: Path) -> Image.Image:
    """Open one chip as 8-bit RGB, or raise DataError naming the file and the problem."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now: truncated files fail here, not in the middle of an epoch
            mode = im.mode
            if mode in ("RGB", "L", "P", "RGBA", "LA", "CMYK", "YCbCr"):
                return im.convert("RGB")
    except UnidentifiedImageError:
        raise DataError(
            f"{path} is not a readable image; delete it or pass --skip-bad-images"
        ) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(
            f"{path} is corrupt or truncated ({err}); re-export it or pass --skip-bad-images"
        ) from None
    raise DataError(
        f"{path} has pixel mode '{mode}' (not 8-bit RGB); convert it to 8-bit RGB, "
        "or pass --skip-bad-images"
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

    With ``skip_bad`` unreadable files are dropped and recorded in ``folder.skipped`` of the
    returned object; without it the first unreadable file raises a one-line DataError.
    """
    cache_dir = Path(cache_dir or cache_root()) / "images"
    key = _folder_key(folder, size, interpolation)
    arr_path, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if arr_path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        bad = {rel: reason for rel, reason in meta["bad"]}
        if bad and not skip_bad:
            rel, reason = next(iter(bad.items()))
            raise DataError(f"{folder.root / rel} {reason}; fix it or pass --skip-bad-images")
        kept = _drop_bad(folder, bad)
        return DecodedImages(kept, np.load(arr_path, mmap_mode="r"), size, interpolation, key)

    def work(rel: str) -> np.ndarray | str:
        try:
            return resize_chip(read_rgb(folder.root / rel), size, interpolation)
        except DataError as err:
            if not skip_bad:
                raise
            return str(err).removeprefix(str(folder.root / rel)).split(";")[0].strip()

    workers = workers or default_workers()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(
            pool.map(work, folder.paths, chunksize=1) if workers > 1 else map(work, folder.paths)
        )
    bad = {rel: r for rel, r in zip(folder.paths, results, strict=True) if isinstance(r, str)}
    good = [r for r in results if not isinstance(r, str)]
    kept = _drop_bad(folder, bad)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{key}.{os.getpid()}.npy"
    out = np.lib.format.open_memmap(
        tmp, mode="w+", dtype=np.uint8, shape=(len(good), 3, size, size)
    )
    for i, chip in enumerate(good):
        out[i] = chip
    out.flush()
    del out
    os.replace(tmp, arr_path)
    atomic_write_json(
        meta_path, {"root": str(folder.root), "n": len(good), "bad": sorted(bad.items())}
    )
    return DecodedImages(kept, np.load(arr_path, mmap_mode="r"), size, interpolation, key)


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
