"""What a backbone's weights expect of its input: size, per-band mean/std and value range.

Always read from the weights' own config (timm's ``pretrained_cfg``, an offline package's entry in
:mod:`geotune.models.offline`, or a `geotune pretrain` checkpoint's record), never from per-model code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


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
