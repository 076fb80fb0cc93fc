"""The scene classifier: a pretrained backbone and a new head for the user's classes."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from geotune.errors import WeightsError
from geotune.fileio import atomic_torch_save
from geotune.models.backbones import create_backbone
from geotune.models.checkpoints import load_into
from geotune.models.preprocessing import Preprocessing


def build_head(
    num_features: int, num_classes: int, kind: str = "linear", dropout: float = 0.0
) -> nn.Module:
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, num_classes))
    if kind == "mlp":
        hidden = min(512, num_features)
        return nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(num_features, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
    raise ValueError(f"unknown head '{kind}'")


def signed_power(features: torch.Tensor, power: float) -> torch.Tensor:
    """Power normalisation sign(f)|f|^a of pooled features (a = 1: unchanged)."""
    if power == 1.0:
        return features
    return features.sign() * features.abs().pow(power)


class SceneClassifier(nn.Module):
    """``backbone`` (timm, pooled features) followed by ``head``.

    ``feature_power`` < 1 power-normalises the pooled features before the head (a linear probe
    may choose it on validation data); it has no parameters and is recorded in checkpoints.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        head: str = "linear",
        dropout: float = 0.0,
        feature_power: float = 1.0,
    ):
        super().__init__()
        self.backbone = backbone
        self.feature_power = feature_power
        self.head = build_head(backbone.num_features, num_classes, head, dropout)

    # Ground-resolution matching (geotune adapt --method rescale): >1 zooms into the chip's
    # centre, <1 shrinks it inside a mirrored border; recorded in checkpoints like feature_power.
    input_zoom: float = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_zoom != 1.0:
            x = zoom_chips(x, self.input_zoom)
        return self.head(signed_power(self.backbone(x), self.feature_power))


def zoom_chips(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """Rescale the scene inside a batch of chips by ``zoom``, keeping their size: objects appear
    ``zoom`` times larger (centre crop, resized up) or smaller (resized down, reflect-padded)."""
    size = x.shape[-1]
    if zoom > 1:
        keep = max(1, round(size / zoom))
        lo = (size - keep) // 2
        x = x[..., lo : lo + keep, lo : lo + keep]
        return nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    small = max(2, round(size * zoom))
    x = nn.functional.interpolate(x, size=(small, small), mode="bilinear", antialias=True)
    lo = (size - small) // 2
    hi = size - small - lo
    while lo or hi:  # reflect padding needs the pad below the image size: repeat as needed
        step_lo, step_hi = min(lo, x.shape[-1] - 1), min(hi, x.shape[-1] - 1)
        x = nn.functional.pad(x, (step_lo, step_hi, step_lo, step_hi), mode="reflect")
        lo, hi = lo - step_lo, hi - step_hi
    return x


def build_classifier(
    backbone: str,
    weights: str,
    num_classes: int,
    head: str = "linear",
    dropout: float = 0.0,
    image_size: int | None = None,
    in_chans: int = 3,
) -> tuple[SceneClassifier, Preprocessing, str]:
    net, prep, source = create_backbone(backbone, weights, in_chans)
    if image_size is not None:
        prep = Preprocessing(image_size, prep.mean, prep.std, prep.interpolation)
    return SceneClassifier(net, num_classes, head, dropout), prep, source


def wrap_composites(model: SceneClassifier, record: dict, head: str, dropout: float) -> None:
    """Put ``model``'s RGB backbone behind composite views (``--band-init composites``) and give
    it a head as wide as their concatenated features."""
    from geotune.models.composites import CompositeBackbone

    model.backbone = CompositeBackbone(
        model.backbone, record["positions"], record["rgb_mean"], record["rgb_std"]
    )
    _new_head(model, head, dropout)


def wrap_stages(model: SceneClassifier, stages: int, head: str, dropout: float) -> None:
    """Give ``model`` the pooled features of its last stages (a linear probe's ``probe_stages``)
    and a head as wide as them."""
    from geotune.models.stages import with_stages

    model.backbone = with_stages(model.backbone, stages)
    _new_head(model, head, dropout)


def wrap_band_statistics(model: SceneClassifier, bands: int, head: str, dropout: float) -> None:
    """Put each band's spectral statistics beside ``model``'s features (``--band-statistics``)
    and give it a head as wide as both; the band scaling is set by ``BandStatistics.fit_scaling``
    (training runs) or read from the checkpoint."""
    from geotune.models.band_statistics import BandStatistics

    model.backbone = BandStatistics(model.backbone, bands)
    _new_head(model, head, dropout)


def _new_head(model: SceneClassifier, head: str, dropout: float) -> None:
    num_classes = [m for m in model.head.modules() if isinstance(m, nn.Linear)][-1].out_features
    model.head = build_head(model.backbone.num_features, num_classes, head, dropout)


def save_classifier(path: Path, model: SceneClassifier, meta: dict) -> None:
    """A self-describing checkpoint: weights plus what is needed to rebuild and preprocess."""

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save({"format": "geotune-classifier-v1", "state_dict": state, **meta}, path)


def load_classifier(path: Path) -> tuple[SceneClassifier, Preprocessing, dict]:
    """Rebuild a classifier saved by :func:`save_classifier` (no download, no code execution)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} not found; is this a finished geotune run?")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, foreign or code-carrying files alike
        raise WeightsError(
            f"checkpoint {path} cannot be read ({type(err).__name__}): it is damaged or not "
            "written by geotune; re-run the command that wrote it"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "geotune-classifier-v1":
        raise WeightsError(f"{path} is not a geotune classifier checkpoint")
    bands = ckpt.get("bands") or {}  # multispectral runs: the stem takes that many bands
    stem = bands.get("stem") or {}
    composites = stem.get("band_init") == "composites"  # an RGB stem behind composite views
    channels = 3 if composites else int(bands.get("channels", 3))
    net, _, _ = create_backbone(ckpt["backbone"], "random", channels)
    head, dropout = ckpt["head"], ckpt.get("head_dropout", 0.0)
    model = SceneClassifier(
        net, len(ckpt["classes"]), head, dropout, ckpt.get("feature_power", 1.0)
    )
    if composites:
        wrap_composites(model, stem, head, dropout)
    if stem.get("band_statistics"):  # the band scaling comes with the state dict (buffers)
        wrap_band_statistics(model, int(bands["channels"]), head, dropout)
    if ckpt.get("probe_stages", 1) > 1:
        wrap_stages(model, ckpt["probe_stages"], head, dropout)
    model.input_zoom = float(ckpt.get("input_zoom", 1.0))
    load_into(
        model,
        ckpt["state_dict"],
        str(path),
        f"{ckpt['backbone']} with {len(ckpt['classes'])} classes",
    )
    return model.eval(), Preprocessing.from_dict(ckpt["preprocessing"]), ckpt
