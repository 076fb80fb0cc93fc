"""BigEarthNet's own layout (a folder per patch: single-band GeoTIFFs at 10 / 20 / 60 m and a
labels JSON), read in place, on real Sentinel-2 pixels.

No BigEarthNet patch ships here, so the fixture is written from the real EuroSAT MS chips of
``../shared/datasets/eurosat_ms_dev`` in BigEarthNet's exact layout: each patch is the left
half of one chip beside the right half of another (so it has one or two land covers), cropped
to 60 x 60 px; the 20 m bands are stored at 30 px and the 60 m bands at 10 px (BigEarthNet's
120 / 60 / 20 ratios), B10 left out as BigEarthNet does. Each EuroSAT class gets the CORINE
level-3 label that describes it, so the 43 -> 19 mapping is exercised, including a dropped label
(roads).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import REPO, STUB_BACKBONE
from PIL import Image
from rasterio.transform import Affine
from test_multilabel import cli, one_error

from geotune.data.bigearthnet import NOMENCLATURE_19, is_bigearthnet, scan_bigearthnet
from geotune.data.decode import decode_folder
from geotune.data.raster import band_files, raster_info
from geotune.data.scan import scan_chips
from geotune.errors import DataError

EUROSAT_MS = REPO.parent / "shared" / "datasets" / "eurosat_ms_dev"
FILE_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12",
              "B8A")  # fmt: skip
SIDE = {"B02": 60, "B03": 60, "B04": 60, "B08": 60, "B05": 30, "B06": 30, "B07": 30, "B8A": 30,
        "B11": 30, "B12": 30, "B01": 10, "B09": 10}  # fmt: skip
CORINE = {
    "AnnualCrop": "Non-irrigated arable land",
    "Forest": "Mixed forest",
    "HerbaceousVegetation": "Natural grassland",
    "Highway": "Road and rail networks and associated land",  # not in the 19 classes
    "Industrial": "Industrial or commercial units",
    "Pasture": "Pastures",
    "PermanentCrop": "Fruit trees and berry plantations",
    "Residential": "Discontinuous urban fabric",
    "River": "Water courses",
    "SeaLake": "Water bodies",
}

pytestmark = pytest.mark.skipif(not EUROSAT_MS.is_dir(), reason="needs ../shared/datasets")


def eurosat_chips() -> dict[str, list[Path]]:
    return {c: sorted((EUROSAT_MS / c).glob("*.tif")) for c in sorted(CORINE)}


def write_patch(
    root: Path, name: str, left: Path, right: Path, labels: list[str], with_json: bool = True
) -> np.ndarray:
    """One BigEarthNet patch folder from the halves of two real chips; returns its 60 x 60 px
    pixels of the 10 m bands (B02, B03, B04, B08) for checks."""
    with rasterio.open(left) as a, rasterio.open(right) as b:
        pix = np.concatenate([a.read()[:, 2:62, 2:32], b.read()[:, 2:62, 32:62]], axis=2)
    folder = root / name
    folder.mkdir(parents=True)
    for band, side in SIDE.items():
        arr = pix[FILE_ORDER.index(band)]
        if side != 60:  # the coarser grid BigEarthNet stores this band on
            arr = np.asarray(Image.fromarray(arr.astype(np.float32)).resize((side, side),
                             Image.BOX)).round().astype(np.uint16)  # fmt: skip
        with rasterio.open(folder / f"{name}_{band}.tif", "w", driver="GTiff", width=side,
                           height=side, count=1, dtype="uint16", crs="EPSG:32633",
                           transform=Affine(600 / side, 0, 500000, 0, -600 / side, 5000000)) as dst:  # fmt: skip
            dst.write(arr[None])
    meta = {"labels": labels, "coordinates": {}, "projection": "", "tile_source": "",
            "acquisition_date": "2017-06-13 10:10:31"}  # fmt: skip
    if with_json:  # v1.0; v2.0 keeps the labels in metadata.parquet
        (folder / f"{name}_labels_metadata.json").write_text(json.dumps(meta))
    return pix[[1, 2, 3, 7]]


def write_bigearthnet(root: Path, n: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` patches under ``root/BigEarthNet-v1.0``; returns name -> 10 m pixels."""
    rng = np.random.default_rng(seed)
    chips = eurosat_chips()
    classes = [c for c in chips if c != "Highway"]
    written = {}
    for i in range(n):
        a, b = rng.choice(classes, size=2, replace=bool(i % 3 == 0))
        left, right = (
            chips[a][int(rng.integers(len(chips[a])))],
            chips[b][int(rng.integers(len(chips[b])))],
        )
        name = f"S2A_MSIL2A_20170613T101031_{i // 10}_{i % 10}"
        labels = sorted({CORINE[a], CORINE[b]})
        written[name] = write_patch(root / "BigEarthNet-v1.0", name, left, right, labels)
    return written


