"""Phased strategies, discriminative LRs, schedules, BN policies, the feature cache and resume."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import GEOTUNE_CLI, REPO, kill_after, train_args

from geotune.config import make_config
from geotune.data import decode_folder, scan_folder
from geotune.engine import features, train
from geotune.errors import ConfigError
from geotune.models import build_classifier
from geotune.transfer import (
    BatchNormPolicy,
    apply_trainable,
    build_optimizer,
    build_scheduler,
    layer_groups,
    lr_multipliers,
    plan_phases,
    reestimate_batchnorm,
)

FAST = {"image_size": 64, "batch_size": 8, "train_fraction": 0.5, "val_fraction": 0.25}


def _groups(backbone="resnet18", weights="random"):
    model, prep, _ = build_classifier(backbone, weights, 4)
    return model, prep, layer_groups(model)


@pytest.mark.parametrize(
    ("strategy", "extra", "expected"),
    [
        ("lp-ft", {"epochs": 5, "head_epochs": 2}, [("head", 2, 1), ("fine-tune", 3, 6)]),
        (
            "lp-ft",
            {"epochs": 4, "head_epochs": 1, "freeze_until": "layer2"},
            [("head", 1, 1), ("fine-tune", 3, 3)],
        ),
        (
            "gradual",
            {"epochs": 5, "unfreeze_every": 2},
            [("head", 2, 1), ("unfreeze-layer4", 2, 2), ("unfreeze-layer3", 1, 3)],
        ),
    ],
)
def test_phases_and_their_optimizers(tmp_path, strategy, extra, expected):
    model, _, groups = _groups()
    config = make_config(
        data=tmp_path, backbone="resnet18", weights="random", strategy=strategy, **extra
    )
    phases = plan_phases(config, groups)
    assert [(p.name, p.epochs, sum(p.trainable)) for p in phases] == expected
    for phase in phases:
        apply_trainable(groups, list(phase.trainable))
        opt = build_optimizer(config, groups, phase)
        in_opt = [p for g in opt.param_groups for p in g["params"]]
        # Exactly the trainable parameters, each once, in every phase.
        assert len(in_opt) == len({id(p) for p in in_opt})
        assert {id(p) for p in in_opt} == {id(p) for p in model.parameters() if p.requires_grad}


def test_gradual_unfreezes_from_the_top_until_everything_trains(tmp_path):
    _, _, groups = _groups()
    config = make_config(
        data=tmp_path, backbone="resnet18", weights="random", strategy="gradual", epochs=8
    )
    phases = plan_phases(config, groups)
    assert [p.name for p in phases] == [
        "head",
        "unfreeze-layer4",
        "unfreeze-layer3",
        "unfreeze-layer2",
        "unfreeze-layer1",
        "unfreeze-stem",
    ]
    assert phases[-1].epochs == 3 and all(phases[-1].trainable)


def test_discriminative_learning_rates(tmp_path):
    _, _, groups = _groups()
    config = make_config(
        data=tmp_path,
        backbone="resnet18",
        strategy="full",
        backbone_lr_scale=0.5,
        layer_decay=0.5,
        group_lr={"stem": 0.1},
    )
    factors = dict(zip([g.name for g in groups], lr_multipliers(config, groups), strict=True))
    assert factors == pytest.approx(
        {
            "stem": 0.5 * 0.5**4 * 0.1,
            "layer1": 0.5 * 0.5**3,
            "layer2": 0.5 * 0.5**2,
            "layer3": 0.5 * 0.5,
            "layer4": 0.5,
            "head": 1.0,
        }
    )
    cli_form = make_config(data=tmp_path, group_lr="stem=0.1,layer4=2")
    assert cli_form.group_lr == {"stem": 0.1, "layer4": 2.0}
    with pytest.raises(ConfigError, match="group_lr names unknown layer group"):
        lr_multipliers(make_config(data=tmp_path, group_lr={"layer9": 2}), groups)


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_warmup_then_decay_keeps_group_ratios(tmp_path, schedule):
    model, _, groups = _groups()
    config = make_config(
        data=tmp_path,
        strategy="full",
        lr=1e-2,
        backbone_lr_scale=0.1,
        warmup_epochs=2,
        schedule=schedule,
        step_epochs=1,
        step_gamma=0.5,
        epochs=4,
    )
    (phase,) = plan_phases(config, groups)
    opt = build_optimizer(config, groups, phase)
    steps_per_epoch, epochs = 5, 4
    sched = build_scheduler(opt, config, steps_per_epoch, epochs)
    warmup = 2 * steps_per_epoch
    lrs = []
    for _ in range(steps_per_epoch * epochs):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    lrs = np.array(lrs)
    head = [i for i, g in enumerate(opt.param_groups) if g["group"] == "head"][0]
    stem = [i for i, g in enumerate(opt.param_groups) if g["group"] == "stem"][0]
    # Linear warmup from lr/(w+1) to lr.
    expected = [1e-2 * (1 + k * (warmup) / warmup) / (warmup + 1) for k in range(warmup)]
    np.testing.assert_allclose(lrs[:warmup, head], expected, rtol=1e-6)
    assert lrs[warmup, head] == pytest.approx(1e-2)
    after = lrs[warmup:, head]
    if schedule == "cosine":
        t = np.arange(len(after))
        np.testing.assert_allclose(
            after, 1e-2 * (1 + np.cos(math.pi * t / len(after))) / 2, rtol=1e-6, atol=1e-12
        )
    else:
        assert after[steps_per_epoch] == pytest.approx(0.5e-2) and after[-1] < after[0]
    # The backbone stays at exactly 0.1 x the head throughout.
    np.testing.assert_allclose(lrs[:, stem], 0.1 * lrs[:, head], rtol=1e-9)


@pytest.mark.slow
def test_frozen_policy_keeps_statistics_but_trains_affine(aid_small):
    model, prep, groups = _groups("tf_efficientnet_lite0", "offline")
    images = decode_folder(scan_folder(aid_small), 64)
    apply_trainable(groups, [True] * len(groups))
    bn = BatchNormPolicy(model, groups, [True] * len(groups), "frozen")
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    gamma = model.backbone.bn1.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = prep.normalize(torch.from_numpy(np.asarray(images.pixels[:8]))).float()
    for _ in range(2):
        bn.train_mode(model)
        torch.nn.functional.cross_entropy(
            model(x), torch.from_numpy(images.folder.labels[:8])
        ).backward()
        opt.step()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in buffers.items())
    assert not torch.equal(gamma, model.backbone.bn1.weight)


@pytest.mark.slow
def test_adabn_re_estimates_statistics_from_the_data(aid_small):
    model, prep, _ = _groups("tf_efficientnet_lite0", "offline")
    images = decode_folder(scan_folder(aid_small), 64)
    x = prep.normalize(torch.from_numpy(np.asarray(images.pixels[:48]))).float()
    before = model.backbone.bn1.running_mean.clone()
    n = reestimate_batchnorm(model, x.split(16))
    assert n == 48
    with torch.no_grad():
        stem = model.backbone.conv_stem(x)
    # Equal batches: the cumulative average of batch means is the mean over all images.
    torch.testing.assert_close(
        model.backbone.bn1.running_mean, stem.mean((0, 2, 3)), rtol=1e-4, atol=1e-5
    )
    assert not torch.allclose(before, model.backbone.bn1.running_mean)
    assert model.backbone.bn1.momentum == 0.1  # restored for later use


@pytest.mark.slow
def test_linear_probe_reuses_cached_features(aid_small, tmp_path, monkeypatch):
    calls = []
    real = features.run_backbone

    def spy(*args, **kwargs):
        calls.append(args[3] if len(args) > 3 else kwargs.get("batch_size"))
        return real(*args, **kwargs)

    monkeypatch.setattr(features, "run_backbone", spy)
    monkeypatch.setenv("GEOTUNE_CACHE", str(tmp_path / "cache"))
    base = dict(data=aid_small, output=tmp_path, strategy="linear-probe", **FAST)
    first = train(make_config(name="a", **base))
    second = train(make_config(name="b", seed=3, **base))  # another split, same images
    assert (
        len(calls) == 1
        and second.summary["features_from_cache"]
        and not first.summary["features_from_cache"]
    )
    assert first.test_metrics["overall_accuracy"] > 0.6
    # kNN reads the probe's default stages, so it reuses the probe's cache.
    knn = train(make_config(name="c", **{**base, "strategy": "knn"}))
    assert len(calls) == 1 and knn.summary["features_from_cache"]
    assert knn.summary["probe_stages"] == 3
    # Other preprocessing (input size) means other features: the cache is not used.
    train(make_config(name="d", **{**base, "image_size": 72}))
    assert len(calls) == 2


@pytest.mark.parametrize("power", [1.0, 0.5])
def test_linear_probe_checkpoint_is_an_ordinary_classifier(aid_small, tmp_path, power):
    from geotune.evaluation import evaluate_run

    result = train(
        make_config(
            data=aid_small,
            output=tmp_path,
            name="lp",
            strategy="linear-probe",
            probe_power=[power],
            **FAST,
        )
    )
    assert result.summary["feature_power"] == power
    # The scaler (and the power normalisation) live in the checkpoint: re-evaluating it from
    # the images gives the probe's own predictions.
    metrics, _ = evaluate_run(result.run_dir)
    assert metrics["confusion_matrix"] == result.test_metrics["confusion_matrix"]


def test_linear_probe_chooses_power_and_c_on_validation(aid_small, tmp_path):
    result = train(
        make_config(
            data=aid_small,
            output=tmp_path,
            name="lp",
            strategy="linear-probe",
            probe_power=[1.0, 0.5],
            probe_c=[0.01, 1.0],
            probe_stages=[1],  # the final features only: the grid's keys carry no stage count
            **FAST,
        )
    )
    scores = result.summary["val_accuracy_by_power_and_C"]
    assert set(scores) == {"power=1,C=0.01", "power=1,C=1", "power=0.5,C=0.01", "power=0.5,C=1"}
    best = max(scores.values())
    chosen = f"power={result.summary['feature_power']:g},C={result.summary['C']:g}"
    assert scores[chosen] == best
    assert next(k for k, v in scores.items() if v == best) == chosen  # ties: the first listed


def _cli(*args):
    return [*GEOTUNE_CLI, *map(str, args)]


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(aid_small, tmp_path):
    args = train_args(
        aid_small, tmp_path, strategy="lp-ft", head_epochs=1, epochs=8, deterministic=True
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}
    subprocess.run(
        _cli(*args, "--name", "whole"), check=True, capture_output=True, env=env, cwd=REPO
    )
    kill_after(
        [*args, "--name", "killed"], "epoch 2/8", delay=0.2
    )  # kill -9 early in the fine-tuning phase (an epoch takes well under a second here)
    assert (
        not (tmp_path / "killed").exists()
        and (tmp_path / ".killed.partial" / "checkpoints" / "last.pt").exists()
    )
    done = subprocess.run(
        _cli("train", "--resume", tmp_path / "killed"),
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    whole = json.loads((tmp_path / "whole" / "test_metrics.json").read_text())
    resumed = json.loads((tmp_path / "killed" / "test_metrics.json").read_text())
    assert resumed["confusion_matrix"] == whole["confusion_matrix"]
    assert resumed["overall_accuracy"] == whole["overall_accuracy"]

    def rows(run):
        return [r.split(",")[:6] for r in (tmp_path / run / "metrics.csv").read_text().splitlines()]

    assert rows("killed") == rows("whole")


def test_resume_refuses_finished_or_unknown_runs(aid_small, tmp_path):
    from geotune.engine import resume

    with pytest.raises(ConfigError, match="no unfinished run"):
        resume(tmp_path / "nothing")


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(aid_small, tmp_path):
    # gloo on CPU: the same code path as multi-GPU DDP. Frozen BN statistics make the two runs
    # mathematically identical (same global batches, augmentations and averaged gradients).
    args = train_args(
        aid_small, tmp_path, strategy="full", bn_policy="frozen", epochs=2, device="cpu"
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for devices in (1, 2):
        proc = subprocess.run(
            _cli(*args, "--devices", devices, "--name", f"p{devices}"),
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
    one = json.loads((tmp_path / "p1" / "test_metrics.json").read_text())
    two = json.loads((tmp_path / "p2" / "test_metrics.json").read_text())
    assert abs(one["overall_accuracy"] - two["overall_accuracy"]) <= 0.005
    val = [
        [r.split(",")[6] for r in (tmp_path / run / "metrics.csv").read_text().splitlines()[1:]]
        for run in ("p1", "p2")
    ]
    assert val[0] == val[1]


@pytest.mark.slow
def test_gradient_accumulation_equals_a_larger_batch(aid_small, tmp_path):
    # No augmentation and frozen BN: 2 accumulated batches of 4 are one batch of 8, step for step.
    base = dict(
        data=aid_small,
        output=tmp_path,
        strategy="full",
        bn_policy="frozen",
        epochs=2,
        flips=False,
        rot90=False,
        crop_scale=(1.0, 1.0),
        image_size=64,
        train_fraction=0.5,
        val_fraction=0.25,
    )
    big = train(make_config(name="b8", batch_size=8, **base))
    acc = train(make_config(name="b4x2", batch_size=4, accumulate=2, **base))
    w8 = torch.load(big.run_dir / "checkpoints" / "best.pt", weights_only=True)["state_dict"]
    w4 = torch.load(acc.run_dir / "checkpoints" / "best.pt", weights_only=True)["state_dict"]
    # The summation order differs (two half-batch gradients added vs one batch), so float32
    # rounding differs a little; the tolerance leaves room for it at the default backbone LR.
    for k in w8:
        torch.testing.assert_close(w4[k], w8[k], rtol=1e-4, atol=5e-5)
    assert [r["val_accuracy"] for r in big.history] == [r["val_accuracy"] for r in acc.history]


@pytest.mark.slow
def test_early_stopping(aid_small, tmp_path):
    # A learning rate too small to change any prediction: validation accuracy never improves.
    result = train(
        make_config(
            data=aid_small,
            output=tmp_path,
            strategy="feature-extraction",
            epochs=6,
            lr=1e-12,
            patience=2,
            **FAST,
        )
    )
    assert result.summary["stopped_early"] and result.summary["epochs_run"] == 3


def test_knn_run_cannot_be_evaluated_elsewhere(aid_small, tmp_path):
    from geotune.evaluation import evaluate_run

    result = train(make_config(data=aid_small, output=tmp_path, strategy="knn", **FAST))
    with pytest.raises(ConfigError, match="keeps no classifier checkpoint"):
        evaluate_run(result.run_dir)


@pytest.mark.slow
def test_peak_memory_is_counted_per_run(aid_small, tmp_path):
    # A compare grid runs many cells in one process: a large, freed allocation before a run must
    # not show up as that run's peak. Measured in a fresh process, as a grid starts one; inside
    # the long-lived test process earlier tests leave a peak the kernel reset did not clear.
    script = f"""
import numpy as np, torch
from geotune.config import make_config
from geotune.engine.trainer import train
from geotune.runs import peak_memory_mb, reset_peak_memory
reset_peak_memory(torch.device("cpu"))
block = np.ones(2**30 // 8)  # 1 GiB, touched
with_block = peak_memory_mb(torch.device("cpu"))
del block
config = make_config(data={str(aid_small)!r}, output={str(tmp_path)!r}, strategy="linear-probe",
                     image_size=64, batch_size=8, train_fraction=0.5)
print(with_block, train(config).summary["peak_memory_mb"])
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO
    )
    with_block, run_peak = map(float, out.stdout.split()[-2:])
    assert run_peak < with_block - 512
