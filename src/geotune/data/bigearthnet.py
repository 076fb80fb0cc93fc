"""BigEarthNet's own layout: a folder per Sentinel-2 patch, read in place.

BigEarthNet-S2 v1.0 (Sumbul et al., 2019) holds one folder per 120 x 120 px patch::

    BigEarthNet-v1.0/S2A_MSIL2A_20170613T101031_0_45/
        S2A_MSIL2A_20170613T101031_0_45_B01.tif ... _B12.tif   (12 bands, no B10)
        S2A_MSIL2A_20170613T101031_0_45_labels_metadata.json  ({"labels": [CLC names], ...})

``geotune train --data BigEarthNet-v1.0`` finds the patches (any depth), reads each patch's
CORINE labels from its JSON and maps the 43 labels to the 19-class nomenclature of Sumbul et
al. (2020), as the field's benchmarks do (``--labels`` is not needed). The band files become one
chip: ``geotune.data.raster`` stacks them in Sentinel-2 order at the 10 m grid, so bands,
composites, caching and splits are those of any multispectral chip.

BigEarthNet v2.0 (reBEN, Clasen et al., 2024) keeps the labels in one table instead::

    BigEarthNet-v2.0/metadata.parquet      (patch_id, labels: 19-class names, split, ...)
    BigEarthNet-v2.0/BigEarthNet-S2/<tile>/<patch_id>/<patch_id>_B02.tif ...

``geotune train --data BigEarthNet-v2.0`` reads the table (pyarrow: ``pip install
'geotune[bigearthnet]'``), leaves out the patches it flags for seasonal snow or cloud and
shadow (as the official splits do), and ``--split BigEarthNet-v2.0/metadata.parquet`` takes
its official train / validation / test split.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import numpy as np

from geotune.data.folder import SceneFolder, unreadable
from geotune.errors import DataError

LABELS_SUFFIX = "_labels_metadata.json"

# The 19-class nomenclature (Sumbul et al., "BigEarthNet Deep Learning Models with A New
# Class-Nomenclature for Remote Sensing Image Understanding", 2020): each new class and the
# CORINE Land Cover level-3 labels of the original 43 it merges. The 11 labels it drops (roads,
# ports, airports, mine / dump / construction sites, green urban areas, sport and leisure, bare
# rock, burnt areas, intertidal flats) map to nothing.
NOMENCLATURE_19: dict[str, tuple[str, ...]] = {
    "Urban fabric": ("Continuous urban fabric", "Discontinuous urban fabric"),
    "Industrial or commercial units": ("Industrial or commercial units",),
    "Arable land": ("Non-irrigated arable land", "Permanently irrigated land", "Rice fields"),
    "Permanent crops": (
        "Vineyards",
        "Fruit trees and berry plantations",
        "Olive groves",
        "Annual crops associated with permanent crops",
    ),
    "Pastures": ("Pastures",),
    "Complex cultivation patterns": ("Complex cultivation patterns",),
    "Land principally occupied by agriculture, with significant areas of natural vegetation": (
        "Land principally occupied by agriculture, with significant areas of natural vegetation",
    ),
    "Agro-forestry areas": ("Agro-forestry areas",),
    "Broad-leaved forest": ("Broad-leaved forest",),
    "Coniferous forest": ("Coniferous forest",),
    "Mixed forest": ("Mixed forest",),
    "Natural grassland and sparsely vegetated areas": (
        "Natural grassland",
        "Sparsely vegetated areas",
    ),
    "Moors, heathland and sclerophyllous vegetation": (
        "Moors and heathland",
        "Sclerophyllous vegetation",
    ),
    "Transitional woodland, shrub": ("Transitional woodland/shrub",),
    "Beaches, dunes, sands": ("Beaches, dunes, sands",),
    "Inland wetlands": ("Inland marshes", "Peatbogs"),
    "Coastal wetlands": ("Salt marshes", "Salines"),
    "Inland waters": ("Water courses", "Water bodies"),
    "Marine waters": ("Coastal lagoons", "Estuaries", "Sea and ocean"),
}
DROPPED_43 = (
    "Road and rail networks and associated land",
    "Port areas",
    "Airports",
    "Mineral extraction sites",
    "Dump sites",
    "Construction sites",
    "Green urban areas",
    "Sport and leisure facilities",
    "Bare rock",
    "Burnt areas",
    "Intertidal flats",
)
TO_19 = {old: new for new, olds in NOMENCLATURE_19.items() for old in olds}


V2_METADATA = "metadata.parquet"
V2_S2_FOLDER = "BigEarthNet-S2"
# v2's split names -> geotune's
V2_SPLITS = {"train": "train", "validation": "val", "val": "val", "test": "test"}


def is_bigearthnet(root: Path) -> bool:
    """Whether ``root`` holds BigEarthNet patch folders (looks at its first sub-folders only,
    so the check stays cheap on 590,000 patches), or v2.0's metadata.parquet."""
    root = Path(root)
    if (root / V2_METADATA).is_file():
        return True
    for folder in _first_dirs(root, 2):
        if any(name.endswith(LABELS_SUFFIX) for name in _names(folder, 40)):
            return True
    return False


