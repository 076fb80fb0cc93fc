"""geoembed v3: a self-supervised ResNet-18 for aerial orthophotos, as a timm ResNet variant.

The PyPI package ``geoembed`` (MIT) ships ``geoembed/weights/v3.npz``: 105 numpy arrays of a
ResNet-18 trained without labels on ~0.1-0.15 m/pixel orthophoto tiles. Read from the package's
own code (``geoembed/arch.py``, ``TileEncoderV3`` / ``NetCLResNet18``):

- stem: 3x3 convolution, stride 1, padding 1, no bias, BatchNorm, ReLU, and *no* max-pool;
- the four ResNet-18 stages (BasicBlocks, 1x1 stride-2 projection shortcuts), BatchNorm eps 1e-5;
- embedding head: average pooling to a 4x4 grid, flattened channel-major (C*4*4 = 8192), a linear
  8192 -> 256 (stored as ``(in, out)``), then L2 normalisation;
- input: 128 x 128 px RGB, bilinear resize, scaled to [-1, 1] (mean = std = 0.5).

``geoembed_resnet18`` is timm's ResNet-18 with that stem, registered in timm's model registry so
that every geotune path (layer groups from ``group_matcher``, ``--weights random``, checkpoints)
treats it like any timm model. Only the npz -> state-dict mapping is hand-written here; the
package's OpenCL runtime (netcl) is never imported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

MODEL_NAME = "geoembed_resnet18"
WEIGHTS_FILE = "weights/v3.npz"
INPUT_SIZE = 128
POOL_GRID = 4  # the embedding head pools layer 4 to a 4x4 grid

_BN_TAIL = {
    "weight": "weight",
    "bias": "bias",
    "running_mean": "running_mean",
    "running_var": "running_var",
}

default_cfgs = generate_default_cfgs(
    {
        f"{MODEL_NAME}.v3": {
            "input_size": (3, INPUT_SIZE, INPUT_SIZE),
            "pool_size": (INPUT_SIZE // 8, INPUT_SIZE // 8),
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "first_conv": "conv1",
            "classifier": "fc",
            "num_classes": 0,
            "license": "mit",
            "origin_url": "https://pypi.org/project/geoembed/1.1.2/",
        }
    }
)


def _cifar_stem(model: ResNet, in_chans: int) -> ResNet:
    """Swap timm's 7x7/2 stem and max-pool for geoembed's 3x3/1 stem without pooling."""
    model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    # With no stride in the stem, every stage's reduction is 4x smaller than ResNet's.
    for info in model.feature_info:
        info["reduction"] = max(1, info["reduction"] // 4)
    return model


@register_model
def geoembed_resnet18(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18 with a 3x3 stride-1 stem and no max-pool (geoembed v3's architecture).

    Pretrained weights come from the ``geoembed`` wheel through geotune's ``offline`` source,
    not from a hub, so ``pretrained`` must be False here.
    """
    if pretrained:
        raise ValueError(f"{MODEL_NAME} has no hub weights; use geotune's offline weights")
    in_chans = kwargs.get("in_chans", 3)
    model = build_model_with_cfg(
        ResNet, MODEL_NAME, False, block=BasicBlock, layers=(2, 2, 2, 2), **kwargs
    )
    return _cifar_stem(model, in_chans)


def read_npz(path: Path) -> dict[str, torch.Tensor]:
    """The arrays of ``v3.npz`` as tensors (numpy reads them; ``allow_pickle`` stays off)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: torch.from_numpy(np.array(data[k])) for k in data.files}


def _backbone_key(key: str) -> str | None:
    """``bb.*`` array name -> timm ResNet state-dict key (None: not part of the backbone)."""
    if not key.startswith("bb."):
        return None
    parts = key[3:].split(".")
    if parts[0] == "stem":  # stem.0 = conv, stem.1 = BatchNorm
        return ".".join(["conv1" if parts[1] == "0" else "bn1", *parts[2:]])
    if len(parts) > 3 and parts[2] == "short":  # short.0/1 = torchvision's downsample.0/1
        return ".".join([*parts[:2], "downsample", *parts[3:]])
    return ".".join(parts)


def rename_v3(arrays: dict[str, torch.Tensor], model: nn.Module | None = None) -> dict:
    """geoembed v3 arrays -> the state dict of ``geoembed_resnet18`` (the backbone only).

    Metadata (``embed_dim``, ``base_channels``, ``pool_size``) and the embedding head (``fc.*``,
    see :func:`embedding_head`) are left out; ``num_batches_tracked`` is added as timm expects.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in arrays.items():
        name = _backbone_key(key)
        if name is None:
            continue
        out[name] = value.float()
        if name.endswith(".running_var"):
            out[name[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(0)
    return out


def embedding_head(arrays: dict[str, torch.Tensor]) -> nn.Linear:
    """geoembed's linear 8192 -> 256 (netcl stores the weight as ``(in, out)``)."""
    weight, bias = arrays["fc.weight"], arrays["fc.bias"]
    fc = nn.Linear(weight.shape[0], weight.shape[1])
    with torch.no_grad():
        fc.weight.copy_(weight.T)
        fc.bias.copy_(bias)
    return fc


@torch.no_grad()
def embed(backbone: nn.Module, fc: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """geoembed's 256-d unit embedding of a normalised NCHW batch (its ``TileEncoderV3``).

    Layer-4 features are average-pooled with a kernel of ``H // 4`` (4x4 grid at 128 px),
    flattened channel-major, projected by ``fc`` and L2-normalised.
    """
    feat = backbone.forward_features(x)
    k = feat.shape[2] // POOL_GRID
    pooled = F.avg_pool2d(feat, kernel_size=k, stride=feat.shape[3] // POOL_GRID)
    out = fc(pooled.flatten(1))
    return out / out.norm(dim=1, keepdim=True).clamp_min(1e-8)
