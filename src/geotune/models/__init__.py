"""Models: backbones with their weights and preprocessing, and the scene classifier.

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from geotune.lazy import lazy_exports

_LAZY = {
    "CHECKPOINT_SUFFIXES": "geotune.models.checkpoints",
    "OFFLINE_WEIGHTS": "geotune.models.offline",
    "OfflineWeights": "geotune.models.offline",
    "Preprocessing": "geotune.models.preprocessing",
    "SUGGESTED_BACKBONES": "geotune.models.backbones",
    "SceneClassifier": "geotune.models.classifier",
    "WEIGHT_SOURCES": "geotune.models.backbones",
    "backbone_status": "geotune.models.backbones",
    "build_classifier": "geotune.models.classifier",
    "build_head": "geotune.models.classifier",
    "create_backbone": "geotune.models.backbones",
    "hub_is_cached": "geotune.models.backbones",
    "imagenet_classifier": "geotune.models.backbones",
    "load_classifier": "geotune.models.classifier",
    "load_into": "geotune.models.checkpoints",
    "offline_names": "geotune.models.offline",
    "read_checkpoint": "geotune.models.checkpoints",
    "resolve_source": "geotune.models.backbones",
    "save_classifier": "geotune.models.classifier",
    "signed_power": "geotune.models.classifier",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