def _first_dirs(root: Path, depth: int, width: int = 3) -> list[Path]:
    """The first ``width`` sub-folders of ``root``, and theirs, down to ``depth`` levels."""
    try:
        subs = sorted(e.path for e in os.scandir(root) if e.is_dir() and e.name[0] != ".")[:width]
    except OSError:
        return []
    out = [Path(s) for s in subs]
    if depth > 1:
        out += [d for s in subs for d in _first_dirs(Path(s), depth - 1, width)]
    return out


def _names(folder: Path, limit: int) -> list[str]:
    try:
        with os.scandir(folder) as it:
            return [e.name for _, e in zip(range(limit), it, strict=False)]
    except OSError:
        return []


def patch_labels(meta: Path) -> list[str]:
    """A patch's labels in the 19-class nomenclature (one-line DataError for a bad JSON)."""
    try:
        names = json.loads(meta.read_text())["labels"]
        if not isinstance(names, list):
            raise TypeError("'labels' is not a list")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise DataError(
            f"{meta} is not a BigEarthNet labels file ({type(err).__name__}: {err}); "
            "restore it or pass --skip-bad-images"
        ) from None
    unknown = [n for n in names if n not in TO_19 and n not in DROPPED_43]
    if unknown:
        raise DataError(
            f"{meta} names '{unknown[0]}', which is not a CORINE label of BigEarthNet's 43; "
            "fix the file or pass --skip-bad-images"
        )
    return sorted({TO_19[n] for n in names if n in TO_19})


