"""`geotune compare`: strategy x label budget x seed sweeps on shared test sets.

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "ALL": "geotune.sweep.compare",
    "CompareConfig": "geotune.sweep.compare",
    "atomic_write_text_yaml": "geotune.sweep.compare",
    "cell_epochs": "geotune.sweep.compare",
    "cell_name": "geotune.sweep.compare",
    "cell_row": "geotune.sweep.compare",
    "make_compare_config": "geotune.sweep.compare",
    "recommend": "geotune.sweep.compare",
    "run_compare": "geotune.sweep.compare",
    "summarize": "geotune.sweep.compare",
    "write_results": "geotune.sweep.compare",
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
