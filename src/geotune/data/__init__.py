"""Data: scene folders, the decode-once cache, splits, batches, augmentation and class maps."""

from geotune.data.augment import augment_batch, build_augment, tta_view
from geotune.data.batches import image_batches, iterate_batches, prefetch
from geotune.data.classmap import label_remap, load_class_map, pair_classes
from geotune.data.decode import CACHE_VERSION, DecodedImages, decode_folder, read_rgb, resize_chip
from geotune.data.folder import (
    IGNORED_FILES,
    IMAGE_EXTENSIONS,
    SceneFolder,
    cache_root,
    default_workers,
    has_class_folders,
    list_unlabelled,
    scan_folder,
)
from geotune.data.splits import SPLITS, budget_split, make_split, read_split, write_split

__all__ = [
    "CACHE_VERSION",
    "DecodedImages",
    "IGNORED_FILES",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "SceneFolder",
    "augment_batch",
    "budget_split",
    "build_augment",
    "cache_root",
    "decode_folder",
    "default_workers",
    "has_class_folders",
    "image_batches",
    "iterate_batches",
    "label_remap",
    "list_unlabelled",
    "load_class_map",
    "make_split",
    "pair_classes",
    "prefetch",
    "read_rgb",
    "read_split",
    "resize_chip",
    "scan_folder",
    "tta_view",
    "write_split",
]
