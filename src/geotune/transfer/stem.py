"""Input adaptation of an RGB-pretrained stem to multispectral chips, explicit and recorded.

The pretrained red, green and blue kernels of the first convolution go to the bands named red,
green and blue (B04, B03, B02 for Sentinel-2), in whatever position they are; every other band
is initialised by a chosen policy (``--band-init``). Nothing is zero-filled silently: the policy
is part of the run's configuration, its checkpoint and its summary.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from geotune.errors import ConfigError
from geotune.models.pretrained import first_conv_key
from geotune.registry import Registry

# Each entry: name -> one line for --help; the weights it builds are adapted_weight's branch.
BAND_INITS: Registry[str] = Registry("band initialisation", "band_init")
for _name, _description in {
    "mean": "other bands get the mean of the R, G, B kernels; all kernels x 3/N (keeps the "
    "stem's output scale)",
    "zero": "other bands start at zero: the network starts as the RGB model and learns the "
    "other bands' kernels",
    "repeat-scale": "timm's adapt_input_conv: the R, G, B kernels repeated over the bands in "
    "turn, all x 3/N",
    "random": "other bands drawn like a new convolution (Kaiming uniform); R, G, B kept",
    "composites": "stem untouched: the RGB backbone sees true colour and the sensor's "
    "false-colour composites (CIR, SWIR, ...), features concatenated (one pass per composite)",
}.items():
    BAND_INITS.register(_name, _description)
DEFAULT_BAND_INIT = "mean"


def stem_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The input convolution (timm's ``pretrained_cfg['first_conv']``) and its name."""
    key = first_conv_key(model)
    conv = model.get_submodule(key.rsplit(".", 1)[0]) if key else None
    if not isinstance(conv, nn.Conv2d):
        name = type(model).__name__
        raise ConfigError(
            f"backbone {name} has no input convolution geotune can adapt to other bands; use a "
            "convolutional backbone (resnet, efficientnet, ...) or --weights random"
        )
    return key.rsplit(".", 1)[0], conv


def adapted_weight(
    w: torch.Tensor, rgb: tuple[int | None, int | None, int | None], n: int, policy: str
) -> torch.Tensor:
    """(O, 3, k, k) RGB kernels -> (O, n, k, k): R, G, B at their positions, the rest by policy."""
    others = [i for i in range(n) if i not in rgb]
    if policy == "zero" and len(others) == n:
        raise ConfigError(
            "--band-init zero does not fit: none of the selected bands is red, green or blue, so "
            "the stem would start all zeros; use --band-init mean, repeat-scale or random"
        )
    scale = 3 / n if policy in ("mean", "repeat-scale") else 1.0
    if policy == "repeat-scale":
        from timm.models import adapt_input_conv  # here: config imports this module's registry

        out = adapt_input_conv(n, w.clone())  # timm's rule: cycle R, G, B, then x 3/n
    elif policy == "mean":
        out = w.mean(1, keepdim=True).repeat(1, n, 1, 1) * scale
    elif policy == "zero":
        out = w.new_zeros(w.shape[0], n, *w.shape[2:])
    else:  # random: nn.Conv2d's own initialisation for the new input channels
        out = torch.empty(w.shape[0], n, *w.shape[2:], dtype=w.dtype)
        nn.init.kaiming_uniform_(out, a=math.sqrt(5))
    for colour, pos in enumerate(rgb):
        if pos is not None:
            out[:, pos] = w[:, colour] * scale
    return out


def adapt_stem(
    model: nn.Module,
    rgb: tuple[int | None, int | None, int | None],
    n: int,
    policy: str,
    names: tuple[str, ...],
) -> dict:
    """Turn the RGB stem of ``model`` into an ``n``-band stem in place; the record of what it did."""
    name, conv = stem_conv(model)
    w = conv.weight.detach()
    if w.shape[1] != 3:
        raise ConfigError(f"the stem {name} takes {w.shape[1]} bands, not RGB: nothing to adapt")
    conv.weight = nn.Parameter(adapted_weight(w, rgb, n, policy))
    conv.in_channels = n
    model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), "num_chans": n}
    return {
        "conv": name,
        "from_bands": 3,
        "to_bands": n,
        "rgb_kernels": {names[p]: "RGB"[c] for c, p in enumerate(rgb) if p is not None},
        "band_init": policy,
        "initialised_by_policy": [names[i] for i in range(n) if i not in rgb],
    }
