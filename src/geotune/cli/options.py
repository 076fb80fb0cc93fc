"""Command-line options generated from config models.

Every command's flags come from the fields of its config model (name, type, default, help), so a
YAML key, a flag and a key of a saved config are always the same name. Registry-backed fields
(strategy, BatchNorm policy, adaptation method) list the registry's entries in their help.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel


def registry_choices() -> dict[str, dict[str, str]]:
    """Field name -> {choice: one-line description}, read from the registries."""
    from geotune.adapt.registry import ADAPT_METHODS
    from geotune.transfer.batchnorm import BN_POLICIES
    from geotune.transfer.stem import BAND_INITS
    from geotune.transfer.strategies import STRATEGIES

    return {
        "strategy": {k: v.description for k, v in STRATEGIES.items()},
        "bn_policy": {k: v.description for k, v in BN_POLICIES.items()},
        "method": {k: v.description for k, v in ADAPT_METHODS.items()},
        "band_init": dict(BAND_INITS.items()),
    }


def strategy_owners() -> dict[str, list[str]]:
    """Config field -> the strategies that read it (shown as a help prefix)."""
    from geotune.transfer.strategies import STRATEGIES

    owners: dict[str, list[str]] = {}
    for spec in STRATEGIES.values():
        for opt in spec.options:
            owners.setdefault(opt, []).append(spec.name)
    return owners


def cli_type(annotation: Any) -> Any:
    """A config field type as typer parses it; pydantic validates the value afterwards."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        return cli_type(args[0])
    if origin is typing.Literal:
        return str
    if origin is tuple:
        return tuple[tuple(args)]
    if origin in (list, dict):
        return str  # comma-separated on the command line; parsed by the config's validators
    if annotation is Path:
        return str  # as typed: typer would turn an empty argument into Path("."), the cwd
    return annotation


def _help(name: str, field, choices: dict, owners: dict) -> str:
    text = field.description or ""
    if name in owners:
        text = f"{' / '.join(owners[name])}: {text}"
    if name in choices:
        text = f"{text}: " + "; ".join(f"{k} = {d}" for k, d in choices[name].items())
    elif typing.get_origin(field.annotation) is typing.Literal:
        # Not [a | b]: rich reads square brackets in help text as markup and drops them.
        text = f"{text} ({' | '.join(map(str, typing.get_args(field.annotation)))})"
    default = None if field.is_required() else field.default
    if default not in (None, [], {}) and not isinstance(default, Path):
        shown = list(default) if isinstance(default, tuple) else default
        text = f"{text} (default: {shown})"
    return text.strip()


def field_panel(model: type[BaseModel], name: str) -> str | None:
    """The --help panel of a field: the config section that declares it (TrainConfig's
    sections), or None for models without sections."""
    for cls in model.__mro__:
        if name in cls.__dict__.get("__annotations__", {}):
            section = getattr(cls, "section", None)
            return section.capitalize() if isinstance(section, str) else None
    return None


def model_signature(
    model: type[BaseModel],
    positional: Iterable[str] = (),
    extra: Iterable[inspect.Parameter] = (),
    skip: Iterable[str] = (),
    help_overrides: dict[str, str] | None = None,
) -> inspect.Signature:
    """A typer signature with one parameter per field of ``model``.

    Options default to None so that only what the user typed reaches the model (its own
    defaults apply otherwise); ``positional`` fields become required arguments.
    """
    choices, owners = registry_choices(), strategy_owners()
    params: list[inspect.Parameter] = []
    positional, skip = list(positional), set(skip)
    for name in positional:
        field = model.model_fields[name]
        arg = typer.Argument(help=field.description or "")
        typ = cli_type(field.annotation)
        if typing.get_origin(field.annotation) is list:
            typ = list[cli_type(typing.get_args(field.annotation)[0])]  # variadic: INPUT...
        ann = Annotated[typ, arg]
        params.append(
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=ann)
        )
    for name, field in model.model_fields.items():
        if name in positional or name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        typ = cli_type(field.annotation)
        text = (help_overrides or {}).get(name) or _help(name, field, choices, owners)
        decl = (f"{flag}/--no-{flag[2:]}",) if typ is bool else (flag,)
        panel = field_panel(model, name)
        ann = Annotated[typ | None, typer.Option(*decl, help=text, rich_help_panel=panel)]
        params.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=None)
        )
    params.extend(extra)
    return inspect.Signature(params)


def option(name: str, typ: Any, help_text: str) -> inspect.Parameter:
    """An extra option that is not a model field (e.g. --config, --resume)."""
    flag = "--" + name.replace("_", "-")
    ann = Annotated[typ | None, typer.Option(flag, help=help_text)]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=None)


CONFIG_HELP = "YAML file of options (the same names as the flags); flags override it"


def config_option() -> inspect.Parameter:
    """--config, which every command that has a config model takes."""
    return option("config", Path, CONFIG_HELP)


def options_from(model: type[BaseModel], kwargs: dict[str, Any]) -> Any:
    """A command's validated options: its --config file, then the flags the user gave."""
    from geotune.validation import load_options

    config_file = kwargs.pop("config", None)
    return load_options(model, config_file, **given(kwargs))


def given(values: dict[str, Any]) -> dict[str, Any]:
    """The options the user actually gave."""
    return {k: v for k, v in values.items() if v is not None}


def with_signature(fn: Callable, signature: inspect.Signature) -> Callable:
    fn.__signature__ = signature  # type: ignore[attr-defined]
    return fn
