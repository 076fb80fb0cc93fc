"""Transfer learning: layer groups, BatchNorm policies, strategies, optimizers and schedules.

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from geotune.lazy import lazy_exports

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

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
