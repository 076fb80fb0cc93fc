"""Where commands write, and with what modes.

- No output inside an input (geotune.runs.paths): every command that writes refuses, before
  any work, an output that is, lies inside or contains one of its inputs (resolved through
  symlinks), with one line naming both paths; nothing is written.
- Files behave like the user's other files (geotune.fileio): every file of a real run folder
  and of the cache gets ``0o666 & ~umask``, every folder ``0o777 & ~umask``; a group-shared
  cache folder shares its entries with the group.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from conftest import AID_TINY, STUB_BACKBONE, stub_args

from geotune.cli.main import main
from geotune.errors import ConfigError


def cli(argv: list, capsys) -> tuple[int, str]:
    """Run `geotune ARGV` in-process; (exit code, stderr)."""
    capsys.readouterr()
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    return code, capsys.readouterr().err


def tree_hash(root: Path) -> str:
    """Names and bytes of everything under ``root`` (hidden files too)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file() and not p.is_symlink():
            h.update(p.read_bytes())
    return h.hexdigest()


def one_error(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def data(tmp_path) -> Path:
    shutil.copytree(AID_TINY, tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture(scope="module")
def stub_run(tmp_path_factory) -> Path:
    """A finished stub run on its own copy of the tiny dataset."""
    from geotune.config import make_config
    from geotune.engine.trainer import train

    tmp = tmp_path_factory.mktemp("outputs-run")
    shutil.copytree(AID_TINY, tmp / "data")
    return train(make_config(**stub_args(tmp / "data", tmp / "runs", name="r"))).run_dir


# ---------------------------------------------------------------------------------------------
# no output inside an input
# ---------------------------------------------------------------------------------------------
def test_simulate_into_its_own_dataset_is_refused(data, capsys):
    before = tree_hash(data)
    code, err = cli(
        ["simulate", data, data / "sub", "--shift", "haze", "--strength", "0.5"], capsys
    )
    line = one_error(code, err)
    assert f"DST {data / 'sub'} lies inside input SRC {data}" in line
    assert "pass DST a place outside" in line
    assert tree_hash(data) == before


def test_outputs_are_compared_through_symlinks(data, tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(data)
    before = tree_hash(data)
    line = one_error(*cli(["simulate", data, link / "shifted"], capsys))
    assert f"(= {data / 'shifted'})" in line and f"input SRC {data}" in line
    # An output that contains the input: the dataset's parent as the copy.
    line = one_error(*cli(["simulate", link, tmp_path], capsys))
    assert f"DST {tmp_path} contains input SRC" in line
    assert tree_hash(data) == before


@pytest.mark.parametrize(
    ("command", "words"),
    [
        (lambda d, t: ["train", "--data", d, "--output", d / "runs"], "--output"),
        (lambda d, t: ["train", "--data", d, "--output", d], "is input --data"),
        (lambda d, t: ["train", "--data", d, "--output", d / "Beach", "--name", "r"], "lies inside input --data"),
        (lambda d, t: ["compare", "--data", d, "--output", d / "sweeps"], "lies inside input --data"),
        (lambda d, t: ["shift", t / "other", d, "--output", d / "shifts"], "input B"),
        (lambda d, t: ["pretrain", d, "--output", d / "ssl.pt"], "input DATA"),
        (lambda d, t: ["adapt", t / "run", "--target", d, "--output", d], "input --target"),
        (lambda d, t: ["adapt", t / "run", "--target", t / "x", "--eval-data", d, "--output", d / "Beach"], "input --eval-data"),
        (lambda d, t: ["evaluate", d / "run", "--data", d], "RUN_DIR/evaluations"),
    ],
    ids=[
        "train output in data", "train output is data", "train named run in data",
        "compare output in data", "shift output in B", "pretrain into data",
        "adapt output is target", "adapt output in eval data", "evaluate into its data",
    ],
)  # fmt: skip
def test_every_writing_command_refuses_an_output_inside_an_input(
    command, words, data, tmp_path, capsys
):
    before = tree_hash(data)
    line = one_error(*cli(command(data, tmp_path), capsys))
    assert words in line and str(data) in line, line
    assert tree_hash(data) == before


def test_a_cache_inside_the_dataset_is_refused(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GEOTUNE_CACHE", str(data / ".cache"))
    stub = ["--backbone", STUB_BACKBONE, "--weights", "random", "--output", tmp_path / "runs"]
    line = one_error(*cli(["train", "--data", data, *stub], capsys))
    assert "the cache folder (GEOTUNE_CACHE)" in line and "set GEOTUNE_CACHE" in line
    assert not (data / ".cache").exists() and not (tmp_path / "runs").exists()


def test_pretrain_output_equal_to_its_weights_file(data, tmp_path, capsys):
    weights = tmp_path / "start.pt"
    weights.write_bytes(b"not read: the output is refused first")
    line = one_error(*cli(["pretrain", data, "--output", weights, "--weights", weights], capsys))
    assert "is input --weights" in line
    assert weights.read_bytes().startswith(b"not read")


def test_a_config_file_inside_the_run_folder_is_refused(data, tmp_path, capsys):
    staging = tmp_path / "runs" / ".r.partial"
    staging.mkdir(parents=True)
    config = staging / "opts.yaml"
    config.write_text(f"data: {data}\n")
    line = one_error(*cli(["train", "--config", config, "--output", tmp_path / "runs", "--name", "r"], capsys))  # fmt: skip
    assert "contains input --config" in line
    assert config.is_file()


def test_predict_and_export_refuse_outputs_inside_their_inputs(stub_run, capsys):
    data = stub_run.parent.parent / "data"
    before, run_before = tree_hash(data), tree_hash(stub_run)
    chip = next((data / "Beach").iterdir())
    cases = [
        (["predict", stub_run, data, "--output", data / "p.csv"], "lies inside input INPUTS"),
        (["predict", stub_run, chip, "--output", chip, "--overwrite"], "is input INPUTS"),
        (["predict", stub_run, data, "--output", stub_run / "p.csv"], "lies inside input RUN"),
        (["export", stub_run, "--output", stub_run / "m.onnx"], "lies inside input RUN"),
        (["export", stub_run, "--output", data / "m.onnx", "--check-data", data], "--check-data"),
    ]
    for argv, words in cases:
        line = one_error(*cli(argv, capsys))
        assert words in line, line
    assert tree_hash(data) == before and tree_hash(stub_run) == run_before


def test_the_rule_for_folders_that_hold_new_folders(tmp_path, monkeypatch):
    from geotune.runs.paths import refuse_outputs_in_inputs

    data = tmp_path / "project" / "data"
    data.mkdir(parents=True)
    # A runs folder that holds the dataset is fine: the run folder written is a new child...
    refuse_outputs_in_inputs({}, {"--data": data}, {"--output": tmp_path / "project"})
    refuse_outputs_in_inputs({"--output/--name": tmp_path / "project" / "r1"}, {"--data": data})
    # ... but a named run folder that would contain the dataset is not.
    with pytest.raises(ConfigError, match="contains input --data"):
        refuse_outputs_in_inputs({"--output/--name": tmp_path / "project"}, {"--data": data})
    with pytest.raises(ConfigError, match="lies inside input --data"):
        refuse_outputs_in_inputs({}, {"--data": data}, {"--output": data / "runs"})
    # Relative paths are compared as absolute ones.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="is input --split"):
        refuse_outputs_in_inputs({"--output": Path("s.csv")}, {"--split": tmp_path / "s.csv"})


def test_the_python_api_is_protected_too(data, tmp_path):
    from geotune.config import make_config
    from geotune.engine.trainer import train
    from geotune.shift.simulate import simulate_folder

    with pytest.raises(ConfigError, match="lies inside input SRC"):
        simulate_folder(data, data / "Beach" / "x", "haze", 0.5)
    with pytest.raises(ConfigError, match="lies inside input --data"):
        train(make_config(**stub_args(data, data / "runs")))
    assert not (data / "runs").exists() and not (data / "Beach" / "x").exists()


# ---------------------------------------------------------------------------------------------
# files behave like the user's other files
# ---------------------------------------------------------------------------------------------
def modes(root: Path) -> dict[str, tuple[str, int]]:
    out = {}
    for p in [root, *root.rglob("*")]:
        st = p.lstat()
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
        if not stat.S_ISLNK(st.st_mode):
            out[str(p.relative_to(root.parent))] = (kind, stat.S_IMODE(st.st_mode))
    return out


@pytest.fixture
def umask():
    """Set the process umask for one test; the old one comes back after it."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_every_file_of_a_run_and_its_cache_gets_the_umask_mode(mask, umask, tmp_path, monkeypatch):
    from geotune.config import make_config
    from geotune.engine.trainer import train

    shutil.copytree(AID_TINY, tmp_path / "data")
    monkeypatch.setenv("GEOTUNE_CACHE", str(tmp_path / "cache"))
    umask(mask)
    run = train(make_config(**stub_args(tmp_path / "data", tmp_path / "runs", name="r"))).run_dir
    found = {**modes(tmp_path / "runs"), **modes(tmp_path / "cache")}
    files = [k for k, (kind, _) in found.items() if kind == "file"]
    assert "runs/r/test_metrics.json" in files and "runs/r/checkpoints/best.pt" in files
    assert any(k.startswith("cache/images/") for k in files)
    expected = {"file": 0o666 & ~mask, "dir": 0o777 & ~mask}
    wrong = {k: oct(m) for k, (kind, m) in found.items() if m != expected[kind]}
    assert not wrong, wrong
    assert not [k for k in files if k.endswith(".tmp")]
    assert (run / "status.json").is_file()


def test_a_group_shared_cache_shares_its_entries(umask, tmp_path, monkeypatch):
    from geotune.data.decode import decode_folder
    from geotune.data.folder import scan_folder

    cache = tmp_path / "shared-cache"
    cache.mkdir()
    cache.chmod(0o2775)  # group-writable and setgid, as a shared project folder is set up
    monkeypatch.setenv("GEOTUNE_CACHE", str(cache))
    umask(0o022)  # a user whose umask alone would keep the group out
    decode_folder(scan_folder(AID_TINY), 32)
    found = modes(cache)
    entries = {k: m for k, (kind, m) in found.items() if kind == "file"}
    folders = {k: m for k, (kind, m) in found.items() if kind == "dir" and k != "shared-cache"}
    assert entries and folders
    assert all(m & 0o060 == 0o060 for m in entries.values()), {
        k: oct(m) for k, m in entries.items()
    }
    assert all(m & 0o2070 == 0o2070 for m in folders.values()), {
        k: oct(m) for k, m in folders.items()
    }
    assert not [k for k in entries if Path(k).name.startswith(".")]  # no temporary left


def test_an_unshared_cache_keeps_the_umask(umask, tmp_path, monkeypatch):
    from geotune.fileio import atomic_write_json

    umask(0o027)
    folder = tmp_path / "private"
    atomic_write_json(folder / "sub" / "x.json", {"a": 1}, shared=True)
    assert stat.S_IMODE((folder / "sub" / "x.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((folder / "sub").stat().st_mode) == 0o750


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second user")
def test_another_member_of_the_group_reads_and_replaces_cache_entries(umask, request, monkeypatch):
    """Two users, one group: what the first wrote, the second reads, replaces and adds to."""
    import json
    import traceback

    from geotune.data.decode import decode_folder
    from geotune.data.folder import scan_folder
    from geotune.fileio import atomic_write_json

    group, other = 54321, 65534  # a group of the two, and a second user (nobody)
    shared = Path(tempfile.mkdtemp(prefix="geotune-shared-"))  # pytest's tmp is root-only
    shared.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    cache = shared / "cache"
    cache.mkdir()
    os.chown(cache, 0, group)
    cache.chmod(0o2775)
    monkeypatch.setenv("GEOTUNE_CACHE", str(cache))
    umask(0o022)
    folder = scan_folder(AID_TINY)
    decode_folder(folder, 32, workers=1)  # the first user fills the cache
    first = sorted(p.name for p in (cache / "images").iterdir())
    read_end, write_end = os.pipe()  # the second user's traceback, if any
    pid = os.fork()
    if pid == 0:  # the second user, in the same group, with the same umask
        try:
            os.setgroups([group])
            os.setgid(group)
            os.setuid(other)
            decode_folder(folder, 32, workers=1)  # reads the first user's entry
            decode_folder(folder, 24, workers=1)  # adds one in the first user's folder
            for p in (cache / "images").glob("*.json"):  # replaces every marker
                atomic_write_json(p, json.loads(p.read_text()), shared=True)
        except BaseException:
            os.write(write_end, traceback.format_exc().encode()[-4000:])
            os._exit(1)
        os._exit(0)
    os.close(write_end)
    _, code = os.waitpid(pid, 0)
    error = os.read(read_end, 8000).decode()
    os.close(read_end)
    assert code == 0, error
    names = sorted(p.name for p in (cache / "images").iterdir())
    assert set(first) < set(names) and not [n for n in names if n.startswith(".")]
    owners = {p.stat().st_uid for p in (cache / "images").glob("*.json")}
    assert owners == {other}  # every marker was replaced by the second user
