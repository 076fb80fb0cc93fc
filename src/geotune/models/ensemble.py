"""Several pretrained backbones as one (``--backbone a+b+c``): their pooled features concatenated.

Frozen features of different pretrainings (ImageNet EfficientNet and MobileNet, a remote-sensing
ResNet) make different mistakes; a linear probe on their concatenation uses the best of each for
the price of one forward pass per member. The ensemble takes [0, 1] images and normalises them
for each member as its own weights expect (mean/std), at one shared input size.
"""

from __future__ import annotations

import torch
from torch import nn


class BackboneEnsemble(nn.Module):
    """Members' pooled features, concatenated in the order the backbone name lists them."""

    def __init__(self, members: list[nn.Module], means: list, stds: list):
        super().__init__()
        self.members = nn.ModuleList(members)
        for i, (mean, std) in enumerate(zip(means, stds, strict=True)):
            self.register_buffer(f"mean{i}", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
            self.register_buffer(f"std{i}", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.num_features = sum(m.num_features for m in members)
        self.pretrained_cfg = getattr(members[0], "pretrained_cfg", {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for i, member in enumerate(self.members):
            mean, std = getattr(self, f"mean{i}"), getattr(self, f"std{i}")
            feats.append(member(((x - mean) / std).contiguous(memory_format=torch.channels_last)))
        return torch.cat(feats, dim=1)
