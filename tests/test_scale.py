"""Scale: features stay memory-mapped past a size, and the streamed probe stands in for lbfgs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geotune.config import make_config
from geotune.engine import features, probe, train
from geotune.engine import streamed_probe as sp
from geotune.evaluation import evaluate_run

FAST = {"image_size": 64, "batch_size": 8, "train_fraction": 0.5, "val_fraction": 0.25}


def test_standardiser_matches_scikit_learn(aid_small, tmp_path):
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    feats = np.abs(rng.normal(size=(300, 20))).astype(np.float32) * rng.uniform(0.1, 5, 20)
    feats[:, 3] = 2.0  # a constant feature keeps scale 1, as in scikit-learn
    idx = rng.permutation(300)[:200]
    got = sp.fit_standardiser(feats, idx, 0.5, 12)
    want = StandardScaler().fit(np.sqrt(feats[idx, :12]))
    np.testing.assert_allclose(got.mean_, want.mean_, rtol=1e-5)
    np.testing.assert_allclose(got.scale_, want.scale_, rtol=1e-4)


def test_large_feature_sets_stay_memory_mapped_and_the_probe_streams(
    aid_small, tmp_path, monkeypatch
):
    monkeypatch.setenv("GEOTUNE_CACHE", str(tmp_path / "cache"))
    base = dict(data=aid_small, output=tmp_path, strategy="linear-probe", **FAST)
    small = train(make_config(name="lbfgs", **base))
    assert small.summary["probe_solver"] == "lbfgs"
    monkeypatch.setattr(features, "IN_MEMORY_FEATURE_BYTES", 0)
    seen = []
    real = sp.read_blocks

    def spy(feats, idx, rows=sp.BLOCK_ROWS):
        seen.append(isinstance(feats, np.memmap))
        return real(feats, idx, rows)

    monkeypatch.setattr(sp, "read_blocks", spy)
    big = train(make_config(name="streamed", probe_solver="streamed", **base))
    s = big.summary
    assert s["probe_solver"] == "streamed" and seen and all(seen)
    assert s["features_from_cache"]  # the same features, read from the memory-mapped cache
    scores = s["val_accuracy_by_power_and_C"]
    assert len(scores) == len(make_config(**base).probe_c) * len(make_config(**base).probe_power)
    assert (
        max(scores.values())
        == scores[
            f"power={s['feature_power']:g},C={s['C']:g}"
            + (f",stages={s['probe_stages']}" * (s["probe_stages"] != 1))
        ]
    )
    # Same split, same features: the streamed fit is as accurate as scikit-learn's.
    oa = big.test_metrics["overall_accuracy"]
    assert oa >= small.test_metrics["overall_accuracy"] - 0.1 and oa > 0.6
    # The scaler and power are folded into an ordinary checkpoint: re-evaluating it from the
    # images gives the streamed probe's own predictions.
    metrics, _ = evaluate_run(big.run_dir)
    assert metrics["confusion_matrix"] == big.test_metrics["confusion_matrix"]


def test_the_probe_solver_switches_at_its_threshold_unless_named():
    n = probe.STREAMED_PROBE_ROWS
    assert probe.probe_solver("auto", n - 1) == "lbfgs"
    assert probe.probe_solver("auto", n) == "streamed"
    assert probe.probe_solver("lbfgs", 10 * n) == "lbfgs"
    assert probe.probe_solver("streamed", 1) == "streamed"
    assert probe.probe_solver("auto", n, multilabel=True) == "lbfgs"
    assert probe.probe_solver("auto", probe.STREAMED_MULTILABEL_ROWS, multilabel=True) == "streamed"


def test_features_written_into_the_cache_equal_those_computed_in_ram(
    aid_small, tmp_path, monkeypatch
):
    from geotune.data import decode_folder, scan_folder
    from geotune.models import build_classifier

    monkeypatch.setenv("GEOTUNE_CACHE", str(tmp_path / "cache"))
    model, prep, _ = build_classifier("tf_efficientnet_lite0", "offline", 4)
    images = decode_folder(scan_folder(aid_small), 64)
    ram = features.run_backbone(model.backbone, prep, images.pixels, 16, torch.device("cpu"))
    monkeypatch.setattr(features, "IN_MEMORY_FEATURE_BYTES", 0)
    got = features.cached_features(
        model.backbone, "tf_efficientnet_lite0", "offline", prep, images, engine="torch"
    )
    assert isinstance(got.values, np.memmap) and not got.from_cache
    np.testing.assert_allclose(np.asarray(got.values), ram, rtol=1e-4, atol=1e-5)


def test_every_process_gets_its_own_share_of_each_batch():
    from geotune.data.batches import index_batches, shard

    batches = index_batches(
        np.arange(103), 16, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    for world in (1, 2, 3, 4):
        for batch in batches:
            shares = [shard(batch, rank, world) for rank in range(world)]
            flat = np.concatenate(shares)
            assert len(flat) == len(set(flat)) == len(batch)  # disjoint, and nothing dropped
            assert set(flat) == set(batch)


def _file_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssFile in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="Linux /proc only")
def test_reading_a_memory_mapped_cache_keeps_rss_flat(tmp_path, monkeypatch):
    from geotune.data import cache
    from geotune.data.batches import iterate_batches

    monkeypatch.setattr(cache, "RELEASE_BYTES", 2 * 2**20)
    chips = np.lib.format.open_memmap(tmp_path / "c.npy", "w+", np.uint8, (5000, 3, 64, 64))
    chips[:] = 7  # 61 MB written, then flushed and dropped: a cold map of the cache entry
    chips.flush()
    del chips
    labels = np.zeros(5000, dtype=np.int64)

    def grown_by(read) -> float:
        pixels = np.load(tmp_path / "c.npy", mmap_mode="r")
        before = _file_rss_mb()
        read(pixels)
        grown = _file_rss_mb() - before
        del pixels
        return grown

    def plain(pixels):  # what reading did before: every page touched stays resident
        for start in range(0, 5000, 100):
            assert int(np.asarray(pixels[start : start + 100]).max()) == 7

    def batches(pixels):
        for x, _ in iterate_batches(pixels, labels, np.arange(5000), 100, shuffle=True,
                                    generator=torch.Generator().manual_seed(0)):  # fmt: skip
            assert int(x.max()) == 7

    assert grown_by(plain) > 40  # the test can fail: without releases RSS grows with N
    assert grown_by(batches) < 10


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="Linux /proc only")
def test_reading_one_cache_while_writing_another_keeps_rss_flat(tmp_path, monkeypatch):
    # The feature pass reads the chip cache and writes the feature cache in turn; releasing only
    # the map at hand when the threshold is crossed left the chip cache's pages resident.
    from geotune.data import cache

    monkeypatch.setattr(cache, "RELEASE_BYTES", 2 * 2**20)
    chips = np.lib.format.open_memmap(tmp_path / "c.npy", "w+", np.uint8, (5000, 3, 64, 64))
    chips[:] = 7
    chips.flush()
    del chips
    pixels = np.load(tmp_path / "c.npy", mmap_mode="r")
    feats = np.lib.format.open_memmap(tmp_path / "f.npy", "w+", np.float32, (5000, 8))
    before = _file_rss_mb()
    for start in range(0, 5000, 100):
        block = np.asarray(pixels[start : start + 100])
        cache.RESIDENT.touched(pixels)
        feats[start : start + 100] = block.reshape(100, -1)[:, :8]
        cache.RESIDENT.touched(feats)  # the small map is touched last, as in the feature pass
    assert float(feats[-1, 0]) == 7.0
    assert _file_rss_mb() - before < 10  # 61 MB read: without releasing both, ~50 MB stay


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="Linux /proc only")
def test_the_streamed_probe_reads_random_rows_with_rss_flat(tmp_path, monkeypatch):
    # An epoch of the streamed probe reads rows in random order; one block's rows lie all over
    # the file, and each row read through the map maps ~64 KB around it.
    from geotune.data import cache
    from geotune.engine.streamed_probe import read_blocks

    monkeypatch.setattr(cache, "RELEASE_BYTES", 2 * 2**20)
    feats = np.lib.format.open_memmap(tmp_path / "f.npy", "w+", np.float32, (24000, 1280))
    feats[:] = np.arange(24000, dtype=np.float32)[:, None]  # 123 MB, row i holds i
    feats.flush()
    del feats
    feats = np.load(tmp_path / "f.npy", mmap_mode="r")
    order = np.random.default_rng(0).permutation(24000)
    before, peak, seen = _file_rss_mb(), 0.0, 0
    for _pos, rows, block in read_blocks(feats, order):
        np.testing.assert_array_equal(block[:, 0], rows)  # each block holds the rows it names
        peak = max(peak, _file_rss_mb() - before)
        seen += len(rows)
    assert seen == 24000
    assert peak < 40  # a 4096-row gather in one go mapped nearly all 123 MB


def test_view_features_reuse_the_cached_plain_view(aid_small, tmp_path, monkeypatch):
    # rot2 after a plain run computes only the rotated view and averages it with the cached
    # plain features: the same features as both views computed together, one pass fewer.
    from geotune.data import decode_folder, scan_folder
    from geotune.models import build_classifier

    model, prep, _ = build_classifier("tf_efficientnet_lite0", "offline", 4)
    images = decode_folder(scan_folder(aid_small), 64)

    def view_features(views, cache):
        monkeypatch.setenv("GEOTUNE_CACHE", str(tmp_path / cache))
        return features.cached_features(
            model.backbone, "tf_efficientnet_lite0", "offline", prep, images, views,
            engine="torch",
        )  # fmt: skip

    fresh = view_features("rot2", "fresh")
    plain = view_features("none", "reused")
    calls = []
    real = features.run_backbone
    monkeypatch.setattr(features, "run_backbone", lambda *a, **k: calls.append(a) or real(*a, **k))
    reused = view_features("rot2", "reused")
    assert not reused.from_cache and len(calls) == 1 and calls[0][-1] is True  # one view run
    np.testing.assert_allclose(np.asarray(reused.values), np.asarray(fresh.values), rtol=1e-4,
                               atol=1e-5)  # fmt: skip
    assert not np.allclose(np.asarray(plain.values), np.asarray(fresh.values))
