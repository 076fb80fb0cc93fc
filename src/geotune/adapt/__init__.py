"""Unsupervised domain adaptation of a finished run (`geotune adapt`).

Methods are registry entries (``register_adapt_method``); the built-in ones are AdaBN, TENT,
CORAL and DANN (geotune.adapt.methods).

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from importlib import import_module
from typing import Any

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

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