def read_v2_metadata(path: Path) -> list[tuple[int, dict]]:
    """The usable rows of BigEarthNet v2.0's metadata.parquet as (row number, row): patch_id,
    labels, split where present; rows flagged for seasonal snow or cloud and shadow are left
    out, as the official recipe does."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"reading {path} (BigEarthNet v2.0) needs pyarrow: pip install 'geotune[bigearthnet]'"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataError(
            f"{path} cannot be read as Parquet ({type(err).__name__}); download BigEarthNet "
            "v2.0's metadata.parquet again"
        ) from None
    missing = {"patch_id", "labels"} - set(table.column_names)
    if missing:
        raise DataError(
            f"{path} has no column {sorted(missing)[0]}; is it BigEarthNet v2.0's metadata.parquet?"
        )
    keep = [c for c in ("patch_id", "labels", "split", "contains_seasonal_snow",
                        "contains_cloud_or_shadow") if c in table.column_names]  # fmt: skip
    rows = enumerate(table.select(keep).to_pylist(), start=1)
    flagged = ("contains_seasonal_snow", "contains_cloud_or_shadow")
    return [(line, row) for line, row in rows if not any(row.get(f) for f in flagged)]


def _v2_patch_folder(root: Path, patch_id: str) -> Path:
    """Where a v2 patch's band files are: BigEarthNet-S2/<tile>/<patch_id> (the archive's own
    layout), or <tile>/<patch_id> or <patch_id> directly under ``root``."""
    tile = "_".join(patch_id.split("_")[:-2])
    candidates = (root / V2_S2_FOLDER / tile / patch_id, root / tile / patch_id, root / patch_id)
    return next((c for c in candidates if c.is_dir()), candidates[0])


def _gather(patches: Iterable[tuple[str, Callable[[], list[str]]]], skip_bad: bool):
    """(path, labels) of every patch whose reader returns its labels; a reader's one-line
    DataError stops the scan, or with ``skip_bad`` lists the patch as skipped."""
    kept, skipped = [], []
    for rel, read in patches:
        try:
            kept.append((rel, read()))
        except DataError as err:
            if not skip_bad:
                raise
            skipped.append((rel, str(err)))
    return kept, skipped


def scan_bigearthnet_v2(root: Path, skip_bad: bool = False) -> SceneFolder:
    """The patches of ``root/metadata.parquet`` (BigEarthNet v2.0) with their 19-class labels.

    Patches flagged for seasonal snow or cloud and shadow are left out. A row with an unknown
    label, with no label, or whose band files are missing is a one-line DataError naming the
    row, or is listed and dropped with ``skip_bad``.
    """
    from geotune.data.raster import band_files

    root = Path(root)
    table = root / V2_METADATA

    def reader(line: int, row: dict, folder: Path) -> Callable[[], list[str]]:
        def read() -> list[str]:
            patch_id, labels = row["patch_id"], list(row["labels"] or [])
            unknown = [n for n in labels if n not in NOMENCLATURE_19]
            if unknown or not labels:
                what = f"names '{unknown[0]}', not a class of the 19" if unknown else "has no label"
                raise DataError(
                    f"{table} row {line} ({patch_id}) {what}; fix the table or pass --skip-bad-images"
                )
            if not band_files(folder):
                raise DataError(
                    f"patch {patch_id} of {table} has no band files under {folder}; restore them "
                    "or pass --skip-bad-images"
                )
            return sorted(set(labels))

        return read

    def patches():
        for line, row in read_v2_metadata(table):
            folder = _v2_patch_folder(root, str(row["patch_id"]))
            yield folder.relative_to(root).as_posix(), reader(line, row, folder)

    kept, skipped = _gather(patches(), skip_bad)
    return _multilabel_folder(root, kept, skipped, f"no usable patch in {table}")


def v2_split_lists(path: Path) -> dict[str, list[str]]:
    """The official split of a v2.0 metadata.parquet: part -> patch ids."""
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for line, row in read_v2_metadata(path):
        part = V2_SPLITS.get(str(row.get("split")))
        if part is None:
            raise DataError(
                f"{path} row {line}: split '{row.get('split')}' is not train, validation or test"
            )
        lists[part].append(str(row["patch_id"]))
    return lists


def _v1_labels(meta: Path) -> list[str]:
    """A v1.0 patch's 19-class labels, or a one-line DataError for a bad patch."""
    from geotune.data.raster import band_files

    reason = unreadable(meta)
    if reason is not None:
        raise DataError(f"{meta} {reason}; fix it or pass --skip-bad-images")
    labels = patch_labels(meta)
    if not labels:
        raise DataError(
            f"patch {meta.parent} has no label of the 19-class nomenclature (only "
            "dropped CORINE labels); remove it or pass --skip-bad-images"
        )
    if not band_files(meta.parent):
        raise DataError(
            f"patch {meta.parent} has no band files (<patch>_B02.tif, ...); restore "
            "them or pass --skip-bad-images"
        )
    return labels


def scan_bigearthnet(root: Path, skip_bad: bool = False) -> SceneFolder:
    """Every patch folder under ``root`` with its 19-class labels, as a multi-label folder.

    A patch whose JSON is unreadable, whose labels all fall outside the 19 classes, or whose
    band files are missing is a one-line DataError, or is listed and dropped with
    ``skip_bad``. The label names are the 19 classes that label at least one patch.
    BigEarthNet v2.0 (a metadata.parquet in ``root``): :func:`scan_bigearthnet_v2`.
    """
    root = Path(root)
    if (root / V2_METADATA).is_file():
        return scan_bigearthnet_v2(root, skip_bad)
    metas = sorted(root.rglob(f"*{LABELS_SUFFIX}"))
    patches = ((m.parent.relative_to(root).as_posix(), partial(_v1_labels, m)) for m in metas)
    kept, skipped = _gather(patches, skip_bad)
    missing = f"no BigEarthNet patch folders (<patch>/<patch>{LABELS_SUFFIX}) with labels in {root}"
    return _multilabel_folder(root, kept, skipped, missing)


def _multilabel_folder(root: Path, patches, skipped, missing: str) -> SceneFolder:
    """(path, 19-class labels) per patch -> a multi-label SceneFolder; the label names are
    the 19 classes that label at least one patch."""
    if not patches:
        raise DataError(missing)
    names = [c for c in NOMENCLATURE_19 if any(c in labels for _, labels in patches)]
    matrix = np.zeros((len(patches), len(names)), dtype=np.uint8)
    for i, (_, labels) in enumerate(patches):
        matrix[i, [names.index(c) for c in labels]] = 1
    return SceneFolder(
        root,
        names,
        [rel for rel, _ in patches],
        matrix.argmax(1).astype(np.int64),  # first positive label (see SceneFolder.label_matrix)
        skipped,
        label_matrix=matrix,
    )
