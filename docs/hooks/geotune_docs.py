"""MkDocs hook: generated reference pages, so they cannot drift from the code.

- ``<!-- geotune-cli -->`` in a page becomes ``geotune <command> --help`` for every command of
  the typer app (``geotune.cli.main.app``), rendered at build time.
- ``<!-- geotune-api: geotune.<pkg> -->`` becomes one mkdocstrings ``:::`` directive per name in
  that package's ``__all__``, pointing at the module that defines it (the packages export their
  names lazily, so a static reader of ``__init__.py`` would not see them).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path

_SRC = Path(__file__).resolve().parents[2] / "src"
if str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

_CLI_MARK = "<!-- geotune-cli -->"
_API_MARK = re.compile(r"<!-- geotune-api: (geotune(?:\.\w+)?) -->")
_WIDTH = 100


def cli_commands() -> dict[str, object]:
    """Every command of the typer app, by its full name (``"train"``; ``"a b"`` if nested)."""
    import click
    import typer

    from geotune.cli.main import app

    found: dict[str, object] = {}

    def walk(group: click.Group, prefix: str) -> None:
        for name, cmd in group.commands.items():
            if cmd.hidden:
                continue
            full = f"{prefix}{name}"
            found[full] = cmd
            if isinstance(cmd, click.Group):
                walk(cmd, f"{full} ")

    walk(typer.main.get_command(app), "")
    return found


def cli_help(command: str) -> str:
    """``geotune <command> --help`` as the terminal shows it, without colour."""
    import typer
    from click.testing import CliRunner

    from geotune.cli.main import app

    os.environ.setdefault("NO_COLOR", "1")
    result = CliRunner().invoke(
        typer.main.get_command(app),
        [*command.split(), "--help"],
        prog_name="geotune",
        terminal_width=_WIDTH,
        env={"COLUMNS": str(_WIDTH), "NO_COLOR": "1", "TERM": "dumb"},
    )
    if result.exit_code != 0:
        raise RuntimeError(f"geotune {command} --help exited {result.exit_code}: {result.output}")
    return "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())


def cli_markdown() -> str:
    parts = []
    for name in cli_commands():
        parts.append(f"## `geotune {name}`\n\n```text\n{cli_help(name)}\n```\n")
    return "\n".join(parts)


def api_targets(package: str) -> dict[str, str]:
    """Each name in ``package.__all__`` -> the dotted path of the object mkdocstrings renders."""
    pkg = importlib.import_module(package)
    lazy = getattr(pkg, "_LAZY", {})
    targets = {}
    for name in pkg.__all__:
        where = lazy.get(name)
        if isinstance(where, tuple):
            targets[name] = f"{where[0]}.{where[1]}"
        elif isinstance(where, str):
            targets[name] = f"{where}.{name}"
        else:  # defined or imported eagerly in the package itself
            obj = getattr(pkg, name)
            module = getattr(obj, "__module__", None)
            qualname = getattr(obj, "__qualname__", None)
            if module and qualname and module.startswith("geotune"):
                targets[name] = f"{module}.{qualname}"
            else:
                targets[name] = f"{package}.{name}"
    return targets


def _subpackages() -> list[str]:
    return sorted(f"geotune.{p.parent.name}" for p in (_SRC / "geotune").glob("*/__init__.py"))


def api_markdown(package: str) -> str:
    if package == "geotune":  # the top level re-exports names documented on subpackage pages
        elsewhere = {t for sub in _subpackages() for t in api_targets(sub).values()}
        rows, parts = [], []
        for name, target in sorted(api_targets(package).items(), key=lambda kv: kv[0].lower()):
            if target in elsewhere:
                rows.append(f"| `{name}` | [`{target}`][{target}] |")
            else:
                parts.append(_directive(target))
        table = "| name | documented at |\n|---|---|\n" + "\n".join(rows) + "\n\n" if rows else ""
        return table + "\n".join(parts)
    parts = []
    for _name, target in sorted(api_targets(package).items(), key=lambda kv: kv[0].lower()):
        parts.append(_directive(target))
    return "\n".join(parts)


def _directive(target: str) -> str:
    return (
        f"::: {target}\n    options:\n      heading_level: 2\n      show_root_full_path: false\n"
        f"      show_root_toc_entry: true\n"
    )


def on_page_markdown(markdown: str, **kwargs) -> str:
    if _CLI_MARK in markdown:
        markdown = markdown.replace(_CLI_MARK, cli_markdown())
    return _API_MARK.sub(lambda m: api_markdown(m.group(1)), markdown)
