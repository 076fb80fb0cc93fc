"""Exit codes and last lines as a contract, checked on real processes.

0 success; 2 bad input (one ``error:`` line); 1 unexpected (one line naming a log file with the
traceback); 130 on Ctrl-C and 143 on SIGTERM, with one line saying what was kept and how to
continue. Every status.json ends in a final state; a run whose process was killed outright
reads as ``interrupted``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import AID_TINY, REPO, STUB_BACKBONE, stub_args

STUB = [
    "--backbone", STUB_BACKBONE, "--weights", "random", "--image-size", "32",
    "--batch-size", "8", "--train-fraction", "0.5",
]  # fmt: skip


def geotune(tmp: Path, prelude: str = "") -> list[str]:
    """The `geotune` command on this worktree's sources (``prelude``: Python run first)."""
    return [sys.executable, "-c", f"{prelude}\nfrom geotune.cli.main import main\nmain()"]


def env(tmp: Path) -> dict[str, str]:
    src = str(REPO / "src")
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
        "PYTHONWARNINGS": "ignore",
        "HOME": str(tmp / "home"),  # the error log goes under it
        "COLUMNS": "400",  # one line stays one line
    }


def run(tmp: Path, *args, prelude: str = "", timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*geotune(tmp, prelude), *map(str, args)],
        capture_output=True, text=True, env=env(tmp), cwd=tmp, timeout=timeout,
    )  # fmt: skip


def _interruptible() -> None:
    # A shell's background job (`cmd &`) starts with SIGINT ignored, and Python keeps an ignored
    # SIGINT ignored: give the child the default, as a terminal would, so Ctrl-C can be tested.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def signal_after(tmp: Path, args: list, marker: str, sig: int, timeout: float = 240):
    """Start `geotune ARGS`, send ``sig`` once ``marker`` is printed; (exit code, output)."""
    proc = subprocess.Popen(
        [*geotune(tmp), *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(tmp), cwd=tmp,
        preexec_fn=_interruptible,
    )  # fmt: skip
    seen, deadline = [], time.time() + timeout
    for line in proc.stdout:
        seen.append(line)
        if marker in line or time.time() > deadline:
            break
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=120)
    return proc.returncode, "".join(seen) + rest


def last_line(output: str) -> str:
    return [line for line in output.splitlines() if line.strip()][-1]


def status(folder: Path) -> dict:
    return json.loads((folder / "status.json").read_text())


@pytest.fixture
def tmp(tmp_path) -> Path:
    shutil.copytree(AID_TINY, tmp_path / "data")
    (tmp_path / "home").mkdir()
    return tmp_path


def long_train(tmp: Path, name: str) -> list:
    return ["train", "--data", tmp / "data", "--output", tmp / "runs", "--name", name, *STUB,
            "--epochs", "500", "--patience", "500"]  # fmt: skip


@pytest.mark.slow
def test_ctrl_c_then_sigterm_on_the_resumed_run(tmp):
    final, staging = tmp / "runs" / "r", tmp / "runs" / ".r.partial"
    code, out = signal_after(tmp, long_train(tmp, "r"), "epoch 2/500", signal.SIGINT)
    assert code == 130, out
    assert last_line(out) == (
        f"interrupted: the unfinished run is kept in {staging}; continue it with "
        f"`geotune train --resume {final}`"
    ), out
    assert "Traceback" not in out
    st = status(staging)
    assert st["state"] == "interrupted" and st["host"] == os.uname().nodename
    assert not (tmp / "runs" / ".r.lock").exists()  # the name is free for --resume
    assert (staging / "checkpoints" / "last.pt").is_file()

    # The resumed run, ended by a scheduler: SIGTERM is handled like Ctrl-C (exit 143).
    code, out = signal_after(tmp, ["train", "--resume", final], "epoch 4/500", signal.SIGTERM)
    assert code == 143, out
    assert f"resuming {final} (interrupted)" in out
    assert last_line(out).startswith("terminated (SIGTERM): the unfinished run is kept in "), out
    assert status(staging)["state"] == "interrupted" and status(staging)["resumed"] is True
    assert not final.exists()


@pytest.mark.slow
def test_a_run_killed_outright_reads_as_interrupted(tmp):
    staging = tmp / "runs" / ".k.partial"
    code, out = signal_after(tmp, long_train(tmp, "k"), "epoch 1/500", signal.SIGKILL)
    assert code == -signal.SIGKILL
    st = status(staging)
    assert st["state"] == "running" and isinstance(st["pid"], int)  # it could not say more
    for command in (["evaluate", tmp / "runs" / "k"], ["report", tmp / "runs" / "k"]):
        proc = run(tmp, *command)
        assert proc.returncode == 2, proc.stderr
        line = last_line(proc.stderr)
        assert line.startswith(f"error: run {tmp / 'runs' / 'k'} did not finish (interrupted: ")
        assert f"process {st['pid']} on {st['host']} is gone" in line
        assert f"geotune train --resume {tmp / 'runs' / 'k'}" in line

    from geotune.runs.rundir import run_state

    assert run_state(staging)[0] == "interrupted"


