"""Continued self-supervised pretraining on unlabelled chips (`geotune pretrain`).

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from geotune.lazy import lazy_exports

_LAZY = {
    "PretrainConfig": "geotune.pretrain.config",
    "SSL_METHODS": "geotune.pretrain.methods",
    "pretrain": "geotune.pretrain.run",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
