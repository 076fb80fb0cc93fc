"""The frozen backbone's feature pass through ONNX Runtime: the same features as PyTorch, the graph
exported once and cached, PyTorch when the exporter cannot take the backbone, and the rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import STUB_BACKBONE
from torch import nn

from geotune.data import decode_folder, scan_folder
from geotune.engine.features import cached_features
from geotune.engine.onnx_features import (
    ORT_MIN_PASSES,
    module_key,
    onnx_path,
    resolve_feature_engine,
)
from geotune.models.backbones import create_backbone


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOTUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _stub(aid_small):
    net, prep, weights = create_backbone(STUB_BACKBONE, "random")
    images = decode_folder(scan_folder(aid_small), 32)
    return net, prep, weights, images


def test_onnxruntime_features_equal_pytorch_features_and_the_graph_is_cached(aid_small, cache):
    net, prep, weights, images = _stub(aid_small)
    args = (net, STUB_BACKBONE, weights, prep, images, "rot2")  # two views, batched
    ref = cached_features(*args, engine="torch")
    for f in (cache / "features").iterdir():  # only the ONNX graph may stay cached
        f.unlink()
    ort = cached_features(*args, engine="onnxruntime")
    assert (ref.engine, ort.engine) == ("torch", "onnxruntime") and not ort.from_cache
    np.testing.assert_allclose(ort.values, ref.values, rtol=1e-4, atol=1e-4)
    assert ort.values.shape == (len(images.pixels), net.num_features)
    graphs = list((cache / "onnx").glob("*.onnx"))
    assert len(graphs) == 1 and ort.export_s > 0
    # The graph is keyed by the module's content: other weights, another graph.
    example = prep.normalize(torch.from_numpy(np.array(images.pixels[:2])))
    other, _, _ = create_backbone(STUB_BACKBONE, "random")
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    assert module_key(net, example) != module_key(other, example)
    for f in (cache / "features").iterdir():
        f.unlink()
    again = cached_features(*args, engine="onnxruntime")
    assert again.engine == "onnxruntime" and again.export_s == 0  # the graph came from the cache
    cached = cached_features(*args, engine="onnxruntime")
    assert cached.from_cache and cached.engine == "onnxruntime"  # recorded with the features


class DataDependent(nn.Module):
    """Python control flow on tensor values: the ONNX exporter cannot trace it."""

    num_features = 3

    def forward(self, x):
        pooled = x.mean((2, 3))
        return pooled * 2 if float(pooled.sum()) > 0 else pooled


def test_a_backbone_the_exporter_cannot_take_falls_back_to_pytorch(aid_small, cache):
    _, prep, _, images = _stub(aid_small)
    said = []
    feats = cached_features(
        DataDependent(), "data-dependent", "random", prep, images, engine="onnxruntime",
        log=said.append,
    )  # fmt: skip
    assert feats.engine == "torch" and feats.values.shape == (len(images.pixels), 3)
    assert len(said) == 1 and "using PyTorch" in said[0] and "\n" not in said[0]
    assert not list(onnx_path("x").parent.glob("*.tmp"))  # no half-written graph left behind


def test_engine_rule():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_feature_engine("auto", cpu, ORT_MIN_PASSES) == "onnxruntime"
    assert resolve_feature_engine("auto", cpu, ORT_MIN_PASSES - 1) == "torch"
    assert resolve_feature_engine("auto", cuda, 10**6) == "torch"
    assert resolve_feature_engine("torch", cpu, 10**6) == "torch"
    assert resolve_feature_engine("onnxruntime", cpu, 1) == "onnxruntime"


def test_stage_pooling_shapes_prefixes_and_cache_keys(aid_small):
    from geotune.engine.features import feature_key, run_backbone
    from geotune.models.stages import StagePooling, stage_width

    net, prep, weights, images = _stub(aid_small)
    pooled = StagePooling(net, 3).eval()
    x = prep.normalize(torch.from_numpy(np.array(images.pixels[:4])))
    with torch.inference_mode():
        feats, plain = pooled(x), net.eval()(x)
    assert feats.shape == (4, pooled.num_features) and pooled.num_features > net.num_features
    assert len(pooled.widths) == 3 and stage_width(pooled, 1) == net.num_features
    torch.testing.assert_close(feats[:, : net.num_features], plain)  # fewer stages: a prefix

    def key(views, stages=1):
        return feature_key(STUB_BACKBONE, weights, prep, images, views, 0, stages)

    assert key("none") == feature_key(STUB_BACKBONE, weights, prep, images, "none", 0)
    assert len({key("none"), key("none", 3), key("d4"), key("d4", 3)}) == 4
    # All eight D4 views go through the network as one batch and are averaged per chip.
    cpu = torch.device("cpu")
    d4 = run_backbone(net, prep, images.pixels[:4], 4, cpu, "d4")
    chips = torch.from_numpy(np.array(images.pixels[:4]))
    views = []
    for k in range(4):
        for flip in (False, True):
            view = chips.rot90(k, (2, 3))
            views.append(run_backbone(net, prep, (view.flip(3) if flip else view).numpy(), 4, cpu))
    assert d4.shape == (4, net.num_features)
    np.testing.assert_allclose(d4, np.mean(views, 0), rtol=1e-4, atol=1e-5)


def test_the_default_probe_pools_three_stages_and_saves_a_model_that_reproduces_it(
    aid_small, tmp_path, cache
):
    from geotune.config import make_config
    from geotune.engine import train
    from geotune.evaluation import evaluate_run
    from geotune.models.classifier import load_classifier

    run = train(
        make_config(data=aid_small, output=tmp_path, name="stages", strategy="linear-probe",
                    backbone=STUB_BACKBONE, weights="random", image_size=64,
                    train_fraction=0.5, val_fraction=0.25)
    )  # fmt: skip
    assert run.summary["probe_stages"] == 3
    model, _, ckpt = load_classifier(run.run_dir / "checkpoints" / "best.pt")
    assert ckpt["probe_stages"] == 3 and model.head[-1].in_features == model.backbone.num_features
    metrics, _ = evaluate_run(run.run_dir)
    assert metrics["confusion_matrix"] == run.test_metrics["confusion_matrix"]


def test_default_probe_stages_fall_back_where_a_backbone_has_no_stages():
    from geotune.models.stages import DEFAULT_PROBE_STAGES, default_probe_stages

    net, _, _ = create_backbone(STUB_BACKBONE, "random")
    assert default_probe_stages(net) == DEFAULT_PROBE_STAGES == 3
    pair, _, _ = create_backbone(f"{STUB_BACKBONE}+test_resnet", "random")
    assert default_probe_stages(pair) == 1  # an ensemble pools each member's final features
    net.feature_info = net.feature_info[-1:]  # a network with one stage offers 2 at most
    assert default_probe_stages(net) == 2


def test_probe_fits_cap_blas_threads():
    from threadpoolctl import threadpool_info

    from geotune.engine.probe import FIT_THREADS, fit_threads

    with fit_threads():
        assert all(pool["num_threads"] <= FIT_THREADS for pool in threadpool_info())
