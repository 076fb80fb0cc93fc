"""The engine: the training loop on Lightning Fabric, prediction and frozen-feature probes."""

from geotune.engine.fabric import make_fabric, resolve_device, resolve_precision
from geotune.engine.loop import Engine, TrainState
from geotune.engine.predict import predict
from geotune.engine.prepare import Prepared, RunResult, prepare
from geotune.engine.probe import cached_features, feature_key, fit_probe, run_backbone
from geotune.engine.trainer import fit, resume, train

__all__ = [
    "Engine",
    "Prepared",
    "RunResult",
    "TrainState",
    "cached_features",
    "feature_key",
    "fit",
    "fit_probe",
    "make_fabric",
    "predict",
    "prepare",
    "resolve_device",
    "resolve_precision",
    "resume",
    "run_backbone",
    "train",
]
