"""Frozen features from more than the last stage: the final pooled features and the globally
average-pooled outputs of the stages before it, concatenated.

Earlier stages keep texture and layout at a finer scale than the last one, which an ImageNet
network tunes to object categories; for scene classification, intermediate CNN layers often
transfer better than the last (Yosinski et al., 2014; Hu et al., Remote Sensing 2015). timm's
``forward_intermediates`` gives the stage outputs of every family (CNNs and ViTs) in one pass.

Layout of the features, so that fewer stages are a prefix of more (a probe chooses the number on
validation from one cached pass): [final pooled | last stage | the one before | ...].
"""

from __future__ import annotations

import torch
from torch import nn

from geotune.errors import ConfigError
from geotune.models.band_statistics import BandStatistics

# Final features + the last two stages: +3.2 / +3.5 points on AID (5 / 20 labels per class) and
# +3.0 on RSSCN7 over the final features alone, every one of 9 seeds
# (benchmarks/results/2026-11-29-recipes.md).
DEFAULT_PROBE_STAGES = 3


def stages_offered(net: nn.Module) -> int:
    """How many blocks of stage features ``net`` can give (its final features included): 1 for a
    network without timm's forward_intermediates (ensembles, composites)."""
    if isinstance(net, BandStatistics):
        return stages_offered(net.net)
    if not hasattr(net, "forward_intermediates"):
        return 1
    return len(getattr(net, "feature_info", [])) + 1


def default_probe_stages(net: nn.Module) -> int:
    """A linear probe's stages when none are asked for: DEFAULT_PROBE_STAGES, or fewer where
    ``net`` offers fewer."""
    return min(DEFAULT_PROBE_STAGES, stages_offered(net))


def stage_candidates(requested: list[int] | None, net: nn.Module) -> list[int]:
    """The stage counts a frozen-feature classifier (probe, kNN, feature extraction) considers:
    those asked for (``probe_stages``), else ``net``'s default."""
    return list(requested) if requested else [default_probe_stages(net)]


class StagePooling(nn.Module):
    """``net``'s pooled features followed by the pooled outputs of its last ``stages - 1`` stages."""

    def __init__(self, net: nn.Module, stages: int):
        super().__init__()
        available = stages_offered(net)
        if stages > available:
            raise ConfigError(
                f"probe_stages {stages} is more than {type(net).__name__} offers "
                f"({available} with its final features); use at most {available}"
            )
        self.net, self.stages = net, stages
        widths = [f["num_chs"] for f in net.feature_info][-(stages - 1) :] if stages > 1 else []
        self.widths = [net.num_features, *reversed(widths)]
        self.num_features = sum(self.widths)
        self.pretrained_cfg = getattr(net, "pretrained_cfg", {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stages == 1:
            return self.net(x)
        final, inter = self.net.forward_intermediates(x, indices=self.stages - 1)
        pooled = [self.net.forward_head(final, pre_logits=True)]
        pooled += [t.mean((2, 3)) for t in reversed(inter)]  # NCHW for CNNs and ViTs alike
        return torch.cat(pooled, 1)


def with_stages(net: nn.Module, stages: int) -> nn.Module:
    """``net`` giving the pooled features of its last ``stages`` stages (a new module; ``net`` is
    unchanged): StagePooling, inside band statistics when ``net`` has them."""
    if isinstance(net, BandStatistics):
        return net.around(with_stages(net.net, stages))
    return net if stages == 1 else StagePooling(net, stages)


def stages_of(net: nn.Module) -> int:
    """How many pooled stages ``net``'s features hold (1 = the final features)."""
    if isinstance(net, BandStatistics):
        net = net.net
    return net.stages if isinstance(net, StagePooling) else 1  # not timm's own `stages` module


def stage_width(net: StagePooling | BandStatistics, stages: int) -> int:
    """Width of the first ``stages`` blocks of ``net``'s features (the prefix for that many)."""
    return sum(net.widths[:stages])
