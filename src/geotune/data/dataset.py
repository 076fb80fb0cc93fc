"""torch-native data: the decoded folder as a ``torch.utils.data.Dataset``, and any map-style
dataset (tuples or torchgeo-style sample dicts) turned into the engine's decode cache.

Samples are ``(image, label)`` tuples, as torchvision's ImageFolder gives them: a plain
``DataLoader`` collates them without a custom ``collate_fn``. Datasets handed *to* geotune may
yield either tuples or torchgeo ``NonGeoClassificationDataset`` dicts ``{"image", "label"}``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from geotune.data.cache import ArrayCache
from geotune.data.decode import CACHE_VERSION, DecodedImages, resize_chip
from geotune.data.folder import SceneFolder, cache_root
from geotune.errors import DataError

DATASET_PREFIX = "python-dataset:"  # config.data of a run trained on a Python dataset


def dataset_source(dataset: Any) -> str:
    """What a run's config.yaml records as its data: the dataset's class name and length."""
    return f"{DATASET_PREFIX}{type(dataset).__name__}[{len(dataset)}]"


def is_dataset_source(data: Any) -> bool:
    """Whether a config's ``data`` names a Python dataset rather than a folder."""
    return str(data).startswith(DATASET_PREFIX) or f"/{DATASET_PREFIX}" in str(data)


def normalize_transform(preprocessing) -> Any:
    """The weights' normalisation as a transform for ``decode_folder(...)`` samples:
    ``uint8 CHW -> float32 CHW`` scaled as the engine scales a batch on the device (the
    ``Preprocessing`` of a run, e.g. ``prep.preprocessing`` or ``load_classifier``'s)."""
    mean = torch.tensor(preprocessing.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(preprocessing.std, dtype=torch.float32).view(-1, 1, 1)

    def transform(image: torch.Tensor) -> torch.Tensor:
        return (image.float() / 255.0 - mean) / std

    return transform


def _sample(dataset: Any, i: int) -> tuple[Any, Any]:
    item = dataset[i]
    if isinstance(item, dict):
        if "image" not in item or "label" not in item:
            raise DataError(
                f"sample {i} of {type(dataset).__name__} is a dict with keys {sorted(item)}; "
                "yield {'image': CxHxW tensor, 'label': int} or an (image, label) tuple"
            )
        return item["image"], item["label"]
    if isinstance(item, Sequence) and len(item) == 2:
        return item[0], item[1]
    raise DataError(
        f"sample {i} of {type(dataset).__name__} is a {type(item).__name__}; yield an "
        "(image, label) tuple or a {'image': CxHxW tensor, 'label': int} dict"
    )


def _label(value: Any, i: int, name: str) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value.item())
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    raise DataError(
        f"sample {i} of {name} has label {value!r}; labels must be an int or a one-element "
        "integer tensor (a class index)"
    )


def _image(value: Any, i: int, name: str) -> np.ndarray:
    """A sample's image as HWC uint8 (for the same PIL resize as folder chips), or DataError."""
    arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
    if not isinstance(arr, np.ndarray):
        raise DataError(
            f"sample {i} of {name} has a {type(value).__name__} image; yield a CxHxW tensor"
        )
    if arr.ndim != 3 or arr.shape[0] not in (1, 3) or min(arr.shape[1:]) < 1:
        hint = (
            "multispectral Python datasets are not supported yet: write the chips as GeoTIFFs "
            "in class folders and pass --data DIR --bands ..."
            if arr.ndim == 3 and arr.shape[0] > 3
            else "yield a 3xHxW RGB tensor"
        )
        raise DataError(f"sample {i} of {name} has image shape {tuple(arr.shape)}; {hint}")
    if arr.dtype == np.uint8:
        out = arr
    elif np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer):
        if not np.isfinite(arr).all():
            raise DataError(
                f"sample {i} of {name} has non-finite pixel values; fix or drop that sample"
            )
        if arr.min() < 0 or arr.max() > 255:
            raise DataError(
                f"sample {i} of {name} has pixel values in [{arr.min():g}, {arr.max():g}]; "
                "geotune reads RGB on the 0-255 scale: yield uint8 or 0-255 values"
            )
        out = np.rint(arr).astype(np.uint8)
    else:
        raise DataError(
            f"sample {i} of {name} has a {arr.dtype} image; yield uint8 or 0-255 float pixels"
        )
    if out.shape[0] == 1:
        out = np.repeat(out, 3, axis=0)
    return np.ascontiguousarray(out.transpose(1, 2, 0))


