"""Array caches on disk (decoded chips, backbone features) that are never trusted blindly.

An entry is ``KEY.npy`` plus ``KEY.json``. The array is written to a temporary file and renamed
into place; the JSON, written last and atomically, is the completion marker and records the
array's shape, dtype and byte size. On every read the entry is checked against it: a truncated,
short, 0-byte or foreign file is removed and rebuilt, with one warning line. Temporary files
left by killed processes are removed when their process is gone.

Entries get the umask's mode; in a cache folder its group may write to (a cache shared by a
group), folders and files are made group-writable too, so every member can read, replace and
clean up what another wrote (geotune.fileio).
"""

from __future__ import annotations

import json
import math
import mmap
import os
import shutil
import sys
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from geotune.errors import DataError
from geotune.fileio import atomic_write_json, group_shared, make_folder, share_with_group


def warn(message: str) -> None:
    """One warning line on stderr (the CLI's channel for progress and warnings)."""
    sys.stderr.write(f"geotune: warning: {' '.join(message.split())}\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ArrayCache:
    """A folder of validated ``.npy`` + ``.json`` entries."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.folder / f"{key}.npy", self.folder / f"{key}.json"

    def load(self, key: str, mmap: bool = True) -> tuple[np.ndarray, dict[str, Any]] | None:
        """The entry's array and metadata, or None when absent or damaged (then removed)."""
        arr_path, meta_path = self._paths(key)
        if not arr_path.exists() and not meta_path.exists():
            return None
        problem = None
        try:
            meta = json.loads(meta_path.read_text())
            # Memory-mapping checks the header and that the file holds every element.
            arr = np.load(arr_path, mmap_mode="r" if mmap else None)
            # Entries from before this format record only the number of rows ("n").
            shape = tuple(meta.get("shape") or (meta["n"], *arr.shape[1:]))
            dtype = np.dtype(meta.get("dtype", arr.dtype))
            size = arr_path.stat().st_size
            if arr.shape != shape or arr.dtype != dtype:
                problem = f"shape {arr.shape} {arr.dtype}, expected {shape} {dtype}"
            elif "bytes" in meta and size != meta["bytes"]:
                problem = f"{size} bytes instead of {meta['bytes']}"
        except (OSError, ValueError, KeyError, TypeError, EOFError, json.JSONDecodeError) as err:
            problem = type(err).__name__
        if problem is None:
            return arr, meta
        warn(f"cache entry {arr_path} is damaged ({problem}); rebuilding it")
        self.remove(key)
        return None

    def save(
        self,
        key: str,
        shape: tuple[int, ...],
        dtype: Any,
        fill: Callable[[np.ndarray], None],
        meta: dict[str, Any] | Callable[[], dict[str, Any]],
    ) -> np.ndarray:
        """Write an entry: ``fill`` writes the array into a memory map; metadata goes last
        (``meta`` may be a callable, read after ``fill``)."""
        self._prepare()
        self._check_space(shape, dtype)
        arr_path, meta_path = self._paths(key)
        tmp = self.folder / f".{key}.{os.getpid()}.npy"
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
            if group_shared(self.folder):
                share_with_group(tmp)
            fill(out)
            out.flush()
            del out
            os.replace(tmp, arr_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        full = {
            **(meta() if callable(meta) else meta),
            "shape": list(shape),
            "dtype": np.dtype(dtype).str,
            "bytes": arr_path.stat().st_size,
        }
        atomic_write_json(meta_path, full, shared=True)
        return np.load(arr_path, mmap_mode="r")

    def _check_space(self, shape: tuple[int, ...], dtype: Any) -> None:
        """Refuse, before any work, an entry the cache's disk cannot hold (a huge
        --image-size, or a dataset larger than the disk), instead of failing mid-write."""
        need = math.prod(shape) * np.dtype(dtype).itemsize
        free = shutil.disk_usage(self.folder).free
        if need > free:
            raise DataError(
                f"caching {shape[0]} arrays of shape {tuple(shape[1:])} needs {need / 1e9:.1f} GB "
                f"in {self.folder}, but only {free / 1e9:.1f} GB are free; free space, set "
                "GEOTUNE_CACHE to a larger disk, or use a smaller --image-size"
            )

    def remove(self, key: str) -> None:
        for p in self._paths(key):
            p.unlink(missing_ok=True)

    def _prepare(self) -> None:
        """Create the folder (or say why not) and clear temporaries of dead processes."""
        try:
            make_folder(self.folder, shared=True)
        except OSError as err:
            raise DataError(
                f"cannot create cache folder {self.folder} ({err.strerror}); set GEOTUNE_CACHE "
                "to a writable folder"
            ) from None
        if not os.access(self.folder, os.W_OK | os.X_OK):
            raise DataError(
                f"cache folder {self.folder} is not writable; set GEOTUNE_CACHE to a writable folder"
            )
        for tmp in self.folder.glob(".*.npy"):
            pid = tmp.name.rsplit(".", 2)[-2]
            if pid.isdigit() and not _alive(int(pid)):
                tmp.unlink(missing_ok=True)


# RSS counts the file pages a memory map has touched: one pass over a 6 GB chip cache leaves
# 6 GB "resident" (page cache the kernel can take back, but ru_maxrss, schedulers and OOM
# monitors count it), so RSS would grow with the number of chips. When the process's file-backed
# RSS has grown by RELEASE_BYTES, every map read or written since drops its pages from this
# process (madvise MADV_DONTNEED; numpy has no API for it). The data stays in the page cache (and
# dirty pages of a shared map are still written back), so touching them again is a minor fault,
# not disk I/O. RSS is read, not estimated from bytes read: with large folios one random 12 KB
# chip read maps 0.5-2 MB (measured on Linux 6.18), which no per-read count can predict.
RELEASE_BYTES = 256 * 2**20
_STATM = "/proc/self/statm"  # size resident shared ...: pages; "shared" = file-backed + shmem
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _file_backed_bytes() -> int | None:
    try:
        with open(_STATM) as f:
            return int(f.read().split()[2]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None  # not Linux: nothing to measure, nothing released


class ResidentPages:
    """Releases the pages of every memory map touched once file-backed RSS has grown by
    RELEASE_BYTES.

    All maps, not only the one being touched: the feature pass reads the chip cache and writes
    the feature cache in turn, and releasing only the map at hand when the threshold is crossed
    (the small feature map) reset the level while the chip cache's pages stayed resident, so
    the probe's RSS grew with N (2.9 GB of file pages at 500k chips, 2026-12-07).
    """

    def __init__(self) -> None:
        self._level: int | None = None
        self._maps: dict[int, weakref.ref] = {}  # maps touched since the last release

    def touched(self, array: np.ndarray) -> None:
        """Call after reading or writing through ``array`` (a no-op for arrays in RAM)."""
        mm = getattr(array, "_mmap", None)
        if mm is None or getattr(array, "mode", "r") == "c":
            return  # arrays in RAM have no pages to drop; copy-on-write maps would lose changes
        self._maps[id(mm)] = weakref.ref(mm)
        now = _file_backed_bytes()
        if now is None:
            return
        if self._level is None or now < self._level:
            self._level = now
        elif now - self._level >= RELEASE_BYTES:
            maps = [ref() for ref in self._maps.values()] if hasattr(mmap, "MADV_DONTNEED") else []
            for live in maps:
                if live is not None and not live.closed:
                    live.madvise(mmap.MADV_DONTNEED)
            self._maps.clear()
            self._level = _file_backed_bytes()


RESIDENT = ResidentPages()

GATHER_ROWS = 256  # ~16 MB of mapped pages per read at most (see read_rows)


def read_rows(array: np.ndarray, rows: np.ndarray, dtype: Any = None) -> np.ndarray:
    """``array[rows]`` (give ``rows`` sorted: file order), read GATHER_ROWS rows at a time with
    RESIDENT told after each, so that RSS stays flat in N. Rows spread over a memory map each
    map ~64 KB around them (the kernel's fault-around): one 4096-row read from a 500 MB feature
    cache left 473 MB resident before it could be released (measured, Linux 6.18)."""
    out = np.empty((len(rows), *array.shape[1:]), dtype=dtype or array.dtype)
    for start in range(0, len(rows), GATHER_ROWS):
        chunk = slice(start, start + GATHER_ROWS)
        out[chunk] = array[rows[chunk]]
        RESIDENT.touched(array)
    return out
