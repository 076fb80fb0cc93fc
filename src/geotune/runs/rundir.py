"""Run folders that are never half-written, never shared and never silently replaced.

A run is built in a hidden staging folder ``OUTPUT/.NAME.partial`` and renamed to
``OUTPUT/NAME`` in one atomic step when it has finished. A failed or killed run therefore never
shows up as a run; its staging folder keeps what was written so far (for ``--resume``). Every
file inside is itself written atomically (temporary file + ``os.replace``).

``status.json`` records the state, the process id and the host: ``running`` while a process
builds it, then one final state on every way out: ``complete`` (finished and renamed into
place), ``failed`` (an exception; its message is recorded) or ``interrupted`` (Ctrl-C or
SIGTERM). A process killed outright (SIGKILL, power loss) cannot write it; readers
(:func:`run_state`) therefore treat ``running`` whose process is gone from this host, or whose
lock is free, as ``interrupted`` and say so.

While a process builds a run it holds an exclusive lock (``flock``) on ``OUTPUT/.NAME.lock``:
a second process asking for the same name is refused with the first one's PID, and the lock
dies with its process (even on ``kill -9``), so a killed run never blocks its own ``--resume``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geotune.errors import ConfigError
from geotune.fileio import atomic_write_json
from geotune.runs.interrupt import note_kept

if TYPE_CHECKING:
    from geotune.config import TrainConfig

STATUS_FILE = "status.json"
FINAL_STATES = ("complete", "failed", "interrupted")


def _host() -> str:
    return os.uname().nodename


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def run_state(folder: Path) -> tuple[str | None, str]:
    """The state of the run (or staging) folder ``folder`` and a few words on why ("" if none).

    ``running`` whose process is gone from this host, or whose run lock nobody holds, is
    reported as ``interrupted`` ("process 123 on HOST is gone"). None: no readable status.
    """
    folder = Path(folder)
    try:
        status = json.loads((folder / STATUS_FILE).read_text())
        state = status.get("state")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None, "no readable status.json"
    if state != "running":
        return state, str(status.get("error") or "")
    pid, host = status.get("pid"), status.get("host")
    name = folder.name
    if name.startswith(".") and name.endswith(".partial"):
        name = name[1 : -len(".partial")]
    lock = RunDir.__new__(RunDir)
    lock.final, lock.staging, lock._lock_fd = folder.parent / name, folder, None
    if isinstance(pid, int) and host == _host() and not _alive(pid):
        return "interrupted", f"process {pid} on {host} is gone"
    holder = lock.holder()
    if holder is None:
        who = f"process {pid} on {host or 'an unknown host'}" if pid else "an unrecorded process"
        return "interrupted", f"{who} ended without finishing it"
    return "running", f"{holder} is still running it"


def _writable_folder(output: Path) -> None:
    """Create ``output`` or say in one line why it cannot be used."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output {output} is a file; pass --output a folder")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"cannot create output folder {output} ({err.strerror}); pass --output DIR you can write to"
        ) from None
    if not os.access(output, os.W_OK | os.X_OK):
        raise ConfigError(
            f"output folder {output} is not writable; pass --output DIR you can write to"
        )


