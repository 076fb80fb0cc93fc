"""Metrics: the measures of a classifier from its predictions (overall and average accuracy,
kappa, per-class and per-label scores, mAP, thresholds, calibration). Pure functions of arrays,
below the engine, so training, evaluation, reports and adaptation all score the same way.

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from geotune.lazy import lazy_exports

_LAZY = {
    "classification_metrics": "geotune.metrics.classification",
    "expected_calibration_error": "geotune.metrics.calibration",
    "fit_temperature": "geotune.metrics.calibration",
    "macro_average_precision": "geotune.metrics.selection",
    "metrics_table": "geotune.metrics.classification",
    "multilabel_metrics": "geotune.metrics.multilabel",
    "save_metrics": "geotune.metrics.classification",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
