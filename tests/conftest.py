"""Shared fixtures: small fixed subsets of the AID copy in ../shared, and an isolated cache."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AID = REPO.parent / "shared" / "datasets" / "aid150"
# Committed: 4 classes x 8 AID chips at 48 px (tests/fixtures/README.md).
AID_TINY = REPO / "tests" / "fixtures" / "aid_tiny"
# timm's ~100k-parameter test network: real layer groups and BatchNorm, random weights, no
# download. Used where a test is about plumbing rather than pretrained weights (fast tier).
STUB_BACKBONE = "test_efficientnet"
CLASSES = ("Airport", "Beach", "Forest", "River")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    # Decoded-image caches of the tests never touch the user's cache.
    os.environ["GEOTUNE_CACHE"] = str(tmp_path_factory.mktemp("geotune-cache"))
    os.environ.setdefault(
        "HF_HUB_OFFLINE", "1"
    )  # the sandbox has no hub; fail fast, not by timeout
    yield


def _repo_files() -> set[str]:
    """Untracked, unignored paths of the checkout (git's view; empty outside a git checkout)."""
    proc = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=all"],
        capture_output=True,
        text=True,
    )
    return {line[3:] for line in proc.stdout.splitlines() if line.startswith("??")}


@pytest.fixture(scope="session", autouse=True)
def _tests_write_nothing_into_the_checkout():
    # A test once wrote run folders into the repository root and they were committed: every
    # test writes under tmp_path, and the session fails if new files appear in the checkout.
    before = _repo_files()
    yield
    new = sorted(_repo_files() - before)
    assert not new, f"tests wrote into the checkout: {new[:5]}"


def copy_subset(dest: Path, per_class: int, classes=CLASSES, offset: int = 0) -> Path:
    """The first ``per_class`` images (sorted by name, after ``offset``) of each class."""
    if not AID.is_dir():
        pytest.skip(f"AID copy not found at {AID}")
    for c in classes:
        (dest / c).mkdir(parents=True, exist_ok=True)
        for f in sorted((AID / c).iterdir())[offset : offset + per_class]:
            shutil.copy2(f, dest / c / f.name)
    return dest


@pytest.fixture(scope="session")
def aid_small(tmp_path_factory) -> Path:
    """4 classes x 12 images: enough for a stratified 50/50 split with validation."""
    return copy_subset(tmp_path_factory.mktemp("aid_small"), 12)


@pytest.fixture(scope="session")
def aid_tiny() -> Path:
    """The committed tiny dataset (read-only: copy it before damaging it)."""
    return AID_TINY


@pytest.fixture
def tiny_copy(tmp_path) -> Path:
    """A writable copy of the tiny dataset, for tests that damage the data."""
    shutil.copytree(AID_TINY, tmp_path / "data")
    return tmp_path / "data"


def stub_args(data: Path, output: Path, **options) -> dict:
    """`make_config` values for a fast plumbing run on the stub backbone."""
    return {
        "data": data,
        "output": output,
        "backbone": STUB_BACKBONE,
        "weights": "random",
        "image_size": 32,
        "batch_size": 8,
        "train_fraction": 0.5,
        "epochs": 1,
        **options,
    }


@pytest.fixture
def aid_copy(tmp_path) -> Path:
    """A writable 4 x 6 copy, for tests that damage the data."""
    return copy_subset(tmp_path / "data", 6)


GEOTUNE_CLI = [sys.executable, "-m", "geotune.cli"]


def train_args(data: Path, output: Path, **options) -> list[str]:
    """`geotune train` arguments for a fast real run: small chips, small batches, a 50/50 split."""
    options = {"image_size": 64, "batch_size": 8, "train_fraction": 0.5, **options}
    args = ["train", "--data", str(data), "--output", str(output)]
    for key, value in options.items():
        flag = f"--{key.replace('_', '-')}"
        args += [flag] if value is True else [flag, str(value)]
    return args


def kill_after(args: list[str], marker: str, timeout: float = 300, delay: float = 0.0) -> None:
    """Start `geotune ARGS`, wait for ``marker`` in its output, then kill -9 it (after ``delay``)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [*GEOTUNE_CLI, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO,
    )
    deadline = time.time() + timeout
    for line in proc.stdout:
        if marker in line or time.time() > deadline:
            break
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
