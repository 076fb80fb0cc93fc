"""Using a trained model: chip predictions, scene maps, calibrated probabilities, export.

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from geotune.lazy import lazy_exports

_LAZY = {
    "ExportConfig": "geotune.inference.config",
    "PredictConfig": "geotune.inference.config",
    "PredictOptions": "geotune.inference.config",
    "Predictor": "geotune.inference.model",
    "export_model": "geotune.inference.export",
    "load_predictor": "geotune.inference.model",
    "predict_chips": "geotune.inference.chips",
    "predict_scene": "geotune.inference.scene",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
