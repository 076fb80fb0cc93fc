"""Atomic file writes: a file is either absent or complete, never half-written.

Files get the mode ``open()`` would give them (``0o666`` less the process umask), also after
the rename into place: the temporary file is created with ``os.open(..., 0o666)``, never with
``mkstemp`` (whose files are private, 0600). Folders are made with ``Path.mkdir`` (``0o777`` less
the umask).

A folder shared by a group (group-writable, usually setgid) shares what geotune writes in it
when the writer asks (``shared=True``, the caches): files give the group the owner's read and
write bits and new folders give it ``rwx``, whatever the umask, so another member of the group
can read and replace every entry.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import secrets
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def group_shared(folder: Path) -> bool:
    """Whether ``folder`` lets its group write into it (a folder shared by a group)."""
    try:
        return bool(os.stat(folder).st_mode & stat.S_IWGRP)
    except OSError:
        return False


def share_with_group(path: Path | int) -> None:
    """Give the group the owner's bits on a file (or an open fd), rwx on a folder (setgid is
    inherited from a setgid parent by the kernel)."""
    st = os.fstat(path) if isinstance(path, int) else os.stat(path)
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        new = mode | stat.S_IRWXG
    else:
        new = mode | ((mode & (stat.S_IRUSR | stat.S_IWUSR)) >> 3)
    if new != mode:
        with contextlib.suppress(OSError):  # not ours to change (another member made it)
            os.fchmod(path, new) if isinstance(path, int) else os.chmod(path, new)


def make_folder(folder: Path, shared: bool = False) -> None:
    """``mkdir -p``; with ``shared``, each new folder inside a group-shared one is shared too."""
    folder = Path(folder)
    if folder.is_dir():
        return
    missing = [folder, *(p for p in folder.parents if not p.exists())]
    folder.mkdir(parents=True, exist_ok=True)
    if shared:
        for p in reversed(missing):
            if group_shared(p.parent):
                share_with_group(p)


def create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """A new empty file ``folder/.NAME.PID.RANDOM.tmp`` opened for writing, with the mode
    ``open()`` gives (0o666 less the umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = Path(folder) / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: Path, data: bytes, shared: bool = False) -> None:
    path = Path(path)
    make_folder(path.parent, shared)
    fd, tmp = create_temp(path.parent, path.name)
    try:
        if shared and group_shared(path.parent):
            share_with_group(fd)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str, shared: bool = False) -> None:
    atomic_write_bytes(path, text.encode(), shared)


def atomic_write_json(path: Path, obj: Any, shared: bool = False) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n", shared)


def atomic_write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())
