"""Stratified, reproducible splits of a scene folder, and their split.csv form."""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

import numpy as np

from geotune.data.folder import SceneFolder
from geotune.errors import DataError
from geotune.fileio import atomic_write_csv

SPLITS = ("train", "val", "test", "unused")  # unused: labelled pool beyond a label budget


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
    so the test part is exactly what the protocol (e.g. AID 20/80) leaves unlabelled. A
    multi-label folder (``folder.multilabel``) is split by iterative stratification over its
    label matrix instead (:func:`_multilabel_split`).
    """
    if folder.multilabel:
        return _multilabel_split(folder, train_fraction, labels_per_class, val_fraction, seed)
    return _single_label_split(folder, train_fraction, labels_per_class, val_fraction, seed)


def _single_label_split(folder, train_fraction, labels_per_class, val_fraction, seed):
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


def _multilabel_split(folder, train_fraction, labels_per_class, val_fraction, seed):
    """``make_split`` of a multi-label folder, over ``folder.label_matrix``.

    ``train_fraction``: iterative stratification into train / val / test shares of the chips.
    ``labels_per_class`` k: chips drawn, rarest label first, until every label has at least k
    positives in the training part (and, with validation, max(1, k x val / (1 - val)) in the
    validation part); the rest is test.
    """
    Y = folder.label_matrix.astype(bool)
    rng = np.random.default_rng(seed)
    if labels_per_class is None:
        lab = float(train_fraction)
        shares = np.array([lab * (1 - val_fraction), lab * val_fraction, 1 - lab])
        used = np.flatnonzero(shares > 0)  # no validation part: two folds, not an empty third
        fold = iterative_stratification(Y, shares[used], rng)
        return np.array(["train", "val", "test"])[used][fold]
    split = np.full(len(Y), "test", dtype=object)
    k_val = max(1, int(round(labels_per_class * val_fraction / (1 - val_fraction))))
    for part, k in (("train", labels_per_class), ("val", k_val if val_fraction > 0 else 0)):
        for j in np.argsort(Y.sum(0), kind="stable"):  # rarest label first
            have = int(Y[split == part, j].sum())
            pool = np.flatnonzero(Y[:, j] & (split == "test"))
            if have >= k:
                continue
            if have + len(pool) <= k:  # k positives here and at least one left for the test
                raise DataError(
                    f"label '{folder.classes[j]}' has {int(Y[:, j].sum())} positive chips, too "
                    f"few for --labels-per-class {labels_per_class} ({k} in {part}, plus test "
                    "chips); lower --labels-per-class or --val-fraction, or label more chips"
                )
            split[rng.permutation(pool)[: max(0, k - have)]] = part
    return split.astype(str)


def iterative_stratification(Y: np.ndarray, shares: np.ndarray, rng) -> np.ndarray:
    """Fold index of every row of the multi-hot ``Y`` for folds of the given ``shares``.

    Sechidis et al. (2011): the rarest remaining label is placed first, each of its chips into
    the fold that most lacks that label (ties: the fold that lacks the most chips, then random).
    Written here, not taken from the ``iterative-stratification`` package: it is 20 lines, and
    that wheel installs a top-level ``tests`` package into site-packages.
    """
    Y = np.asarray(Y, dtype=bool)
    want_chips = shares * len(Y)
    want_labels = shares[:, None] * Y.sum(0)[None, :]
    fold = np.full(len(Y), -1)
    while (fold < 0).any():
        left = Y[fold < 0].sum(0)
        if not left.any():  # chips without any label: to the folds that lack the most chips
            for i in rng.permutation(np.flatnonzero(fold < 0)):
                fold[i] = int(np.argmax(want_chips))
                want_chips[fold[i]] -= 1
            break
        j = int(np.argmin(np.where(left > 0, left, np.iinfo(np.int64).max)))
        for i in rng.permutation(np.flatnonzero(Y[:, j] & (fold < 0))):
            need = want_labels[:, j]
            cands = np.flatnonzero(need == need.max())
            cands = cands[want_chips[cands] == want_chips[cands].max()]
            f = int(rng.choice(cands))
            fold[i] = f
            want_chips[f] -= 1
            want_labels[f] -= Y[i]
    return fold


def write_split(path: Path, folder: SceneFolder, split: np.ndarray) -> None:
    atomic_write_csv(
        path,
        ["path", "class", "split"],
        (
            (p, folder.label_text(i), s)
            for i, (p, s) in enumerate(zip(folder.paths, split, strict=True))
        ),
    )


def read_split(path: Path, folder: SceneFolder) -> np.ndarray:
    """Read a split file written by geotune; every listed image must exist with its class.
    A folder is read as lists of chips per part (:func:`read_split_lists`)."""
    path = Path(path)
    if path.is_dir():
        return read_split_lists(path, folder)
    if path.suffix == ".parquet":  # BigEarthNet v2.0's metadata.parquet: its split column
        from geotune.data.bigearthnet import v2_split_lists

        lists = v2_split_lists(path)
        return assign_split_lists({part: (path, rows) for part, rows in lists.items()}, folder)
    if not path.is_file():
        raise DataError(f"split file {path} not found; pass the split.csv of an earlier run")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or set(rows[0]) != {"path", "class", "split"}:
        raise DataError(f"split file {path} must have the columns path,class,split")
    where = {p: i for i, p in enumerate(folder.paths)}
    # A split made before unreadable chips were dropped (--skip-bad-images) may list them.
    skipped = {p for p, _ in folder.skipped}
    split = np.full(len(folder), "", dtype=object)
    for row in rows:
        i = where.get(row["path"])
        if i is None and row["path"] in skipped:
            continue
        if i is None:
            raise DataError(
                f"split file {path} lists {row['path']}, which is not in {folder.root}; "
                "use the split of a run on this dataset"
            )
        if folder.label_text(i) != row["class"] or row["split"] not in SPLITS:
            raise DataError(f"split file {path}: bad class or split for {row['path']}")
        split[i] = row["split"]
    if (split == "").any():
        missing = folder.paths[int(np.flatnonzero(split == "")[0])]
        raise DataError(
            f"{folder.root / missing} is not in split file {path}; the dataset changed since the split was made"
        )
    return split.astype(str)


# A split as lists of chips, one file per part: BigEarthNet's official train.csv / val.csv /
# test.csv (one patch name per line) and the like.
LIST_FILES = {
    "train": ("train.csv", "train.txt"),
    "val": ("val.csv", "val.txt", "validation.csv"),
    "test": ("test.csv", "test.txt"),
}
LIST_HEADERS = {"path", "name", "patch", "patch_id", "patch_name", "image", "chip", "file"}


def read_split_lists(lists: Path, folder: SceneFolder) -> np.ndarray:
    """A split from a folder of chip lists: ``train.csv``, ``val.csv`` (optional) and
    ``test.csv``, one chip per line in the first column (a header line is skipped). A line names
    a chip by its path relative to the data, or by its file or patch-folder name without the
    extension (BigEarthNet's lists name patches). Chips in no list are left unused (e.g. the
    patches the official lists drop for snow, cloud or shadow); a listed chip that is not in the
    data, or a chip in two lists, is a one-line DataError.
    """
    found = {part: next((lists / n for n in names if (lists / n).is_file()), None)
             for part, names in LIST_FILES.items()}  # fmt: skip
    if found["train"] is None or found["test"] is None:
        raise DataError(
            f"split folder {lists} needs train.csv and test.csv (val.csv optional): one chip per "
            "line, as BigEarthNet's official split files"
        )
    parts = {}
    for part, file in found.items():
        if file is not None:
            with file.open(newline="", encoding="utf-8-sig") as fh:
                parts[part] = (file, [r[0].strip() for r in csv.reader(fh) if r and r[0].strip()])
    return assign_split_lists(parts, folder)


def assign_split_lists(parts: dict[str, tuple[Path, list[str]]], folder: SceneFolder) -> np.ndarray:
    """A split from chip lists per part (part -> (the file they came from, chips)); see
    :func:`read_split_lists` for how a chip is named and what is an error."""
    index = {p: i for i, p in enumerate(folder.paths)}
    by_name: dict[str, int | None] = {}
    for i, p in enumerate(folder.paths):
        name = PurePosixPath(p).name
        for key in {name, name.split(".")[0]}:
            by_name[key] = None if key in by_name and by_name[key] != i else i  # None: ambiguous
    skipped = {PurePosixPath(p).name.split(".")[0] for p, _ in folder.skipped} | {
        p for p, _ in folder.skipped
    }
    split = np.full(len(folder), "unused", dtype=object)
    for part, (file, rows) in parts.items():
        if rows and rows[0].lower() in LIST_HEADERS and rows[0] not in index:
            rows = rows[1:]
        for line, chip in enumerate(rows, start=1):
            key = chip if "/" in chip else chip.split(".")[0]
            i = index.get(chip, by_name.get(key))
            if i is None and (chip in skipped or key in skipped):
                continue
            if i is None:
                why = "names two chips" if key in by_name else "is not a chip of the data"
                raise DataError(
                    f"split list {file} line {line}: '{chip}' {why} ({folder.root}); give "
                    "paths relative to --data"
                )
            if split[i] != "unused":
                raise DataError(
                    f"split list {file} lists {folder.paths[i]}, already in the {split[i]} list; "
                    "a chip belongs to one part"
                )
            split[i] = part
    return split.astype(str)


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
    pool), of which ``val_fraction`` (at least one) is held out for validation. Multi-label
    folders: :func:`_multilabel_budget_split`.
    """
    if folder.multilabel:
        return _multilabel_budget_split(
            folder, pool_fraction, labels_per_class, val_fraction, seed, test_per_class
        )
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


