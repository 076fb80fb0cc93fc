"""The generated bad-input matrix: every option of every command, from the CLI itself.

For each command the test reads the options off the real typer app, and for each option it
generates bad values from the option's declared type and bounds (the config model's field:
wrong type, out of range, empty, huge, negative; a path that is a file where a folder is
expected and the reverse, missing, unreadable, inside an input). Each must exit 2 with one
``error:`` line, no traceback, and leave every existing file byte-for-byte unchanged. A new
option is covered without editing this file; a new command needs one valid base invocation.

The fast tier runs a fixed sample (the first value of each option); the slow tier all of them.
The config surface itself is property-tested with Hypothesis: any value of the wrong type for
any field of any command's config is refused in one line.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from conftest import AID_TINY, STUB_BACKBONE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from geotune.cli.main import app, main
from geotune.errors import ConfigError
from geotune.validation import build_config, command_models, path_kind

STUB = {"backbone": STUB_BACKBONE, "weights": "random", "image_size": 32, "batch_size": 8}


@dataclass
class Place:
    """A tiny world: a dataset, a finished run, and files a bad option could point at."""

    root: Path

    def __getattr__(self, name: str) -> Path:
        return self.root / name.replace("_", "-")


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Place:
    from geotune.config import make_config
    from geotune.engine.trainer import train

    w = Place(tmp_path_factory.mktemp("matrix"))
    shutil.copytree(AID_TINY, w.data)
    shutil.copytree(AID_TINY, w.data_b)
    train(
        make_config(data=w.data, output=w.runs, name="done", train_fraction=0.5, epochs=1, **STUB)
    )
    w.a_file.write_text("not a folder\n")
    w.empty_file.write_bytes(b"")
    w.a_folder.mkdir()
    w.train_yaml.write_text(yaml.safe_dump({**STUB, "epochs": 1}))
    shutil.copytree(w.root, w.root.with_name(w.root.name + "-pristine"), symlinks=True)
    return w


def bases(w: Place) -> dict[str, dict[str, Any]]:
    """One valid invocation per command (positionals by name, then options)."""
    run = w.runs / "done"
    stub_flags = {k: v for k, v in STUB.items()}
    return {
        "train": {"data": w.data, "output": w.new_runs, "train_fraction": 0.5, "epochs": 1,
                  **stub_flags},
        "evaluate": {"run_dir": run},
        "compare": {"data": w.data, "strategies": "linear-probe", "labels_per_class": "2",
                    "seeds": 1, "output": w.new_sweeps, "config": w.train_yaml},
        "simulate": {"src": w.data, "dst": w.new_copy},
        "shift": {"a": w.data, "b": w.data_b, "per_class": 2, "output": w.new_shifts,
                  "backbone": STUB_BACKBONE, "weights": "random", "image_size": 32},
        "adapt": {"run_dir": run, "target": w.data_b, "output": w.new_adapted},
        "pretrain": {"data": w.data, "output": w.new_ckpt / "ssl.pt", "epochs": 1,
                     "batch_size": 4, **{k: STUB[k] for k in ("backbone", "weights", "image_size")}},
        "predict": {"run": run, "inputs": [w.data], "output": w.new_preds / "p.csv"},
        "export": {"run": run, "output": w.new_models / "m.onnx", "check_chips": 4},
        "report": {"folder": run},
        "backbones": {},
    }  # fmt: skip


def argv(command: str, params: list, values: dict[str, Any]) -> list[str]:
    out = [command]
    for p in params:  # positionals first, in the command's order
        if p.param_type_name == "argument" and p.name in values:
            v = values[p.name]
            out += [str(x) for x in v] if isinstance(v, list) else [str(v)]
    for p in params:
        if p.param_type_name == "option" and p.name in values:
            v = values[p.name]
            flag = p.opts[0]
            out += [flag, *map(str, v)] if isinstance(v, tuple) else [flag, str(v)]
    return out


# ---------------------------------------------------------------------------------------------
# bad values from a declared type and bounds
# ---------------------------------------------------------------------------------------------
def _bounds(field) -> dict[str, float]:
    out = {}
    for m in field.metadata if field is not None else []:
        for k in ("ge", "gt", "le", "lt"):
            if getattr(m, k, None) is not None:
                out[k] = getattr(m, k)
    return out


def _base_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, __import__("types").UnionType):
        return _base_type(args[0]) if len(args) == 1 else annotation
    return annotation


def numbers(typ: Any, bounds: dict[str, float]) -> list[str]:
    """Wrong type, empty, huge, negative and out-of-range text for a number option."""
    out = ["abc", ""]
    if typ is int:
        out += ["1.5", "true", "1" + "0" * 30]
    else:
        out += ["nan", "inf", "1e999"]
    low = bounds.get("ge", bounds.get("gt"))
    if low is not None:
        below = low - 1 if "ge" in bounds else low
        out.append(str(int(below) if typ is int else below))
        if low >= 0 and below != -1:
            out.append("-1")
    high = bounds.get("le", bounds.get("lt"))
    if high is not None:
        out.append(str(int(high) + 1 if typ is int else high * 2 + 1))
    return out


def path_values(kind: str, w: Place, base: Any = None) -> list[Any]:
    missing = w.root / "no-such-path"
    out: list[Any] = [""]
    if kind.startswith("input"):
        out.append(missing)
        if kind == "input-dir":
            out += [w.a_file, w.empty_file]
        elif kind == "input-file":
            out += [w.a_folder, w.empty_file]
        if os.geteuid() != 0:  # root reads everything
            out.append("UNREADABLE")
    else:  # an output
        out.append(w.a_file if kind == "output-dir" else w.a_folder)
        out.append(w.data / (Path(base).name if base else "out"))  # inside an input
    return out


def bad_values(command: str, param, field, w: Place) -> list[Any]:
    # Typer knows the annotation of options that are not config fields (--config, --filter).
    annotation = param.type_descriptor.annotation if field is None else None
    """Bad values for one CLI parameter, from its config field's declared type and bounds."""
    if getattr(param, "is_flag", False):
        return []  # a flag takes no value; its YAML form is covered by the Hypothesis test
    annotation = _base_type(field.annotation) if field is not None else annotation
    origin = typing.get_origin(annotation)
    kind = path_kind(field) if field is not None else "input"
    if annotation is Path or (origin is list and typing.get_args(annotation)[0] is Path):
        base = bases(w).get(command, {}).get(param.name)
        return path_values(kind or "input", w, base[0] if isinstance(base, list) else base)
    if annotation in (int, float):
        return numbers(annotation, _bounds(field))
    if origin is tuple:
        return [("abc", "1"), ("2", "1"), ("0", "1"), ("nan", "1")]
    if origin is list:
        (item,) = typing.get_args(annotation)[:1] or (str,)
        if item in (int, float):
            huge = "1" + "0" * 30 if item is int else "1e999"
            return ["", ",", "abc", "1,abc", huge, "-1"]
        return ["", ","]
    if origin is dict:
        return ["stem", "=", "stem=abc"]
    if origin is typing.Literal:
        return ["no-such-choice", ""]
    # Text: empty, or a name no registry, model hub or folder holds (and that would escape
    # an output folder were it taken as a folder name).
    return ["", "../no-such-" + param.name.replace("_", "-")]


