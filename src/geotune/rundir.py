"""Run folders that are never half-written.

A run is built in a hidden staging folder ``OUTPUT/.NAME.partial`` and renamed to
``OUTPUT/NAME`` in one atomic step when it has finished. A failed or killed run therefore never
shows up as a run; its staging folder keeps what was written so far (for ``--resume``). Every
file inside is itself written atomically (temporary file + ``os.replace``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from geotune.errors import ConfigError

STATUS_FILE = "status.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


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


class RunDir:
    """A run folder under construction (``staging``) and its final place (``final``)."""

    def __init__(self, output: Path, name: str | None, prefix: str = "run"):
        output = Path(output)
        if name is None:
            name = f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
        if "/" in name or name.startswith("."):
            raise ConfigError(
                f"bad run name '{name}': use a plain folder name without '/' or leading '.'"
            )
        self.final = output / name
        self.staging = output / f".{name}.partial"
        if self.final.exists():
            raise ConfigError(
                f"run folder {self.final} already exists; pass another --name or remove it"
            )

    @classmethod
    def reopen(cls, run: Path) -> RunDir:
        """The unfinished run behind RUN (or its ``.RUN.partial`` staging folder), for resuming."""
        run = Path(run)
        if run.name.startswith(".") and run.name.endswith(".partial"):
            run = run.parent / run.name[1 : -len(".partial")]
        self = cls.__new__(cls)
        self.final, self.staging = run, run.parent / f".{run.name}.partial"
        if self.final.exists():
            raise ConfigError(f"run {run} already finished; nothing to resume")
        if not (self.staging / "config.yaml").is_file():
            raise ConfigError(
                f"no unfinished run at {run} (looked for {self.staging}); pass the run folder of a killed run"
            )
        self.write_status("running", resumed=True)
        return self

    @property
    def path(self) -> Path:
        return self.staging

    def create(self) -> Path:
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)
        self.write_status("running")
        return self.staging

    def write_status(self, state: str, **extra: Any) -> None:
        atomic_write_json(
            self.staging / STATUS_FILE, {"state": state, "time": time.time(), **extra}
        )

    def commit(self) -> Path:
        """Mark complete and move into place in one rename."""
        self.write_status("complete")
        os.replace(self.staging, self.final)
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def require_complete_run(run: Path) -> Path:
    """Resolve a finished run folder, with a clear error for partial or missing ones."""
    run = Path(run)
    partial = run.parent / f".{run.name}.partial"
    if not run.is_dir():
        if partial.is_dir():
            raise ConfigError(
                f"run {run} did not finish (its files are in {partial}); re-run `geotune train`"
            )
        raise ConfigError(f"run folder {run} not found; pass a folder written by `geotune train`")
    status = run / STATUS_FILE
    try:
        state = json.loads(status.read_text()).get("state")
    except (FileNotFoundError, json.JSONDecodeError):
        state = None
    if state != "complete":
        raise ConfigError(f"{run} is not a finished geotune run (no complete {STATUS_FILE})")
    return run
