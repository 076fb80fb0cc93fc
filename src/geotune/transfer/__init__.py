"""Transfer learning: layer groups, BatchNorm policies, strategies, optimizers and schedules.

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "BNPolicySpec": "geotune.transfer.batchnorm",
    "BN_POLICIES": "geotune.transfer.batchnorm",
    "BatchNormPolicy": "geotune.transfer.batchnorm",
    "LayerGroup": "geotune.transfer.groups",
    "Phase": "geotune.transfer.strategies",
    "STRATEGIES": "geotune.transfer.strategies",
    "StrategySpec": "geotune.transfer.strategies",
    "apply_trainable": "geotune.transfer.groups",
    "build_optimizer": "geotune.transfer.optim",
    "build_scheduler": "geotune.transfer.optim",
    "frozen_prefix": "geotune.transfer.groups",
    "get_strategy": "geotune.transfer.strategies",
    "is_batchnorm": "geotune.transfer.batchnorm",
    "layer_groups": "geotune.transfer.groups",
    "lr_multipliers": "geotune.transfer.optim",
    "param_groups": "geotune.transfer.optim",
    "plan_phases": "geotune.transfer.strategies",
    "reestimate_batchnorm": "geotune.transfer.batchnorm",
    "register_bn_policy": "geotune.transfer.batchnorm",
    "register_strategy": "geotune.transfer.strategies",
    "trainable_flags": "geotune.transfer.groups",
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
