"""The engine: the training loop on Lightning Fabric, prediction and frozen-feature probes.

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from geotune.lazy import lazy_exports

_LAZY = {
    "Engine": "geotune.engine.loop",
    "Prepared": "geotune.engine.prepare",
    "RunResult": "geotune.engine.prepare",
    "TrainState": "geotune.engine.loop",
    "cached_features": "geotune.engine.features",
    "feature_key": "geotune.engine.features",
    "fit": "geotune.engine.trainer",
    "fit_probe": "geotune.engine.probe",
    "make_fabric": "geotune.engine.fabric",
    "predict": "geotune.engine.predict",
    "prepare": "geotune.engine.prepare",
    "resolve_device": "geotune.engine.fabric",
    "resolve_precision": "geotune.engine.fabric",
    "resume": "geotune.engine.trainer",
    "run_backbone": "geotune.engine.features",
    "train": "geotune.engine.trainer",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
