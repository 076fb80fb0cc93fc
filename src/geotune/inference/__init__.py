"""Using a trained model: chip predictions, scene maps, calibrated probabilities, export.

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "ExportConfig": "geotune.inference.config",
    "PredictConfig": "geotune.inference.config",
    "Predictor": "geotune.inference.model",
    "export_model": "geotune.inference.export",
    "load_predictor": "geotune.inference.model",
    "predict_chips": "geotune.inference.chips",
    "predict_scene": "geotune.inference.scene",
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