def dataset_classes(dataset: Any) -> list[str] | None:
    """``dataset.classes`` as strings, when the dataset has them (torchvision and torchgeo do)."""
    classes = getattr(dataset, "classes", None)
    return None if classes is None else [str(c) for c in classes]


def materialise(
    dataset: Any,
    size: int,
    interpolation: str = "bicubic",
    cache_dir: Path | None = None,
) -> DecodedImages:
    """Read every sample of a map-style dataset once into geotune's decode cache.

    Each image goes through the same resize as a folder chip (``resize_chip``: short side to
    ``size``, centre crop, uint8), so a dataset and a folder of the same chips decode to the
    same array and the same split. The engine then trains from index batches of that array, as
    for a folder; materialising once is what lets it skip per-sample Python calls every epoch.
    The cache key hashes the decoded pixels and labels, so an unchanged dataset reuses its entry.

    Raises:
        DataError: one line naming the sample index and the fix (bad type, shape, dtype, values,
            label, an empty dataset or a class without samples).
    """
    name = type(dataset).__name__
    n = len(dataset)
    if n == 0:
        raise DataError(f"dataset {name} is empty; pass a dataset with samples")
    classes = dataset_classes(dataset)
    chips, labels = [], []
    h = hashlib.sha1(f"v{CACHE_VERSION}|dataset|{name}|{n}|{size}|{interpolation}".encode())
    for i in range(n):
        image, label = _sample(dataset, i)
        label = _label(label, i, name)
        if label < 0 or (classes is not None and label >= len(classes)):
            raise DataError(
                f"sample {i} of {name} has label {label}, outside 0..{len(classes or [1]) - 1}; "
                "labels index dataset.classes"
            )
        chip = resize_chip(Image.fromarray(_image(image, i, name)), size, interpolation)
        h.update(chip.tobytes())
        h.update(label.to_bytes(8, "little"))
        chips.append(chip)
        labels.append(label)
    labels_arr = np.asarray(labels, dtype=np.int64)
    if classes is None:
        present = sorted(set(labels))
        if present != list(range(len(present))):
            raise DataError(
                f"dataset {name} has labels {present} but no .classes; give it a `classes` "
                "list or use labels 0..K-1"
            )
        classes = [str(c) for c in present]
    counts = np.bincount(labels_arr, minlength=len(classes))
    if (counts == 0).any():
        empty = classes[int(np.flatnonzero(counts == 0)[0])]
        raise DataError(
            f"class '{empty}' of dataset {name} has no samples; drop it from .classes or add "
            "samples"
        )
    key = h.hexdigest()[:20]
    folder = SceneFolder(
        Path(dataset_source(dataset)), classes, [str(i) for i in range(n)], labels_arr, key=key
    )
    cache = ArrayCache(Path(cache_dir or cache_root()) / "images")
    hit = cache.load(key)
    if hit is not None:
        return DecodedImages(folder, hit[0], size, interpolation, key)

    def fill(out: np.ndarray) -> None:
        for j, chip in enumerate(chips):
            out[j] = chip

    meta = {"root": folder.root.as_posix(), "n": n, "bad": []}
    pixels = cache.save(key, (n, 3, size, size), np.uint8, fill, meta)
    return DecodedImages(folder, pixels, size, interpolation, key)
