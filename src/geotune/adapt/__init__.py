"""Unsupervised domain adaptation of a finished run (`geotune adapt`).

Methods are registry entries (``register_adapt_method``); the built-in ones are AdaBN, TENT,
CORAL and DANN (geotune.adapt.methods).

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from geotune.lazy import lazy_exports

_LAZY = {
    "ADAPT_METHODS": "geotune.adapt.registry",
    "AdaptConfig": "geotune.adapt.config",
    "AdaptContext": "geotune.adapt.registry",
    "AdaptMethod": "geotune.adapt.registry",
    "adapt_adabn": "geotune.adapt.methods",
    "adapt_coral": "geotune.adapt.methods",
    "adapt_dann": "geotune.adapt.methods",
    "adapt_run": "geotune.adapt.run",
    "adapt_tent": "geotune.adapt.methods",
    "adaptation_markdown": "geotune.adapt.run",
    "make_adapt_config": "geotune.adapt.config",
    "register_adapt_method": "geotune.adapt.registry",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
