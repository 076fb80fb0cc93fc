"""Class maps between datasets: pairing another dataset's classes with a model's classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from geotune.errors import ConfigError, DataError


def load_class_map(path: Path | str | dict | None) -> dict[str, str] | None:
    """A YAML mapping ``other dataset class: model (or reference dataset) class``; several
    classes may map onto one. None: classes are paired by identical names."""
    if path is None or isinstance(path, dict):
        return path
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"class map {path} not found; write a YAML file of 'theirs: ours' pairs")
    try:
        data = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"class map {path} is not UTF-8 text; save it as a YAML file") from None
    except yaml.YAMLError as err:
        raise ConfigError(
            f"class map {path} is not valid YAML ({' '.join(str(err).split())[:160]})"
        ) from None
    if not data:
        raise ConfigError(
            f"class map {path} is empty; write 'their_class: model_class' pairs, one per line"
        )
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ConfigError(
            f"class map {path} must be a mapping of class names, e.g. 'Forest: forest'"
        )
    return data


def pair_classes(
    theirs: list[str], ours: list[str], class_map: dict[str, str] | None, where: str = "--data"
) -> tuple[dict[str, str], list[str]]:
    """(their class -> our class for every usable pair, their classes left out)."""
    if class_map is None:
        mapped = {c: c for c in theirs if c in ours}
        if not mapped:
            raise DataError(
                f"{where} shares no class name with the model ({', '.join(theirs[:4])} vs "
                f"{', '.join(ours[:4])}); pass --class-map MAP.yaml pairing their classes with ours"
            )
        return mapped, [c for c in theirs if c not in mapped]
    unknown_keys = [k for k in class_map if k not in theirs]
    if unknown_keys:
        raise ConfigError(
            f"class map names {', '.join(unknown_keys[:4])}, not a class of {where} "
            f"(its classes: {', '.join(theirs[:6])}{', ...' if len(theirs) > 6 else ''})"
        )
    unknown_values = sorted({v for v in class_map.values() if v not in ours})
    if unknown_values:
        raise ConfigError(
            f"class map pairs onto {', '.join(unknown_values[:4])}, not a class of the model "
            f"(it knows: {', '.join(ours[:6])}{', ...' if len(ours) > 6 else ''})"
        )
    return dict(class_map), [c for c in theirs if c not in class_map]


def label_remap(theirs: list[str], ours: list[str], mapping: dict[str, str]) -> np.ndarray:
    """Index array from their label indices to ours; -1 for their classes left unmapped."""
    return np.array([ours.index(mapping[c]) if c in mapping else -1 for c in theirs])
