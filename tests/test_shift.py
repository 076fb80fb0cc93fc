"""Domain shift: simulators, distances, cross-dataset evaluation with a class map, adaptation."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from conftest import copy_subset

from geotune.adapt import adapt_run, make_adapt_config
from geotune.config import make_config
from geotune.data import decode_folder, scan_folder
from geotune.engine import train
from geotune.errors import ConfigError, DataError
from geotune.evaluation import evaluate_run
from geotune.models import load_classifier, signed_power
from geotune.shift import SHIFT_KINDS, measure_shift, simulate_folder, simulate_shift
from geotune.transfer import is_batchnorm, layer_groups

SMALL = {"image_size": 64, "batch_size": 8, "train_fraction": 0.5, "val_fraction": 0.25}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two disjoint samples of the same 4 AID classes (12 chips each), interleaved by file
    number: AID numbers its chips by collection site, so consecutive runs differ in place."""
    root = tmp_path_factory.mktemp("pair")
    both = copy_subset(root / "both", 24)
    for c in sorted(both.iterdir()):
        for i, f in enumerate(sorted(c.iterdir())):
            dest = root / ("a" if i % 2 else "b") / c.name
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest / f.name)
    return root / "a", root / "b"


def _chips(n=4, size=32):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=g)


@pytest.mark.parametrize("kind", SHIFT_KINDS)
def test_simulators_grow_with_strength(kind):
    x = _chips()
    assert torch.equal(simulate_shift(x, kind, 0.0), x)
    change = [float((simulate_shift(x, kind, s) - x).abs().mean()) for s in (0.25, 0.5, 1.0)]
    assert 0 < change[0] < change[1] < change[2]
    # One simulated sensor per seed: reproducible.
    assert torch.equal(simulate_shift(x, kind, 0.5, seed=3), simulate_shift(x, kind, 0.5, seed=3))


def test_simulator_errors():
    with pytest.raises(ConfigError, match="unknown shift 'fog'"):
        simulate_shift(_chips(), "fog", 0.5)
    with pytest.raises(ConfigError, match="strength must be in"):
        simulate_shift(_chips(), "haze", 1.5)


@pytest.mark.slow
def test_distances_are_near_zero_without_shift_and_grow_with_it(pair, tmp_path):
    a, b = pair
    levels = (0.0, 0.4, 0.7, 1.0)
    results = {}
    for s in levels:
        shifted = simulate_folder(b, tmp_path / f"b{s}", "sensor", s)
        assert len(scan_folder(shifted)) == len(scan_folder(b))
        results[s], out = measure_shift(
            a,
            shifted,
            weights="offline",
            image_size=64,
            per_class=None,
            n_boot=50,
            output=tmp_path / "shifts",
            embedding=s == 1.0,
        )
    o = {s: r["overall"] for s, r in results.items()}
    for metric in ("mmd2", "frechet"):
        values = [o[s][metric]["value"] for s in levels]
        assert all(x < y for x, y in zip(values, values[1:], strict=False)), (metric, values)
    # The domain classifier's accuracy is a noisier count on 96 chips: non-decreasing within 5
    # points, and far above chance at full strength.
    acc = [o[s]["domain_accuracy"]["value"] for s in levels]
    assert all(y >= x - 0.05 for x, y in zip(acc, acc[1:], strict=False)) and acc[-1] > 0.75, acc
    # Two samples of one dataset: MMD^2 ~ 0 and the classifier at chance, within their CIs.
    assert o[0.0]["mmd2"]["ci_low"] <= 0 <= o[0.0]["mmd2"]["ci_high"]
    assert o[0.0]["domain_accuracy"]["ci_low"] <= 0.5 <= o[0.0]["domain_accuracy"]["ci_high"]
    assert o[0.0]["frechet"]["value"] < 0.4 * o[1.0]["frechet"]["value"]
    # Per shared class, with intervals; the plot and the report are written.
    with (out / "per_class.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["class"] for r in rows} == set(scan_folder(a).classes)
    assert all(float(r["mmd2_ci_low"]) <= float(r["mmd2_ci_high"]) for r in rows)
    assert (out / "embedding.png").stat().st_size > 10_000
    assert "Fréchet" in (out / "shift.md").read_text()


def test_simulate_only_the_test_part_of_a_split(pair, tmp_path):
    a, _ = pair
    run = train(make_config(data=a, output=tmp_path, name="lp", strategy="linear-probe", **SMALL))
    out = simulate_folder(
        a, tmp_path / "shifted", "haze", 0.5, split=run.run_dir / "split.csv", part="test"
    )
    rows = list(csv.DictReader((run.run_dir / "split.csv").open()))
    test = sorted(r["path"] for r in rows if r["split"] == "test")
    assert sorted(scan_folder(out).paths) == test
    assert json.loads((out / "shift.json").read_text())["part"] == "test"


@pytest.fixture(scope="module")
def source_run(pair, tmp_path_factory):
    """A linear probe on A: a real, reasonably accurate model (BatchNorm layers included)."""
    a, _ = pair
    config = make_config(
        data=a,
        output=tmp_path_factory.mktemp("runs"),
        name="src",
        strategy="linear-probe",
        seed=0,
        **SMALL,
    )
    return train(config).run_dir


def test_cross_dataset_evaluation_with_a_class_map(source_run, pair, tmp_path):
    _, b = pair
    other = tmp_path / "other"
    # Another dataset's names: two of its classes map onto Beach (many-to-one), one is unmapped.
    for theirs, ours in (("coast", "Beach"), ("sea", "Beach"), ("woods", "Forest")):
        shutil.copytree(b / ours, other / theirs)
    shutil.copytree(b / "River", other / "canal")
    cmap = tmp_path / "map.yaml"
    cmap.write_text(yaml.safe_dump({"coast": "Beach", "sea": "Beach", "woods": "Forest"}))
    with pytest.raises(DataError, match="--class-map"):
        evaluate_run(source_run, other)
    metrics, out = evaluate_run(source_run, other, class_map=cmap)
    assert metrics["n"] == 36 and metrics["excluded_classes"] == ["canal"]
    per_class = metrics["per_class"]
    assert per_class["Beach"]["n"] == 24 and per_class["Forest"]["n"] == 12
    assert per_class["River"]["n"] == 0
    own = json.loads((source_run / "test_metrics.json").read_text())["overall_accuracy"]
    assert metrics["drop_vs_in_domain"] == pytest.approx(own - metrics["overall_accuracy"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"coast": "Ocean"}))
    with pytest.raises(ConfigError, match="pairs onto Ocean, not a class of the model"):
        evaluate_run(source_run, other, class_map=bad)