def _multilabel_budget_split(folder, pool_fraction, k, val_fraction, seed, test_per_class):
    """``budget_split`` of a multi-label folder: the pool and the test part by iterative
    stratification (one test part per seed), then the shortest prefix of the pool, shuffled once
    per seed, whose training chips hold at least ``k`` positives of every label (None: the whole
    pool). Prefixes of one order are nested, so smaller budgets are subsets of larger ones, as
    for single-label sweeps. Every ``1 / val_fraction``-th chip of the prefix is validation.
    ``test_per_class`` caps the test part at that many chips per label.
    """
    Y = folder.label_matrix.astype(bool)
    rng = np.random.default_rng(seed)
    fold = iterative_stratification(Y, np.array([pool_fraction, 1 - pool_fraction]), rng)
    split = np.full(len(Y), "unused", dtype=object)
    test = np.flatnonzero(fold == 1)
    split[test[: None if test_per_class is None else test_per_class * Y.shape[1]]] = "test"
    pool = np.flatnonzero(fold == 0)
    pool = pool[rng.permutation(len(pool))]
    every = max(2, int(round(1 / val_fraction))) if val_fraction > 0 else 0
    role = np.array(
        ["val" if every and i % every == every - 1 else "train" for i in range(len(pool))]
    )
    counts = np.cumsum(Y[pool] & (role == "train")[:, None], axis=0)
    if k is None:
        end = len(pool)
    else:
        enough = np.flatnonzero((counts >= k).all(1))
        if not len(enough):
            rarest = folder.classes[int(np.argmin(counts[-1]))]
            raise DataError(
                f"label '{rarest}' has {int(counts[-1].min())} positive chips in the labelled "
                f"pool, fewer than {k} labels per class; lower the budget or raise "
                "--pool-fraction"
            )
        end = int(enough[0]) + 1
    split[pool[:end]] = role[:end]
    if not len(test) or not (split == "val").any() and val_fraction > 0:
        raise DataError(
            f"{len(Y)} multi-label chips are too few for a labelled pool, validation and a test "
            "part; add chips or change --pool-fraction"
        )
    return split.astype(str)
