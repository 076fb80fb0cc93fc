"""Multispectral runs: the model for a band layout and the normalisation that fits the data.

Rules (README, "Multispectral chips and pretraining"):
- weights made for the data's bands (random, a named multispectral source, a checkpoint file
  whose stem takes that many bands) are built for them as they are;
- RGB-pretrained weights (offline, hub, a 3-band file) keep their R, G, B kernels for the bands
  named red, green, blue; every other band is initialised by ``--band-init``;
- every band is scaled to [0, 1] by its 1st-99th percentile on the training split; bands seen
  by pretrained R, G, B kernels then use the weights' own mean/std, all other bands the mean/std
  of the training split. Test chips never enter the statistics.
"""

from __future__ import annotations

import numpy as np
import torch

from geotune.config import TrainConfig
from geotune.data.bands import BandLayout, band_statistics, presets_hint
from geotune.data.batches import iterate_batches
from geotune.errors import ConfigError, WeightsError
from geotune.models.backbones import resolve_source
from geotune.models.band_statistics import BandStatistics
from geotune.models.classifier import (
    SceneClassifier,
    build_classifier,
    wrap_band_statistics,
    wrap_composites,
)
from geotune.models.preprocessing import Preprocessing
from geotune.models.pretrained import HUB_WEIGHTS
from geotune.transfer.stem import DEFAULT_BAND_INIT, adapt_stem

# Named multispectral weights (SSL4EO-S12) take reflectance = digital number / 10000.
_DN_SCALE = 10000.0


def band_model(
    config: TrainConfig, layout: BandLayout, num_classes: int
) -> tuple[SceneClassifier, Preprocessing, str, dict | None]:
    """The classifier for ``layout``'s bands: (model, weights' preprocessing, weights, stem record
    or None when the weights take the bands as they are). With band statistics (see
    ``band_statistics_choice``) they sit beside the backbone's features."""
    model, prep, weights, stem = _stem_for_bands(config, layout, num_classes)
    if stem is None:
        if config.band_statistics:
            raise ConfigError(
                f"--band-statistics does not fit: weights '{config.weights}' take the "
                f"{layout.channels} bands as they are, so their stem sees every band; leave it out"
            )
        return model, prep, weights, stem
    on, why = band_statistics_choice(config, layout, stem)
    if on:
        wrap_band_statistics(model, layout.channels, config.head, config.head_dropout)
    return model, prep, weights, {**stem, "band_statistics": on, "band_statistics_why": why}


# Strategies whose linear head reads frozen features: per-band statistics bring it the bands an
# RGB stem does not see. Measured on eurosat_ms_dev (13 bands, paired; BENCHMARKS.md, band
# statistics): linear-probe +1.0 over RGB (10 seeds), feature-extraction +0.2 (5 seeds, within
# noise). kNN keeps composites (+10.5 over RGB; statistics beside them added 0.6, within noise);
# strategies that train the stem learn the bands themselves.
BAND_STATISTICS_STRATEGIES = ("linear-probe", "feature-extraction")


def band_statistics_choice(config: TrainConfig, layout: BandLayout, stem: dict) -> tuple[bool, str]:
    """Whether an RGB stem adapted to ``layout`` gets band statistics beside it, and why."""
    if config.band_statistics is not None:
        return config.band_statistics, "given"
    unseen = layout.channels - sum(p is not None for p in layout.rgb_positions() or ())
    if unseen == 0:
        return False, "every band is red, green or blue: the RGB kernels see them all"
    if stem.get("band_init") == "composites":
        return False, "the composites already show the network every band"
    if config.strategy not in BAND_STATISTICS_STRATEGIES:
        return False, f"{config.strategy}: not a linear head on frozen features"
    return True, (
        f"{config.strategy} reads frozen RGB features: the mean and std of log(1 + DN) of all "
        f"{layout.channels} bands bring it the {unseen} the stem does not see"
    )


def refuse_band_options(config: TrainConfig) -> None:
    """Band options given for 8-bit RGB chips: one line naming the option."""
    for given, flag in (
        (config.band_init, "--band-init"),
        (config.band_statistics, "--band-statistics"),
    ):
        if given:
            raise ConfigError(
                f"{flag} applies to multispectral chips, but {config.data} holds 8-bit RGB "
                "images; leave it out"
            )


def fit_band_statistics(
    model: SceneClassifier, prep: Preprocessing, pixels: np.ndarray, train_idx: np.ndarray
) -> None:
    """Give band statistics (if ``model`` has them) the run's band scaling, to undo it, and the
    training chips' statistics, to standardise them (a pass over the pixels, no network)."""
    for module in model.modules():
        if isinstance(module, BandStatistics):
            module.fit_scaling(prep)
            dummy = np.zeros(len(pixels), dtype=np.int64)
            with torch.no_grad():
                raw = [module.raw_statistics(prep.normalize(x))
                       for x, _ in iterate_batches(pixels, dummy, np.sort(train_idx), 256)]  # fmt: skip
            module.fit_standardisation(torch.cat(raw))


