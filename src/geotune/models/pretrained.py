"""Pretrained weights from outside timm's own tags, and the checks every loaded checkpoint passes.

``HUB_WEIGHTS``: named weight sources for users with internet, downloaded once from their URL
into torch's hub cache (``$TORCH_HOME/hub/checkpoints``) and read without executing code. Offline,
each fails with a one-line error that names the file to fetch elsewhere and pass as
``--weights PATH`` (a local copy of the same file loads offline, with the same checks).

SSL4EO-S12 (Wang et al., 2022, arXiv 2211.07044; weights CC BY 4.0) as torchgeo publishes them:
a timm ``resnet50`` state dict with a 13-channel ``conv1`` and no ``fc``, for Sentinel-2 L1C
top-of-atmosphere bands B01-B12 with B8A after B08, scaled by 1/10000 (torchgeo's
``_ssl4eo_s12_transforms_s2_10k``).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from geotune.errors import WeightsError

SENTINEL2_L1C_BANDS = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)  # fmt: skip


@dataclass(frozen=True)
class HubWeights:
    """A named weight source that is a file at a URL (not a timm tag)."""

    backbone: str  # the timm architecture the file fits
    url: str
    in_chans: int
    bands: tuple[str, ...]
    # Preprocessing fields (size, mean, std, interpolation), in the units of the input:
    # for Sentinel-2, reflectance = digital number / 10000.
    preprocessing: dict
    note: str

    @property
    def filename(self) -> str:
        return os.path.basename(self.url)

    def cached(self) -> Path | None:
        p = Path(torch.hub.get_dir()) / "checkpoints" / self.filename
        return p if p.is_file() else None


_S2_10K = {
    "size": 224,
    "mean": (0.0,) * 13,
    "std": (1.0,) * 13,
    "interpolation": "bilinear",
}

HUB_WEIGHTS: dict[str, HubWeights] = {
    "ssl4eo-s12-moco": HubWeights(
        "resnet50",
        "https://hf.co/torchgeo/resnet50_sentinel2_all_moco/resolve/"
        "da4f3c9dbe09272eb902f3b37f46635fa4726879/resnet50_sentinel2_all_moco-df8b932e.pth",
        13,
        SENTINEL2_L1C_BANDS,
        _S2_10K,
        "Sentinel-2 L1C, 13 bands (DN / 10000); SSL4EO-S12 MoCo via torchgeo",
    ),
    "ssl4eo-s12-dino": HubWeights(
        "resnet50",
        "https://hf.co/torchgeo/resnet50_sentinel2_all_dino/resolve/"
        "d7f14bf5530d70ac69d763e58e77e44dbecfec7c/resnet50_sentinel2_all_dino-d6c330e9.pth",
        13,
        SENTINEL2_L1C_BANDS,
        _S2_10K,
        "Sentinel-2 L1C, 13 bands (DN / 10000); SSL4EO-S12 DINO via torchgeo",
    ),
}


def hub_download_hint(url: str) -> str:
    return f"download {url} on a machine with internet and pass --weights PATH to that file"


def unreachable(url: str, timeout: float = 3.0) -> str | None:
    """Why ``url``'s host cannot be reached now (None: it can, or a proxy decides).

    Hand-written because huggingface_hub retries a failed lookup with backoff for ~45 s before
    it gives up: offline, a user would wait that long for the one-line message. With a proxy
    configured the direct probe proves nothing, so it is skipped.
    """
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    host = urlparse(url).hostname
    if not host:
        return None
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as err:
        return f"no connection to {host}: {err.strerror or type(err).__name__}"
    return None


def download_weights(name: str) -> Path:
    """The file of a HUB_WEIGHTS entry: the cached copy, or a download (one-line error offline)."""
    entry = HUB_WEIGHTS[name]
    hit = entry.cached()
    if hit is not None:
        return hit
    dest = Path(torch.hub.get_dir()) / "checkpoints" / entry.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        offline = unreachable(entry.url)
        if offline:
            raise ConnectionError(offline)
        torch.hub.download_url_to_file(entry.url, str(dest), progress=False)
    except Exception as err:  # noqa: BLE001 - network errors come in many types
        reason = (str(err).splitlines() or [type(err).__name__])[0][:100]
        raise WeightsError(
            f"weights '{name}' need a download, which failed ({reason}); "
            f"{hub_download_hint(entry.url)}"
        ) from None
    return dest


def first_conv_key(model: nn.Module) -> str | None:
    """State-dict key of the input convolution's weight (timm's ``pretrained_cfg``)."""
    first = getattr(model, "pretrained_cfg", {}).get("first_conv")
    if isinstance(first, (list, tuple)):
        first = first[0] if first else None
    return f"{first}.weight" if first else None


def check_bands(model: nn.Module, sd: dict, source: str) -> None:
    """Refuse, in one line, a checkpoint made for another number of input bands."""
    key = first_conv_key(model)
    if key is None or key not in sd or key not in model.state_dict():
        return
    have, want = sd[key].shape[1], model.state_dict()[key].shape[1]
    if have != want:
        raise WeightsError(
            f"checkpoint {source} takes {have}-band input ({key} {list(sd[key].shape)}) but the "
            f"data has {want} bands; use {have}-band chips, or weights made for {want} bands"
        )


def timm_checkpoint_filter(sd: dict, model: nn.Module) -> dict:
    """Apply the model module's own ``checkpoint_filter_fn`` (as timm's loader does), which
    converts original layouts (Meta's DINOv2 / DINOv3 releases, OpenCLIP, ...) to timm's."""
    module = importlib.import_module(type(model).__module__)
    fn = getattr(module, "checkpoint_filter_fn", None)
    if fn is None:
        return sd
    try:
        return fn(sd, model)
    except Exception:  # noqa: BLE001 - a layout it does not know: load_into reports the keys
        return sd
