"""Bands of multispectral chips: names (from the files or a sensor preset), selection by name,
and the per-band scaling statistics of the training split.

A band layout says which bands of each file a run reads, in which order, and what they are
called. It is resolved once from the data and the options (``--band-names``, ``--bands``),
stored with the run, and resolved again on other data (evaluate, adapt, shift, predict), where
any difference is a one-line error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from geotune.errors import ConfigError, DataError


@dataclass(frozen=True)
class BandPreset:
    names: tuple[str, ...]  # band names in the files' order
    rgb: tuple[str, str, str]  # the names of the red, green and blue bands
    note: str
    # Standard false-colour composites of the sensor (--band-init composites), after true colour.
    composites: tuple[tuple[str, str, str], ...] = ()


BAND_PRESETS: dict[str, BandPreset] = {
    "sentinel2-13": BandPreset(
        ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A"),
        ("B04", "B03", "B02"),
        "Sentinel-2 L1C, 13 bands in EuroSAT MS file order (B8A last)",
        (
            ("B08", "B04", "B03"),  # colour infrared: vegetation
            ("B12", "B8A", "B04"),  # short-wave infrared: moisture, bare soil, built-up
            ("B11", "B08", "B02"),  # agriculture
            ("B07", "B06", "B05"),  # red edge: crop type and vigour
            ("B12", "B11", "B8A"),  # SWIR and narrow NIR: water, burn scars
            ("B10", "B09", "B01"),  # atmospheric bands (cirrus, water vapour, aerosol)
        ),
    ),
    "rgb": BandPreset(("R", "G", "B"), ("R", "G", "B"), "red, green, blue (any bit depth)"),
    "rgbn": BandPreset(
        ("R", "G", "B", "N"),
        ("R", "G", "B"),
        "NAIP: red, green, blue, near infrared",
        (("N", "R", "G"),),  # colour infrared
    ),
}

# Band names read from files that mean red, green or blue (case-insensitive).
COLOUR_ALIASES = (
    ("r", "red", "b04", "b4"),
    ("g", "green", "b03", "b3"),
    ("b", "blue", "b02", "b2"),
)


def presets_hint() -> str:
    listed = ", ".join(f"{k} ({p.note})" for k, p in BAND_PRESETS.items())
    return f"pass --band-names with a preset ({listed}) or a comma-separated list of names"


@dataclass(frozen=True)
class BandLayout:
    """Which bands of each file a run reads, in order, and their names (None: unnamed)."""

    file_bands: int
    dtype: str  # storage dtype of the decoded chips
    names: tuple[str, ...] | None  # names of the file's bands
    select: tuple[int, ...]  # 0-based file band indices, in the order the model sees them
    band_names: str | None = None  # the --band-names value that named them (None: the files)

    @property
    def channels(self) -> int:
        return len(self.select)

    @property
    def selected(self) -> tuple[str, ...] | None:
        return None if self.names is None else tuple(self.names[i] for i in self.select)

    def rgb_positions(self) -> tuple[int | None, int | None, int | None] | None:
        """Positions of red, green, blue among the selected bands (None: the bands are unnamed)."""
        sel = self.selected
        if sel is None:
            return None
        preset = BAND_PRESETS.get(self.band_names or "")
        if preset is not None:
            return tuple(sel.index(n) if n in sel else None for n in preset.rgb)  # type: ignore[return-value]
        lowered = [s.lower() for s in sel]
        return tuple(  # type: ignore[return-value]
            next((i for i, s in enumerate(lowered) if s in aliases), None)
            for aliases in COLOUR_ALIASES
        )

    def composites(self) -> list[tuple[int, int, int]]:
        """Three-band views of the selected bands for RGB weights (``--band-init composites``):
        true colour first, then the preset's false-colour composites whose bands are all
        selected, then any band still unseen, three at a time in order (the last group
        repeats its final band). Positions among the selected bands."""
        rgb = self.rgb_positions()
        if rgb is None or None in rgb:
            raise ConfigError(
                "--band-init composites starts from the true-colour view, so it needs bands "
                f"named red, green and blue; {presets_hint()}"
            )
        sel = self.selected or ()
        views = [tuple(rgb)]
        preset = BAND_PRESETS.get(self.band_names or "")
        for names in preset.composites if preset else ():
            if all(n in sel for n in names):
                views.append(tuple(sel.index(n) for n in names))
        unseen = [i for i in range(self.channels) if not any(i in v for v in views)]
        for start in range(0, len(unseen), 3):
            group = unseen[start : start + 3]
            views.append(tuple(group + [group[-1]] * (3 - len(group))))
        return views  # type: ignore[return-value]

    def describe(self) -> str:
        names = ",".join(self.selected) if self.selected else f"{self.channels} unnamed bands"
        return f"{names} of {self.file_bands}-band {self.dtype} chips"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = self.channels
        d["selected"] = list(self.selected) if self.selected else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BandLayout:
        names = tuple(d["names"]) if d.get("names") else None
        return cls(
            int(d["file_bands"]), str(d["dtype"]), names, tuple(d["select"]), d.get("band_names")
        )


def parse_band_names(value: str, count: int, where: Path) -> tuple[str, ...]:
    """``--band-names``: a preset or a comma-separated list, for files of ``count`` bands."""
    preset = BAND_PRESETS.get(value)
    names = preset.names if preset else tuple(n.strip() for n in value.split(",") if n.strip())
    if preset is None and len(names) == 1:
        raise ConfigError(
            f"--band-names '{value}' is neither a preset nor a list; {presets_hint()}"
        )
    if len(names) != count:
        raise ConfigError(
            f"--band-names {value} names {len(names)} bands but {where} has {count}; "
            f"{presets_hint()}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"--band-names {value} repeats a name; give each band its own name")
    return names


def resolve_layout(
    count: int,
    dtype: str,
    descriptions: tuple[str | None, ...],
    where: Path,
    band_names: str | None = None,
    bands: list[str] | tuple[str, ...] | None = None,
) -> BandLayout:
    """Band names (``--band-names``, else the file's band descriptions) and the selection."""
    if band_names:
        names: tuple[str, ...] | None = parse_band_names(band_names, count, where)
    elif descriptions and all(descriptions) and len(set(descriptions)) == count:
        names = tuple(str(d) for d in descriptions)
    else:
        names = None
    if not bands:
        return BandLayout(count, dtype, names, tuple(range(count)), band_names)
    if names is None:
        raise ConfigError(
            f"--bands selects bands by name but {where} has no band names; {presets_hint()}"
        )
    missing = [b for b in bands if b not in names]
    if missing:
        raise ConfigError(
            f"--bands names '{missing[0]}', which {where} does not have (its bands: "
            f"{', '.join(names)}); pick names from that list"
        )
    if len(set(bands)) != len(bands):
        raise ConfigError(f"--bands {','.join(bands)} repeats a band; name each band once")
    return BandLayout(count, dtype, names, tuple(names.index(b) for b in bands), band_names)


def check_layout(layout: BandLayout | None, expected: dict | None, data: Path, run: str) -> None:
    """One-line DataError when ``data`` does not give a run the bands it was trained on."""
    want = BandLayout.from_dict(expected) if expected else None
    if want is None and layout is None:
        return
    have_text = layout.describe() if layout else "8-bit RGB images"
    want_text = want.describe() if want else "8-bit RGB images"
    if (
        want is None
        or layout is None
        or layout.channels != want.channels
        or layout.file_bands != want.file_bands
        or (want.selected and layout.selected and layout.selected != want.selected)
    ):
        raise DataError(
            f"{data} holds {have_text} but {run} was trained on {want_text}; "
            "use data with the same bands"
        )


def band_statistics(
    pixels: np.ndarray, idx: np.ndarray, sample: int = 400_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-band (low, high, mean, std) from the chips ``idx`` (the training split).

    low/high are the 1st/99th percentiles of the raw values: they scale each band to [0, 1]
    (clipped, so a few saturated or cloudy pixels do not squash the rest); mean/std are those
    of the scaled values.
    """
    idx = np.sort(np.asarray(idx))
    c, s = pixels.shape[1], pixels.shape[2]
    step = max(1, int(np.sqrt(len(idx) * s * s / sample)))  # a regular pixel grid per chip
    x = np.asarray(pixels[idx][:, :, ::step, ::step], dtype=np.float64)
    x = x.transpose(1, 0, 2, 3).reshape(c, -1)
    low, high = np.percentile(x, 1, axis=1), np.percentile(x, 99, axis=1)
    high = np.where(high > low, high, low + 1.0)  # a constant band: any unit scale
    unit = np.clip((x - low[:, None]) / (high - low)[:, None], 0, 1)
    std = np.maximum(unit.std(axis=1), 1e-3)
    return low, high, unit.mean(axis=1), std


@dataclass(frozen=True)
class BandRequest:
    """What the options or a trained run ask of a dataset's bands (see decode_folder)."""

    band_names: str | None = None
    bands: tuple[str, ...] | None = None
    run: str | None = None  # a trained run whose bands the data must give
    expected: dict | None = None  # that run's layout (None with ``run``: 8-bit RGB chips)

    @classmethod
    def for_run(cls, record: dict | None, run: Path | str) -> BandRequest:
        """What a trained run asks of other data: ``record`` is its band layout
        (``Preprocessing.bands``; None: the run takes 8-bit RGB chips)."""
        if not record:
            return cls(run=str(run))
        layout = BandLayout.from_dict(record)
        picked = layout.selected if layout.select != tuple(range(layout.file_bands)) else None
        return cls(layout.band_names, picked, str(run), record)
