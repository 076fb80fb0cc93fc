"""Imbalanced classes: balanced loss weights, a class-balanced sampler, a weighted probe."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import yaml
from conftest import AID_TINY, stub_args

from geotune.config import make_config
from geotune.data.balance import balanced_class_weights, balanced_draw


def test_balanced_weights_keep_the_loss_scale_and_invert_class_sizes():
    labels = np.array([0] * 90 + [2] * 10)
    w = balanced_class_weights(labels, 3)
    assert w[labels].mean() == pytest.approx(1.0)
    assert w[2] / w[0] == pytest.approx(9.0) and w[1] == 1.0  # class 1 absent: weight 1


def test_balanced_draw_sees_every_class_equally_often_and_is_seeded():
    labels = np.array([0] * 900 + [1] * 100)
    idx = np.arange(1000)
    drawn = balanced_draw(idx, labels, torch.Generator().manual_seed(0))
    assert len(drawn) == 1000 and set(drawn) <= set(idx)
    assert abs((labels[drawn] == 1).mean() - 0.5) < 0.06
    again = balanced_draw(idx, labels, torch.Generator().manual_seed(0))
    assert np.array_equal(drawn, again)


def test_weighted_probe_raises_minority_recall():
    from geotune.engine.probe import fit_logistic

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (900, 5)), rng.normal(1.0, 1, (100, 5))])
    y = np.array([0] * 900 + [1] * 100)
    recall = {}
    for weight in (None, "balanced"):
        scaler, clf = fit_logistic(X, y, 1.0, weight)
        recall[weight] = (clf.predict(scaler.transform(X[900:])) == 1).mean()
    assert recall["balanced"] > recall[None] + 0.2


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory):
    """aid_tiny with one class cut to 3 chips."""
    root = tmp_path_factory.mktemp("imb") / "data"
    shutil.copytree(AID_TINY, root)
    small = sorted(p for p in root.iterdir() if p.is_dir())[0]
    for f in sorted(small.iterdir())[3:]:
        f.unlink()
    return root


def test_balanced_training_and_probe_record_their_choice(imbalanced, tmp_path):
    from geotune.engine.trainer import train

    args = stub_args(imbalanced, tmp_path, name="bal", epochs=1, train_fraction=0.75)
    cfg = make_config(**args, class_weights="balanced", sampler="balanced")
    result = train(cfg)
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["optimisation"]["class_weights"] == saved["optimisation"]["sampler"] == "balanced"
    header = (result.run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val_average_accuracy" in header  # what chose the best epoch
    probe = make_config(
        **{**args, "name": "bal-lp", "strategy": "linear-probe"}, class_weights="balanced"
    )
    assert train(probe).test_metrics["average_accuracy"] > 0
