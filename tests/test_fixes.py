"""Bugs that reading the code turned up, each pinned by a test that failed before its fix."""

from __future__ import annotations

import json
import shutil

from conftest import STUB_BACKBONE, stub_args

from geotune.cli.main import main
from geotune.config import make_config


def _cli(argv, capsys) -> tuple[int, str, str]:
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_report_title_is_the_run_name_not_the_staging_folder(aid_tiny, tmp_path):
    from geotune.engine.trainer import train

    result = train(make_config(**stub_args(aid_tiny, tmp_path, name="titled")))
    html = (result.run_dir / "report.html").read_text()
    assert "geotune run titled" in html and ".partial" not in html


def test_help_lists_each_choice_once(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich cuts long help at 80 columns
    code, out, _ = _cli(["train", "--help"], capsys)
    assert code == 0
    text = "".join(out.replace("│", " ").split())  # rich wraps long words anywhere
    assert text.count("lp-ft=") == 1 and text.count("frozen-in-frozen-groups=") == 1
    assert "lp-ft:lp-ft:" not in text and "lp-ft:epochsofthehead-onlyphase" in text


def test_shift_honours_image_size(aid_tiny, tmp_path, capsys):
    code, _, err = _cli(
        ["shift", aid_tiny, aid_tiny, "--backbone", STUB_BACKBONE, "--weights", "random",
         "--image-size", "40", "--per-class", "4", "--bootstrap", "10",
         "--output", tmp_path, "--name", "s"], capsys,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "s" / "shift.json").read_text())["preprocessing"]["size"] == 40


def test_compare_skips_bad_images_it_listed_in_its_splits(aid_tiny, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(aid_tiny, data)
    chip = sorted((data / "Forest").iterdir())[0]
    chip.write_bytes(chip.read_bytes()[:200])  # truncated, after the split is drawn
    (tmp_path / "train.yaml").write_text(
        f"backbone: {STUB_BACKBONE}\nweights: random\nimage_size: 32\nskip_bad_images: true\n"
    )
    code, _, err = _cli(
        ["compare", "--data", data, "--strategies", "knn", "--labels-per-class", "2",
         "--seeds", "1", "--pool-fraction", "0.5", "--config", tmp_path / "train.yaml",
         "--output", tmp_path, "--name", "sweep"], capsys,
    )  # fmt: skip
    assert code == 0, err
    skipped = (tmp_path / "sweep" / "runs" / "knn-2-s0" / "skipped_files.txt").read_text()
    assert skipped.startswith(f"Forest/{chip.name}\t")


def test_compare_refuses_a_rerun_with_other_settings(aid_tiny, tmp_path, capsys):
    (tmp_path / "a.yaml").write_text(
        f"backbone: {STUB_BACKBONE}\nweights: random\nimage_size: 32\n"
    )
    (tmp_path / "b.yaml").write_text(
        f"backbone: {STUB_BACKBONE}\nweights: random\nimage_size: 40\n"
    )
    base = ["compare", "--data", aid_tiny, "--strategies", "knn", "--labels-per-class", "2",
            "--seeds", "1", "--pool-fraction", "0.5", "--output", tmp_path, "--name", "sweep"]  # fmt: skip
    assert _cli([*base, "--config", tmp_path / "a.yaml"], capsys)[0] == 0
    saved = (tmp_path / "sweep" / "compare.yaml").read_text()
    code, _, err = _cli([*base, "--config", tmp_path / "b.yaml"], capsys)
    assert code == 2 and "ran with other image_size" in err
    assert (tmp_path / "sweep" / "compare.yaml").read_text() == saved  # not rewritten
    code, _, err = _cli([*base, "--config", tmp_path / "a.yaml", "--pool-fraction", "0.6"], capsys)
    assert code == 2 and "other pool_fraction" in err
    code, _, err = _cli([*base, "--config", tmp_path / "a.yaml", "--seeds", "2"], capsys)
    assert code == 0, err  # more seeds with the same settings: the sweep continues


def test_runs_store_absolute_paths(aid_tiny, tmp_path, monkeypatch):
    from geotune.engine.trainer import train

    monkeypatch.chdir(aid_tiny.parent)
    config = make_config(**stub_args(aid_tiny.name, tmp_path, name="rel"))
    result = train(config)
    saved = (result.run_dir / "config.yaml").read_text()
    assert f"data: {aid_tiny}" in saved
    data = json.loads((result.run_dir / "data.json").read_text())
    assert data["root"] == str(aid_tiny) and data["chips"] == 32
