"""Features of a frozen backbone for every chip: computed once, cached on disk, reused.

The backbone runs once per image (optionally averaged over TTA views). Features are cached keyed
by backbone, weights, preprocessing, views and the decoded images, so every later run with the
same backbone and data (other seeds, splits, label budgets, regularisation, adaptation checks)
skips the backbone entirely.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from geotune.data.augment import TTA_VIEWS, tta_view
from geotune.data.batches import iterate_batches
from geotune.data.cache import RESIDENT, ArrayCache
from geotune.data.decode import DecodedImages
from geotune.data.folder import cache_root
from geotune.models.band_statistics import BandStatistics
from geotune.models.preprocessing import Preprocessing

FEATURE_CACHE_VERSION = 1


def _model_parts(backbone: str, weights: str, prep: Preprocessing, seed: int) -> list[str]:
    """What fixes the backbone's function: name, weights (and the file's identity), preprocessing."""
    parts = [backbone, weights, json.dumps(prep.to_dict(), sort_keys=True)]
    if weights.startswith("file:"):
        st = os.stat(weights[5:])
        parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    if weights == "random":
        parts.append(f"seed={seed}")  # random weights differ per seed
    return parts


def feature_key(
    backbone: str,
    weights: str,
    prep: Preprocessing,
    images: DecodedImages,
    views: str,
    seed: int,
    stages: int = 1,
    stem: str | None = None,
) -> str:
    model = _model_parts(backbone, weights, prep, seed)
    parts = [f"v{FEATURE_CACHE_VERSION}", *model[:3], images.key, views, *model[3:]]
    if stages > 1:  # (one stage keeps the keys of caches written before stages existed)
        parts.append(f"stages={stages}")
    if stem is not None:
        parts.append(f"stem={stem}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:20]


def stem_fingerprint(backbone: nn.Module) -> str | None:
    """A digest of the input layer's weights when the stem was adapted to other bands.

    Name, weights and preprocessing fix an RGB backbone's function, but a stem rewired for N
    bands differs by ``--band-init`` (mean and zero kernels gave one cache key, so the second
    run silently reused the first one's features). Only adapted stems (not 3 input channels)
    get a digest, so the keys of RGB caches stay as they were. Band statistics beside the
    features (models/band_statistics.py) change them too: their scaling and standardisation
    (fitted on the training chips) are digested as well."""
    first = next((m for m in backbone.modules() if isinstance(m, nn.Conv2d)), None)
    digest = None
    if first is not None and first.in_channels != 3:
        data = first.weight.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
        digest = hashlib.sha1(data).hexdigest()[:12]
    for m in backbone.modules():
        if isinstance(m, BandStatistics):
            fitted = torch.cat([m.dn_scale, m.dn_shift, m.stat_mean, m.stat_std]).cpu().numpy()
            digest = f"{digest}+band-statistics-{hashlib.sha1(fitted.tobytes()).hexdigest()[:12]}"
            break
    return digest


@torch.inference_mode()
def run_backbone(
    backbone: nn.Module,
    prep: Preprocessing,
    pixels,
    batch_size: int,
    device,
    views: str = "none",
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    out: np.ndarray | None = None,
    skip_identity: bool = False,
) -> np.ndarray:
    """Pooled features of every chip, averaged over ``views`` (see augment.TTA_VIEWS).

    The views of a batch go through the network as one batch (one call instead of one per view).
    ``forward`` replaces ``backbone(x)`` (ONNX Runtime, see onnx_features). ``out``: an (N, D)
    array (the cache's memory map) written batch by batch instead of a new array in RAM.
    ``skip_identity``: the mean over every view but the first (the plain view, whose features
    the caller has already).
    """
    backbone.eval()
    forward = forward or backbone
    chosen = TTA_VIEWS[views][1 if skip_identity else 0 :]
    parts = []
    dummy = np.zeros(len(pixels), dtype=np.int64)
    start = 0
    for x, _ in iterate_batches(pixels, dummy, np.arange(len(pixels)), batch_size):
        x = prep.normalize(x.to(device))
        stacked = torch.cat([tta_view(x, k, flip) for k, flip in chosen])
        f = forward(stacked.contiguous(memory_format=torch.channels_last)).float()
        f = f.view(len(chosen), len(x), -1).mean(0).cpu().numpy()
        if out is None:
            parts.append(f)
        else:
            out[start : start + len(f)] = f
            RESIDENT.touched(out)
        start += len(f)
    return np.concatenate(parts).astype(np.float32) if out is None else out


@torch.inference_mode()
def _feature_width(backbone: nn.Module, prep: Preprocessing, chip, device, forward=None) -> int:
    """The length of one chip's pooled feature vector (the views do not change it)."""
    backbone.eval()
    x = prep.normalize(torch.from_numpy(np.array(chip)).to(device))
    return int((forward or backbone)(x.contiguous(memory_format=torch.channels_last)).shape[1])


# Feature sets up to this size are returned in RAM (as always); larger ones stay memory-mapped
# from the cache, so RAM does not grow with the number of chips (see streamed_probe).
IN_MEMORY_FEATURE_BYTES = 256 * 2**20


def _in_memory(values: np.ndarray) -> np.ndarray:
    return np.array(values) if values.nbytes <= IN_MEMORY_FEATURE_BYTES else values


@dataclass
class Features:
    """Pooled features of every chip and how they were obtained."""

    values: np.ndarray
    from_cache: bool
    seconds_per_chip: float  # what computing them cost (read from the cache on a hit)
    engine: str  # torch | onnxruntime (the engine that computed them)
    export_s: float = 0.0  # the one-off ONNX export, when it happened in this call


def _onnx_or_torch(backbone, prep, images, log):
    """ONNX Runtime's forward function (and export seconds), or (None, 0) to use PyTorch: when
    the export or runtime fails, or its features of two chips differ from PyTorch's."""
    from geotune.engine.onnx_features import onnx_forward

    example = prep.normalize(torch.from_numpy(np.array(images.pixels[:2])))
    example = example.contiguous(memory_format=torch.channels_last)
    try:
        forward, export_s = onnx_forward(backbone, example)
        with torch.inference_mode():
            expected = backbone.eval()(example).float()
        gap = float((forward(example) - expected).abs().max())
        if not gap <= 1e-3 * max(1.0, float(expected.abs().max())):
            raise ValueError(f"features differ from PyTorch's by {gap:.2g}")
        return forward, export_s
    except Exception as err:  # noqa: BLE001 - any export/runtime gap: PyTorch gives the same
        first = (str(err).strip().splitlines() or [""])[0][:160]
        log(
            f"ONNX Runtime not used for this backbone ({type(err).__name__}: {first}); using PyTorch"
        )
        return None, 0.0


def cached_features(
    backbone: nn.Module,
    backbone_name: str,
    weights: str,
    prep: Preprocessing,
    images: DecodedImages,
    views: str = "none",
    seed: int = 0,
    batch_size: int = 64,
    device: torch.device | None = None,
    engine: str = "auto",
    log: Callable[[str], None] = lambda message: None,
    stages: int = 1,
) -> Features:
    """Features of all chips, from the cache when present; on a miss computed with ``engine``
    (``auto``: ONNX Runtime for long CPU passes, see onnx_features.resolve_feature_engine)."""
    from geotune.engine.onnx_features import resolve_feature_engine

    stem = stem_fingerprint(backbone)
    key = feature_key(backbone_name, weights, prep, images, views, seed, stages, stem)
    cache = ArrayCache(cache_root() / "features")
    hit = cache.load(key)
    if hit is not None and len(hit[0]) == len(images.pixels):
        meta = hit[1]
        return Features(
            _in_memory(hit[0]), True, meta["seconds_per_chip"], meta.get("engine", "torch")
        )
    # Every view set starts with the plain view: when a plain run cached its features, only
    # the other views are computed (rot2 after a plain probe costs one pass, not two).
    plain = None
    if views != "none":
        known = cache.load(feature_key(backbone_name, weights, prep, images, "none", seed,
                                       stages, stem))  # fmt: skip
        plain = known[0] if known is not None and len(known[0]) == len(images.pixels) else None
    m = len(TTA_VIEWS[views])
    device = device or torch.device("cpu")
    passes = len(images.pixels) * (m - (plain is not None))
    engine = resolve_feature_engine(engine, device, passes)
    t0 = time.perf_counter()
    forward, export_s = None, 0.0
    if engine == "onnxruntime":
        forward, export_s = _onnx_or_torch(backbone, prep, images, log)
        engine = "onnxruntime" if forward else "torch"
    backbone = backbone.to(device=device, memory_format=torch.channels_last)
    n = len(images.pixels)
    # The width from one chip, then every chip straight into the cache's memory map.
    width = _feature_width(backbone, prep, images.pixels[:1], device, forward)

    def fill(out: np.ndarray) -> None:
        skip = plain is not None
        run_backbone(backbone, prep, images.pixels, batch_size, device, views, forward, out, skip)
        if skip:
            log(f"{views} features: the plain view's from the cache, {m - 1} more view(s) computed")
            for start in range(0, n, 4096):  # the mean over all m views, a block at a time
                block = slice(start, start + 4096)
                out[block] = (np.asarray(plain[block]) + (m - 1) * out[block]) / m
                RESIDENT.touched(out)

    def meta() -> dict:  # the cost of computing them: a cached run still reports it
        per_chip = (time.perf_counter() - t0) / max(n, 1)
        return {"seconds_per_chip": per_chip, "n": n, "device": str(device), "engine": engine}

    feats = cache.save(key, (n, width), np.float32, fill, meta)
    per_chip = (time.perf_counter() - t0) / max(n, 1)
    return Features(_in_memory(feats), False, per_chip, engine, export_s)