@pytest.fixture(scope="module")
def target(pair, tmp_path_factory):
    """A simulated-sensor copy of B, and the same chips without class folders (unlabelled)."""
    _, b = pair
    root = tmp_path_factory.mktemp("target")
    shifted = simulate_folder(b, root / "sensor", "sensor", 0.8)
    flat = root / "flat"
    flat.mkdir()
    for f in sorted(shifted.rglob("*.jpg")):
        shutil.copy2(f, flat / f"{f.parent.name}_{f.name}")  # the name is no label to geotune
    return shifted, flat


def _adapt(run, flat, labelled, tmp_path, method, **kw):
    config = make_adapt_config(
        method=method, target=flat, eval_data=labelled, output=tmp_path, batch_size=8, **kw
    )
    return adapt_run(run, config)


def _state(path):
    model, _, _ = load_classifier(path / "checkpoints" / "best.pt")
    return model


def test_adabn_sets_target_statistics_and_records_its_data(source_run, target, tmp_path):
    labelled, flat = target
    # Every target chip counts here (no open-set exclusion), so the statistics are all of theirs.
    summary, out = _adapt(source_run, flat, labelled, tmp_path, "adabn", unknown_quantile=0)
    rec = json.loads((out / "adaptation.json").read_text())
    assert rec["target_labels_used"] is False and rec["target_images_used"] == 48
    listed = [r["path"] for r in csv.DictReader((out / "adaptation_images.csv").open())]
    assert sorted(listed) == sorted(p.name for p in flat.iterdir())
    # The first BN layer's statistics are now the target stem activations' statistics.
    before, after = _state(source_run), _state(out)
    _, prep, _ = load_classifier(out / "checkpoints" / "best.pt")
    pix = decode_folder(scan_folder(labelled), prep.size, prep.interpolation).pixels
    x = prep.normalize(torch.from_numpy(np.asarray(pix)))
    # A probe's backbone may pool several stages (models/stages.py): the network is inside.
    net_before, net_after = (getattr(m.backbone, "net", m.backbone) for m in (before, after))
    stem = net_after.conv_stem(x)
    torch.testing.assert_close(
        net_after.bn1.running_mean, stem.mean((0, 2, 3)), rtol=1e-3, atol=1e-4
    )
    assert not torch.allclose(net_before.bn1.running_mean, net_after.bn1.running_mean)
    for (n, p), q in zip(before.named_parameters(), after.parameters(), strict=True):
        assert torch.equal(p, q), n  # AdaBN changes statistics only
    # Re-evaluating the saved model on the target gives the recorded after-metrics.
    again, _ = evaluate_run(out, labelled)
    assert again["overall_accuracy"] == pytest.approx(rec["target_oa_after"])
    assert (out / "report.md").read_text().count("adabn") >= 1


