"""Self-supervised objectives from lightly (heads, losses, momentum updates), one per method.

Each method wraps the backbone being pretrained and returns the loss of two augmented views of a
batch. Only the backbone is kept at the end; heads and momentum copies are training scaffolding.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


class SimCLR(nn.Module):
    """Chen et al., 2020: contrastive loss (NT-Xent) between the projections of two views."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead

        self.backbone = backbone
        dim = backbone.num_features
        self.head = SimCLRProjectionHead(dim, dim, 128)
        self.criterion = NTXentLoss(temperature=0.1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.head(self.backbone(a)), self.head(self.backbone(b)))

    def momentum_step(self, step: int, total: int) -> None:
        """No momentum network."""


class _MomentumPair(nn.Module):
    """An online network and its exponential-moving-average copy (BYOL, DINO)."""

    def _copy_momentum(self, *modules: nn.Module) -> list[nn.Module]:
        from lightly.models.utils import deactivate_requires_grad

        out = [copy.deepcopy(m) for m in modules]
        for m in out:
            deactivate_requires_grad(m)
        return out

    def momentum_step(self, step: int, total: int) -> None:
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        m = cosine_schedule(step, total, 0.99, 1.0)  # 0.99 -> 1 over the run (BYOL, DINO)
        for online, target in self.pairs():
            update_momentum(online, target, m=m)


class BYOL(_MomentumPair):
    """Grill et al., 2020: predict the momentum network's projection of the other view."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

        self.backbone = backbone
        dim = backbone.num_features
        self.projection = BYOLProjectionHead(dim, 1024, 256)
        self.prediction = BYOLPredictionHead(256, 1024, 256)
        self.backbone_m, self.projection_m = self._copy_momentum(backbone, self.projection)
        self.criterion = NegativeCosineSimilarity()

    def pairs(self):
        return [(self.backbone, self.backbone_m), (self.projection, self.projection_m)]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        p_a = self.prediction(self.projection(self.backbone(a)))
        p_b = self.prediction(self.projection(self.backbone(b)))
        with torch.no_grad():
            z_a = self.projection_m(self.backbone_m(a))
            z_b = self.projection_m(self.backbone_m(b))
        return 0.5 * (self.criterion(p_a, z_b) + self.criterion(p_b, z_a))


class DINO(_MomentumPair):
    """Caron et al., 2021: self-distillation; the student matches the momentum teacher's
    centred, sharpened output on the other view (two global views, no multi-crop)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        from lightly.loss import DINOLoss
        from lightly.models.modules import DINOProjectionHead

        self.backbone = backbone
        dim = backbone.num_features
        self.head = DINOProjectionHead(dim, 512, 128, 2048, freeze_last_layer=1)
        (self.backbone_m,) = self._copy_momentum(backbone)
        # The head uses weight_norm, which deepcopy refuses: a second head, same weights.
        self.head_m = DINOProjectionHead(dim, 512, 128, 2048)
        self.head_m.load_state_dict(self.head.state_dict())
        for p in self.head_m.parameters():
            p.requires_grad_(False)
        self.criterion = DINOLoss(output_dim=2048, warmup_teacher_temp_epochs=0)

    def pairs(self):
        return [(self.backbone, self.backbone_m), (self.head, self.head_m)]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher = [self.head_m(self.backbone_m(v)) for v in (a, b)]
        student = [self.head(self.backbone(v)) for v in (a, b)]
        return self.criterion(teacher, student)


@dataclass(frozen=True)
class SSLMethod:
    name: str
    description: str
    build: Callable[[nn.Module], nn.Module]


SSL_METHODS: dict[str, SSLMethod] = {
    m.name: m
    for m in (
        SSLMethod("simclr", "contrastive: the two views of a chip against all others", SimCLR),
        SSLMethod("byol", "predict a momentum network's view; no negatives", BYOL),
        SSLMethod("dino", "self-distillation from a momentum teacher", DINO),
    )
}
# Methods users ask for that this pretraining cannot run, with what works instead.
UNSUPPORTED = {
    "mae": "mae (masked autoencoding) needs a ViT and a pixel decoder, which geotune's pretrain "
    "does not build; use simclr, byol or dino (any backbone)",
}
