"""Scene-chip datasets in ImageFolder layout, decoded once into a uint8 cache, and their splits.

Layout: ``ROOT/<class>/<image>`` with RGB JPEG, PNG or TIFF chips of any size. Each image is
decoded once, resized as a whole chip to the backbone's input size, and stored as uint8 in a
memory-mapped array under the cache folder. Later epochs and later runs read that array instead
of decoding again, which also means every file is checked (corrupt, truncated, not an image)
before a run folder is created.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from geotune.errors import DataError
from geotune.rundir import atomic_write_csv, atomic_write_json

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})
# Files that operating systems and tools drop into folders; never images, never an error.
IGNORED_FILES = frozenset({"Thumbs.db", "desktop.ini"})
SPLITS = ("train", "val", "test", "unused")  # unused: labelled pool beyond a label budget
CACHE_VERSION = 1


def cache_root() -> Path:
    """Where decoded images and features are cached (``GEOTUNE_CACHE`` overrides)."""
    env = os.environ.get("GEOTUNE_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "geotune"


# ----------------------------------------------------------------------------------------------
# Scanning
# ----------------------------------------------------------------------------------------------
@dataclass
class SceneFolder:
    """The files of an ImageFolder dataset: class names and (relative path, label) per image."""

    root: Path
    classes: list[str]
    paths: list[str]  # relative to root, '/'-separated
    labels: np.ndarray  # int64, index into classes
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        n = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(k) for c, k in zip(self.classes, n, strict=True)}

    def subset(self, keep: np.ndarray) -> SceneFolder:
        return SceneFolder(
            self.root,
            self.classes,
            [p for p, k in zip(self.paths, keep, strict=True) if k],
            self.labels[keep],
            list(self.skipped),
        )


def scan_folder(root: Path | str, skip_bad: bool = False) -> SceneFolder:
    """List ``root/<class>/<image>``; one-line errors for every layout problem."""
    root = Path(root)
    if not root.exists():
        raise DataError(
            f"data folder {root} does not exist; pass --data DIR with one sub-folder per class"
        )
    if not root.is_dir():
        raise DataError(
            f"data path {root} is a file; pass the folder that holds one sub-folder per class"
        )
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"data folder {root} has no class sub-folders; expected {root}/<class>/<image files>"
        )
    classes, paths, labels, skipped = [], [], [], []
    for class_dir in class_dirs:
        files = sorted(
            f
            for f in class_dir.iterdir()
            if not f.name.startswith(".") and f.name not in IGNORED_FILES
        )
        images = []
        for f in files:
            rel = f"{class_dir.name}/{f.name}"
            if f.is_dir():
                reason = "is a folder inside a class folder (nested classes are not supported)"
            elif f.suffix.lower() not in IMAGE_EXTENSIONS:
                reason = f"is not an image (extension '{f.suffix}')"
            else:
                images.append(rel)
                continue
            if not skip_bad:
                raise DataError(
                    f"{root / rel} {reason}; move it out of the data folder or pass --skip-bad-images"
                )
            skipped.append((rel, reason))
        if not images:
            raise DataError(
                f"class folder {class_dir} holds no images; add images or remove the folder"
            )
        label = len(classes)
        classes.append(class_dir.name)
        paths.extend(images)
        labels.extend([label] * len(images))
    return SceneFolder(root, classes, paths, np.asarray(labels, dtype=np.int64), skipped)


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------
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


def default_workers() -> int:
    return max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


# ----------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------
def make_split(
    folder: SceneFolder,
    train_fraction: float | None = 0.2,
    labels_per_class: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> np.ndarray:
    """Stratified train/val/test assignment (array of 'train'|'val'|'test'), reproducible from seed.

    The labelled part of each class is ``labels_per_class`` images, or ``train_fraction`` of the
    class; ``val_fraction`` of the labelled part is held out for validation (model selection),
    so the test part is exactly what the protocol (e.g. AID 20/80) leaves unlabelled.
    """
    rng = np.random.default_rng(seed)
    split = np.empty(len(folder), dtype=object)
    need_val = val_fraction > 0
    for c, name in enumerate(folder.classes):
        idx = np.flatnonzero(folder.labels == c)
        n = len(idx)
        if labels_per_class is not None:
            n_lab = labels_per_class
        else:
            n_lab = int(round(n * float(train_fraction)))
        n_val = int(round(n_lab * val_fraction)) if need_val else 0
        if need_val:
            n_val = max(1, n_val)
        n_train = n_lab - n_val
        if n_train < 1 or n - n_lab < 1:
            minimum = (labels_per_class or 1) + 1 if labels_per_class else (3 if need_val else 2)
            raise DataError(
                f"class '{name}' has {n} images, too few for the requested split "
                f"(labelled {n_lab}: {n_train} train + {n_val} val, plus at least 1 test; needs "
                f"about {max(minimum, n_val + 2)}); add images, lower --labels-per-class or "
                "--val-fraction, or raise --train-fraction"
            )
        perm = idx[rng.permutation(n)]
        split[perm[:n_train]] = "train"
        split[perm[n_train:n_lab]] = "val"
        split[perm[n_lab:]] = "test"
    return split.astype(str)


def write_split(path: Path, folder: SceneFolder, split: np.ndarray) -> None:
    atomic_write_csv(
        path,
        ["path", "class", "split"],
        (
            (p, folder.classes[y], s)
            for p, y, s in zip(folder.paths, folder.labels, split, strict=True)
        ),
    )


def read_split(path: Path, folder: SceneFolder) -> np.ndarray:
    """Read a split file written by geotune; every listed image must exist with its class."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file {path} not found; pass the split.csv of an earlier run")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or set(rows[0]) != {"path", "class", "split"}:
        raise DataError(f"split file {path} must have the columns path,class,split")
    where = {p: i for i, p in enumerate(folder.paths)}
    split = np.full(len(folder), "", dtype=object)
    for row in rows:
        i = where.get(row["path"])
        if i is None:
            raise DataError(
                f"split file {path} lists {row['path']}, which is not in {folder.root}; "
                "use the split of a run on this dataset"
            )
        if folder.classes[folder.labels[i]] != row["class"] or row["split"] not in SPLITS:
            raise DataError(f"split file {path}: bad class or split for {row['path']}")
        split[i] = row["split"]
    if (split == "").any():
        missing = folder.paths[int(np.flatnonzero(split == "")[0])]
        raise DataError(
            f"{folder.root / missing} is not in split file {path}; the dataset changed since the split was made"
        )
    return split.astype(str)


