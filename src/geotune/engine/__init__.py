"""The engine: the training loop on Lightning Fabric, prediction and frozen-feature probes.

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "Engine": "geotune.engine.loop",
    "Prepared": "geotune.engine.prepare",
    "RunResult": "geotune.engine.prepare",
    "TrainState": "geotune.engine.loop",
    "cached_features": "geotune.engine.probe",
    "feature_key": "geotune.engine.probe",
    "fit": "geotune.engine.trainer",
    "fit_probe": "geotune.engine.probe",
    "make_fabric": "geotune.engine.fabric",
    "predict": "geotune.engine.predict",
    "prepare": "geotune.engine.prepare",
    "resolve_device": "geotune.engine.fabric",
    "resolve_precision": "geotune.engine.fabric",
    "resume": "geotune.engine.trainer",
    "run_backbone": "geotune.engine.probe",
    "train": "geotune.engine.trainer",
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