class RunDir:
    """A run folder under construction (``staging``) and its final place (``final``)."""

    def __init__(self, output: Path, name: str | None, prefix: str = "run"):
        output = Path(output)
        auto = name is None
        if auto:
            name = f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
        if not name or "/" in name or name.startswith(".") or name in (".", ".."):
            raise ConfigError(
                f"bad run name '{name}': use a plain folder name without '/' or leading '.'"
            )
        base, n = name, 1
        # Generated names get a suffix instead of an error when two runs start in one second.
        while auto and (output / name).exists():
            n += 1
            name = f"{base}-{n}"
        self.final = output / name
        self.staging = output / f".{name}.partial"
        self._lock_fd: int | None = None
        if self.final.exists():
            raise ConfigError(
                f"run folder {self.final} already exists; pass another --name or remove it"
            )

    @property
    def path(self) -> Path:
        return self.staging

    @property
    def lock_path(self) -> Path:
        return self.final.parent / f".{self.final.name}.lock"

    # -- locking ------------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the run name for this process, or raise naming the process that holds it."""
        _writable_folder(self.final.parent)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask's mode
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise ConfigError(
                    f"run {self.final.name} is in use by {holder}; wait for it or pass another --name"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {os.uname().nodename}".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                self.lock_path.unlink()
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- life cycle ---------------------------------------------------------------------------
    @classmethod
    def reopen(cls, run: Path) -> RunDir:
        """The unfinished run behind RUN (or its ``.RUN.partial`` staging folder), for resuming."""
        run = Path(run)
        if run.name.startswith(".") and run.name.endswith(".partial"):
            run = run.parent / run.name[1 : -len(".partial")]
        self = cls.__new__(cls)
        self.final, self.staging, self._lock_fd = run, run.parent / f".{run.name}.partial", None
        if self.final.exists():
            raise ConfigError(f"run {run} already finished; nothing to resume")
        if not (self.staging / "config.yaml").is_file():
            raise ConfigError(
                f"no unfinished run at {run} (looked for {self.staging}); pass the run folder of a killed run"
            )
        self.previous_state = run_state(self.staging)
        self.lock()
        self.resumed = True  # every later status says so
        self.write_status("running")
        return self

    def holder(self) -> str | None:
        """Who holds this run name right now ("process PID on HOST"), or None."""
        if not self.lock_path.exists() or self._lock_fd is not None:
            return None
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        finally:
            os.close(fd)  # closing releases a shared lock we may just have taken
        return None

    def check_available(self) -> None:
        """Fail now, before any work, if this run could not be created later."""
        _writable_folder(self.final.parent)
        if (holder := self.holder()) is not None:
            raise ConfigError(
                f"run {self.final.name} is in use by {holder}; wait for it or pass another --name"
            )
        if self.final.exists():
            raise ConfigError(
                f"run folder {self.final} already exists; pass another --name or remove it"
            )
        if (self.staging / "config.yaml").is_file():
            raise ConfigError(
                f"an unfinished run named {self.final.name} is in {self.staging}; continue it "
                f"with `geotune train --resume {self.final}` or delete that folder"
            )

    def create(self) -> Path:
        """Lock the name and make an empty staging folder; never deletes a resumable run."""
        self.lock()
        try:
            self.check_available()
            if self.staging.exists():
                shutil.rmtree(self.staging)  # began but wrote nothing a resume could use
            self.staging.mkdir(parents=True)
            self.write_status("running")
        except BaseException:
            self.unlock()
            raise
        return self.staging

    @contextlib.contextmanager
    def staged(
        self, resuming: bool = False, kept: str | None = None, resumable: bool = True
    ) -> Iterator[RunDir]:
        """Create (or keep, when resuming) the staging folder; leaving it by an exception
        marks it ``failed``, by Ctrl-C or SIGTERM ``interrupted``.

        Args:
            resuming: the staging folder exists already (``--resume``).
            kept: the line the CLI prints when interrupted (default: the staging folder was
                kept and ``geotune train --resume FINAL`` continues it).
            resumable: False: an interrupted run is removed (nothing to resume from).
        """
        if not resuming:
            self.create()
        try:
            yield self
        except KeyboardInterrupt:  # Ctrl-C, and SIGTERM (geotune.runs.interrupt)
            if not resumable:
                self.discard()
                if kept:
                    note_kept(kept)
            elif self.staging.is_dir():
                with contextlib.suppress(OSError):
                    self.write_status("interrupted")
                note_kept(
                    kept
                    or f"the unfinished run is kept in {self.staging}; continue it with "
                    f"`geotune train --resume {self.final}`"
                )
            raise
        except BaseException as err:
            if self.staging.is_dir():
                with contextlib.suppress(OSError):
                    self.write_status("failed", error=f"{type(err).__name__}: {err}"[:500])
            raise
        finally:
            self.unlock()

    @contextlib.contextmanager
    def building(self) -> Iterator[RunDir]:
        """Create the staging folder, commit on success; any failure or interruption removes
        it (for outputs that are rebuilt rather than resumed: evaluations, shift reports)."""
        self.create()
        try:
            yield self
        except BaseException:
            self.discard()
            raise
        if self.staging.is_dir():
            self.commit()

    def write_status(self, state: str, **extra: Any) -> None:
        atomic_write_json(
            self.staging / STATUS_FILE,
            {
                "state": state,
                "time": time.time(),
                "pid": os.getpid(),
                "host": _host(),
                **({"resumed": True} if getattr(self, "resumed", False) else {}),
                **extra,
            },
        )

    def commit(self) -> Path:
        """Mark complete and move into place in one rename."""
        self.write_status("complete")
        os.replace(self.staging, self.final)
        self.unlock()
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        self.unlock()


def new_run(config: TrainConfig) -> RunDir:
    """The run folder a training config asks for (``--output``/``--name``, or a generated name)."""
    return RunDir(
        config.output, config.name, prefix=f"{config.strategy}-{config.backbone.split('.')[0]}"
    )


def require_complete_run(run: Path) -> Path:
    """Resolve a finished run folder, with a clear error for partial or missing ones."""
    run = Path(run)
    partial = run.parent / f".{run.name}.partial"
    if not run.is_dir():
        if partial.is_dir():
            raise ConfigError(unfinished_message(run))
        raise ConfigError(f"run folder {run} not found; pass a folder written by `geotune train`")
    status = run / STATUS_FILE
    try:
        state = json.loads(status.read_text()).get("state")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        state = None
    if state != "complete":
        raise ConfigError(f"{run} is not a finished geotune run (no complete {STATUS_FILE})")
    return run


def unfinished_message(run: Path) -> str:
    """One line on the unfinished run RUN (its staging folder exists): its state, and what to
    do (wait for it, or resume it)."""
    run = Path(run)
    partial = run.parent / f".{run.name}.partial"
    state, why = run_state(partial)
    if state == "running":
        return f"run {run} did not finish yet ({why}); wait for it to end"
    shown = f"{state}: {why}" if state and why else (state or why)
    return (
        f"run {run} did not finish ({shown}; its files are in {partial}); "
        f"continue it with `geotune train --resume {run}`"
    )
