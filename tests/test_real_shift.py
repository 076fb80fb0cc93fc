"""Adaptation for real shifts: class maps onto several classes, open-set chips, resolution
matching, SHOT self-training, and the label-free harm signals that choose among methods."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import AID_TINY, stub_args

from geotune.adapt.choose import adapt_methods, paired_interval
from geotune.adapt.config import make_adapt_config
from geotune.adapt.signals import choose, harm_signals, summarize
from geotune.config import make_config
from geotune.evaluation.evaluate import evaluate_run
from geotune.models.classifier import load_classifier, zoom_chips


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from geotune.engine.trainer import train

    out = tmp_path_factory.mktemp("src")
    return train(make_config(**stub_args(AID_TINY, out, name="src", epochs=2))).run_dir


@pytest.fixture(scope="module")
def water(tmp_path_factory):
    """A target dataset whose one class 'Water' covers two of the model's (Beach, River)."""
    root = tmp_path_factory.mktemp("water")
    for c in ("Beach", "River"):
        for f in sorted((AID_TINY / c).iterdir()):
            (root / "Water").mkdir(exist_ok=True)
            shutil.copy2(f, root / "Water" / f"{c}-{f.name}")
    shutil.copytree(AID_TINY / "Forest", root / "Woods")
    return root


def test_a_target_class_may_pair_with_several_model_classes(source, water, tmp_path):
    cmap = tmp_path / "map.yaml"
    cmap.write_text("Water: [Beach, River]\nWoods: Forest\n")
    metrics, _ = evaluate_run(source, water, class_map=cmap)
    model, prep, ckpt = load_classifier(source / "checkpoints" / "best.pt")
    from geotune.data.decode import decode_folder
    from geotune.data.folder import scan_folder
    from geotune.engine.predict import predict

    images = decode_folder(scan_folder(water), prep.size, prep.interpolation)
    probs, _ = predict(model, prep, images.pixels, np.arange(len(images.pixels)), 64, "cpu")
    names = np.array(ckpt["classes"])[probs.argmax(1).numpy()]
    truth = np.array(images.folder.classes)[images.folder.labels]
    right = np.where(truth == "Water", np.isin(names, ["Beach", "River"]), names == "Forest")
    assert metrics["overall_accuracy"] == pytest.approx(right.mean())
    assert metrics["class_pairs"] == {"Water": ["Beach", "River"], "Woods": ["Forest"]}


def test_zoom_keeps_the_chip_size_and_scales_the_scene():
    x = torch.zeros(1, 1, 64, 64)
    x[..., 24:40, 24:40] = 1  # a 16 px object in the centre
    bigger, smaller = zoom_chips(x, 2.0), zoom_chips(x, 0.5)
    assert bigger.shape == smaller.shape == x.shape
    assert (bigger > 0.5).sum() == pytest.approx(4 * 256, rel=0.1)
    assert (smaller[..., 16:48, 16:48] > 0.5).sum() == pytest.approx(256 / 4, rel=0.3)


def test_harm_signals_flag_collapse_and_spare_an_unchanged_model():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5) * 0.3, size=200)
    rot = p[rng.permutation(200)] * 0.1 + p * 0.9  # mostly consistent under the second view
    same = harm_signals([p, rot], [p, rot])
    assert same["warnings"] == [] and same["agreement"] == 1.0
    collapsed = np.tile(np.eye(5)[0] * 0.9 + 0.02, (200, 1))
    bad = harm_signals([p, rot], [collapsed, collapsed])
    assert any("collapse" in w or "classes predicted" in w for w in bad["warnings"])
    chosen, why = choose({"none": same, "bad": bad})
    assert chosen == "none" and "flagged: bad" in why
    assert summarize([p, p])["view_consistency"] == 1.0


def test_paired_interval_contains_the_change():
    before = [0, 1] * 50
    after = [1, 1] * 50
    lo, hi = paired_interval(before, after)
    assert lo <= 0.5 <= hi and lo > 0


def test_rescale_from_ground_sampling_distances(source, tmp_path):
    # Source chips: 48 px stored; target: the same chips, said to be at twice the GSD.
    cfg = make_adapt_config(
        method="rescale", target=AID_TINY, output=tmp_path, batch_size=8, source_gsd=1.0,
        target_gsd=2.0, unknown_quantile=0,
    )  # fmt: skip
    summaries, choice, table = adapt_methods(source, [cfg])
    s = summaries[0]
    assert s["method_zoom"] == pytest.approx(2.0)
    model, _, _ = load_classifier(tmp_path / "src-rescale" / "checkpoints" / "best.pt")
    assert model.input_zoom == pytest.approx(2.0)
    assert choice["unsupervised"] in ("none", "rescale") and "Kept without target labels" in (
        table.read_text()
    )


