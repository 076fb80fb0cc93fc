"""One validation path for every command's options: strict values, one-line errors.

Every command's config model (train, compare, evaluate, adapt, pretrain, predict, export, shift,
simulate) subclasses ``StrictConfig`` and is built through ``build_config``, from CLI flags, a
YAML file or the Python API alike. Values are never coerced implicitly: a boolean is not an
integer, a string is not a number, a float with a fraction is not an integer, ``nan`` and
``inf`` are not numbers, and an unknown key is refused with the nearest valid key (or the command
it belongs to). The only conversions are the textual forms a user cannot avoid: a path given as
text, a list given as ``a,b,c`` on the command line, a pair given as a YAML list.

Hand-written rather than pydantic's lax mode because lax mode is exactly the implicit coercion
that turned ``epochs: true`` into one epoch.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from geotune.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

# Larger integers overflow numpy seeds, int32 tensor sizes and C loops: refused at the edge
# unless a field declares its own bound.
MAX_INT = 2**31 - 1
# In-range but absurd sizes are refused at the edge, not met as an out-of-memory kill later:
# 4096 px is 4x the largest input any pretrained backbone here was trained at (1024 px), and
# larger chips are better tiled (``predict --scene``); decode threads beyond 512 only contend.
MAX_IMAGE_SIZE = 4096
MAX_WORKERS = 512

PathKind = Literal["input-dir", "input-file", "input", "output-dir", "output-file"]


def path_field(kind: PathKind, default: Any = ..., **kwargs: Any) -> Any:
    """A Path field that declares what the path is: an input folder or file (``input``: either),
    or an output folder or file. The declaration drives the bad-input matrix and the
    outputs-inside-inputs rule, so a new path option is covered without editing either."""
    return Field(default, json_schema_extra={"path": kind}, **kwargs)


def path_kind(field: Any) -> str | None:
    extra = field.json_schema_extra
    return extra.get("path") if isinstance(extra, dict) else None


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


_INT = re.compile(r"[+-]?\d+")


def _from_text(text: str, typ: Any) -> Any:
    """One element of a comma-separated command-line list, parsed as its declared type."""
    text = text.strip()
    if typ is int:
        if not _INT.fullmatch(text):
            raise ValueError(f"'{text}' is not an integer")
        return int(text)
    if typ is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"'{text}' is not a number") from None
    if typ is Path:
        return Path(text)
    if typing.get_origin(typ) in (typing.Union, types.UnionType):  # e.g. int | str: 5 or all
        args = typing.get_args(typ)
        if int in args and _INT.fullmatch(text):
            return int(text)
        return text
    return text


def _edge_form(annotation: Any, value: Any) -> Any:
    """The value in its declared type's form, for the textual forms users cannot avoid."""
    typ = _strip_optional(annotation)
    origin = typing.get_origin(typ)
    if typ is Path and isinstance(value, str):
        if not value.strip():
            raise ValueError("an empty path; give a file or folder name")
        if "\x00" in value:
            raise ValueError("a path with a NUL byte; give a file or folder name")
        return Path(value)
    if origin is list and isinstance(value, str):  # CLI form: --probe-c 0.01,0.1,1
        (item,) = typing.get_args(typ) or (str,)
        items = [_from_text(x, item) for x in value.split(",") if x.strip()]
        if not items:
            raise ValueError("an empty list; give comma-separated values or leave it out")
        return items
    if origin is list and isinstance(value, list) and typing.get_args(typ)[:1] == (Path,):
        return [_edge_form(Path, v) for v in value]
    if (typ is str or origin is typing.Literal) and isinstance(value, str) and not value.strip():
        raise ValueError("empty; give a value or leave the option out")
    if origin is dict and isinstance(value, str):  # CLI form: --group-lr stem=0.1,layer4=2
        pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ValueError("use NAME=VALUE pairs separated by commas, e.g. stem=0.1,layer4=2")
        _, item = typing.get_args(typ) or (str, str)
        return {k.strip(): _from_text(v, item) for k, v in pairs}
    if origin is tuple and isinstance(value, list):  # YAML and saved configs write pairs as lists
        return tuple(value)
    return value


def _check_path(kind: str | None, value: Any) -> None:
    """What can be known of a declared path before any work: an input file exists and is a
    file; an output is not the other kind of thing (a folder where a file goes, or the reverse).
    Input folders are checked by the data layer, which names what a dataset must hold."""
    if not isinstance(value, Path):
        return
    if kind == "input-file":
        if not value.exists():
            raise ValueError(f"{value} not found; give an existing file")
        if not value.is_file():
            raise ValueError(f"{value} is not a file; give a file")
    elif kind == "output-dir" and value.exists() and not value.is_dir():
        raise ValueError(f"{value} is a file, not a folder; give a folder (new or existing)")
    elif kind == "output-file" and value.is_dir():
        raise ValueError(f"{value} is a folder; give a file name")


def _check_folder_name(value: Any) -> None:
    """A run / report folder name: one folder, never a path that escapes the output folder."""
    if isinstance(value, str) and ("/" in value or "\\" in value or value in (".", "..")):
        raise ValueError(f"'{value}' is not a folder name; give a name without '/' (or omit it)")


def _int_bounded(annotation: Any) -> bool:
    typ = _strip_optional(annotation)
    return typ is int or typing.get_origin(typ) is list and typing.get_args(typ)[:1] == (int,)


