"""Index-file datasets (``--data chips.csv``): a table of chip paths and labels instead of a
folder tree, read into the same SceneFolder as a class-folder scan (real AID chips)."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from conftest import stub_args

from geotune.config import make_config
from geotune.data.folder import scan_folder
from geotune.data.index import is_index_file, multilabel_index, scan_index
from geotune.data.scan import scan_chips
from geotune.engine import train
from geotune.errors import ConfigError, DataError


def write_index(path, rows, header=("path", "label")):
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def flat_chips(aid_tiny, tmp_path):
    """AID chips in one flat folder (no class sub-folders), their classes in an index file."""
    chips = tmp_path / "archive" / "tiles"
    chips.mkdir(parents=True)
    rows = []
    for f in sorted(scan_folder(aid_tiny).samples):
        src, label = f
        name = f"{label}_{len(rows):03d}.jpg"
        shutil.copy2(src, chips / name)
        rows.append((f"tiles/{name}", scan_folder(aid_tiny).classes[label]))
    return write_index(tmp_path / "archive" / "index.csv", rows[::-1])  # any row order


def test_an_index_file_gives_the_folder_scan_of_the_same_chips(aid_tiny, tmp_path):
    folder = scan_folder(aid_tiny)
    rows = [(p, folder.classes[t]) for p, t in zip(folder.paths, folder.labels, strict=True)]
    index = tmp_path / "index.csv"
    # The index lies beside a copy of the chips, listing them by their folder paths.
    shutil.copytree(aid_tiny, tmp_path / "Airport_etc")
    rows = [(f"Airport_etc/{p}", c) for p, c in rows]
    listed = scan_index(write_index(index, rows[::-1]))
    assert is_index_file(index) and not is_index_file(aid_tiny)
    assert listed.classes == folder.classes
    assert listed.paths == [f"Airport_etc/{p}" for p in folder.paths]
    np.testing.assert_array_equal(listed.labels, folder.labels)
    assert listed.root == tmp_path and not listed.multilabel


def test_train_on_an_index_file_of_flat_chips(flat_chips, tmp_path):
    # Only some of the folder's images are listed: an index selects, the rest are ignored.
    rows = list(csv.reader(flat_chips.open()))[1:]
    keep = [r for i, r in enumerate(rows) if i % 4 != 0]
    write_index(flat_chips, keep)
    (flat_chips.parent / "tiles" / "notes.txt").write_text("not listed, not read")
    result = train(make_config(**stub_args(flat_chips, tmp_path / "runs", strategy="linear-probe")))
    split = list(csv.DictReader((result.run_dir / "split.csv").open()))
    assert sorted((r["path"], r["class"]) for r in split) == sorted(map(tuple, keep))
    # A run's split.csv (path, class) is itself an index file of the same chips.
    again = scan_index(shutil.copy(result.run_dir / "split.csv", flat_chips.parent / "s.csv"))
    assert again.paths == scan_index(flat_chips).paths
    assert result.test_metrics["overall_accuracy"] is not None


def test_a_multi_label_index_file_is_multi_label(flat_chips):
    rows = list(csv.reader(flat_chips.open()))[1:]
    multi = [(p, f"{c};{'water' if c in ('Beach', 'River') else 'land'}") for p, c in rows]
    folder = scan_chips(write_index(flat_chips, multi, header=("path", "labels")))
    assert folder.multilabel and "water" in folder.classes and "land" in folder.classes
    assert folder.label_matrix.sum(1).min() == 2
    assert multilabel_index(flat_chips)
    with pytest.raises(ConfigError, match="does not choose for multi-label chips"):
        train(make_config(data=flat_chips, time_budget="1m"))


@pytest.mark.parametrize(
    "rows, header, error, match",
    [
        ([("tiles/x.jpg", "A")], ("image_path", "label"), ConfigError, "no path column"),
        ([], ("path", "label"), ConfigError, "is empty"),
        ([("tiles/none.jpg", "Forest")], None, DataError, r"line 2\) does not exist"),
        ([("/abs/x.jpg", "Forest")], None, ConfigError, "relative to the index file's folder"),
        ([("../x.jpg", "Forest")], None, ConfigError, "relative to the index file's folder"),
        ([("tiles/notes.txt", "Forest")], None, DataError, "is not an image"),
        ([("FIRST", "")], None, ConfigError, "has no label"),
        ([("FIRST", "Forest"), ("FIRST", "River")], None, ConfigError, "again"),
        ([("FIRST", "Forest")], None, ConfigError, "one class"),
    ],
)
def test_bad_index_files_are_one_line_errors(flat_chips, rows, header, error, match):
    good = list(csv.reader(flat_chips.open()))[1:]
    (flat_chips.parent / "tiles" / "notes.txt").write_text("text")
    rows = [(good[0][0] if p == "FIRST" else p, c) for p, c in rows]
    if "one class" not in match and rows and header is None and "again" not in match:
        rows = rows + good[1:]  # the rest of the table is fine
    write_index(flat_chips, rows, header=header or ("path", "label"))
    with pytest.raises(error, match=match) as info:
        scan_chips(flat_chips)
    assert "\n" not in str(info.value)


def test_bad_rows_are_skipped_and_listed_with_skip_bad_images(flat_chips, tmp_path):
    rows = list(csv.reader(flat_chips.open()))[1:]
    write_index(flat_chips, [*rows, ("tiles/gone.jpg", rows[0][1])])
    folder = scan_chips(flat_chips, skip_bad=True)
    assert len(folder) == len(rows) and folder.skipped == [("tiles/gone.jpg", "does not exist")]
    with pytest.raises(ConfigError, match="carries the labels itself"):
        scan_chips(flat_chips, labels=flat_chips)