# ----------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------
def iterate_batches(
    pixels: np.ndarray,
    labels: np.ndarray,
    indices: Sequence[int] | np.ndarray,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 images, labels) batches from the decoded array.

    Hand-written rather than a DataLoader: the chips are already decoded in one array, so a batch
    is a single fancy-index; loader workers would only add inter-process copies.
    """
    idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    if shuffle:
        idx = idx[torch.randperm(len(idx), generator=generator)]
    stop = len(idx) - (len(idx) % batch_size if drop_last else 0)
    for start in range(0, stop, batch_size):
        b = np.sort(idx[start : start + batch_size].numpy())  # sorted reads from the memmap
        order = np.argsort(np.argsort(idx[start : start + batch_size].numpy()))
        x = torch.from_numpy(np.ascontiguousarray(pixels[b]))[order]
        y = torch.from_numpy(labels[b])[order]
        yield x, y


def image_batches(
    pixels: np.ndarray,
    indices,
    batch_size: int,
    normalize,
    device,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Normalised, channels-last image batches without labels (statistics, features, TTA)."""
    dummy = np.zeros(len(pixels), dtype=np.int64)
    for x, _ in iterate_batches(pixels, dummy, indices, batch_size, shuffle, generator):
        yield normalize(x.to(device)).contiguous(memory_format=torch.channels_last)


def prefetch(
    batches: Iterator, device: torch.device | str, depth: int = 2, thread: bool | None = None
) -> Iterator:
    """On CUDA, read the next ``depth`` batches from the cache in a background thread into pinned
    memory: host reads overlap GPU compute and ``.to(device, non_blocking=True)`` really is
    asynchronous. On CPU the batches pass through unchanged (a thread would only compete with
    the model for the same cores). ``thread`` forces the choice (tests)."""
    cuda = torch.device(device).type == "cuda"
    if not (cuda if thread is None else thread):
        yield from batches
        return
    q: queue.Queue = queue.Queue(depth)
    done = object()

    def work() -> None:
        try:
            for x, y in batches:
                q.put((x.pin_memory(), y.pin_memory()) if cuda else (x, y))
        except BaseException as err:  # noqa: BLE001 - re-raised in the consuming thread
            q.put(err)
        q.put(done)

    threading.Thread(target=work, daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def budget_split(
    folder: SceneFolder,
    pool_fraction: float,
    labels_per_class: int | None,
    val_fraction: float,
    seed: int,
    test_per_class: int | None = None,
) -> np.ndarray:
    """A split for data-efficiency curves: for one seed the test part is the same whatever the
    label budget, and smaller budgets are subsets of larger ones (5 of the 20, 20 of all).

    Each class is shuffled once from ``seed``; its first ``pool_fraction`` is the labelled pool, the
    rest is test (capped at ``test_per_class``). A budget takes the first ``labels_per_class`` chips of the pool (None: the whole
    pool), of which ``val_fraction`` (at least one) is held out for validation.
    """
    rng = np.random.default_rng(seed)
    split = np.full(len(folder), "unused", dtype=object)
    for c, name in enumerate(folder.classes):
        idx = np.flatnonzero(folder.labels == c)
        perm = idx[rng.permutation(len(idx))]
        n_pool = int(round(len(idx) * pool_fraction))
        n_lab = n_pool if labels_per_class is None else labels_per_class
        if n_lab > n_pool or n_pool >= len(idx):
            raise DataError(
                f"class '{name}' has {len(idx)} images: its labelled pool ({n_pool}) cannot give "
                f"{n_lab} labels per class and keep a test part; lower the budget or raise --pool-fraction"
            )
        n_val = max(1, int(round(n_lab * val_fraction))) if val_fraction > 0 and n_lab > 1 else 0
        split[perm[: n_lab - n_val]] = "train"
        split[perm[n_lab - n_val : n_lab]] = "val"
        split[perm[n_pool:][:test_per_class]] = "test"
        # chips of the pool beyond the budget stay 'unused', so every budget shares one test set
    return split.astype(str)