def cases() -> list[tuple[str, str, int]]:
    """(command, parameter, value index) for every generated bad value of every option."""
    out = []
    models = command_models()
    w = Place(Path("/nonexistent"))
    group = typer.main.get_command(app)
    for name, cmd in sorted(group.commands.items()):
        model = models.get(name)
        for p in cmd.params:
            field = model.model_fields.get(p.name) if model is not None else None
            for i, _ in enumerate(bad_values(name, p, field, w)):
                out.append((name, p.name, i))
    return out


CASES = cases()
# The fast tier: the first generated value of every option.
FAST = {(c, p) for c, p, i in CASES if i == 0}


def digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the sha256 of its bytes (the cache is elsewhere)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_case(place: Place, capsys, command: str, param: str, index: int) -> None:
    cmd = typer.main.get_command(app).commands[command]
    model = command_models().get(command)
    p = next(q for q in cmd.params if q.name == param)
    field = model.model_fields.get(param) if model is not None else None
    value = bad_values(command, p, field, place)[index]
    if value == "UNREADABLE":
        value = place.root / "unreadable"
        value.mkdir(exist_ok=True) if path_kind(field) == "input-dir" else value.touch()
        value.chmod(0)
    values = {**bases(place)[command], param: [value] if p.nargs == -1 else value}
    args = argv(command, cmd.params, values)
    before = digest(place.root)
    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        if digest(place.root) != before:  # keep the next case's world intact
            shutil.rmtree(place.root)
            shutil.copytree(place.root.with_name(place.root.name + "-pristine"), place.root)
            changed = True
        else:
            changed = False
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"{args}: exit {code}\n{err}"
    assert lines and lines[-1].startswith("error: "), err
    assert sum(line.startswith("error: ") for line in lines) == 1, err
    assert "Traceback" not in err
    assert not changed, f"{args} changed files"


