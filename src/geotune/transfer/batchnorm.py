"""Layer groups, freezing, and the BatchNorm policy.

Groups come from the backbone itself (timm's ``group_matcher``, coarse: stem, then one group
per stage), so "freeze up to ``layer3``" or "unfreeze the last 2 groups" works for any timm
backbone. The classification head is always its own, trainable group.

BatchNorm: ``requires_grad=False`` freezes a BN layer's affine weights but *not* its running
statistics, which keep updating in train mode. Only eval mode keeps the pretrained statistics.
``BatchNormPolicy.train_mode`` is therefore used instead of ``model.train()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from geotune.registry import Registry
from geotune.transfer.groups import LayerGroup


def is_batchnorm(m: nn.Module) -> bool:
    # timm's BatchNormAct2d subclasses BatchNorm2d, so this covers fused BN+activation too.
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def _bn_in_frozen_groups(model, groups, flags) -> list[nn.Module]:
    frozen = {id(p) for g, f in zip(groups, flags, strict=True) if not f for p in g.params}
    out = []
    for m in model.modules():
        own = list(m.parameters(recurse=False))
        if is_batchnorm(m) and own and all(id(p) in frozen for p in own):
            out.append(m)
    return out


@dataclass(frozen=True)
class BNPolicySpec:
    """A registered BatchNorm policy.

    Args:
        name: the ``--bn-policy`` value.
        description: one line for ``--help``.
        eval_modules: the BN layers kept in eval mode while a phase with these trainable flags
            trains (model, layer groups, flags).
        reestimate: re-estimate all statistics on the training chips before training (AdaBN).
    """

    name: str
    description: str
    eval_modules: Callable[[nn.Module, list[LayerGroup], list[bool]], list[nn.Module]]
    reestimate: bool = False


BN_POLICIES: Registry[BNPolicySpec] = Registry("BatchNorm policy", "bn_policy")


def register_bn_policy(spec: BNPolicySpec) -> BNPolicySpec:
    return BN_POLICIES.register(spec.name, spec)


def _all_bn(model, groups, flags) -> list[nn.Module]:
    return [m for m in model.modules() if is_batchnorm(m)]


register_bn_policy(
    BNPolicySpec(
        "frozen-in-frozen-groups",
        "BN layers of frozen groups stay in eval mode (pretrained statistics)",
        _bn_in_frozen_groups,
    )
)
register_bn_policy(
    BNPolicySpec(
        "frozen",
        "every BN layer stays in eval mode; affine weights may still train (small batches)",
        _all_bn,
    )
)
register_bn_policy(BNPolicySpec("train", "all statistics follow the new data", lambda m, g, f: []))
register_bn_policy(
    BNPolicySpec(
        "adabn",
        "re-estimate all statistics on the training chips (no labels), then keep them frozen",
        _all_bn,
        reestimate=True,
    )
)


class BatchNormPolicy:
    """The BN layers one phase keeps in eval mode; ``train_mode`` replaces ``model.train()``."""

    def __init__(self, model: nn.Module, groups: list[LayerGroup], flags: list[bool], policy: str):
        self.policy = policy
        self.eval_modules = BN_POLICIES.get(policy).eval_modules(model, groups, list(flags))

    def train_mode(self, model: nn.Module) -> None:
        """model.train(), then put the protected BN layers back in eval mode."""
        model.train()
        for m in self.eval_modules:
            m.eval()

    def describe(self) -> dict:
        return {"policy": self.policy, "bn_layers_in_eval": len(self.eval_modules)}


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches) -> int:
    """AdaBN (Li et al., 2016): replace every BN layer's running statistics by the statistics of
    ``batches`` (unlabelled, preprocessed images), as a cumulative average over all of them.

    Only BN buffers change; weights do not. Returns the number of images used. Afterwards keep
    the BN layers in eval mode (policy ``frozen``) so the new statistics stay as estimated.
    """
    bns = [m for m in model.modules() if is_batchnorm(m)]
    momenta = [m.momentum for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    model.eval()
    for m in bns:
        m.train()
    n = 0
    for x in batches:
        model(x)
        n += len(x)
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return n