@pytest.mark.slow
def test_tent_trains_only_batchnorm_affine_and_lowers_entropy(source_run, target, tmp_path):
    labelled, flat = target
    summary, out = _adapt(source_run, flat, labelled, tmp_path, "tent", epochs=3)
    assert summary["method_entropy_last"] < summary["method_entropy_first"]
    before, after = _state(source_run), _state(out)
    bn_params = {
        f"{name}.{p}"
        for name, m in before.named_modules()
        if is_batchnorm(m)
        for p in ("weight", "bias")
    }
    changed = {
        n
        for (n, p), q in zip(before.named_parameters(), after.parameters(), strict=True)
        if not torch.equal(p, q)
    }
    assert changed and changed <= bn_params


@pytest.mark.slow
def test_coral_aligns_target_features_in_the_head(source_run, target, tmp_path):
    labelled, flat = target
    _, out = _adapt(source_run, flat, labelled, tmp_path, "coral", unknown_quantile=0)
    before, after = _state(source_run), _state(out)
    for (n, p), q in zip(
        before.backbone.named_parameters(), after.backbone.parameters(), strict=True
    ):
        assert torch.equal(p, q), n
    assert not torch.equal(before.head[1].weight, after.head[1].weight)
    # The alignment maps the target feature mean onto the source feature mean, so the adapted
    # head at the target mean gives the original head's logits at the source mean.
    _, prep, _ = load_classifier(out / "checkpoints" / "best.pt")

    def mean_features(folder, keep=None):
        pix = np.asarray(decode_folder(folder, prep.size, prep.interpolation).pixels)
        pix = pix if keep is None else pix[keep]
        with torch.no_grad():
            f = before.backbone.eval()(prep.normalize(torch.from_numpy(pix))).double()
        return signed_power(f, before.feature_power).mean(0)

    split = [r["split"] for r in csv.DictReader((source_run / "split.csv").open())]
    a_folder = scan_folder(
        yaml.safe_load((source_run / "config.yaml").read_text())["dataset"]["data"]
    )
    mu_s = mean_features(a_folder, np.array(split) == "train")
    mu_t = mean_features(scan_folder(labelled))
    with torch.no_grad():
        w0, b0 = before.head[1].weight.double(), before.head[1].bias.double()
        w1, b1 = after.head[1].weight.double(), after.head[1].bias.double()
        torch.testing.assert_close(w1 @ mu_t + b1, w0 @ mu_s + b0, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_dann_trains_the_last_groups_only(source_run, target, tmp_path):
    labelled, flat = target
    summary, out = _adapt(source_run, flat, labelled, tmp_path, "dann", trainable_groups=1)
    assert summary["method_steps"] >= 2 and summary["method_trainable_groups"][-1] == "head"
    before, after = _state(source_run), _state(out)
    names = {id(p): n for n, p in before.named_parameters()}
    trained = {
        names[id(p)]
        for g in layer_groups(before)
        if g.name in summary["method_trainable_groups"]
        for p in g.params
    }
    moved = {
        n
        for (n, p), q in zip(before.named_parameters(), after.parameters(), strict=True)
        if not torch.equal(p, q)
    }
    assert moved <= trained  # frozen groups bitwise unchanged
    assert any(n.startswith("backbone.") for n in moved)  # the unfrozen backbone group trained


def test_adapt_errors(source_run, tmp_path):
    with pytest.raises(ConfigError, match="method"):
        make_adapt_config(method="mixup", target=tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no images"):
        adapt_run(source_run, make_adapt_config(method="adabn", target=empty))


@pytest.mark.slow
def test_cli_adapts_with_several_methods(source_run, target, tmp_path):
    import subprocess

    from conftest import GEOTUNE_CLI, REPO

    labelled, flat = target
    proc = subprocess.run(
        [*GEOTUNE_CLI, "adapt", str(source_run), "--target", str(flat), "--eval-data",
         str(labelled), "--method", "adabn,coral", "--output", str(tmp_path), "--batch-size", "8"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    table = (tmp_path / "src-adaptation.md").read_text()
    assert "| adabn |" in table and "| coral |" in table
    assert table.count("helped") + table.count("hurt") + table.count("no change") == 2


@pytest.mark.slow
def test_cli_simulates_and_measures(pair, tmp_path):
    import subprocess

    from conftest import GEOTUNE_CLI, REPO

    a, b = pair

    def cli(*args):
        return subprocess.run(
            [*GEOTUNE_CLI, *map(str, args)], capture_output=True, text=True, cwd=REPO
        )

    proc = cli("simulate", b, tmp_path / "hazy", "--shift", "haze", "--strength", "0.8")
    assert proc.returncode == 0, proc.stderr
    proc = cli(
        "shift", a, tmp_path / "hazy", "--weights", "offline", "--per-class", "0",
        "--bootstrap", "20", "--output", tmp_path / "out", "--name", "m",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "out" / "m" / "shift.json").read_text())
    assert f"mmd2: {result['overall']['mmd2']['value']:.4g}" in proc.stdout
    bad = cli("simulate", b, tmp_path / "x", "--shift", "fog")
    assert bad.returncode == 2 and "unknown shift 'fog'" in bad.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / ".x.partial").exists()