def test_rescale_search_and_shot_and_open_set(source, tmp_path):
    rescale = make_adapt_config(
        method="rescale", target=AID_TINY, eval_data=AID_TINY, output=tmp_path, batch_size=8,
        zooms="0.71,1,1.41", unknown_quantile=0.5,
    )  # fmt: skip
    shot = rescale.model_copy(update={"method": "shot", "epochs": 1})
    summaries, choice, table = adapt_methods(source, [rescale, shot])
    by = {s["method"]: s for s in summaries}
    assert by["rescale"]["method_zoom"] in (0.71, 1.0, 1.41)
    assert set(by["rescale"]["method_mean_confidence_by_zoom"]) == {"0.71", "1.0", "1.41"}
    # Open set: chips below the median source confidence were left out of the adaptation.
    assert 0 < by["shot"]["open_set"]["unknown_chips_left_out"] < 32
    assert by["shot"]["method_steps"] >= 1
    before, after = (
        load_classifier(p / "checkpoints" / "best.pt")[0] for p in (source, tmp_path / "src-shot")
    )
    assert all(
        torch.equal(a, b)
        for a, b in zip(before.head.parameters(), after.head.parameters(), strict=True)
    )
    assert not all(
        torch.equal(a, b)
        for a, b in zip(before.backbone.parameters(), after.backbone.parameters(), strict=True)
    )
    assert {"unsupervised", "best_by_labels", "matches"} <= set(choice)
    saved = json.loads(table.with_suffix(".json").read_text())
    assert saved["choice"]["unsupervised"] == choice["unsupervised"]
    assert all(s["gain_ci"][0] <= s["gain"] <= s["gain_ci"][1] for s in summaries)


def test_few_shot_draws_are_disjoint_and_stratified():
    from geotune.adapt.fewshot import draw

    labels = np.repeat(np.arange(3), 10)
    tr, te = draw(labels, 2, seed=0)
    assert len(tr) == 6 and np.bincount(labels[tr]).tolist() == [2, 2, 2]
    assert not set(tr) & set(te) and len(tr) + len(te) == 30
    assert (draw(labels, 2, seed=0)[0] == tr).all() and (draw(labels, 2, seed=1)[0] != tr).any()


def test_few_shot_rows_for_every_budget_and_draw(source, water, tmp_path):
    cmap = tmp_path / "map.yaml"
    cmap.write_text("Water: [Beach, River]\nWoods: Forest\n")
    cfg = make_adapt_config(
        method="adabn", target=water, class_map=cmap, output=tmp_path, batch_size=8,
        unknown_quantile=0, target_labels_per_class="1,3", few_shot_seeds=2,
    )  # fmt: skip
    _, _, table = adapt_methods(source, [cfg])
    few = json.loads(table.with_suffix(".json").read_text())["few_shot"]
    rows = few["rows"]
    assert len(rows) == 2 * 2 * 3
    assert {r["method"] for r in rows} == {"none", "source + k", "pretrained + k"}
    assert all(r["n_test"] == 24 - 2 * r["k"] for r in rows)  # 16 Water + 8 Woods chips
    assert all(0 <= r["heldout_oa"] <= 1 for r in rows)
    assert "| 3 | source + k |" in table.read_text()


def test_label_set_switches_off_classes_the_target_cannot_hold(source, water, tmp_path):
    cmap = tmp_path / "map.yaml"
    cmap.write_text("Water: [Beach, River]\nWoods: Forest\n")
    base = dict(target=water, class_map=cmap, output=tmp_path, batch_size=8, unknown_quantile=0)
    configs = [make_adapt_config(method=m, **base) for m in ("label-set", "label-set+adabn")]
    summaries, _, _ = adapt_methods(source, configs)
    only, combined = summaries
    assert only["method_kept_classes"] == ["Beach", "Forest", "River"]
    assert combined["method_label-set_masked_classes"] == 1
    assert combined["method_adabn_bn_layers"] > 0
    # Predictions of the masked class were wrong by construction; nothing right becomes wrong.
    assert only["target_oa_after"] >= only["target_oa_before"]
    model, prep, ckpt = load_classifier(tmp_path / "src-label-set" / "checkpoints" / "best.pt")
    from geotune.data.decode import decode_folder
    from geotune.data.folder import scan_folder
    from geotune.engine.predict import predict

    images = decode_folder(scan_folder(water), prep.size, prep.interpolation)
    probs, _ = predict(model, prep, images.pixels, np.arange(len(images.pixels)), 64, "cpu")
    masked = ckpt["classes"].index(
        next(c for c in ckpt["classes"] if c not in only["method_kept_classes"])
    )
    assert (probs.argmax(1) != masked).all() and probs[:, masked].max() < 1e-6


def test_label_set_needs_a_class_map_and_methods_compose_by_name(source, tmp_path):
    from geotune.adapt.run import adapt_run
    from geotune.errors import ConfigError

    cfg = make_adapt_config(method="label-set+shot", target=AID_TINY, output=tmp_path)
    assert cfg.steps == ["label-set", "shot"] and cfg.resolved_lr() == 1e-3
    with pytest.raises(ConfigError, match="label-set needs --class-map"):
        adapt_run(source, cfg)
    assert not any(tmp_path.iterdir())
    for bad in ("label-set+nope", "adabn+adabn"):
        with pytest.raises(ConfigError, match="nope|twice"):
            make_adapt_config(method=bad, target=AID_TINY)
