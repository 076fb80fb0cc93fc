"""Where a command may write: never into what it reads.

One rule for every command that writes (train, compare, evaluate, simulate, shift, adapt,
pretrain, predict, export), called once at the start of each API entry point with the
command's outputs and inputs, before any work:

- An **output** (a file or folder the command writes, e.g. ``simulate``'s DST, ``predict``'s
  CSV, a named run folder ``OUTPUT/NAME`` and its staging folder ``OUTPUT/.NAME.partial``) must
  not be an input, lie inside an input folder, or contain an input.
- A **holder** is a folder the command writes new things into under names it chooses (train's,
  shift's and adapt's ``--output`` when no ``--name`` is given; the cache folder,
  ``$GEOTUNE_CACHE``). What it writes is a new child, so a holder may contain inputs (``--output
  .`` beside ``./data`` is fine), but it must not be an input or lie inside one: the written
  folder would land inside the input.

So for ``geotune train``: the actual run folder written (``OUTPUT/NAME`` and its staging
folder) must not be inside any input (dataset, split file, weights file, config file) and must
not contain one; ``OUTPUT`` itself may contain the dataset. Paths are compared after
``Path.resolve`` (symlinks followed, relative paths made absolute), so a link to the dataset
is the dataset.

Deliberate exceptions, which callers express by leaving the input out: ``evaluate`` writes
``RUN/evaluations/NAME`` and ``report`` writes ``FOLDER/report.html`` inside the run they read
(that is where a run's own results live); ``train --resume`` continues the run it reads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from geotune.errors import ConfigError

CACHE = "the cache folder (GEOTUNE_CACHE)"

PathLike = str | os.PathLike | None


def _resolved(p: str | os.PathLike) -> Path:
    return Path(p).expanduser().resolve()


def _fix(label: str, inp: Path) -> str:
    if label == CACHE:
        return f"set GEOTUNE_CACHE to a folder outside {inp}"
    return f"pass {label} a place outside {inp}"


def refuse_outputs_in_inputs(
    outputs: Mapping[str, PathLike],
    inputs: Mapping[str, PathLike],
    holders: Mapping[str, PathLike] | None = None,
) -> None:
    """Raise a one-line ConfigError when an output is, lies inside or contains an input.

    Args:
        outputs: label (the option, e.g. ``"--output"`` or ``"DST"``) -> a file or folder the
            command writes; None entries are skipped.
        inputs: label (e.g. ``"--data"``) -> a file or folder the command reads; None skipped.
        holders: label -> a folder the command writes new, generated children into (see the
            module docstring); may contain inputs, may not be or lie inside one.
    """
    ins = [(label, _resolved(p)) for label, p in inputs.items() if p is not None and str(p)]
    checks = [(label, p, True) for label, p in outputs.items() if p is not None and str(p)]
    checks += [(label, p, False) for label, p in (holders or {}).items() if p is not None]
    for label, given, exact in checks:
        out = _resolved(given)
        for in_label, inp in ins:
            if out == inp:
                why = "is"
            elif inp in out.parents:
                why = "lies inside"
            elif exact and out in inp.parents:
                why = "contains"
            else:
                continue
            shown = f"{given}" if Path(given) == out else f"{given} (= {out})"
            raise ConfigError(
                f"output {label} {shown} {why} input {in_label} {inp}; writing there would "
                f"change what geotune reads; {_fix(label, inp)}"
            )


def existing_file(value: PathLike) -> Path | None:
    """``value`` as a path when it names an existing file (e.g. ``--weights PATH``), else None."""
    if value is None:
        return None
    p = Path(value)
    return p if p.is_file() else None


def staging_of(folder: Path) -> Path:
    """The hidden staging folder ``PARENT/.NAME.partial`` a run-like folder is built in."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.partial"
