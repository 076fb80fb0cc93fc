"""Models: backbones with their weights and preprocessing, and the scene classifier."""

from geotune.models.backbones import (
    CHECKPOINT_SUFFIXES,
    OFFLINE_WEIGHTS,
    SUGGESTED_BACKBONES,
    WEIGHT_SOURCES,
    OfflineWeights,
    Preprocessing,
    backbone_status,
    create_backbone,
    hub_is_cached,
    imagenet_classifier,
    load_into,
    offline_names,
    read_checkpoint,
    resolve_source,
)
from geotune.models.classifier import (
    SceneClassifier,
    build_classifier,
    build_head,
    load_classifier,
    save_classifier,
    signed_power,
)

__all__ = [
    "OFFLINE_WEIGHTS",
    "CHECKPOINT_SUFFIXES",
    "OfflineWeights",
    "Preprocessing",
    "SUGGESTED_BACKBONES",
    "SceneClassifier",
    "WEIGHT_SOURCES",
    "backbone_status",
    "build_classifier",
    "build_head",
    "create_backbone",
    "hub_is_cached",
    "imagenet_classifier",
    "load_classifier",
    "load_into",
    "offline_names",
    "read_checkpoint",
    "resolve_source",
    "save_classifier",
    "signed_power",
]
