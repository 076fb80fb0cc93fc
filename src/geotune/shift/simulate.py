"""Simulated domain shifts (sensor, resolution, blur, gain, noise, season, haze) and shifted dataset copies."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from rich.console import Console

from geotune.data.decode import read_rgb
from geotune.data.folder import scan_folder
from geotune.data.splits import read_split
from geotune.errors import ConfigError, DataError
from geotune.fileio import atomic_write_json
from geotune.runs.paths import refuse_outputs_in_inputs, staging_of
from geotune.runs.rundir import RunDir
from geotune.validation import StrictConfig, path_field, register_config_model

SHIFT_KINDS = ("sensor", "resolution", "blur", "gain", "noise", "season", "haze")


def _band_gains(bands: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One fixed calibration difference per simulated sensor: directions of gain and offset per
    band, drawn once from ``seed`` (a sensor does not change its calibration per image)."""
    g = torch.Generator().manual_seed(10_000 + seed)
    gain = torch.rand(bands, generator=g) * 2 - 1  # in [-1, 1]
    gain = gain / gain.abs().max().clamp(min=1e-6)  # the strongest band moves the most
    offset = torch.rand(bands, generator=g) * 2 - 1
    return gain, offset


@torch.no_grad()
def simulate_shift(x: torch.Tensor, kind: str, strength: float, seed: int = 0) -> torch.Tensor:
    """A shifted copy of ``x`` (float N x C x H x W in [0, 1]); ``strength`` 0 leaves it as is.

    - ``resolution``: ground sampling distance up to 3x coarser (antialiased down, then back up);
    - ``blur``: Gaussian point-spread function, sigma up to 2 px;
    - ``gain``: per-band gain up to +-35% and offset up to +-0.08 (radiometric calibration);
    - ``noise``: Gaussian sensor noise, sigma up to 0.06;
    - ``season``: hue rotation up to 0.5 rad, saturation down to 60%, slight warm tint;
    - ``haze``: a scattering veil, transmission down to 0.5;
    - ``sensor``: resolution + gain + noise at this strength (half strength for noise).
    """
    import kornia

    if kind not in SHIFT_KINDS:
        raise ConfigError(f"unknown shift '{kind}'; choose one of {', '.join(SHIFT_KINDS)}")
    if not 0 <= strength <= 1:
        raise ConfigError(f"shift strength must be in [0, 1], got {strength}")
    if strength == 0:
        return x.clone()
    s = float(strength)
    n, c, h, w = x.shape
    if kind == "sensor":
        x = simulate_shift(x, "resolution", s, seed)
        x = simulate_shift(x, "gain", s, seed)
        return simulate_shift(x, "noise", s / 2, seed)
    if kind == "resolution":
        factor = 1 + 2 * s
        small = (max(1, round(h / factor)), max(1, round(w / factor)))
        y = F.interpolate(x, size=small, mode="bilinear", antialias=True, align_corners=False)
        y = F.interpolate(y, size=(h, w), mode="bicubic", align_corners=False)
    elif kind == "blur":
        sigma = 2.0 * s
        k = 2 * math.ceil(3 * sigma) + 1
        y = kornia.filters.gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="reflect")
    elif kind == "gain":
        gain, offset = _band_gains(c, seed)
        y = x * (1 + 0.35 * s * gain.view(1, c, 1, 1)) + 0.08 * s * offset.view(1, c, 1, 1)
    elif kind == "noise":
        g = torch.Generator().manual_seed(20_000 + seed)
        y = x + 0.06 * s * torch.randn(x.shape, generator=g)
    elif kind == "season":
        if c != 3:
            raise DataError(f"the season shift needs RGB chips, got {c} bands")
        y = kornia.enhance.adjust_hue(x, 0.5 * s)
        y = kornia.enhance.adjust_saturation(y, 1 - 0.4 * s)
        y = y * torch.tensor([1 + 0.06 * s, 1.0, 1 - 0.06 * s]).view(1, 3, 1, 1)
    else:  # haze: I = J t + A (1 - t), the atmospheric scattering model
        t = 1 - 0.5 * s
        airlight = torch.full((1, c, 1, 1), 0.85)
        if c == 3:
            airlight = torch.tensor([0.82, 0.85, 0.9]).view(1, 3, 1, 1)  # bluish scattered light
        y = x * t + airlight * (1 - t)
    return y.clamp(0, 1)


