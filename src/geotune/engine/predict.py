"""Batched prediction with test-time augmentation."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from geotune.data.augment import TTA_VIEWS, tta_view
from geotune.data.batches import iterate_batches, prefetch
from geotune.models.preprocessing import Preprocessing


@torch.inference_mode()
def predict(
    model: nn.Module,
    prep: Preprocessing,
    pixels,
    indices,
    batch_size: int,
    device,
    fabric=None,
    tta: str = "none",
    shared: bool = True,
    multilabel: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities for the chips at ``indices``, averaged over the ``tta`` views
    (``multilabel``: one independent sigmoid probability per label instead of a softmax).

    Also returns the logits of the plain view, so one pass gives the figures with and without TTA.
    Under data parallelism (``fabric`` with several processes) each process predicts its own
    share of ``indices`` and every process gets all the outputs back, in order; ``shared=False``
    when one process predicts alone (the lead's test pass, after the others have finished).
    """
    world = fabric.world_size if fabric is not None else 1
    if world > 1 and shared:
        return _predict_shared(
            model, prep, pixels, indices, batch_size, device, fabric, tta, multilabel
        )
    model.eval()
    probs, plain = [], []
    dummy = np.zeros(len(pixels), dtype=np.int64)
    for x, _ in prefetch(iterate_batches(pixels, dummy, indices, batch_size), device):
        x = prep.normalize(x.to(device, non_blocking=True))
        p_sum = None
        for turns, flip in TTA_VIEWS[tta]:
            v = tta_view(x, turns, flip).contiguous(memory_format=torch.channels_last)
            with fabric.autocast() if fabric is not None else contextlib.nullcontext():
                logits = model(v).float()
            if turns == 0 and not flip:
                plain.append(logits.cpu())
            p = logits.sigmoid() if multilabel else logits.softmax(-1)
            p_sum = p if p_sum is None else p_sum + p
        probs.append((p_sum / len(TTA_VIEWS[tta])).cpu())
    if not probs:
        return torch.empty(0), torch.empty(0)
    return torch.cat(probs), torch.cat(plain)


def _predict_shared(model, prep, pixels, indices, batch_size, device, fabric, tta, multilabel):
    """``predict`` split across the processes: contiguous shares, gathered and put back in the
    order of ``indices``. Every share is padded to the longest (repeating a chip) so that each
    process runs the same number of forward passes (DDP may sync buffers in each) and
    all_gather gets tensors of one shape."""
    indices = np.asarray(indices)
    shares = np.array_split(np.arange(len(indices)), fabric.world_size)
    longest = max(len(s) for s in shares)
    if longest == 0:
        return torch.empty(0), torch.empty(0)
    own = shares[fabric.global_rank]
    mine = np.resize(indices[own] if len(own) else indices[:1], longest)
    with fabric.autocast():
        probs, plain = predict(
            model, prep, pixels, mine, batch_size, device, None, tta, multilabel=multilabel
        )

    def gathered(t: torch.Tensor) -> torch.Tensor:
        every = fabric.all_gather(t.to(device)).cpu()  # (world, longest, classes)
        return torch.cat([every[r, : len(s)] for r, s in enumerate(shares)])

    return gathered(probs), gathered(plain)
