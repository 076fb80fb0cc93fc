"""Transfer learning: layer groups, BatchNorm policies, strategies, optimizers and schedules."""

from geotune.transfer.batchnorm import (
    BN_POLICIES,
    BatchNormPolicy,
    BNPolicySpec,
    is_batchnorm,
    reestimate_batchnorm,
    register_bn_policy,
)
from geotune.transfer.groups import (
    LayerGroup,
    apply_trainable,
    frozen_prefix,
    layer_groups,
    trainable_flags,
)
from geotune.transfer.optim import build_optimizer, build_scheduler, lr_multipliers, param_groups
from geotune.transfer.strategies import (
    STRATEGIES,
    Phase,
    StrategySpec,
    get_strategy,
    plan_phases,
    register_strategy,
)

__all__ = [
    "BN_POLICIES",
    "BNPolicySpec",
    "STRATEGIES",
    "StrategySpec",
    "get_strategy",
    "register_bn_policy",
    "register_strategy",
    "BatchNormPolicy",
    "LayerGroup",
    "Phase",
    "apply_trainable",
    "build_optimizer",
    "build_scheduler",
    "is_batchnorm",
    "layer_groups",
    "lr_multipliers",
    "param_groups",
    "plan_phases",
    "reestimate_batchnorm",
    "trainable_flags",
    "frozen_prefix",
]
