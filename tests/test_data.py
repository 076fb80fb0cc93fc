from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from geotune.data import decode_folder, make_split, read_split, scan_folder, write_split
from geotune.errors import DataError


def test_scan_lists_classes_and_images(aid_small):
    folder = scan_folder(aid_small)
    assert folder.classes == ["Airport", "Beach", "Forest", "River"]
    assert folder.counts() == dict.fromkeys(folder.classes, 12)
    assert all((aid_small / p).is_file() for p in folder.paths)


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match=r"data folder .*missing does not exist; pass --data DIR"):
        scan_folder(tmp_path / "missing")


def test_root_is_a_file(aid_copy):
    with pytest.raises(DataError, match="is a file; pass the folder"):
        scan_folder(next((aid_copy / "Beach").iterdir()))


def test_empty_root(tmp_path):
    with pytest.raises(DataError, match="has no class sub-folders"):
        scan_folder(tmp_path)


def test_empty_class_folder(aid_copy):
    (aid_copy / "Desert").mkdir()
    with pytest.raises(
        DataError, match=r"class folder .*Desert holds no images; add images or remove"
    ):
        scan_folder(aid_copy)


def test_non_image_file_named_and_skippable(aid_copy):
    (aid_copy / "Forest" / "notes.txt").write_text("field notes")
    with pytest.raises(DataError, match=r"Forest/notes.txt is not an image .*--skip-bad-images"):
        scan_folder(aid_copy)
    folder = scan_folder(aid_copy, skip_bad=True)
    assert folder.skipped == [("Forest/notes.txt", "is not an image (extension '.txt')")]
    assert len(folder) == 24


def _corrupt(aid_copy):
    bad = aid_copy / "River" / "zz_corrupt.jpg"
    bad.write_bytes(b"\x00not a jpeg at all" * 10)
    return bad