@pytest.fixture(scope="module")
def bigearthnet(tmp_path_factory):
    root = tmp_path_factory.mktemp("ben")
    return root, write_bigearthnet(root)


def test_patches_labels_and_bands_read_in_place(bigearthnet, tmp_path):
    root, written = bigearthnet
    assert is_bigearthnet(root) and not is_bigearthnet(EUROSAT_MS)
    folder = scan_chips(root)  # the one entry: found without --labels
    assert folder.multilabel and len(folder) == len(written)
    assert set(folder.classes) <= set(NOMENCLATURE_19)
    assert "Road and rail networks and associated land" not in folder.classes
    # 43 -> 19: "Mixed forest" and "Water courses" become their 19-class names
    first = json.loads(
        next((root / "BigEarthNet-v1.0").rglob("*_0_0_labels_metadata.json")).read_text()
    )
    row = folder.label_matrix[folder.paths.index("BigEarthNet-v1.0/S2A_MSIL2A_20170613T101031_0_0")]
    to19 = {old: new for new, olds in NOMENCLATURE_19.items() for old in olds}
    assert {folder.classes[j] for j in np.flatnonzero(row)} == {to19[n] for n in first["labels"]}
    # a patch is one 12-band chip in Sentinel-2 order, on the 10 m grid
    patch = root / folder.paths[0]
    assert [b for b, _ in band_files(patch)] == ["B01", "B02", "B03", "B04", "B05", "B06", "B07",
                                                "B08", "B8A", "B09", "B11", "B12"]  # fmt: skip
    info = raster_info(patch)
    assert info.count == 12 and info.dtype == "uint16" and info.descriptions[3] == "B04"
    images = decode_folder(folder, 60)
    ten_m = images.pixels[0][[1, 2, 3, 7]]
    assert ten_m.dtype == np.uint16 and np.array_equal(ten_m, written[Path(folder.paths[0]).name])

    # a patch whose only label is dropped by the 19 classes, and a damaged JSON
    bad = tmp_path / "bad"
    chips = eurosat_chips()
    write_patch(bad, "P_road", chips["Highway"][0], chips["Highway"][1], [CORINE["Highway"]])
    write_patch(bad, "P_ok", chips["Forest"][0], chips["River"][0],
                [CORINE["Forest"], CORINE["River"]])  # fmt: skip
    write_patch(bad, "P_ok2", chips["Pasture"][0], chips["River"][1],
                [CORINE["Pasture"], CORINE["River"]])  # fmt: skip
    with pytest.raises(DataError, match="P_road has no label of the 19-class nomenclature"):
        scan_bigearthnet(bad)
    kept = scan_bigearthnet(bad, skip_bad=True)
    assert kept.paths == ["P_ok", "P_ok2"] and kept.skipped[0][0] == "P_road"
    (bad / "P_ok" / "P_ok_labels_metadata.json").write_text("{not json")
    with pytest.raises(DataError, match="P_ok_labels_metadata.json is not a BigEarthNet labels"):
        scan_bigearthnet(bad, skip_bad=False)