def _stem_for_bands(
    config: TrainConfig, layout: BandLayout, num_classes: int
) -> tuple[SceneClassifier, Preprocessing, str, dict | None]:
    n = layout.channels
    source = resolve_source(config.backbone, config.weights)

    def build(in_chans: int):
        return build_classifier(
            config.backbone,
            config.weights,
            num_classes,
            config.head,
            config.head_dropout,
            config.image_size,
            in_chans=in_chans,
        )

    if source == "random" or source in HUB_WEIGHTS:
        native = build(n)  # random weights fit any bands; named weights check their own
    elif source in ("offline", "hub"):
        native = None
    else:  # a checkpoint file: made for these bands, or RGB weights to adapt
        try:
            native = build(n)
        except WeightsError as first:
            try:
                return _adapted(build(3), config, layout)
            except WeightsError:
                raise first from None
    if native is not None:
        if config.band_init is not None:
            raise ConfigError(
                f"--band-init {config.band_init} does not fit: weights '{config.weights}' take "
                f"{n}-band input as they are, so no stem is adapted; leave --band-init out"
            )
        return (*native, None)
    return _adapted(build(3), config, layout)


def _adapted(built, config: TrainConfig, layout: BandLayout):
    model, prep, weights = built
    rgb = layout.rgb_positions()
    if rgb is None:
        raise ConfigError(
            f"RGB-pretrained weights ({weights}) need to know which bands are red, green and "
            f"blue, but the chips' bands have no names; {presets_hint()}"
        )
    others = layout.channels - sum(p is not None for p in rgb)
    if others == 0 and config.band_init is not None:
        raise ConfigError(
            f"--band-init {config.band_init} does not fit: the selected bands are all red, green "
            "or blue, so no band needs initialising; leave --band-init out"
        )
    policy, why = (config.band_init, "given") if config.band_init else default_band_init(config)
    if policy == "composites":
        return model, prep, weights, {**_composites(model, prep, layout, config), "why": why}
    stem = adapt_stem(model.backbone, rgb, layout.channels, policy, layout.selected or ())
    return model, prep, weights, {**stem, "why": why}


# Strategies whose stem stays frozen, and the band handling that keeps what it was trained to
# see. Measured on eurosat_ms_dev (13 bands, 5 seeds, paired; BENCHMARKS.md, band handling):
# a rewired stem ('mean') lost to the RGB-preserving choices for every frozen strategy
# (linear probe -6.1, kNN -6.9, feature extraction -4.9 points); 'zero' (the RGB network,
# the other bands entering at zero) tied composites for the probe at 1/9 of its cost and beat
# them for feature extraction; kNN gained 5 points from composites. 'partial' freezes the stem
# too (by the same reasoning, not measured).
FROZEN_STEM_BAND_INIT = {
    "linear-probe": "zero",
    "knn": "composites",
    "feature-extraction": "zero",
    "partial": "zero",
}


def default_band_init(config: TrainConfig) -> tuple[str, str]:
    """The band handling for RGB weights on multispectral chips when --band-init is not given,
    and why: a stem that trains learns the new bands ('mean'); a frozen one keeps RGB intact."""
    policy = FROZEN_STEM_BAND_INIT.get(config.strategy)
    if policy is None:
        return DEFAULT_BAND_INIT, f"{config.strategy} trains the stem: it learns the other bands"
    if policy == "composites" and max(config.probe_stages or [1]) > 1:
        policy = "zero"  # composites pool no stages: the stages asked for keep the RGB stem
    return policy, (
        f"{config.strategy} keeps the stem frozen: '{policy}' preserves what its RGB kernels "
        "were trained to see (a rewired stem lost on every frozen strategy; BENCHMARKS.md)"
    )


def _composites(model: SceneClassifier, prep: Preprocessing, layout: BandLayout, config) -> dict:
    """Wrap the RGB backbone to run on three-band composites (a new, wider head)."""
    views = layout.composites()
    names = layout.selected or ()
    record = {
        "band_init": "composites",
        "composites": [[names[i] for i in v] for v in views],
        "positions": [list(v) for v in views],
        "rgb_mean": [float(v) for v in prep.mean],
        "rgb_std": [float(v) for v in prep.std],
    }
    wrap_composites(model, record, config.head, config.head_dropout)
    return record


def band_preprocessing(
    prep: Preprocessing,
    layout: BandLayout,
    stem: dict | None,
    weights: str,
    pixels: np.ndarray,
    train_idx: np.ndarray,
) -> Preprocessing:
    """Per-band scaling and mean/std for a run (statistics of the training chips only)."""
    n = layout.channels
    if stem is None and weights.split(":")[0] in HUB_WEIGHTS and len(prep.mean) == n:
        # Published recipe of the weights: digital numbers / 10000, then their mean/std.
        return Preprocessing(
            prep.size,
            prep.mean,
            prep.std,
            prep.interpolation,
            (0.0,) * n,
            (_DN_SCALE,) * n,
            layout.to_dict(),
        )
    low, high, mean, std = band_statistics(pixels, train_idx)
    mean, std = [float(v) for v in mean], [float(v) for v in std]
    if stem is not None and stem.get("band_init") == "composites":
        mean, std = [0.0] * n, [1.0] * n  # [0, 1] bands; each composite is normalised inside
    elif stem is not None:
        for colour, pos in enumerate(layout.rgb_positions() or ()):
            if pos is not None:  # seen by pretrained RGB kernels: the weights' own statistics
                mean[pos], std[pos] = float(prep.mean[colour]), float(prep.std[colour])
    return Preprocessing(
        prep.size,
        tuple(mean),
        tuple(std),
        prep.interpolation,
        tuple(float(v) for v in low),
        tuple(float(v) for v in high),
        layout.to_dict(),
    )