@pytest.mark.parametrize(
    ("command", "param", "index"),
    [c for c in CASES if (c[0], c[1]) in FAST and c[2] == 0],
    ids=[f"{c}-{p}-{i}" for c, p, i in CASES if (c, p) in FAST and i == 0],
)
def test_bad_option_sample(place, capsys, command, param, index):
    run_case(place, capsys, command, param, index)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "param", "index"),
    [c for c in CASES if c[2] > 0],
    ids=[f"{c}-{p}-{i}" for c, p, i in CASES if i > 0],
)
def test_bad_option_matrix(place, capsys, command, param, index):
    run_case(place, capsys, command, param, index)


def test_matrix_covers_every_option_of_every_command():
    group = typer.main.get_command(app)
    covered = {(c, p) for c, p, _ in CASES}
    models = command_models()
    for name, cmd in group.commands.items():
        assert name in bases(Place(Path("/x"))), f"give `{name}` a base invocation"
        for p in cmd.params:
            if getattr(p, "is_flag", False):
                continue  # a flag takes no value on the command line (its YAML form: below)
            assert (name, p.name) in covered, (name, p.name)
    # Every path option declares what it is, so the matrix knows which bad paths to try.
    for model in models.values():
        for fname, field in model.model_fields.items():
            if _base_type(field.annotation) is Path or "Path" in str(field.annotation):
                assert path_kind(field), f"{model.__name__}.{fname}: declare its path kind"
    assert len(CASES) > 300


# ---------------------------------------------------------------------------------------------
# the config surface, property-tested
# ---------------------------------------------------------------------------------------------
def wrong_values(annotation: Any) -> st.SearchStrategy:
    """Values no field of this type may accept (YAML can give any of them)."""
    typ = _base_type(annotation)
    origin = typing.get_origin(typ)
    text = st.text(min_size=0, max_size=8)
    if typ is bool:
        return st.one_of(st.integers(), st.floats(), text)
    if typ is int:
        return st.one_of(
            st.booleans(),
            text,
            st.floats().filter(lambda x: x != int(x) if x == x and abs(x) < 1e300 else True),
        )
    if typ is float:
        return st.one_of(st.booleans(), text, st.sampled_from([float("nan"), float("inf")]))
    if typ is str:
        return st.one_of(st.booleans(), st.integers(), st.floats(), st.just(""))
    if origin is typing.Literal:
        return st.one_of(
            st.booleans(), st.integers(), text.filter(lambda s: s not in typing.get_args(typ))
        )
    if typ is Path:
        return st.one_of(st.booleans(), st.integers(), st.floats(), st.just(""))
    if origin in (list, tuple):
        return st.one_of(st.booleans(), st.dictionaries(text, st.integers(), min_size=1))
    if origin is dict:
        return st.one_of(st.booleans(), st.integers(), st.lists(st.integers(), min_size=1))
    return st.nothing()


def _fields() -> list[tuple[type[BaseModel], str]]:
    return [(m, f) for m in command_models().values() for f in m.model_fields]


@pytest.mark.parametrize(("model", "name"), _fields(), ids=lambda x: getattr(x, "__name__", x))
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_config_refuses_every_wrong_type(model, name, data, tmp_path):
    field = model.model_fields[name]
    value = data.draw(wrong_values(field.annotation))
    required = {k: tmp_path for k, f in model.model_fields.items() if f.is_required()}
    if "inputs" in required:
        required["inputs"] = [tmp_path]
    if "output" in required and model.__name__ == "PretrainConfig":
        required["output"] = tmp_path / "x.pt"
    with pytest.raises(ConfigError) as err:
        build_config(model, **{**required, name: value})
    message = str(err.value)
    assert "\n" not in message and name in message, message
