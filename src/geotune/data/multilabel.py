"""Multi-label chips: a label table beside the chips (``--labels labels.csv``).

One row per chip: a ``path`` column (or ``image`` / ``chip``; relative to ``--data``) and either
a ``labels`` column of ``;``-separated label names or one 0/1 column per label. The chips may
lie flat in the data folder or in any sub-folders (folder names are not read as labels). The
result is an ordinary ``SceneFolder`` whose ``label_matrix`` is the (N, L) multi-hot matrix and
whose ``classes`` are the label names, so decoding, caching and splits need no second home.
"""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

import numpy as np

from geotune.data.folder import IGNORED_FILES, IMAGE_EXTENSIONS, SceneFolder, unreadable
from geotune.errors import ConfigError, DataError

PATH_COLUMNS = ("path", "image", "chip", "file", "filename")
LABELS_COLUMN = "labels"
SEPARATOR = ";"


def read_label_table(table: Path) -> tuple[list[str], list[str], np.ndarray, list[int]]:
    """Parse a label table: (label names, chip paths, (N, L) uint8 matrix, file line per row).

    Raises:
        ConfigError: one line naming the file and the line (empty table, no path column, a
            value other than 0/1, a chip listed twice, a chip with no label).
    """
    table = Path(table)
    if not table.is_file():
        raise ConfigError(f"label table {table} not found; pass --labels FILE.csv")
    try:
        with table.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ConfigError(f"label table {table} cannot be read as CSV ({err})") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise ConfigError(
            f"label table {table} is empty; it needs a header (path,labels or path,<label>,...) "
            "and one row per chip"
        )
    header = [h.strip() for h in rows[0]]
    path_col = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
    if path_col is None:
        raise ConfigError(
            f"label table {table} has no path column; name the chip column one of "
            f"{', '.join(PATH_COLUMNS)}"
        )
    if len(set(header)) != len(header):
        raise ConfigError(f"label table {table} repeats a column name in its header")
    wide = LABELS_COLUMN not in header
    label_cols = [i for i, h in enumerate(header) if i != path_col] if wide else []
    if wide and not label_cols:
        raise ConfigError(
            f"label table {table} has no label columns; add a '{LABELS_COLUMN}' column of "
            f"'{SEPARATOR}'-separated names or one 0/1 column per label"
        )
    names = [header[i] for i in label_cols]
    paths, sets, lines, seen = [], [], [], {}
    for line, row in enumerate(rows[1:], start=2):
        row = [cell.strip() for cell in row] + [""] * (len(header) - len(row))
        where = f"label table {table} line {line}"
        rel = relative_chip_path(row[path_col], where)
        if rel in seen:
            raise ConfigError(f"{where} lists {rel} again (first on line {seen[rel]})")
        seen[rel] = line
        if wide:
            bad = next(((header[i], row[i]) for i in label_cols if row[i] not in ("0", "1")), None)
            if bad is not None:
                raise ConfigError(
                    f"{where} ({rel}): column '{bad[0]}' is '{bad[1]}'; label columns hold 0 or 1"
                )
            chosen = {header[i] for i in label_cols if row[i] == "1"}
        else:
            chosen = {n.strip() for n in row[header.index(LABELS_COLUMN)].split(SEPARATOR)}
            chosen.discard("")
        if not chosen:
            raise ConfigError(
                f"{where} ({rel}) has no label; give every chip at least one label or remove it"
            )
        paths.append(rel)
        sets.append(chosen)
        lines.append(line)
    names = names or sorted(set().union(*sets))
    index = {n: j for j, n in enumerate(names)}
    matrix = np.zeros((len(paths), len(names)), dtype=np.uint8)
    for i, chosen in enumerate(sets):
        matrix[i, [index[n] for n in chosen]] = 1
    return names, paths, matrix, lines


def relative_chip_path(text: str, where: str, base: str = "--data") -> str:
    """A table's chip path as a '/'-separated path inside ``base``; absolute paths and '..'
    are refused (a table must not reach outside the data it describes)."""
    path = PurePosixPath(text.replace("\\", "/"))
    if not text or path.is_absolute() or ".." in path.parts:
        raise ConfigError(f"{where} has chip path '{text}'; give a path relative to {base}")
    return path.as_posix()


def scan_labelled(root: Path, table: Path, skip_bad: bool = False) -> SceneFolder:
    """The chips under ``root`` (any depth) with their labels from ``table``.

    Every image file must have a row and every row a chip (one-line ConfigErrors naming both);
    unreadable files are refused, or listed and dropped with ``skip_bad``.
    """
    root, table = Path(root), Path(table)
    if not root.is_dir():
        raise DataError(f"data folder {root} not found; pass --data DIR that holds the chips")
    names, paths, matrix, lines = read_label_table(table)
    if len(names) < 2:
        raise ConfigError(
            f"label table {table} names one label ({names[0]}); multi-label classification "
            "needs at least two"
        )
    on_disk = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.name not in IGNORED_FILES
        and not p.is_dir()
    )
    listed = set(paths)
    unlisted = next((p for p in on_disk if p not in listed), None)
    if unlisted is not None:
        raise ConfigError(
            f"{root / unlisted} has no row in label table {table}; add a row for it or move it "
            "out of the data folder"
        )
    present = set(on_disk)
    keep, skipped = [], []
    for i, rel in enumerate(paths):
        if rel not in present:
            raise ConfigError(
                f"label table {table} line {lines[i]} names {rel}, which is not an image in "
                f"{root}; fix the path or remove the row"
            )
        reason = unreadable(root / rel)
        if reason is not None and not skip_bad:
            raise DataError(f"{root / rel} {reason}; fix it or pass --skip-bad-images")
        if reason is not None:
            skipped.append((rel, reason))
        keep.append(reason is None)
    mask = np.asarray(keep, dtype=bool)
    matrix = matrix[mask]
    empty = [n for n, k in zip(names, matrix.sum(0), strict=True) if k == 0]
    if empty:
        raise ConfigError(
            f"label '{empty[0]}' of label table {table} has no positive chip; drop its column "
            "or label chips with it"
        )
    kept = [p for p, k in zip(paths, keep, strict=True) if k]
    order = np.argsort(kept, kind="stable")  # the folder's order: sorted paths, like scan_folder
    matrix = matrix[order]
    return SceneFolder(
        root,
        names,
        [kept[i] for i in order],
        matrix.argmax(1).astype(np.int64),  # first positive label (see SceneFolder.label_matrix)
        skipped,
        label_matrix=matrix,
    )
