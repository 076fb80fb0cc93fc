"""Evaluation: scene-classification metrics and `geotune evaluate`.

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from geotune.lazy import lazy_exports

_LAZY = {
    "classification_metrics": "geotune.evaluation.metrics",
    "evaluate_run": "geotune.evaluation.evaluate",
    "metrics_table": "geotune.evaluation.metrics",
    "run_images": "geotune.evaluation.evaluate",
    "save_metrics": "geotune.evaluation.metrics",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