def _truncate(aid_copy):
    src = sorted((aid_copy / "Beach").iterdir())[0]
    data = src.read_bytes()
    bad = aid_copy / "Beach" / "zz_truncated.jpg"
    bad.write_bytes(data[: len(data) // 2])
    return bad


@pytest.mark.parametrize(
    ("make_bad", "expected"),
    [(_corrupt, "not a readable image"), (_truncate, "corrupt or truncated")],
)
def test_unreadable_images(aid_copy, make_bad, expected):
    bad = make_bad(aid_copy)
    folder = scan_folder(aid_copy)
    with pytest.raises(DataError, match=rf"{bad.name} .*{expected}.*--skip-bad-images"):
        decode_folder(folder, 32)
    decoded = decode_folder(folder, 32, skip_bad=True)
    assert len(decoded.folder) == 24 and decoded.pixels.shape == (24, 3, 32, 32)
    assert [p for p, _ in decoded.folder.skipped] == [f"{bad.parent.name}/{bad.name}"]


def test_png_tiff_and_non_square_chips(tmp_path, aid_copy):
    # UC Merced ships 8-bit RGB TIFFs, some not 256x256; PNG chips are common too.
    root = tmp_path / "mixed"
    for c in ("Airport", "Beach"):
        (root / c).mkdir(parents=True)
        for i, f in enumerate(sorted((aid_copy / c).iterdir())[:3]):
            im = Image.open(f).convert("RGB").resize((256, 247))
            im.save(root / c / f"chip{i}.{['tif', 'png', 'tiff'][i]}")
    folder = scan_folder(root)
    decoded = decode_folder(folder, 64)
    assert decoded.pixels.shape == (6, 3, 64, 64) and decoded.pixels.dtype == np.uint8
    assert decoded.pixels.std() > 10  # real image content, not zeros


def test_decode_cache_is_reused_and_invalidated(aid_copy):
    folder = scan_folder(aid_copy)
    first = decode_folder(folder, 32)
    again = decode_folder(scan_folder(aid_copy), 32)
    assert again.key == first.key
    np.testing.assert_array_equal(np.asarray(first.pixels), np.asarray(again.pixels))
    # A changed file changes the key: the cache never serves stale pixels.
    f = aid_copy / folder.paths[0]
    Image.open(f).rotate(90).save(f)
    changed = decode_folder(scan_folder(aid_copy), 32)
    assert changed.key != first.key
    assert not np.array_equal(np.asarray(changed.pixels[0]), np.asarray(first.pixels[0]))


def test_split_is_stratified_and_reproducible(aid_small):
    folder = scan_folder(aid_small)
    s1 = make_split(folder, 0.5, None, 0.25, seed=3)
    s2 = make_split(folder, 0.5, None, 0.25, seed=3)
    s3 = make_split(folder, 0.5, None, 0.25, seed=4)
    np.testing.assert_array_equal(s1, s2)
    assert not np.array_equal(s1, s3)
    for c in range(4):
        parts = s1[folder.labels == c]
        assert (
            (parts == "test").sum() == 6
            and (parts == "val").sum() == 2
            and (parts == "train").sum() == 4
        )


def test_few_shot_split(aid_small):
    folder = scan_folder(aid_small)
    s = make_split(folder, None, labels_per_class=5, val_fraction=0.2, seed=0)
    for c in range(4):
        parts = s[folder.labels == c]
        assert (
            (parts == "train").sum() == 4
            and (parts == "val").sum() == 1
            and (parts == "test").sum() == 7
        )


def test_too_few_images_for_split(aid_small):
    folder = scan_folder(aid_small)
    with pytest.raises(
        DataError, match="class 'Airport' has 12 images, too few for the requested split"
    ):
        make_split(folder, None, labels_per_class=12, val_fraction=0.2)


def test_split_file_round_trip(tmp_path, aid_small):
    folder = scan_folder(aid_small)
    s = make_split(folder, 0.5, None, 0.2, seed=1)
    write_split(tmp_path / "split.csv", folder, s)
    np.testing.assert_array_equal(read_split(tmp_path / "split.csv", folder), s)
    other = scan_folder(aid_small).subset(folder.labels != 0)
    with pytest.raises(DataError, match="which is not in"):
        read_split(tmp_path / "split.csv", other)


def test_budget_splits_nest_and_share_a_capped_test_set(aid_small):
    from geotune.data import budget_split

    folder = scan_folder(aid_small)
    small, large, whole = (
        budget_split(folder, 0.5, b, 0.25, seed=1, test_per_class=4) for b in (2, 4, None)
    )
    for split in (small, large, whole):
        assert (split == "test").sum() == 4 * len(folder.classes)
        assert ((split == "test") == (whole == "test")).all()  # one test set for every budget
    labelled = [set(np.flatnonzero(np.isin(s, ["train", "val"]))) for s in (small, large, whole)]
    assert labelled[0] < labelled[1] < labelled[2]  # 2 of the 4, 4 of the pool
    counts = np.bincount(folder.labels[np.isin(small, ["train", "val"])])
    assert (counts == 2).all()


def test_prefetch_thread_yields_the_same_batches_and_raises_errors():
    from geotune.data import iterate_batches, prefetch

    pixels = np.arange(10 * 3 * 2 * 2, dtype=np.uint8).reshape(10, 3, 2, 2)
    labels = np.arange(10)
    plain = list(iterate_batches(pixels, labels, np.arange(10), 3))
    threaded = list(prefetch(iterate_batches(pixels, labels, np.arange(10), 3), "cpu", thread=True))
    assert len(threaded) == len(plain) == 4
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(plain, threaded, strict=False)
    )

    def broken():
        yield plain[0]
        raise DataError("chip 2 unreadable")

    with pytest.raises(DataError, match="chip 2 unreadable"):
        list(prefetch(broken(), "cpu", thread=True))


def test_streamed_decode_keeps_rows_aligned_past_a_bad_chip(aid_copy, tmp_path, monkeypatch):
    # Chips stream into the cache in blocks; a bad chip mid-dataset must not shift later rows.
    import shutil

    import geotune.data.decode as decode

    clean = tmp_path / "clean"
    shutil.copytree(aid_copy, clean)
    bad = aid_copy / "Beach" / "a_corrupt.jpg"  # sorts first in its class: mid-dataset
    bad.write_bytes(b"\x00not a jpeg" * 20)
    monkeypatch.setattr(decode, "DECODE_BLOCK", 5)
    got = decode_folder(scan_folder(aid_copy), 32, skip_bad=True, workers=2)
    want = decode_folder(scan_folder(clean), 32)
    assert got.folder.paths == want.folder.paths
    np.testing.assert_array_equal(np.asarray(got.pixels), np.asarray(want.pixels))
    hit = decode_folder(scan_folder(aid_copy), 32, skip_bad=True)  # served from the cache
    assert hit.key == got.key and hit.pixels.shape == want.pixels.shape
    np.testing.assert_array_equal(np.asarray(hit.pixels), np.asarray(want.pixels))


def test_cache_refuses_an_entry_larger_than_the_free_disk(tmp_path):
    from geotune.data.cache import ArrayCache

    cache = ArrayCache(tmp_path / "images")
    with pytest.raises(DataError, match=r"needs .* GB .* free; free space, set GEOTUNE_CACHE"):
        cache.save("k", (10**9, 3, 4096, 4096), np.uint8, lambda out: None, {})
    assert not any(p.is_file() for p in (tmp_path / "images").rglob("*"))