@register_config_model
class SimulateConfig(StrictConfig):
    """Options of `geotune simulate`; its flags are generated from these fields."""

    src: Path = path_field("input-dir", description="ImageFolder dataset to copy")
    dst: Path = path_field("output-dir", description="new folder for the shifted copy")
    shift: str = Field("sensor", description=" | ".join(SHIFT_KINDS))
    strength: float = Field(0.5, ge=0, le=1, description="0 (none) .. 1 (strong)")
    seed: int = Field(0, ge=0, description="draws the simulated sensor's band gains")
    per_class: int | None = Field(None, ge=1, description="copy at most N chips per class")
    split: Path | None = path_field(
        "input-file", None, description="a run's split.csv: copy only the chips of --part"
    )
    part: Literal["train", "val", "test"] | None = Field(None, description="with --split")

    @field_validator("shift")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in SHIFT_KINDS:
            raise ValueError(f"unknown shift '{v}'; use one of {', '.join(SHIFT_KINDS)}")
        return v


def simulate_folder(
    src: Path,
    dst: Path,
    kind: str = "sensor",  # the defaults of `geotune simulate` (SimulateConfig)
    strength: float = 0.5,
    seed: int = 0,
    per_class: int | None = None,
    split: Path | None = None,
    part: str | None = None,
    batch_size: int = 64,
    console: Console | None = None,
) -> Path:
    """Write a shifted copy of an ImageFolder dataset at its own resolution.

    ``per_class`` keeps the first N chips of each class (in a seeded order); ``split`` + ``part``
    keep only the chips of one part of a run's split (e.g. the test chips), so a model can be
    evaluated on a shifted copy of data it never saw. JPEGs are written at quality 95, other
    formats as PNG. ``shift.json`` in the copy records where it came from.
    """

    console = console or Console(stderr=True)
    refuse_outputs_in_inputs(
        {"DST": dst, "DST (staging)": staging_of(Path(dst))}, {"SRC": src, "--split": split}
    )
    simulate_shift(torch.zeros(1, 3, 4, 4), kind, strength)  # validate kind / strength first
    folder = scan_folder(src)
    keep = np.ones(len(folder), dtype=bool)
    if split is not None:
        if part is None:
            raise ConfigError("give --part (train, val or test) together with --split")
        keep &= read_split(split, folder) == part
    if per_class is not None:
        rng = np.random.default_rng(seed)
        chosen = np.zeros(len(folder), dtype=bool)
        for c in range(len(folder.classes)):
            idx = np.flatnonzero((folder.labels == c) & keep)
            chosen[rng.permutation(idx)[:per_class]] = True
        keep = chosen
    folder = folder.subset(keep)
    dst = Path(dst)
    if dst.exists():
        raise ConfigError(f"{dst} already exists; choose a new folder for the shifted copy")
    out = RunDir(dst.parent, dst.name)
    out.create()
    try:
        done = _write_shifted(folder, out.path, kind, strength, seed, batch_size)
        atomic_write_json(
            out.path / "shift.json",
            {
                "source": str(Path(src).resolve()),
                "kind": kind,
                "strength": strength,
                "seed": seed,
                "images": done,
                "split": str(split) if split else None,
                "part": part,
                "per_class": per_class,
            },
        )
        final = out.commit()
    except BaseException:
        out.discard()
        raise
    (final / "status.json").unlink(missing_ok=True)  # a dataset, not a run
    console.log(f"wrote {done} chips shifted by '{kind}' at strength {strength} to {final}")
    return final


def _write_shifted(folder, dest: Path, kind: str, strength: float, seed: int, batch_size: int):
    """Shift every chip of ``folder`` into ``dest``; chips of one size go as one batch."""
    by_size: dict[tuple[int, int], list[str]] = {}
    for rel in folder.paths:
        by_size.setdefault(read_rgb(folder.root / rel).size, []).append(rel)
    done = 0
    for rels in by_size.values():
        for start in range(0, len(rels), batch_size):
            chunk = rels[start : start + batch_size]
            x = torch.stack(
                [
                    torch.from_numpy(np.array(read_rgb(folder.root / r))).permute(2, 0, 1)
                    for r in chunk
                ]
            )
            y = simulate_shift(x.float() / 255, kind, strength, seed)
            y = (y * 255).round().byte().permute(0, 2, 3, 1).numpy()
            for rel, arr in zip(chunk, y, strict=True):
                _write_chip(dest / rel, arr)
            done += len(chunk)
    return done


def _write_chip(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        im.save(path, quality=95)
    else:
        im.save(path.with_suffix(".png"))
