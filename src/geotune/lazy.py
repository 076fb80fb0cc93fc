"""Lazy package exports (PEP 562), one mechanism for every package.

A package lists what it offers and where each name lives; a name's module is imported on first
use, so importing one submodule does not import its siblings (and ``import geotune`` does not
import torch).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_exports(
    package: str, names: dict[str, str | tuple[str, str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``.

    Args:
        package: the package's ``__name__``.
        names: exported name -> its module, or -> (module, attribute) when exported under
            another name.
    """
    exported = sorted(names)

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = names[name]
        module, attr = target if isinstance(target, tuple) else (target, name)
        value = getattr(import_module(module), attr)
        vars(sys.modules[package])[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return exported

    return __getattr__, __dir__, exported
