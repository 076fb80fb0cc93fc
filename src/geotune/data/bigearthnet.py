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
"""

from __future__ import annotations

import json
import os
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


def is_bigearthnet(root: Path) -> bool:
    """Whether ``root`` holds BigEarthNet patch folders (looks at its first sub-folders only,
    so the check stays cheap on 590,000 patches)."""
    root = Path(root)
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


def scan_bigearthnet(root: Path, skip_bad: bool = False) -> SceneFolder:
    """Every patch folder under ``root`` with its 19-class labels, as a multi-label folder.

    A patch whose JSON is unreadable, whose labels all fall outside the 19 classes, or whose
    band files are missing is a one-line DataError, or is listed and dropped with
    ``skip_bad``. The label names are the 19 classes that label at least one patch.
    """
    from geotune.data.raster import band_files

    root = Path(root)
    patches, skipped = [], []
    for meta in sorted(root.rglob(f"*{LABELS_SUFFIX}")):
        rel = meta.parent.relative_to(root).as_posix()
        try:
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
        except DataError as err:
            if not skip_bad:
                raise
            skipped.append((rel, str(err)))
            continue
        patches.append((rel, labels))
    if not patches:
        raise DataError(
            f"no BigEarthNet patch folders (<patch>/<patch>{LABELS_SUFFIX}) with labels in {root}"
        )
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
