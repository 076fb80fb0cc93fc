"""Training augmentations for overhead imagery, applied to whole batches on the training device.

Overhead chips have no canonical 'up', so flips and 90-degree rotations are label-preserving;
a random resized crop (optional; ``crop_scale`` (1, 1) = none, the training default) adds scale
variation but cuts away part of the scene that the label describes.
kornia (as in torchgeo) draws independent parameters per sample on a batched tensor, so this
runs on the GPU next to the model instead of on CPU loader workers.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import nn


def build_augment(
    size: int, flips: bool, rot90: bool, crop_scale: tuple[float, float]
) -> nn.Module:
    ops: list[nn.Module] = []
    if tuple(crop_scale) != (1.0, 1.0):
        ops.append(K.RandomResizedCrop((size, size), scale=tuple(crop_scale), p=1.0))
    if flips:
        ops += [K.RandomHorizontalFlip(p=0.5), K.RandomVerticalFlip(p=0.5)]
    if rot90:
        ops.append(K.RandomRotation90(times=(0, 3), p=1.0))
    return nn.Sequential(*ops)


@torch.no_grad()
def augment_batch(
    augment: nn.Module,
    x_uint8: torch.Tensor,
    global_size: int | None = None,
    rank: int = 0,
    world: int = 1,
    to_unit=None,
) -> torch.Tensor:
    """uint8 NCHW -> augmented float NCHW in [0, 1].

    ``to_unit`` maps other raw pixels (multispectral bands of any dtype) to [0, 1] first
    (``Preprocessing.to_unit``). Flips, rotations and crops act on every band alike; there is no
    colour augmentation, which would have no meaning for non-visible bands.

    Under data parallelism ``x_uint8`` is shard ``rank::world`` of a global batch of
    ``global_size`` chips: the random parameters are drawn for the whole global batch (every rank
    draws the same, from the same seed) and this shard's rows are applied, so N processes
    augment each chip exactly as one process would, while each loads and augments only its own.
    """
    x = to_unit(x_uint8) if to_unit is not None else x_uint8.float().div_(255)
    if not len(augment):
        return x
    n = global_size or len(x)
    rows = torch.arange(rank, n, world)
    for op in augment:
        params = op.forward_parameters(torch.Size((n, *x.shape[1:])))
        x = op(x, params=_rows(params, rows, n))
    return x.clamp_(0, 1)


def _rows(params: dict, rows: torch.Tensor, n: int) -> dict:
    """kornia parameters of a batch of ``n``, restricted to ``rows`` (per-sample tensors only)."""
    out = {}
    for k, v in params.items():
        if k == "forward_input_shape":
            out[k] = torch.tensor([len(rows), *v[1:].tolist()])
        elif torch.is_tensor(v) and v.ndim > 0 and v.shape[0] == n:
            out[k] = v[rows]
        else:
            out[k] = v
    return out


# Test-time augmentation: overhead scenes keep their class under rotations and flips, so averaging
# predictions over such views removes the orientation bias of a single view. Each view is
# (quarter turns, horizontal flip); cost grows linearly with the number of views.
TTA_VIEWS: dict[str, tuple[tuple[int, bool], ...]] = {
    "none": ((0, False),),
    "flip": ((0, False), (0, True)),
    "rot2": ((0, False), (1, False)),
    "rot4": ((0, False), (1, False), (2, False), (3, False)),
    "d4": tuple((k, f) for k in range(4) for f in (False, True)),
}


def tta_view(x: torch.Tensor, quarter_turns: int, flip: bool) -> torch.Tensor:
    if quarter_turns:
        x = torch.rot90(x, quarter_turns, dims=(-2, -1))
    return x.flip(-1) if flip else x
