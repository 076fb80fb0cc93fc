"""Index-file datasets: ``--data chips.csv``, a table of chip paths and labels.

Collections that are not ImageFolders (a national archive's chip list, fMoW-style tables, a
selection of a larger folder) are described by one CSV file instead of a folder tree:

- a path column (``path``, ``image``, ``chip``, ``file`` or ``filename``), each path relative
  to the index file's folder; the file need not list every image there;
- either a ``label`` (or ``class``) column, one class name per chip (single-label), or the
  multi-label columns of a ``--labels`` table (``labels`` of ``;``-separated names, or one 0/1
  column per label; geotune.data.multilabel).

The result is the same ``SceneFolder`` a class-folder scan gives (root: the index file's folder),
so decoding, caching, splits and every command that reads ``--data`` need no second home. Rows are
parsed with the csv module in one pass and kept as two lists and an array, so a million-row
index costs a few hundred MB at most.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from geotune.data.folder import IMAGE_EXTENSIONS, SceneFolder, unreadable
from geotune.data.multilabel import PATH_COLUMNS, read_label_table, relative_chip_path
from geotune.errors import ConfigError, DataError

CLASS_COLUMNS = ("label", "class")
INDEX_SUFFIXES = (".csv",)


def is_index_file(data: Path | str) -> bool:
    """``--data`` names an index file (a CSV of chip paths and labels), not a folder."""
    p = Path(data)
    return p.suffix.lower() in INDEX_SUFFIXES and not p.is_dir()


def multilabel_index(data: Path | str) -> bool:
    """``data`` is an index file whose columns are those of a multi-label table (no ``label``
    or ``class`` column): read from its header alone."""
    if not is_index_file(data) or not Path(data).is_file():
        return False
    try:
        with Path(data).open(newline="", encoding="utf-8-sig") as fh:
            header = [h.strip() for h in next(csv.reader(fh), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return False  # scan_index says what is wrong
    return not any(c in header for c in CLASS_COLUMNS)


def scan_index(index: Path, skip_bad: bool = False) -> SceneFolder:
    """The chips an index file lists, with their labels.

    Raises:
        ConfigError: one line naming the file and line (no path or label column, a path outside
            the index file's folder, a chip listed twice, an empty label, fewer than 2 classes).
        DataError: a listed chip that is missing, not an image or unreadable (skipped and
            listed with ``skip_bad``).
    """
    index = Path(index)
    if not index.is_file():
        raise DataError(
            f"index file {index} not found; pass --data FOLDER (one sub-folder per class) or "
            "--data FILE.csv (a path column and a label column)"
        )
    header, rows = _read_rows(index)
    path_col = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
    if path_col is None:
        raise ConfigError(
            f"index file {index} has no path column; name the chip column one of "
            f"{', '.join(PATH_COLUMNS)}"
        )
    label_col = next((header.index(c) for c in CLASS_COLUMNS if c in header), None)
    root = index.parent
    if label_col is None:  # the columns of a multi-label table
        names, paths, matrix, lines = read_label_table(index)
        return _checked(index, root, paths, lines, names, matrix.argmax(1), matrix, skip_bad)
    paths, classes, lines, seen = [], [], [], {}
    for line, row in rows:
        where = f"index file {index} line {line}"
        rel = relative_chip_path(row[path_col], where, "the index file's folder")
        if rel in seen:
            raise ConfigError(f"{where} lists {rel} again (first on line {seen[rel]})")
        seen[rel] = line
        name = row[label_col]
        if not name:
            raise ConfigError(f"{where} ({rel}) has no {header[label_col]}; give every chip one")
        paths.append(rel)
        classes.append(name)
        lines.append(line)
    names = sorted(set(classes))
    if len(names) < 2:
        raise ConfigError(
            f"index file {index} names one class ({names[0]}); classification needs at least two"
        )
    lookup = {n: i for i, n in enumerate(names)}
    labels = np.fromiter((lookup[c] for c in classes), dtype=np.int64, count=len(classes))
    return _checked(index, root, paths, lines, names, labels, None, skip_bad)


def _read_rows(index: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and (file line, stripped cells) of every non-empty row."""
    try:
        with index.open(newline="", encoding="utf-8-sig") as fh:
            raw = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ConfigError(f"index file {index} cannot be read as CSV ({err})") from None
    numbered = [(i, r) for i, r in enumerate(raw, start=1) if any(c.strip() for c in r)]
    if len(numbered) < 2:
        raise ConfigError(
            f"index file {index} is empty; it needs a header (path,label) and one row per chip"
        )
    header = [h.strip() for h in numbered[0][1]]
    width = len(header)
    rows = [(i, [c.strip() for c in r] + [""] * (width - len(r))) for i, r in numbered[1:]]
    return header, rows


def _checked(index, root, paths, lines, names, labels, matrix, skip_bad) -> SceneFolder:
    """Every listed chip exists and is a readable image (or is listed in ``skipped``); the
    rows sorted by path, the order a folder scan gives."""
    keep, skipped = np.ones(len(paths), dtype=bool), []
    for i, rel in enumerate(paths):
        f = root / rel
        if f.suffix.lower() not in IMAGE_EXTENSIONS and not f.is_dir():
            reason = f"is not an image (extension '{f.suffix}')"
        elif not f.exists() and not f.is_symlink():
            reason = "does not exist"
        else:
            reason = unreadable(f)
        if reason is None:
            continue
        if not skip_bad:
            raise DataError(
                f"{f} (index file {index} line {lines[i]}) {reason}; fix the row or pass "
                "--skip-bad-images"
            )
        keep[i] = False
        skipped.append((rel, reason))
    kept = [p for p, k in zip(paths, keep, strict=True) if k]
    if not kept:
        raise DataError(f"index file {index} lists no readable chip; check its paths")
    order = np.argsort(np.asarray(kept, dtype=object), kind="stable")
    labels = np.asarray(labels)[keep][order]
    if matrix is not None:
        matrix = matrix[keep][order]
        empty = [n for n, k in zip(names, matrix.sum(0), strict=True) if k == 0]
    else:
        empty = [n for j, n in enumerate(names) if not np.any(labels == j)]
    if empty:
        raise DataError(
            f"class '{empty[0]}' of index file {index} has no readable chip; fix its rows or "
            "remove them"
        )
    return SceneFolder(root, names, [kept[i] for i in order], labels, skipped, label_matrix=matrix)
