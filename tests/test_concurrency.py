"""Two processes racing: for one run name (a lock, never a shared or deleted folder) and for one
cache entry (both succeed, the entry is valid)."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
from conftest import AID_TINY, GEOTUNE_CLI, REPO, STUB_BACKBONE


def _argv(output, name, epochs=1, data=AID_TINY):
    return [
        *GEOTUNE_CLI, "train", "--data", str(data), "--output", str(output), "--name", name,
        "--backbone", STUB_BACKBONE, "--weights", "random", "--image-size", "32",
        "--batch-size", "4", "--train-fraction", "0.5", "--epochs", str(epochs),
    ]  # fmt: skip


def _env(cache):
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONWARNINGS": "ignore",
        "GEOTUNE_CACHE": str(cache),
    }


@pytest.mark.slow
def test_a_second_process_cannot_take_a_run_name_in_use(tmp_path):
    env = _env(tmp_path / "cache")
    first = subprocess.Popen(
        _argv(tmp_path, "race", epochs=500), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        for line in first.stdout:
            if "epoch 2/500" in line:
                break
        staging = tmp_path / ".race.partial"
        defining = {f: (staging / f).read_text() for f in ("config.yaml", "split.csv")}
        second = subprocess.run(
            _argv(tmp_path, "race"), capture_output=True, text=True, env=env, cwd=REPO
        )
        assert second.returncode == 2
        assert f"run race is in use by process {first.pid}" in second.stderr
        assert second.stderr.strip().splitlines()[-1].startswith("error: run race is in use")
        # The first run's defining files are untouched by the second (its training files keep
        # changing: it is still training).
        assert {f: (staging / f).read_text() for f in defining} == defining
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The lock died with its process: the killed run is refused as a fresh run, and resumes.
    again = subprocess.run(
        _argv(tmp_path, "race"), capture_output=True, text=True, env=env, cwd=REPO
    )
    assert again.returncode == 2 and "--resume" in again.stderr
    assert (tmp_path / ".race.partial" / "checkpoints" / "last.pt").is_file()


@pytest.mark.slow
def test_two_processes_filling_one_cache_entry_both_succeed(tmp_path):
    env = _env(tmp_path / "cache")
    procs = [
        subprocess.Popen(_argv(tmp_path, f"twin{i}"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, cwd=REPO)
        for i in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    metrics = [
        json.loads((tmp_path / f"twin{i}" / "test_metrics.json").read_text()) for i in range(2)
    ]
    assert metrics[0]["confusion_matrix"] == metrics[1]["confusion_matrix"]
    entries = list((tmp_path / "cache" / "images").iterdir())
    assert sorted(p.suffix for p in entries) == [".json", ".npy"]  # one entry, no temporaries
    # ... and it is a valid entry: a third run reads it without a warning.
    third = subprocess.run(
        _argv(tmp_path, "third"), capture_output=True, text=True, env=env, cwd=REPO
    )
    assert third.returncode == 0 and "warning" not in third.stderr
