"""RGB weights on multispectral chips without touching their stem: several three-band views.

A frozen RGB backbone whose first convolution is rewired to 13 bands sees a mixture it was never
trained on (issue 10: the 13-band linear probe fell below true colour alone). Analysts instead
look at false-colour composites (colour infrared, SWIR, red edge), each an ordinary three-band
image; a backbone pretrained on RGB extracts meaningful features from each, and their pooled
features, concatenated, carry the bands beyond the visible range to the head. Cost: one forward
pass per composite (run as one batch).
"""

from __future__ import annotations

import torch
from torch import nn


class CompositeBackbone(nn.Module):
    """``net`` (an RGB timm backbone) run on each composite; features concatenated.

    Input: chips whose every band is scaled to [0, 1] (the run's per-band percentiles). Each
    composite is normalised with the weights' own RGB mean and std, as true colour would be.
    """

    def __init__(self, net: nn.Module, composites, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("index", torch.tensor(composites, dtype=torch.long), persistent=False)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.num_features = len(composites) * net.num_features
        self.pretrained_cfg = getattr(net, "pretrained_cfg", {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, k = x.shape[0], self.index.shape[0]
        views = x[:, self.index.flatten()].unflatten(1, (k, 3)).flatten(0, 1)  # (B K) 3 H W
        views = (views - self.mean) / self.std
        views = views.contiguous(memory_format=torch.channels_last)
        return self.net(views).view(b, k * self.net.num_features)
