"""Strict values at the edge: no implicit coercion from YAML or flags, for every command, and
keys of another command's config named as such (issue 28's listed cases and their class)."""

from __future__ import annotations

import pytest
import yaml
from conftest import STUB_BACKBONE

from geotune.cli.main import main
from geotune.config import make_config
from geotune.errors import ConfigError
from geotune.validation import load_yaml_mapping


def cli(argv, capsys) -> tuple[int, str]:
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    return code, capsys.readouterr().err


def one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    return lines[-1]


@pytest.mark.parametrize(
    ("yaml_text", "words"),
    [
        ("epochs: true", "expected an integer, got the boolean true"),
        ("epochs: 2.5", "expected an integer, got the number 2.5"),
        ("epochs: 2.0", "expected an integer"),
        ("epochs: '3'", "expected an integer, got the text '3'"),
        ("lr: .nan", "expected a finite number"),
        ("lr: 'fast'", "expected a number"),
        ("flips: 1", "expected true or false, got the integer 1"),
        ("flips: 'yes'", "expected true or false"),
        ("name: 2024", "expected text"),
        ("probe_c: [0.1, 'x']", "expected a number"),
        ("seed: 99999999999999", "out of range"),
        ("head: ''", "empty"),
        ("strategies: linear-probe", "option of `geotune compare`"),
        ("unfreeze_lst: 2", "did you mean 'unfreeze_last'"),
    ],
)
def test_train_yaml_values_are_never_coerced(tmp_path, aid_tiny, capsys, yaml_text, words):
    config = tmp_path / "opts.yaml"
    config.write_text(yaml_text + "\n")
    runs = tmp_path / "runs"
    code, err = cli(["train", "--data", aid_tiny, "--output", runs, "--config", config], capsys)
    assert code == 2 and words in one_error(err), err
    assert not runs.exists()  # refused before any work


def test_yaml_reads_exponents_as_numbers(tmp_path):
    # YAML 1.1 reads 1e-3 (no dot) as text; a user means a number.
    (tmp_path / "o.yaml").write_text("lr: 1e-3\nweight_decay: 5E-2\nname: 1e3x\n")
    values = load_yaml_mapping(tmp_path / "o.yaml")
    assert values == {"lr": 0.001, "weight_decay": 0.05, "name": "1e3x"}
    assert make_config(data=tmp_path, **values).lr == 0.001


@pytest.mark.parametrize(
    ("key", "flag"),
    [("data", "--data"), ("strategy", "--strategies"), ("seed", "--seeds"),
     ("train_fraction", "--pool-fraction")],
)  # fmt: skip
def test_compare_names_the_option_a_train_key_belongs_to(tmp_path, aid_tiny, capsys, key, flag):
    value = {"data": str(aid_tiny), "strategy": "full", "seed": 1, "train_fraction": 0.5}[key]
    config = tmp_path / "opts.yaml"
    config.write_text(yaml.safe_dump({key: value, "epochs": 1}))
    sweeps = tmp_path / "sweeps"
    code, err = cli(["compare", "--data", aid_tiny, "--output", sweeps, "--config", config], capsys)
    line = one_error(err)
    assert code == 2 and f"'{key}'" in line and flag in line, line
    assert not sweeps.exists()


