"""What an interrupted command kept, for the one line the CLI prints on Ctrl-C or SIGTERM.

Code that keeps something on interruption (a resumable run folder, a sweep's finished cells,
a pretraining's state) calls :func:`note_kept` while the KeyboardInterrupt passes through it;
the outermost caller speaks last, so its note wins. SIGTERM is raised as :class:`Terminated`, a
KeyboardInterrupt, so every cleanup path that handles Ctrl-C handles it the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_kept: list[str] = []
_terminated: list[bool] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler ending the job), handled exactly like Ctrl-C."""

    def __init__(self) -> None:
        super().__init__()
        _terminated[:] = [True]


def was_terminated() -> bool:
    """Whether the interruption in progress came from SIGTERM (typer keeps only exit code 130)."""
    return bool(_terminated)


def note_kept(message: str) -> None:
    """Record what was kept and how to continue (replaces an earlier, inner note)."""
    _kept[:] = [message]


def kept_note() -> str | None:
    """The note of the interruption in progress, if any code recorded one."""
    return _kept[0] if _kept else None


def clear() -> None:
    _kept.clear()
    _terminated.clear()


@contextlib.contextmanager
def on_interrupt(message: str) -> Iterator[None]:
    """Note ``message`` if a KeyboardInterrupt (or SIGTERM) leaves this block."""
    try:
        yield
    except KeyboardInterrupt:
        note_kept(message)
        raise
