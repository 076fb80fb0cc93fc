"""Data: scene folders, the decode-once cache, splits, batches, augmentation and class maps.

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from geotune.lazy import lazy_exports

_LAZY = {
    "CACHE_VERSION": "geotune.data.decode",
    "DecodedImages": "geotune.data.decode",
    "IGNORED_FILES": "geotune.data.folder",
    "IMAGE_EXTENSIONS": "geotune.data.folder",
    "SPLITS": "geotune.data.splits",
    "SceneFolder": "geotune.data.folder",
    "augment_batch": "geotune.data.augment",
    "budget_split": "geotune.data.splits",
    "build_augment": "geotune.data.augment",
    "cache_root": "geotune.data.folder",
    "decode_folder": "geotune.data.decode",
    "dataset_source": "geotune.data.dataset",
    "materialise": "geotune.data.dataset",
    "normalize_transform": "geotune.data.dataset",
    "default_workers": "geotune.data.folder",
    "has_class_folders": "geotune.data.folder",
    "image_batches": "geotune.data.batches",
    "iterate_batches": "geotune.data.batches",
    "label_remap": "geotune.data.classmap",
    "list_unlabelled": "geotune.data.folder",
    "load_class_map": "geotune.data.classmap",
    "make_split": "geotune.data.splits",
    "pair_classes": "geotune.data.classmap",
    "prefetch": "geotune.data.batches",
    "read_rgb": "geotune.data.decode",
    "read_split": "geotune.data.splits",
    "resize_chip": "geotune.data.decode",
    "scan_folder": "geotune.data.folder",
    "tta_view": "geotune.data.augment",
    "write_split": "geotune.data.splits",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
