"""Scene-chip folders in ImageFolder layout (``ROOT/<class>/<chip>``) and unlabelled chip lists."""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geotune.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})


# Files that operating systems and tools drop into folders; never images, never an error.
IGNORED_FILES = frozenset({"Thumbs.db", "desktop.ini"})


def cache_root() -> Path:
    """Where decoded images and features are cached (``GEOTUNE_CACHE`` overrides)."""
    env = os.environ.get("GEOTUNE_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "geotune"


@dataclass
class SceneFolder:
    """The files of an ImageFolder dataset: class names and (relative path, label) per image.

    Named like torchvision's ImageFolder: ``classes``, ``class_to_idx``, ``targets`` and
    ``samples`` (absolute path, label), so samplers can be built from it. It lists files only;
    ``decoded(size)`` gives the ``torch.utils.data.Dataset`` of the decoded chips.
    """

    root: Path
    classes: list[str]
    paths: list[str]  # relative to root, '/'-separated
    labels: np.ndarray  # int64, index into classes
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    key: str | None = None  # content key of a materialised Python dataset (no files to stat)
    # Multi-label chips (--labels, data/multilabel.py): the (N, L) uint8 multi-hot matrix over
    # ``classes`` (the label names). ``labels`` then holds each chip's first positive label,
    # used only to pick sample chips per label (band layout), never as a target.
    label_matrix: np.ndarray | None = None

    @property
    def multilabel(self) -> bool:
        return self.label_matrix is not None

    @property
    def target_array(self) -> np.ndarray:
        """What the engine trains on: int labels (N,), or the multi-hot matrix (N, L)."""
        return self.labels if self.label_matrix is None else self.label_matrix

    def label_text(self, i: int) -> str:
        """Chip ``i``'s label as split.csv writes it: the class, or ';'-joined label names."""
        if self.label_matrix is None:
            return self.classes[self.labels[i]]
        return ";".join(c for c, v in zip(self.classes, self.label_matrix[i], strict=True) if v)

    @property
    def class_to_idx(self) -> dict[str, int]:
        """Class name -> label index (torchvision's ImageFolder name)."""
        return {c: i for i, c in enumerate(self.classes)}

    @property
    def targets(self) -> list:
        """The label of every chip, in order (torchvision's ImageFolder name); multi-label:
        each chip's 0/1 row over ``classes``."""
        if self.label_matrix is not None:
            return self.label_matrix.tolist()
        return [int(t) for t in self.labels]

    @property
    def samples(self) -> list[tuple[str, Any]]:
        """(absolute path, label) of every chip, in order (torchvision's ImageFolder name)."""
        return [(str(self.root / p), t) for p, t in zip(self.paths, self.targets, strict=True)]

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        """Chips per class (multi-label: positive chips per label)."""
        if self.label_matrix is not None:
            n = self.label_matrix.sum(0)
        else:
            n = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(k) for c, k in zip(self.classes, n, strict=True)}

    def fingerprint(self) -> str:
        """A content key of the dataset: every chip's class folder, name and size.

        File times are left out on purpose, so a copy of the same data matches.
        """
        if self.key is not None:
            return self.key[:16]
        h = hashlib.sha1()
        for rel in self.paths:
            h.update(f"{rel}|{(self.root / rel).stat().st_size}\n".encode())
        return h.hexdigest()[:16]

    def subset(self, keep: np.ndarray) -> SceneFolder:
        key = None
        if self.key is not None:
            mask = np.asarray(keep, dtype=bool).tobytes()
            key = hashlib.sha1(self.key.encode() + mask).hexdigest()[:20]
        return SceneFolder(
            self.root,
            self.classes,
            [p for p, k in zip(self.paths, keep, strict=True) if k],
            self.labels[keep],
            list(self.skipped),
            key,
            None if self.label_matrix is None else self.label_matrix[np.asarray(keep, dtype=bool)],
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
            f"data path {root} is a file; pass the folder that holds one sub-folder per class, "
            "or an index file FILE.csv (path and label columns)"
        )
    try:
        class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError as err:
        raise DataError(f"cannot list data folder {root} ({err.strerror})") from None
    if not class_dirs:
        raise DataError(
            f"data folder {root} has no class sub-folders; expected {root}/<class>/<image files>"
        )
    classes, paths, labels, skipped = [], [], [], []
    for class_dir in class_dirs:
        try:
            files = sorted(
                f
                for f in class_dir.iterdir()
                if not f.name.startswith(".") and f.name not in IGNORED_FILES
            )
        except OSError as err:
            raise DataError(f"cannot list class folder {class_dir} ({err.strerror})") from None
        images = []
        for f in files:
            rel = f"{class_dir.name}/{f.name}"
            if f.is_dir():
                reason = "is a folder inside a class folder (nested classes are not supported)"
            elif f.suffix.lower() not in IMAGE_EXTENSIONS:
                reason = f"is not an image (extension '{f.suffix}')"
            elif (reason := unreadable(f)) is None:
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


def unreadable(f: Path) -> str | None:
    """Why a file cannot be opened (broken or looping link, no permission), or None."""
    try:
        f.stat()
    except OSError as err:
        if f.is_symlink():
            return (
                "is a broken symbolic link"
                if err.errno == errno.ENOENT
                else "is a symbolic link loop"
            )
        return f"cannot be read ({err.strerror})"
    if not os.access(f, os.R_OK):
        return "cannot be read (permission denied)"
    return None


def default_workers() -> int:
    return max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


def list_unlabelled(root: Path) -> SceneFolder:
    """Every image under ``root`` (any depth), as one unlabelled pseudo-class: folder names are
    not read as labels, so target labels cannot reach the adaptation."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"target folder {root} not found; pass --target DIR of target chips")
    paths = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
    if not paths:
        raise DataError(f"target folder {root} holds no images; pass a folder of target chips")
    return SceneFolder(root, ["unlabelled"], paths, np.zeros(len(paths), dtype=np.int64))


def has_class_folders(root: Path) -> bool:
    return any(d.is_dir() and not d.name.startswith(".") for d in Path(root).iterdir())
