"""Output files that are never half-written: checked before any work, written under temporary
names beside their final place, renamed into place together at the end."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from geotune.errors import ConfigError
from geotune.runs.paths import refuse_outputs_in_inputs


class OutputSet:
    """The files one command writes.

    Args:
        paths: every file the command may write (the first is the main output).
        overwrite: replace existing files instead of refusing.
        inputs: label -> every file or folder the command reads; an output that is, lies
            inside or contains one is refused (geotune.runs.paths), before any other check.
    """

    def __init__(
        self,
        paths: list[Path],
        overwrite: bool = False,
        inputs: Mapping[str, Path | None] | None = None,
    ):
        self.paths = [Path(p) for p in paths]
        labels = ["--output", *(f"--output (its {p.name})" for p in self.paths[1:])]
        for path in self.paths:  # the plainest problem first; these checks change nothing
            if path.is_file() and not overwrite:
                check_output(path, overwrite)
        refuse_outputs_in_inputs(dict(zip(labels, self.paths, strict=True)), inputs or {})
        for path in self.paths:
            check_output(path, overwrite)

    def temp(self, path: Path) -> Path:
        """Where ``path`` is written until :meth:`commit` (same folder: the rename is atomic)."""
        path = Path(path)
        return path.parent / f".{path.name}.{os.getpid()}.partial"

    def commit(self) -> None:
        """Rename every written file into place; a file not written this time is removed, so no
        stale output of an earlier run (e.g. an old skipped list) survives beside the new one."""
        for path in self.paths:
            tmp = self.temp(path)
            if tmp.exists():
                os.replace(tmp, path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def discard(self) -> None:
        for path in self.paths:
            with contextlib.suppress(FileNotFoundError):
                self.temp(path).unlink()

    @contextlib.contextmanager
    def writing(self) -> Iterator[OutputSet]:
        """Commit on success; on any failure (or Ctrl-C) leave no partial file behind."""
        try:
            yield self
        except BaseException:
            self.discard()
            raise
        self.commit()


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse an existing file without ``overwrite``, a folder, or a place that is not writable."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"output {path} is a folder; pass --output a file name")
    if path.exists() and not overwrite:
        raise ConfigError(f"output {path} already exists; pass --overwrite or another --output")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"cannot create output folder {folder} ({err.strerror}); pass --output in a folder "
            "you can write to"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"output folder {folder} is not writable; pass --output in a folder you can write to"
        )
