"""`--strategy auto`: the rule picks what it says for two label budgets, and the run records it."""

from __future__ import annotations

import pytest
import yaml
from conftest import AID_TINY, stub_args
from PIL import Image

from geotune.config import make_config
from geotune.engine import auto


@pytest.fixture(scope="module")
def many_labels(tmp_path_factory):
    """Two classes x 100 chips: aid_tiny's chips under the eight flips/rotations and crops."""
    root = tmp_path_factory.mktemp("many")
    for c in ("Beach", "Forest"):
        (root / c).mkdir()
        for i, f in enumerate(sorted((AID_TINY / c).iterdir())):
            im = Image.open(f).convert("RGB")
            for k in range(13):
                view = im.rotate(90 * (k % 4)).crop((k % 3, k % 2, 48 - k % 3, 48 - k % 2))
                view.save(root / c / f"{i}-{k}.png")
    return root


def test_few_labels_choose_the_linear_probe_and_the_run_records_why(tmp_path):
    from geotune.engine.trainer import train

    result = train(make_config(**stub_args(AID_TINY, tmp_path, strategy="auto", name="a")))
    record = result.summary["strategy_auto"]
    assert record["chose"] == "linear-probe" and "fine-tuning would overfit" in record["why"]
    assert record["train_chips_per_class_median"] < auto.FEW_LABELS
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["transfer"]["strategy"] == "linear-probe"  # the run re-runs as what auto chose


def test_many_labels_are_decided_by_the_quick_probe(many_labels, tmp_path, monkeypatch):
    from rich.console import Console

    assert sum(1 for _ in many_labels.rglob("*.png")) == 2 * 8 * 13
    args = stub_args(many_labels, tmp_path, strategy="auto", train_fraction=0.8, epochs=3)
    cfg = make_config(**args)
    chosen, record = auto.resolve_auto(cfg, Console(quiet=True))
    assert record["train_chips_per_class_median"] >= auto.FEW_LABELS
    acc = record["quick_probe_val_accuracy"]
    assert 0 <= acc <= 1
    assert chosen.strategy == ("linear-probe" if acc >= auto.CLOSE_DOMAIN else "lp-ft")
    # A stricter bar for "close to the pretraining" sends the same data to fine-tuning.
    monkeypatch.setattr(auto, "CLOSE_DOMAIN", 1.01)
    chosen, record = auto.resolve_auto(cfg, Console(quiet=True))
    assert chosen.strategy == "lp-ft" and "fine-tune" in record["why"]
    assert chosen.head_epochs < chosen.epochs  # the head-only phase fits in the epochs
    one_epoch = make_config(**{**args, "epochs": 1})
    chosen, record = auto.resolve_auto(one_epoch, Console(quiet=True))
    assert chosen.strategy == "full" and "two epochs" in record["note"]


def test_auto_refuses_layer_options_it_chooses_itself():
    from geotune.errors import ConfigError

    with pytest.raises(ConfigError, match="auto chooses the layers"):
        make_config(data=AID_TINY, strategy="auto", unfreeze_last=2)
