"""Class maps between datasets: pairing another dataset's classes with a model's classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from geotune.errors import ConfigError, DataError

ClassMap = dict[str, list[str]]


def load_class_map(path: Path | str | dict | None) -> ClassMap | None:
    """A YAML mapping ``other dataset class: model class`` (or a list of model classes when one
    of theirs covers several of ours, e.g. ``fResident: [DenseResidential, MediumResidential]``:
    a prediction of any of them counts as correct). Several of theirs may map onto one of ours.
    None: classes are paired by identical names."""
    if path is None:
        return None
    data = path if isinstance(path, dict) else _read_yaml_map(Path(path))
    where = "class map" if isinstance(path, dict) else f"class map {path}"
    out: ClassMap = {}
    for k, v in data.items():
        values = v if isinstance(v, list) else [v]
        if not isinstance(k, str) or not values or not all(isinstance(x, str) for x in values):
            raise ConfigError(
                f"{where} must map class names to a class name or a list of them, "
                "e.g. 'Forest: forest' or 'fResident: [DenseResidential, MediumResidential]'"
            )
        out[k] = list(values)
    return out


def _read_yaml_map(path: Path) -> dict:
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
    if not isinstance(data, dict):
        raise ConfigError(
            f"class map {path} must be a mapping of class names, e.g. 'Forest: forest'"
        )
    return data


def pair_classes(
    theirs: list[str], ours: list[str], class_map: ClassMap | None, where: str = "--data"
) -> tuple[ClassMap, list[str]]:
    """(their class -> our classes for every usable pair, their classes left out)."""
    if class_map is None:
        mapped = {c: [c] for c in theirs if c in ours}
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
    check_model_classes(class_map, ours)
    mapped = {k: v for k, v in class_map.items()}
    if not mapped:
        raise ConfigError("the class map leaves no shared class; pair at least one class")
    return mapped, [c for c in theirs if c not in class_map]


def check_model_classes(class_map: ClassMap, ours: list[str]) -> None:
    """Every class the map pairs onto is one of the model's (one-line ConfigError otherwise)."""
    unknown = sorted({v for vs in class_map.values() for v in vs if v not in ours})
    if unknown:
        raise ConfigError(
            f"class map pairs onto {', '.join(unknown[:4])}, not a class of the model "
            f"(it knows: {', '.join(ours[:6])}{', ...' if len(ours) > 6 else ''})"
        )


def label_remap(theirs: list[str], ours: list[str], mapping: ClassMap) -> np.ndarray:
    """Index array from their label indices to our first paired class; -1 for unpaired ones."""
    return np.array([ours.index(mapping[c][0]) if c in mapping else -1 for c in theirs])


def accepted(theirs: list[str], ours: list[str], mapping: ClassMap) -> np.ndarray:
    """Boolean (their classes x our classes): which of our predictions are right for each."""
    ok = np.zeros((len(theirs), len(ours)), dtype=bool)
    for i, c in enumerate(theirs):
        for o in mapping.get(c, []):
            ok[i, ours.index(o)] = True
    return ok


def scored_labels(their_labels, preds, theirs: list[str], ours: list[str], mapping: ClassMap):
    """The label each prediction is scored against: the prediction itself when it is one of the
    classes their class pairs with (so a DenseResidential or MediumResidential prediction of a
    fResident chip is correct), otherwise the first paired class."""
    their_labels, preds = np.asarray(their_labels), np.asarray(preds)
    ok = accepted(theirs, ours, mapping)[their_labels, preds]
    return np.where(ok, preds, label_remap(theirs, ours, mapping)[their_labels])