@pytest.mark.slow
def test_train_evaluate_predict_on_the_patch_folders(bigearthnet, tmp_path):
    root, _ = bigearthnet
    fast = ["--backbone", STUB_BACKBONE, "--weights", "random", "--image-size", "32",
            "--batch-size", "8", "--train-fraction", "0.5"]  # fmt: skip
    proc = cli(tmp_path, "train", "--data", root, "--output", tmp_path / "runs", "--name", "ben",
               "--strategy", "full", "--epochs", "1", *fast)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "ben"
    m = json.loads((run / "test_metrics.json").read_text())
    s = json.loads((run / "summary.json").read_text())
    assert m["multilabel"] and s["multilabel"] and s["bands"]["channels"] == 12
    assert set(m["labels"]) <= set(NOMENCLATURE_19)
    proc = cli(tmp_path, "evaluate", run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # predict takes patch folders as chips (not their band files)
    proc = cli(tmp_path, "predict", run, root / "BigEarthNet-v1.0", "--output", tmp_path / "p.csv")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert len(rows) == 1 + 40 and rows[1].split(",")[0].endswith("_0_0")
    # strategies multi-label data cannot take refuse in one line, as with --labels
    line = one_error(cli(tmp_path, "train", "--data", root, "--output", tmp_path / "runs",
                         "--class-weights", "balanced", *fast))  # fmt: skip
    assert "class_weights and sampler apply to single-label data" in line


def test_official_split_lists_name_patches(bigearthnet, tmp_path):
    # BigEarthNet's official split: train.csv / val.csv / test.csv, one patch name per line.
    # Patches in no list (the official lists drop snow and cloud) are left unused.
    from geotune.config import make_config
    from geotune.data.splits import read_split
    from geotune.engine import train

    root, written = bigearthnet
    names = sorted(written)
    lists = tmp_path / "splits"
    lists.mkdir()
    parts = {"train": names[:20], "val": names[20:26], "test": names[26:36]}  # 4 left out
    for part, rows in parts.items():
        (lists / f"{part}.csv").write_text("".join(f"{n}\n" for n in rows))
    folder = scan_chips(root)
    split = read_split(lists, folder)
    by_name = {Path(p).name: s for p, s in zip(folder.paths, split, strict=True)}
    assert all(by_name[n] == part for part, rows in parts.items() for n in rows)
    assert sorted(n for n, s in by_name.items() if s == "unused") == names[36:]
    run = train(make_config(data=root, split=lists, strategy="linear-probe", backbone=STUB_BACKBONE,
                            weights="random", image_size=32, output=tmp_path / "runs"))  # fmt: skip
    kept = (run.run_dir / "split.csv").read_text()
    assert kept.count(",train\n") == 20 and kept.count(",test\n") == 10
    # A name the data does not hold, or a patch in two lists, is a one-line error.
    (lists / "test.csv").write_text("".join(f"{n}\n" for n in [*parts["test"], "S2B_nope_1_1"]))
    with pytest.raises(DataError, match=r"test.csv line 11: 'S2B_nope_1_1' is not a chip"):
        read_split(lists, folder)
    (lists / "test.csv").write_text(f"patch_name\n{names[0]}\n")
    with pytest.raises(DataError, match="already in the train list"):
        read_split(lists, folder)


# --- BigEarthNet v2.0: metadata.parquet beside BigEarthNet-S2/<tile>/<patch_id>/ ----------------
TO_19 = {old: new for new, olds in NOMENCLATURE_19.items() for old in olds}
V2_PARTS = ("train", "validation", "test")


def write_bigearthnet_v2(root: Path, n: int = 30, seed: int = 1) -> list[dict]:
    """``n`` v2.0 patches (19-class labels in the table, the archive's folder layout) and their
    metadata.parquet rows; the last patch is flagged for seasonal snow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    chips = eurosat_chips()
    classes = [c for c in chips if c != "Highway"]
    rows = []
    for i in range(n):
        a, b = rng.choice(classes, size=2, replace=bool(i % 3 == 0))
        tile = f"S2A_MSIL2A_20170613T101031_N9999_R022_T3{i // 10}VER"
        patch_id = f"{tile}_{i // 5:02d}_{i % 5:02d}"
        write_patch(root / "BigEarthNet-S2" / tile, patch_id, chips[a][i % len(chips[a])],
                    chips[b][(i + 1) % len(chips[b])], [], with_json=False)  # fmt: skip
        rows.append({"patch_id": patch_id, "labels": sorted({TO_19[CORINE[a]], TO_19[CORINE[b]]}),
                     "split": V2_PARTS[i % 3], "country": "Finland",
                     "contains_seasonal_snow": i == n - 1, "contains_cloud_or_shadow": False})  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), root / "metadata.parquet")
    return rows


def test_v2_metadata_table_labels_and_official_split(tmp_path):
    pytest.importorskip("pyarrow")
    from geotune.data.splits import read_split

    root = tmp_path / "BigEarthNet-v2.0"
    rows = write_bigearthnet_v2(root)
    assert is_bigearthnet(root)
    folder = scan_chips(root)  # found without --labels: the labels are the table's
    kept = rows[:-1]  # the snow-flagged patch is left out
    assert folder.multilabel and len(folder) == len(kept)
    for row in kept:
        i = next(k for k, p in enumerate(folder.paths) if p.endswith(row["patch_id"]))
        assert folder.paths[i].startswith("BigEarthNet-S2/")
        assert {folder.classes[j] for j in np.flatnonzero(folder.label_matrix[i])} == set(
            row["labels"]
        )
    split = read_split(root / "metadata.parquet", folder)
    expected = {"train": "train", "validation": "val", "test": "test"}
    by_id = {Path(p).name: s for p, s in zip(folder.paths, split, strict=True)}
    assert all(by_id[r["patch_id"]] == expected[r["split"]] for r in kept)


def test_v2_bad_rows_are_one_line_errors_or_skipped(tmp_path):
    pytest.importorskip("pyarrow")
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from geotune.data.bigearthnet import scan_bigearthnet

    root = tmp_path / "ben2"
    rows = write_bigearthnet_v2(root, n=9)
    table = root / "metadata.parquet"
    bad = [dict(r) for r in rows]
    bad[2]["labels"] = ["Mixed forest", "Urban fabrics"]  # not one of the 19
    pq.write_table(pa.Table.from_pylist(bad), table)
    with pytest.raises(DataError, match=r"row 3 \(.*_00_02\) names 'Urban fabrics', not a class"):
        scan_bigearthnet(root)
    shutil.rmtree(next((root / "BigEarthNet-S2").rglob(rows[4]["patch_id"])))
    kept = scan_bigearthnet(root, skip_bad=True)
    assert len(kept) == len(rows) - 1 - 2 and len(kept.skipped) == 2
    assert "has no band files" in kept.skipped[1][1]
    pq.write_table(pa.Table.from_pylist([{"patch_id": r["patch_id"]} for r in rows]), table)
    with pytest.raises(DataError, match="has no column labels"):
        scan_bigearthnet(root)
    table.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot be read as Parquet"):
        scan_bigearthnet(root)


@pytest.mark.slow
def test_v2_trains_on_its_official_split(tmp_path):
    pytest.importorskip("pyarrow")
    root = tmp_path / "BigEarthNet-v2.0"
    rows = write_bigearthnet_v2(root)
    proc = cli(tmp_path, "train", "--data", root, "--split", root / "metadata.parquet",
               "--output", tmp_path / "runs", "--name", "v2", "--strategy", "linear-probe",
               "--backbone", STUB_BACKBONE, "--weights", "random", "--image-size", "32")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    split = (tmp_path / "runs" / "v2" / "split.csv").read_text()
    n_test = sum(r["split"] == "test" for r in rows[:-1])
    assert split.count(",test\n") == n_test
    m = json.loads((tmp_path / "runs" / "v2" / "test_metrics.json").read_text())
    assert m["multilabel"] and m["n"] == n_test