class StrictConfig(BaseModel):
    """Base of every command's options: strict types, no unknown keys, finite numbers."""

    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, validate_assignment=True
    )

    @model_validator(mode="before")
    @classmethod
    def _edge_forms(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        out = dict(values)
        for name, field in cls.model_fields.items():
            if name not in out or out[name] is None:
                continue
            try:
                out[name] = _edge_form(field.annotation, out[name])
                _check_path(path_kind(field), out[name])
                if name == "name":
                    _check_folder_name(out[name])
            except ValueError as err:
                raise ValueError(f"bad value for '{name}': {err} (got {values[name]!r})") from None
            if _int_bounded(field.annotation) and not _declares_max(field):
                items = out[name] if isinstance(out[name], list) else [out[name]]
                big = [v for v in items if type(v) is int and abs(v) > MAX_INT]
                if big:
                    raise ValueError(
                        f"bad value for '{name}': {big[0]} is out of range (at most {MAX_INT})"
                    )
        return out


def _declares_max(field: Any) -> bool:
    return any(getattr(m, "le", None) is not None or getattr(m, "lt", None) is not None
               for m in field.metadata)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# command models and their one-line errors
# ---------------------------------------------------------------------------------------------
_COMMANDS: dict[type[BaseModel], str] = {}


def register_config_model(command: str | type[M]):
    """Name the command whose options a model holds (``@register_config_model("train")``; bare,
    the class name without ``Config``): error messages then suggest close keys and say which
    command an unknown key belongs to."""
    if isinstance(command, type):
        _COMMANDS[command] = command.__name__.removesuffix("Config").lower()
        return command

    def wrap(model: type[M]) -> type[M]:
        _COMMANDS[model] = command
        return model

    return wrap


def command_models() -> dict[str, type[BaseModel]]:
    """Command name -> its config model, for every registered command model."""
    return {c: m for m, c in _COMMANDS.items()}


def command_of(model: type[BaseModel]) -> str:
    return _COMMANDS.get(model, model.__name__.removesuffix("Config").lower())


def owners_of(key: str, model: type[BaseModel] | None = None) -> list[str]:
    """The commands (other than ``model``'s) that take ``key`` as an option."""
    return sorted({c for m, c in _COMMANDS.items() if m is not model and key in m.model_fields})


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if value is None:
        return "nothing (null)"
    return f"a {type(value).__name__} {value!r}"


_EXPECTED = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "text (quote it in YAML)",
    "list_type": "a list",
    "dict_type": "a mapping of name: value",
    "tuple_type": "a pair of numbers",
    "finite_number": "a finite number",
}


def format_validation_error(
    err: ValidationError, what: str = "option", model: type[BaseModel] | None = None
) -> str:
    """One line from a pydantic error: the key, what is wrong with it, and the value given."""
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "config"
    if model is None:
        model = next((m for m in _COMMANDS if m.__name__ == getattr(err, "title", None)), None)
    command = command_of(model) if model is not None else "train"
    if first["type"] == "extra_forbidden":
        fields = model.model_fields if model is not None else {}
        close = difflib.get_close_matches(key, fields, n=1)
        others = owners_of(key, model)
        if others:
            hint = f"; it is an option of `geotune {others[0]}`, not of `geotune {command}`"
            hint += f" (did you mean '{close[0]}'?)" if close else ""
        elif close:
            hint = f"; did you mean '{close[0]}'?"
        else:
            hint = f"; see `geotune {command} --help`"
        return f"unknown {what} '{key}'{hint}"
    if first["type"] == "missing":
        return f"missing required option '{key}' (--{key.replace('_', '-')} on the command line)"
    if first["type"] in _EXPECTED:
        return (
            f"bad value for '{key}': expected {_EXPECTED[first['type']]}, got "
            f"{_describe(first.get('input'))}"
        )
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error" and not first["loc"]:
        return msg if msg.startswith("bad value for '") else f"bad config: {msg}"
    return f"bad value for '{key}': {msg} (got {first.get('input')!r})"


def build_config(model: type[M], /, what: str = "option", **values: Any) -> M:
    """Build and validate any command's config model; one-line ConfigError on bad values."""
    try:
        return model(**values)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, what, model)) from None


# ---------------------------------------------------------------------------------------------
# YAML files of options
# ---------------------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` (no dot) as text; users mean a number, as YAML 1.2 and JSON do."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?\.?\d+[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file of ``option: value`` pairs, with one-line errors."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; pass a YAML file")
    try:
        values = yaml.load(path.read_text(), Loader=_Loader) or {}  # noqa: S506 - a SafeLoader
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; pass an existing YAML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text; pass a YAML file") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path} ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ConfigError(
            f"config file {path} is not valid YAML: {' '.join(str(err).split())}"
        ) from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    bad = [k for k in values if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"config file {path}: key {bad[0]!r} is not an option name")
    return values


def load_options(model: type[M], config_file: Path | None, **flags: Any) -> M:
    """A command's options from an optional YAML file, flags winning; validated once."""
    values = load_yaml_mapping(config_file) if config_file is not None else {}
    values.update({k: v for k, v in flags.items() if v is not None})
    return build_config(model, **values)


DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh])\s*$")
DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
MIN_BUDGET_S = 30.0  # below this, timing the backbones and one probe already use most of it


def parse_duration(text: str) -> float:
    """Seconds in a time budget (``90s``, ``10m``, ``1.5h``); ValueError naming the format."""
    m = DURATION.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"give a duration with a unit, e.g. 90s, 10m or 1.5h (got {text!r})")
    seconds = float(m.group(1)) * DURATION_UNITS[m.group(2)]
    if seconds < MIN_BUDGET_S:
        raise ValueError(f"a time budget below {MIN_BUDGET_S:.0f}s leaves no room to measure")
    return seconds


def optional_duration(cls, v: str | None) -> str | None:
    """A ``field_validator`` body for an optional duration field (``time_budget``): a duration
    ``parse_duration`` reads, or None."""
    if v is not None:
        parse_duration(v)
    return v
