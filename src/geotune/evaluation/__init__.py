"""Evaluation: scene-classification metrics and `geotune evaluate`.

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "classification_metrics": "geotune.evaluation.metrics",
    "evaluate_run": "geotune.evaluation.evaluate",
    "metrics_table": "geotune.evaluation.metrics",
    "run_images": "geotune.evaluation.evaluate",
    "save_metrics": "geotune.evaluation.metrics",
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
