"""Unsupervised domain adaptation of a finished run (`geotune adapt`).

Methods are registry entries (``register_adapt_method``); the built-in ones are AdaBN, TENT,
CORAL and DANN (geotune.adapt.methods).
"""

from geotune.adapt.config import AdaptConfig, make_adapt_config
from geotune.adapt.methods import adapt_adabn, adapt_coral, adapt_dann, adapt_tent
from geotune.adapt.registry import ADAPT_METHODS, AdaptContext, AdaptMethod, register_adapt_method
from geotune.adapt.run import adapt_run, adaptation_markdown

__all__ = [
    "ADAPT_METHODS",
    "AdaptConfig",
    "AdaptContext",
    "AdaptMethod",
    "adapt_adabn",
    "adapt_coral",
    "adapt_dann",
    "adapt_run",
    "adapt_tent",
    "adaptation_markdown",
    "make_adapt_config",
    "register_adapt_method",
]
