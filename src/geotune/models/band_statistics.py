"""Per-band spectral statistics beside a frozen RGB backbone's features (``--band-statistics``).

A frozen RGB stem on 13-band chips keeps its RGB kernels only if the other bands enter at zero
(``--band-init zero``), so its features are those of true colour alone: the ten other bands never
reach the head. The spectral signature a pixel classifier would use does: each band's mean and
standard deviation of log(1 + DN) over the chip (2 numbers a band). Offline on eurosat_ms_dev
(5 seeds, paired) the RGB probe's features with them gained 1.6 points over the features alone,
never lower (BENCHMARKS.md, spectral statistics). The log makes a band's statistics relative
(a brighter scene shifts them, it does not scale them), as reflectance ratios are.

Layout: [statistics | backbone features], so that fewer pooled stages stay a prefix
(models/stages.py): the statistics join the first block.
"""

from __future__ import annotations

import torch
from torch import nn

from geotune.models.preprocessing import Preprocessing


class BandStatistics(nn.Module):
    """``net``'s pooled features after each band's mean and std of log(1 + DN) (2 per band).

    Input: a normalised batch (the run's preprocessing). ``dn_scale`` / ``dn_shift`` undo it to
    digital numbers (clipped to the run's 1st-99th percentiles, as the network sees them); they
    are buffers, so checkpoints and ONNX exports carry them, as ``stat_mean`` / ``stat_std``: the
    statistics are standardised by their training-chip mean and std, so a head trained by
    gradient (feature extraction) sees them on the scale of the pooled features (raw, the means
    sit near 7 and vary by 0.1).
    """

    def __init__(self, net: nn.Module, bands: int):
        super().__init__()
        self.net, self.bands = net, bands
        self.register_buffer("dn_scale", torch.ones(bands))
        self.register_buffer("dn_shift", torch.zeros(bands))
        self.register_buffer("stat_mean", torch.zeros(2 * bands))
        self.register_buffer("stat_std", torch.ones(2 * bands))
        inner = list(getattr(net, "widths", [net.num_features]))
        self.widths = [2 * bands + inner[0], *inner[1:]]
        self.num_features = sum(self.widths)
        self.pretrained_cfg = getattr(net, "pretrained_cfg", {})

    def around(self, net: nn.Module) -> BandStatistics:
        """The same statistics (shared buffers) beside another backbone, e.g. its pooled stages."""
        other = BandStatistics(net, self.bands)
        other.dn_scale, other.dn_shift = self.dn_scale, self.dn_shift
        other.stat_mean, other.stat_std = self.stat_mean, self.stat_std
        return other

    @torch.no_grad()
    def fit_scaling(self, prep: Preprocessing) -> None:
        """Set the undoing of ``prep``: normalised x -> DN = x * std * (high - low) + low + mean *
        (high - low) (Preprocessing.normalize, inverted)."""
        if prep.low is None or len(prep.low) != self.bands:
            raise ValueError("band statistics need per-band low/high (multispectral chips)")
        low, high = torch.tensor(prep.low), torch.tensor(prep.high)
        mean, std = torch.tensor(prep.mean), torch.tensor(prep.std)
        self.dn_scale.copy_(std * (high - low))
        self.dn_shift.copy_(low + mean * (high - low))

    @torch.no_grad()
    def fit_standardisation(self, raw: torch.Tensor) -> None:
        """Standardise by the mean and std of ``raw_statistics`` of the training chips."""
        self.stat_mean.copy_(raw.mean(0))
        self.stat_std.copy_(raw.std(0).clamp_min(1e-6) if len(raw) > 1 else torch.ones_like(raw[0]))

    def raw_statistics(self, x: torch.Tensor) -> torch.Tensor:
        """Each band's mean, then each band's std, of log(1 + DN) over the chip: (B, 2 bands)."""
        dn = x.float() * self.dn_scale.view(1, -1, 1, 1) + self.dn_shift.view(1, -1, 1, 1)
        logs = torch.log1p(dn.clamp_min(0)).flatten(2)
        return torch.cat([logs.mean(2), logs.std(2)], 1)

    def statistics(self, x: torch.Tensor) -> torch.Tensor:
        return (self.raw_statistics(x) - self.stat_mean) / self.stat_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.net(x)
        return torch.cat([self.statistics(x).to(features.dtype), features], 1)
