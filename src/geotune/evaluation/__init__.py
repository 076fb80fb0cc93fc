"""Evaluation: `geotune evaluate` of a finished run (the metrics themselves: geotune.metrics).

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from geotune.lazy import lazy_exports

_LAZY = {
    "evaluate_run": "geotune.evaluation.evaluate",
    "run_images": "geotune.evaluation.evaluate",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
