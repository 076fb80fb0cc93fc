"""Local checkpoints: read without executing code, and loaded strictly with a one-line report."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from geotune.errors import WeightsError
from geotune.models.preprocessing import Preprocessing

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin", ".ckpt")


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .pth/.pt/.safetensors without executing code (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"checkpoint {path} not found; pass an existing .pth/.pt/.safetensors file"
        )
    if path.stat().st_size == 0:
        raise WeightsError(f"checkpoint {path} is empty (0 bytes); download or save it again")
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise WeightsError(
            f"checkpoint {path} has suffix '{path.suffix}'; expected one of {', '.join(CHECKPOINT_SUFFIXES)}"
        )
    try:
        # timm's reader: safetensors or torch.load(weights_only=True), unwraps 'state_dict' /
        # 'model' / EMA entries and strips DataParallel 'module.' prefixes.
        sd = timm.models.load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure is a user-facing file problem
        reason = (str(err).splitlines() or ["no details"])[0][:160]
        raise WeightsError(
            f"cannot read checkpoint {path} ({type(err).__name__}: {reason}); geotune loads plain "
            "state dicts without executing code: re-save it with torch.save(model.state_dict()) "
            "or as .safetensors"
        ) from None
    if isinstance(sd, dict) and "teacher" in sd and isinstance(sd["teacher"], dict):
        sd = sd["teacher"]  # DINO checkpoints: the teacher is the model to transfer
    if not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"checkpoint {path} holds no tensor state dict; save model.state_dict()")
    return _strip_common_prefix(sd)


def _strip_common_prefix(sd: dict) -> dict:
    for prefix in ("module.", "backbone.", "model.", "encoder."):
        if all(k.startswith(prefix) for k in sd):
            return {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def _short(keys: list[str], n: int = 4) -> str:
    more = f", ... (+{len(keys) - n})" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_into(model: nn.Module, sd: dict[str, torch.Tensor], source: str, what: str) -> None:
    """Strict load with a one-line report of missing/unexpected keys and shape mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: checkpoint {list(sd[k].shape)} vs model {list(own[k].shape)}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches ({_short(shapes, 2)})")
        if missing:
            parts.append(f"{len(missing)} missing keys ({_short(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_short(unexpected)})")
        raise WeightsError(
            f"checkpoint {source} does not fit {what}: {'; '.join(parts)}; pass the matching --backbone"
        )
    model.load_state_dict(sd, strict=True)


def drop_classifier(sd: dict, model: nn.Module) -> dict:
    """Pretrained heads (ImageNet's 1000 classes) are replaced: drop their keys."""
    cls = model.pretrained_cfg.get("classifier", "classifier")
    names = cls if isinstance(cls, (list, tuple)) else [cls]
    return {k: v for k, v in sd.items() if not any(k == n or k.startswith(n + ".") for n in names)}


def recorded_preprocessing(path: Path) -> Preprocessing | None:
    """The preprocessing a `geotune pretrain` checkpoint records (None for other files)."""
    if path.suffix.lower() not in (".pt", ".pth"):
        return None
    try:  # mmap: the tensors were read once already; only the small record is needed here
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - read_checkpoint already reported unreadable files
        return None
    record = ckpt.get("geotune_pretrain") if isinstance(ckpt, dict) else None
    return Preprocessing.from_dict(record["preprocessing"]) if record else None
