"""Using a trained model: `geotune predict` (chips, scenes), calibration, `geotune export`.

Fast tier: the committed tiny AID chips and timm's stub network (real images, a real optimizer
step, random weights). Slow tier: EfficientNet-Lite0's offline ImageNet weights on AID chips.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import CLASSES, copy_subset, stub_args
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import Affine, from_origin

from geotune.cli.main import main
from geotune.config import make_config
from geotune.engine.trainer import train
from geotune.errors import ConfigError, DataError, ExportError
from geotune.inference.chips import predict_chips
from geotune.inference.config import PredictOptions
from geotune.inference.export import export_model
from geotune.inference.model import load_predictor
from geotune.inference.scene import predict_scene
from geotune.metrics.calibration import fit_temperature, nll

CHIP = 48  # aid_tiny chips are 48 x 48 px
ORIGIN = (500_000.0, 4_200_000.0)  # UTM metres
GSD = 2.0


# ---------------------------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stub_run(aid_tiny, tmp_path_factory) -> Path:
    """One fast trained run with a validation split (so it gets a temperature)."""
    out = tmp_path_factory.mktemp("runs")
    return train(make_config(**stub_args(aid_tiny, out, val_fraction=0.25, name="stub"))).run_dir


def chip_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.jpg"))


def write_mosaic(chips: list[Path], path: Path, cols: int, crs="EPSG:32633", **extra) -> Affine:
    """A GeoTIFF whose tiles are ``chips`` in row-major order (lossless: identical pixels)."""
    rows = -(-len(chips) // cols)
    arr = np.zeros((3, rows * CHIP, cols * CHIP), dtype=np.uint8)
    for k, f in enumerate(chips):
        r, c = divmod(k, cols)
        pixels = np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1)
        arr[:, r * CHIP : (r + 1) * CHIP, c * CHIP : (c + 1) * CHIP] = pixels
    transform = from_origin(*ORIGIN, GSD, GSD)
    profile = {
        "driver": "GTiff", "width": arr.shape[2], "height": arr.shape[1], "count": 3,
        "dtype": "uint8", "crs": CRS.from_string(crs) if crs else None,
        "transform": transform, **extra,
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
    return transform


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def cli(args: list) -> int:
    """Run the CLI in this process; its exit code."""
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


# ---------------------------------------------------------------------------------------------
# chips
# ---------------------------------------------------------------------------------------------
def test_predict_chips_writes_ranked_csv_with_accuracy(stub_run, aid_tiny, tmp_path):
    predictor = load_predictor(stub_run, "cpu")
    out = tmp_path / "out" / "predictions.csv"
    r = predict_chips(predictor, [aid_tiny], out, top_k=3, options=PredictOptions(batch_size=5))
    rows = read_csv(out)
    assert r.n_predicted == len(rows) == 32 and r.n_skipped == 0 and r.skipped_file is None
    assert list(rows[0]) == [
        "path", "predicted_class", "probability", "class_1", "probability_1", "class_2",
        "probability_2", "class_3", "probability_3", "true_class",
    ]  # fmt: skip
    for row in rows:
        assert row["predicted_class"] == row["class_1"]
        probs = [float(row[f"probability_{k}"]) for k in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1
        assert row["true_class"] == Path(row["path"]).parent.name
    acc = np.mean([r_["predicted_class"] == r_["true_class"] for r_ in rows])
    assert r.accuracy == pytest.approx(acc) and r.n_labelled == 32
    assert not list(out.parent.glob(".*partial")), "temporary files left behind"


def test_unreadable_files_are_skipped_and_listed(stub_run, tiny_copy, tmp_path):
    (tiny_copy / "Beach" / "broken.jpg").write_bytes(b"not a jpeg at all")
    loose = tmp_path / "loose"
    loose.mkdir()
    good = shutil.copy(chip_files(tiny_copy)[0], loose / "a.jpg")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# chips\n{good}\nmissing.png\n\n")
    out = tmp_path / "p.csv"
    predictor = load_predictor(stub_run, "cpu")
    r = predict_chips(predictor, [tiny_copy, listing, good], out)
    skipped = (tmp_path / "p.skipped.txt").read_text().splitlines()
    assert r.n_predicted == 34 and r.n_skipped == 2 == len(skipped)
    reasons = dict(line.split("\t") for line in skipped)
    assert "not a readable image" in reasons[str(tiny_copy / "Beach" / "broken.jpg")]
    assert reasons[str(tmp_path / "missing.png")].startswith("not found")
    rows = read_csv(out)
    # Chips outside class folders have no true class; accuracy counts only labelled chips.
    assert sum(row["true_class"] == "" for row in rows) == 2 and r.n_labelled == 32
    # Prediction again without the broken file replaces the stale skipped list.
    (tiny_copy / "Beach" / "broken.jpg").unlink()
    predict_chips(predictor, [tiny_copy], out, overwrite=True)
    assert not (tmp_path / "p.skipped.txt").exists()


def test_chip_prediction_streams_without_the_decode_cache(stub_run, aid_tiny, tmp_path):
    import geotune.data.decode as decode
    import geotune.inference.chips as chips_mod

    cache = Path(os.environ["GEOTUNE_CACHE"]) / "images"
    before = set(cache.glob("*")) if cache.is_dir() else set()
    in_flight, peak = [0], [0]
    real = chips_mod.decode_chip

    def counting(*args):
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        return real(*args)

    def consumed(batches):
        for idx, decoded in batches:
            in_flight[0] -= len(idx)
            yield idx, decoded

    real_batches = chips_mod.decoded_batches
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(decode, "decode_folder", lambda *a, **k: pytest.fail("whole-folder decode"))
        mp.setattr(chips_mod, "decode_chip", counting)
        mp.setattr(chips_mod, "decoded_batches", lambda *a: consumed(real_batches(*a)))
        predict_chips(
            load_predictor(stub_run, "cpu"),
            [aid_tiny],
            tmp_path / "p.csv",
            options=PredictOptions(batch_size=4),
        )
    assert peak[0] <= 3 * 4, f"{peak[0]} chips decoded at once (batch 4, two batches ahead)"
    after = set(cache.glob("*")) if cache.is_dir() else set()
    assert after == before, "predict wrote to the decode cache"


def test_uncalibrated_probabilities_differ_only_by_temperature(stub_run, aid_tiny, tmp_path):
    predictor = load_predictor(stub_run, "cpu")
    predictor.temperature = 2.5  # the stub's own T is ~1: make the difference visible
    cal = predict_chips(predictor, [aid_tiny], tmp_path / "a.csv")
    raw = predict_chips(
        predictor, [aid_tiny], tmp_path / "b.csv", options=PredictOptions(calibrated=False)
    )
    a, b = read_csv(cal.output), read_csv(raw.output)
    assert [r["predicted_class"] for r in a] == [r["predicted_class"] for r in b]
    assert all(float(x["probability"]) < float(y["probability"]) for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------------------------------------
# scenes
# ---------------------------------------------------------------------------------------------
def test_scene_map_agrees_with_chip_predictions(stub_run, aid_tiny, tmp_path):
    chips = chip_files(aid_tiny)[::2]  # 16 chips, all four classes
    scene = tmp_path / "scene.tif"
    transform = write_mosaic(chips, scene, cols=4)
    predictor = load_predictor(stub_run, "cpu")
    r = predict_scene(predictor, scene, tmp_path / "map.tif", tile=CHIP, stride=CHIP)
    per_chip = predict_chips(predictor, chips, tmp_path / "chips.csv")
    expected = [
        predictor.classes.index(row["predicted_class"]) for row in read_csv(per_chip.output)
    ]
    with rasterio.open(r.map_path) as m, rasterio.open(scene) as s:
        assert m.crs == s.crs and m.transform == transform @ Affine.scale(CHIP)
        assert (m.width, m.height) == (4, 4) and m.profile["tiled"]
        assert m.profile["compress"] == "deflate"
        assert json.loads(m.tags()["CLASS_NAMES"]) == predictor.classes
        cells = m.read(1)
    assert cells.ravel().tolist() == expected
    truth = [predictor.classes.index(f.parent.name) for f in chips]
    map_acc = float(np.mean(cells.ravel() == truth))
    chip_acc = float(np.mean(np.array(expected) == truth))
    assert abs(map_acc - chip_acc) <= 0.02
    info = json.loads(r.json_path.read_text())
    assert info["classes"] == list(CLASSES) and info["georeferenced"]
    total = sum(a["pixels"] for a in info["class_areas"])
    assert total == 16 * CHIP * CHIP
    km2 = sum(a["km2"] for a in info["class_areas"])
    assert km2 == pytest.approx(total * GSD * GSD / 1e6)
    assert r.preview_path.stat().st_size > 1000


def test_overlapping_windows_full_res_probabilities_and_nodata(stub_run, aid_tiny, tmp_path):
    chips = chip_files(aid_tiny)[:12]
    scene = tmp_path / "scene.tif"
    write_mosaic(chips, scene, cols=4, nodata=0)
    with rasterio.open(scene, "r+") as ds:  # the first chip and the last row become nodata
        ds.write(np.zeros((3, CHIP, CHIP), np.uint8), window=((0, CHIP), (0, CHIP)))
        ds.write(
            np.zeros((3, CHIP, 4 * CHIP), np.uint8), window=((2 * CHIP, 3 * CHIP), (0, 4 * CHIP))
        )
    out = tmp_path / "full" / "map.tif"
    r = predict_scene(
        load_predictor(stub_run, "cpu"), scene, out, tile=CHIP, stride=CHIP // 2,
        blend="centre", full_res=True, probabilities=True, options=PredictOptions(batch_size=3),
    )  # fmt: skip
    with (
        rasterio.open(scene) as s,
        rasterio.open(out) as m,
        rasterio.open(r.probabilities_path) as p,
    ):
        assert (m.width, m.height, m.transform, m.crs) == (s.width, s.height, s.transform, s.crs)
        cls, probs = m.read(1), p.read()
    assert (cls[:CHIP, :CHIP] == 255).all(), "nodata input must stay nodata"
    assert (cls[2 * CHIP :] == 255).all(), "a row no window reaches is nodata"
    valid = cls != 255
    assert valid.mean() == pytest.approx(7 / 12, abs=0.02)
    assert np.allclose(probs[:, valid].sum(0), 1, atol=1e-4)
    assert (probs[:, ~valid] == -1).all(), "probabilities are nodata where the map is"
    assert (probs.argmax(0)[valid] == cls[valid]).all()
    assert r.info["windows_skipped_nodata"] >= 1


def test_scene_without_crs_is_allowed_with_a_warning(stub_run, aid_tiny, tmp_path):
    scene = tmp_path / "plain.tif"
    write_mosaic(chip_files(aid_tiny)[:4], scene, cols=2, crs=None)
    r = predict_scene(load_predictor(stub_run, "cpu"), scene, tmp_path / "m.tif", tile=CHIP)
    assert not r.info["georeferenced"] and "not georeferenced" in r.info["warnings"][0]
    assert all(a["km2"] is None for a in r.info["class_areas"])


# ---------------------------------------------------------------------------------------------
# bad input: one line, exit code 2, nothing half-written
# ---------------------------------------------------------------------------------------------
def bad_cases(run: Path, aid_tiny: Path, tmp: Path) -> list[tuple[str, list, str]]:
    no_ckpt = tmp / "no-ckpt"
    shutil.copytree(run, no_ckpt)
    (no_ckpt / "checkpoints" / "best.pt").unlink()
    shutil.copytree(run, tmp / ".killed.partial")  # a killed run: only its staging folder
    four = tmp / "four.tif"
    with rasterio.open(four, "w", driver="GTiff", width=96, height=96, count=4, dtype="uint8") as d:
        d.write(np.zeros((4, 96, 96), np.uint8))
    scene = tmp / "scene.tif"
    write_mosaic(chip_files(aid_tiny)[:4], scene, cols=2)
    (tmp / "exists.csv").write_text("keep me\n")
    (tmp / "a-file").write_text("")
    chips = [aid_tiny]
    return [
        ("no checkpoint", [no_ckpt, *chips], "no classifier checkpoint"),
        ("killed run", [tmp / "killed", *chips], "did not finish"),
        ("band count", [run, four, "--scene"], "has 4 bands"),
        ("tile too large", [run, scene, "--scene", "--tile", 200], "larger than the scene"),
        ("stride 0", [run, scene, "--scene", "--stride", 0], "stride"),
        ("output exists", [run, *chips, "--output", tmp / "exists.csv"], "--overwrite"),
        ("unwritable", [run, *chips, "--output", tmp / "a-file" / "p.csv"], "cannot create"),
    ]


def test_bad_inputs_are_one_line_errors_with_nothing_written(stub_run, aid_tiny, tmp_path, capsys):
    cases = bad_cases(stub_run, aid_tiny, tmp_path)
    for name, args, message in cases:
        out = tmp_path / f"{name.replace(' ', '-')}.out"
        if "--output" not in args:
            args = [*args, "--output", out.with_suffix(".tif" if "--scene" in args else ".csv")]
        code = cli(["predict", *args])
        err = capsys.readouterr().err.strip()
        assert code == 2, (name, err)
        assert len(err.splitlines()) == 1 and message in err, (name, err)
        assert not list(tmp_path.glob(f"{name.replace(' ', '-')}.*")), name
    assert (tmp_path / "exists.csv").read_text() == "keep me\n"
    assert not [p for p in tmp_path.rglob("*.partial") if p.is_file()], "temporary files left"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_output_folder(stub_run, aid_tiny, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    with pytest.raises(ConfigError, match="not writable"):
        predict_chips(load_predictor(stub_run, "cpu"), [aid_tiny], locked / "p.csv")


def test_bad_scene_errors_raise_geotune_errors(stub_run, tmp_path):
    with pytest.raises(DataError, match="not found"):
        predict_chips(load_predictor(stub_run, "cpu"), [tmp_path / "nope"], tmp_path / "p.csv")


# ---------------------------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------------------------
def test_runs_record_calibration_and_keep_the_temperature(stub_run):
    metrics = json.loads((stub_run / "test_metrics.json").read_text())
    c = metrics["calibration"]
    assert 0 <= metrics["ece"] <= 1 and 0 <= metrics["brier"] <= 2
    assert c["fitted_on"] == "val" and c["n_val"] > 0
    assert c["val_nll_after"] <= c["val_nll_before"] + 1e-6
    assert {"val_ece_before", "val_ece_after", "test_ece_before", "test_ece_after"} <= set(c)
    ckpt = torch.load(stub_run / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["temperature"] == pytest.approx(c["temperature"])
    assert load_predictor(stub_run, "cpu").temperature == pytest.approx(c["temperature"])
    assert "reliability" in (stub_run / "report.html").read_text()


def test_temperature_scaling_lowers_validation_nll(stub_run):
    from geotune.data.decode import read_rgb, resize_chip

    predictor = load_predictor(stub_run, "cpu")
    with open(stub_run / "split.csv", newline="") as fh:
        val = [r for r in csv.DictReader(fh) if r["split"] == "val"]
    root = Path(json.loads((stub_run / "data.json").read_text())["root"])
    prep = predictor.preprocessing
    x = torch.from_numpy(
        np.stack(
            [resize_chip(read_rgb(root / r["path"]), prep.size, prep.interpolation) for r in val]
        )
    )
    logits = predictor.logits(prep.normalize(x))
    labels = torch.tensor([predictor.classes.index(r["class"]) for r in val])
    overconfident = logits * 8  # a fine-tuned network's typical failure, made strong
    t = fit_temperature(overconfident, labels)
    assert t > 1 and nll(overconfident, labels, t) < nll(overconfident, labels)


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt,suffix", [("onnx", ".onnx"), ("torchscript", ".pt")])
def test_export_parity_and_predict_from_the_exported_model(
    stub_run, aid_tiny, tmp_path, fmt, suffix
):
    model = tmp_path / f"model{suffix}"
    r = export_model(stub_run, fmt, model, check_chips=16)
    card = json.loads(r.card_path.read_text())
    assert card["classes"] == list(CLASSES) and card["bands"] == ["red", "green", "blue"]
    assert card["preprocessing"]["size"] == 32 and card["temperature"] > 0
    assert card["training"]["chips"]["test"] == 16 and card["training"]["strategy"] == "full"
    assert card["test_metrics"]["overall_accuracy"] is not None and "ece" in card["test_metrics"]
    assert r.parity["chips"] == 16 and r.parity["max_abs_logit_diff"] < 1e-4
    from_run = predict_chips(load_predictor(stub_run, "cpu"), [aid_tiny], tmp_path / "a.csv")
    exported = load_predictor(model, "cpu")
    assert exported.kind == fmt
    from_model = predict_chips(exported, [aid_tiny], tmp_path / "b.csv")
    a, b = read_csv(from_run.output), read_csv(from_model.output)
    assert [x["predicted_class"] for x in a] == [y["predicted_class"] for y in b]
    columns = ["probability", "probability_1", "probability_2", "probability_3"]
    for x, y in zip(a, b, strict=True):
        assert [x[f"class_{k}"] for k in (1, 2, 3)] == [y[f"class_{k}"] for k in (1, 2, 3)]
        assert max(abs(float(x[c]) - float(y[c])) for c in columns) < 1e-4
    # Dynamic batch: any batch size runs.
    assert exported.logits(torch.zeros(5, 3, 32, 32)).shape == (5, 4)


def test_export_fails_loudly_without_parity(stub_run, tmp_path, monkeypatch):
    import geotune.inference.export as export

    real = export.reference_logits
    monkeypatch.setattr(export, "reference_logits", lambda m, x: real(m, x) + torch.eye(4)[0] * 3)
    with pytest.raises(ExportError, match="does not reproduce PyTorch"):
        export_model(stub_run, "torchscript", tmp_path / "m.pt", check_chips=8)
    assert not list(tmp_path.iterdir()), "a failed export must leave nothing"


def test_export_cli_refuses_existing_output(stub_run, tmp_path, capsys):
    (tmp_path / "m.onnx").write_text("x")
    assert cli(["export", stub_run, "--output", tmp_path / "m.onnx"]) == 2
    assert "already exists" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# slow tier: real pretrained weights
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_lite0_export_parity_on_64_chips(aid_small, tmp_path):
    config = make_config(
        data=aid_small, output=tmp_path, backbone="tf_efficientnet_lite0", weights="offline",
        strategy="linear-probe", image_size=96, train_fraction=0.5, val_fraction=0.25,
    )  # fmt: skip
    run = train(config).run_dir
    check = copy_subset(tmp_path / "check", 16, offset=20)  # 64 chips unseen in training
    c = json.loads((run / "test_metrics.json").read_text())["calibration"]
    assert c["val_nll_after"] <= c["val_nll_before"]
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
        r = export_model(run, fmt, tmp_path / f"m{suffix}", check_chips=64, check_data=check)
        assert r.parity["chips"] == 64 and r.parity["top1_identical"] == 64
        assert r.parity["max_abs_logit_diff"] < 1e-3
        a = predict_chips(load_predictor(run, "cpu"), [check], tmp_path / f"{fmt}-a.csv")
        b = predict_chips(load_predictor(r.model_path, "cpu"), [check], tmp_path / f"{fmt}-b.csv")
        ra, rb = read_csv(a.output), read_csv(b.output)
        assert [x["predicted_class"] for x in ra] == [y["predicted_class"] for y in rb]
        diffs = [
            abs(float(x["probability"]) - float(y["probability"]))
            for x, y in zip(ra, rb, strict=True)
        ]
        assert max(diffs) < 1e-4


def test_linear_probe_runs_are_calibrated_too(aid_tiny, tmp_path):
    args = stub_args(
        aid_tiny, tmp_path, strategy="linear-probe", val_fraction=0.25, name="lp",
        probe_c=[1.0], probe_power=[1.0],
    )  # fmt: skip
    run = train(make_config(**args)).run_dir
    c = json.loads((run / "test_metrics.json").read_text())["calibration"]
    assert c["fitted_on"] == "val" and c["n_val"] == 4 and c["val_nll_after"] <= c["val_nll_before"]
    assert load_predictor(run, "cpu").temperature == pytest.approx(c["temperature"])


def test_cli_predict_chips_and_scene(stub_run, aid_tiny, tmp_path, capsys):
    scene = tmp_path / "scene.tif"
    write_mosaic(chip_files(aid_tiny)[:4], scene, cols=2)
    out = tmp_path / "maps" / "map.tif"
    assert cli(["predict", stub_run, scene, "--scene", "--tile", CHIP, "--output", out]) == 0
    assert {p.name for p in out.parent.iterdir()} == {"map.tif", "map.json", "map.png"}
    assert "class map:" in capsys.readouterr().out
    csv_out = tmp_path / "p.csv"
    args = ["predict", stub_run, aid_tiny, "--output", csv_out, "--no-calibration", "--top-k", 1]
    assert cli(args) == 0
    assert "raw (no calibration)" in capsys.readouterr().out
    assert list(read_csv(csv_out)[0])[:4] == ["path", "predicted_class", "probability", "class_1"]
