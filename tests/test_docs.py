"""The docs site stays navigable and in step with the code (the strict build is in scripts/test.sh)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import typer
import yaml

from geotune.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _hook():
    spec = importlib.util.spec_from_file_location(
        "geotune_docs_hook", DOCS / "hooks" / "geotune_docs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [p for item in node for p in _nav_pages(item)]
    if isinstance(node, dict):
        return [p for value in node.values() for p in _nav_pages(value)]
    return []


def test_cli_reference_renders_every_command():
    commands = list(typer.main.get_command(app).commands)
    assert len(commands) >= 10
    hook = _hook()
    rendered = hook.cli_markdown()
    for name in commands:
        assert f"## `geotune {name}`" in rendered, name
        assert f"Usage: geotune {name}" in rendered, name
    page = hook.on_page_markdown((DOCS / "cli.md").read_text())
    assert "<!-- geotune-cli -->" not in page
    assert "Usage: geotune train" in page


def test_every_public_subpackage_has_an_api_page():
    packages = sorted(p.parent.name for p in (ROOT / "src" / "geotune").glob("*/__init__.py"))
    assert "engine" in packages
    text = "\n".join(p.read_text() for p in DOCS.rglob("*.md"))
    directives = set(re.findall(r"^::: (geotune(?:\.\w+)?)\s*$", text, flags=re.M))
    missing = [f"geotune.{p}" for p in packages if f"geotune.{p}" not in directives]
    assert not missing, f"no '::: <package>' page under docs/ for {missing}"
    assert "geotune" in directives


def test_every_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = set(_nav_pages(config["nav"]))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages, "no pages under docs/"
    assert not pages - nav, f"pages missing from mkdocs.yml's nav: {sorted(pages - nav)}"
    assert not nav - pages, f"nav entries without a page: {sorted(nav - pages)}"


def test_readme_is_short():
    size = (ROOT / "README.md").stat().st_size
    assert size <= 8192, f"README.md is {size} bytes; move detail into docs/ (limit 8192)"


def test_benchmarks_summary_links_resolve():
    text = (ROOT / "BENCHMARKS.md").read_text()
    links = re.findall(r"\]\((benchmarks/results/[^)]+\.md)\)", text)
    assert len(links) >= 5
    missing = sorted({link for link in links if not (ROOT / link).is_file()})
    assert not missing, f"BENCHMARKS.md links to missing detail files: {missing}"


def test_extending_examples_register_working_entries():
    """The registration examples on docs/extending.md run, and their names become valid options."""
    from geotune import make_adapt_config, make_config
    from geotune.adapt.registry import ADAPT_METHODS
    from geotune.errors import ConfigError
    from geotune.transfer.batchnorm import BN_POLICIES
    from geotune.transfer.strategies import STRATEGIES

    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "extending.md").read_text(), re.S)
    registries = (STRATEGIES, BN_POLICIES, ADAPT_METHODS)
    before = [set(r) for r in registries]
    try:
        for block in blocks[:3]:
            exec(compile(block, "docs/extending.md", "exec"), {})
        config = make_config(data=str(ROOT / "tests"), strategy="top-only", bn_policy="all-frozen")
        assert (config.strategy, config.bn_policy) == ("top-only", "all-frozen")
        assert (
            make_adapt_config(target=str(ROOT / "tests"), method="bn-refresh").method
            == "bn-refresh"
        )
    finally:
        for registry, saved in zip(registries, before, strict=True):
            for name in set(registry) - saved:
                registry.unregister(name)
    with pytest.raises(ConfigError):  # the example strategy did not leak out of the test
        make_config(data=str(ROOT / "tests"), strategy="top-only")