def test_compare_train_options_are_strict_too(tmp_path, aid_tiny, capsys):
    config = tmp_path / "opts.yaml"
    config.write_text("epochs: true\n")
    code, err = cli(["compare", "--data", aid_tiny, "--config", config], capsys)
    assert code == 2 and "expected an integer, got the boolean true" in one_error(err)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["evaluate", "RUN", "--config", "CFG"], "not of `geotune evaluate`"),
        (["simulate", "DATA", "OUT", "--config", "CFG"], "not of `geotune simulate`"),
        (["shift", "DATA", "DATA", "--config", "CFG"], "not of `geotune shift`"),
        (["pretrain", "DATA", "--output", "x.pt", "--config", "CFG"], "not of `geotune pretrain`"),
        (["predict", "RUN", "DATA", "--config", "CFG"], "not of `geotune predict`"),
        (["export", "RUN", "--config", "CFG"], "not of `geotune export`"),
        (["adapt", "RUN", "--target", "DATA", "--config", "CFG"], "not of `geotune adapt`"),
    ],
)
def test_every_command_takes_a_strict_config_file(tmp_path, aid_tiny, capsys, argv, words):
    """Each command's --config goes through the one validation path: a train-only key is named
    as belonging to train."""
    config = tmp_path / "opts.yaml"
    config.write_text("strategy: full\n")
    where = {"RUN": tmp_path, "DATA": aid_tiny, "CFG": config, "OUT": tmp_path / "out"}
    code, err = cli([where.get(a, a) for a in argv], capsys)
    line = one_error(err)
    assert code == 2 and "'strategy'" in line and words in line, line


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"epochs": True}, "expected an integer"),
        ({"batch_size": 8.0}, "expected an integer"),
        ({"crop_scale": ["0.5", 1]}, "expected a number"),
        ({"split": "no-such-split.csv"}, "not found"),
        ({"output": "FILE"}, "is a file, not a folder"),
        ({"name": ".."}, "not a folder name"),
        ({"bands": []}, "at least 1"),
    ],
)
def test_python_api_is_as_strict_as_the_cli(tmp_path, values, words):
    (tmp_path / "file").write_text("x")
    values = {k: (tmp_path / "file" if v == "FILE" else v) for k, v in values.items()}
    with pytest.raises(ConfigError, match=words):
        make_config(data=tmp_path, backbone=STUB_BACKBONE, **values)


def test_cli_lists_and_pairs_parse_to_their_declared_types(tmp_path):
    cfg = make_config(
        data=tmp_path, probe_c="0.1,1", knn_k="1,5", group_lr="stem=0.1", crop_scale=[0.5, 1]
    )
    assert cfg.probe_c == [0.1, 1.0] and cfg.knn_k == [1, 5]
    assert cfg.group_lr == {"stem": 0.1} and cfg.crop_scale == (0.5, 1.0)
    # A saved config reads back as the same config.
    again = make_config(**yaml.safe_load(yaml.safe_dump(cfg.to_yaml_dict())))
    assert again == cfg


def test_config_files_load_by_section_or_flat_and_the_run_saves_sections(tmp_path, aid_tiny):
    from geotune.config import SECTIONS, TrainConfig, load_config

    flat = {"data": str(aid_tiny), "strategy": "linear-probe", "tta": "rot2", "probe_c": [0.1]}
    sectioned = {
        "dataset": {"data": str(aid_tiny)},
        "transfer": {"strategy": "linear-probe"},
        "augmentation": {"tta": "rot2"},
        "probe": {"probe_c": [0.1]},
    }
    (tmp_path / "flat.yaml").write_text(yaml.safe_dump(flat))
    (tmp_path / "sections.yaml").write_text(yaml.safe_dump(sectioned))
    a, b = load_config(tmp_path / "flat.yaml"), load_config(tmp_path / "sections.yaml")
    assert a == b and b.tta == "rot2" and b.probe_c == [0.1]
    saved = a.to_yaml_dict()
    assert list(saved) == [s.section for s in SECTIONS]
    keys = [k for part in saved.values() for k in part]
    assert sorted(keys) == sorted(TrainConfig.model_fields)  # every option once, in its section
    assert make_config(**saved) == a
    assert isinstance(a, SECTIONS[-1]) and all(isinstance(a, s) for s in SECTIONS)


@pytest.mark.parametrize(
    "values, words",
    [
        ({"model": {"lr": 0.1}}, "'lr' belongs in section optimisation:"),
        ({"probe": {"probe_cc": [1.0]}}, "did you mean 'probe_c'"),
        ({"lr": 0.1, "optimisation": {"lr": 0.2}}, "'lr' given twice"),
    ],
)
def test_a_key_in_the_wrong_section_names_its_section(aid_tiny, values, words):
    with pytest.raises(ConfigError, match=words) as err:
        make_config(data=aid_tiny, **values)
    assert "\n" not in str(err.value)


def test_train_help_groups_flags_by_section():
    from geotune.cli.options import field_panel
    from geotune.config import TrainConfig

    panels = {field_panel(TrainConfig, name) for name in TrainConfig.model_fields}
    assert panels == {"Dataset", "Model", "Transfer", "Augmentation", "Optimisation", "Probe",
                      "Runtime"}  # fmt: skip