def test_every_reader_says_a_killed_process_s_run_was_interrupted(tmp, capsys):
    """A process that dies by SIGKILL while building a run (fast: no training)."""
    code = (
        "import os, signal\nfrom geotune.runs.rundir import RunDir\n"
        f"RunDir({str(tmp / 'runs')!r}, 'k').create()\nos.kill(os.getpid(), signal.SIGKILL)"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env(tmp), timeout=60)
    assert proc.returncode == -signal.SIGKILL
    st = status(tmp / "runs" / ".k.partial")
    assert st["state"] == "running"
    from geotune.cli.main import main

    for command in (["evaluate"], ["report"], ["adapt", "--target", tmp / "data"]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main([command[0], str(tmp / "runs" / "k"), *map(str, command[1:])])
        err = capsys.readouterr().err
        assert exit_.value.code == 2, err
        assert f"did not finish (interrupted: process {st['pid']} on {st['host']} is gone" in err


def test_a_running_run_reads_as_running(tmp):
    """The other side of the rule: a live process's run is not called interrupted."""
    from geotune.runs.rundir import RunDir, run_state, unfinished_message

    live = RunDir(tmp / "runs", "live")
    live.create()
    try:
        assert run_state(live.staging)[0] == "running"
        assert "did not finish yet" in unfinished_message(live.final)
    finally:
        live.unlock()
    assert run_state(live.staging)[0] == "interrupted"  # lock released, status still running


@pytest.mark.slow
def test_pretrain_interrupted_says_how_to_resume(tmp):
    out_pt = tmp / "ssl.pt"
    args = ["pretrain", tmp / "data", "--output", out_pt, "--backbone", STUB_BACKBONE,
            "--weights", "random", "--image-size", "32", "--batch-size", "8", "--epochs", "500"]  # fmt: skip
    code, out = signal_after(tmp, args, "epoch 1/500 done", signal.SIGINT)
    assert code == 130, out
    line = last_line(out)
    assert line.startswith("interrupted: the state after ") and str(tmp / ".ssl.pt.state") in line
    assert "--resume" in line and not out_pt.exists()


@pytest.mark.slow
def test_interrupt_with_nothing_to_keep_says_so(tmp):
    # A stub probe run (no epochs): the staging folder is removed, nothing left to resume.
    prelude = (
        "import time, geotune.engine.probe as p\n"
        "real = p.finish_run\n"
        "def slow(*a, **k):\n    print('finishing', flush=True); time.sleep(60)\n"
        "p.finish_run = slow"
    )
    proc = subprocess.Popen(
        [*geotune(tmp, prelude), "train", "--data", str(tmp / "data"), "--output",
         str(tmp / "runs"), "--name", "p", *STUB, "--strategy", "linear-probe"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(tmp), cwd=tmp,
        preexec_fn=_interruptible,
    )  # fmt: skip
    for line in proc.stdout:
        if "finishing" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert last_line(out).startswith("interrupted: nothing of the run was kept"), out
    assert not (tmp / "runs" / ".p.partial").exists() and not (tmp / "runs" / "p").exists()


@pytest.mark.slow
def test_unexpected_error_is_exit_1_and_one_line_naming_the_log(tmp):
    prelude = "import geotune.engine.trainer as t\nt.prepare = lambda *a, **k: 1 / 0"
    proc = run(tmp, "train", "--data", tmp / "data", "--output", tmp / "runs", *STUB,
               prelude=prelude)  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: unexpected ZeroDivisionError: ")
    log = Path(lines[0].rsplit("traceback in ", 1)[1])
    assert log.is_file() and str(log).startswith(str(tmp / "home"))
    assert "Traceback" in log.read_text() and "ZeroDivisionError" in log.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("text", ["[/gloo/pair.cc:561] closed by peer", "[bold]x[/] [red]"])
def test_messages_with_brackets_are_printed_as_they_are(tmp, text):
    # Library errors (gloo, CUDA) and paths hold brackets that rich would read as markup.
    prelude = f"import geotune.engine.trainer as t\ndef boom(*a, **k): raise RuntimeError({text!r})\nt.prepare = boom"
    proc = run(tmp, "train", "--data", tmp / "data", "--output", tmp / "runs", *STUB,
               prelude=prelude)  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: unexpected RuntimeError: {text}; traceback in ")


@pytest.mark.slow
def test_bad_input_is_exit_2_and_success_is_exit_0(tmp):
    proc = run(tmp, "simulate", tmp / "data", tmp / "data" / "sub")
    assert proc.returncode == 2 and last_line(proc.stderr).startswith("error: output DST ")
    proc = run(tmp, "simulate", tmp / "data", tmp / "copy", "--per-class", "1")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp / "copy" / "status.json").exists()


def test_a_failed_run_records_failed_and_why(tmp_path, monkeypatch):
    from geotune.config import make_config
    from geotune.engine.loop import Engine
    from geotune.engine.trainer import train

    def broken(self):
        raise RuntimeError("validation broke")

    monkeypatch.setattr(Engine, "validate", broken)
    shutil.copytree(AID_TINY, tmp_path / "data")
    with pytest.raises(RuntimeError):
        train(make_config(**stub_args(tmp_path / "data", tmp_path / "runs", name="f")))
    st = status(tmp_path / "runs" / ".f.partial")
    assert st["state"] == "failed" and "validation broke" in st["error"]
