"""Pretrainings beyond ImageNet: geoembed's RS ResNet-18 (offline), DINOv2/v3 and SSL4EO-S12
weights (hub for users with internet, local files offline), and `compare --backbones`."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import timm
import torch
from conftest import AID_TINY, GEOTUNE_CLI, REPO, STUB_BACKBONE
from PIL import Image

from geotune.errors import ConfigError, WeightsError
from geotune.models import geoembed
from geotune.models.backbones import create_backbone
from geotune.models.classifier import build_classifier
from geotune.models.offline import OFFLINE_WEIGHTS
from geotune.sweep.compare import run_compare
from geotune.sweep.config import make_compare_config
from geotune.sweep.pretrainings import parse_pretrainings
from geotune.transfer.groups import layer_groups

GEOEMBED = OFFLINE_WEIGHTS[geoembed.MODEL_NAME]
# Written by geoembed 1.1.2's own runtime (Model.v3().encode, netcl's NumPy device) on 8
# committed aid_tiny chips: tests/fixtures/README.md.
REFERENCE = REPO / "tests" / "fixtures" / "geoembed_v3_reference.npz"

needs_geoembed = pytest.mark.skipif(
    GEOEMBED.path() is None, reason="geoembed wheel not installed (scripts/install.sh)"
)


def _chips(files, size: int = 128) -> torch.Tensor:
    """geoembed's preprocess(): PIL bilinear resize to 128 px, uint8 NCHW."""
    out = []
    for f in files:
        im = Image.open(AID_TINY / str(f)).convert("RGB")
        im = im.resize((size, size), Image.Resampling.BILINEAR)
        out.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
    return torch.stack(out)


@pytest.mark.slow
@needs_geoembed
def test_geoembed_reproduces_the_packages_own_embeddings():
    ref = np.load(REFERENCE)
    model, prep, source = create_backbone(geoembed.MODEL_NAME, "offline")
    assert source == "offline:geoembed"
    assert (prep.size, prep.mean, prep.std, prep.interpolation) == (
        128,
        (0.5,) * 3,
        (0.5,) * 3,
        "bilinear",
    )
    fc = geoembed.embedding_head(geoembed.read_npz(GEOEMBED.path()))
    ours = geoembed.embed(model.eval(), fc, prep.normalize(_chips(ref["files"]))).numpy()
    assert np.abs(ours - ref["embeddings"]).max() < 1e-4
    assert (ours * ref["embeddings"]).sum(1).min() > 0.9999
    # Different chips embed differently: the check above is not satisfied by a constant.
    assert (ref["embeddings"][0] * ref["embeddings"][-1]).sum() < 0.99


@pytest.mark.slow
@needs_geoembed
def test_geoembed_stem_equals_a_numpy_conv_and_batchnorm_on_a_real_chip():
    arrays = {k: v.numpy() for k, v in geoembed.read_npz(GEOEMBED.path()).items()}
    model, prep, _ = create_backbone(geoembed.MODEL_NAME)
    model.eval()  # BatchNorm with its stored statistics
    x = prep.normalize(_chips(["Beach/beach_19.jpg"]))
    with torch.no_grad():
        torch_out = model.act1(model.bn1(model.conv1(x)))[0].numpy()
    img = np.pad(x[0].numpy(), ((0, 0), (1, 1), (1, 1)))  # 3x3, stride 1, padding 1
    w = arrays["bb.stem.0.weight"]
    conv = np.zeros((64, 128, 128), np.float64)
    for dy in range(3):
        for dx in range(3):
            patch = img[:, dy : dy + 128, dx : dx + 128]
            conv += np.einsum("oc,chw->ohw", w[:, :, dy, dx], patch)
    bn = lambda n: arrays[f"bb.stem.1.{n}"][:, None, None]  # noqa: E731
    by_hand = np.maximum(
        (conv - bn("running_mean")) / np.sqrt(bn("running_var") + 1e-5) * bn("weight") + bn("bias"),
        0,
    )
    assert np.abs(by_hand - torch_out).max() < 1e-3
    # geoembed's max-pool-free stem keeps full resolution through layer 1.
    with torch.no_grad():
        assert model.layer1(torch.from_numpy(torch_out[None])).shape[-1] == 128


@needs_geoembed
def test_geoembed_layer_groups_are_stem_and_four_stages():
    model, _, _ = build_classifier(geoembed.MODEL_NAME, "offline", 4, "linear", 0.0, None)
    groups = layer_groups(model)
    assert [g.name for g in groups] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert sum(p.numel() for g in groups for p in g.params) == sum(
        p.numel() for p in model.parameters()
    )


def test_geoembed_has_no_hub_weights_one_line():
    with pytest.raises(WeightsError) as err:
        create_backbone(geoembed.MODEL_NAME, "hub")
    assert "no hub weights" in str(err.value) and "\n" not in str(err.value)


def _meta_dinov3(sd: dict) -> dict:
    """timm's vit_*_dinov3 state dict in Meta's original release layout (dinov3 repo)."""
    out = {}
    for k, v in sd.items():
        k = k.replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        out[k.replace("reg_token", "storage_tokens")] = v
        if k.endswith("attn.qkv.weight"):  # the release carries a zero qkv bias and its mask
            out[k.replace("weight", "bias")] = torch.zeros(v.shape[0])
            out[k.replace("weight", "bias_mask")] = torch.ones(v.shape[0])
    out["mask_token"] = torch.zeros(1, sd["cls_token"].shape[-1])
    out["rope_embed.periods"] = torch.ones(16)
    return out


@pytest.mark.slow
def test_local_dinov3_file_in_metas_layout_loads_offline(tmp_path):
    name = "vit_small_patch16_dinov3.lvd1689m"
    torch.manual_seed(1)
    source = timm.create_model(name, pretrained=False, num_classes=0)
    path = tmp_path / "dinov3_vits16_pretrain_lvd1689m.pth"
    torch.save({"teacher": _meta_dinov3(source.state_dict())}, path)
    model, prep, weights = create_backbone(name, str(path))
    assert weights.startswith("file:")
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    cfg = timm.models.get_pretrained_cfg(name)
    assert prep.mean == tuple(cfg.mean) and prep.size == cfg.input_size[-1]


@pytest.mark.slow
def test_local_dinov2_file_in_metas_layout_loads_offline(tmp_path):
    name = "vit_small_patch14_dinov2.lvd142m"
    torch.manual_seed(2)
    source = timm.create_model(name, pretrained=False, num_classes=0)
    sd = dict(source.state_dict(), mask_token=torch.zeros(1, 384))  # Meta's extra key
    torch.save(sd, tmp_path / "dinov2_vits14_pretrain.pth")
    model, _, _ = create_backbone(name, str(tmp_path / "dinov2_vits14_pretrain.pth"))
    assert torch.equal(model.pos_embed, source.pos_embed)
    assert torch.equal(model.blocks[3].ls1.gamma, source.blocks[3].ls1.gamma)


def test_sat493m_preprocessing_is_the_satellite_one():
    cfg = timm.models.get_pretrained_cfg("vit_large_patch16_dinov3.sat493m")
    assert cfg.mean == (0.430, 0.411, 0.296) and cfg.input_size == (3, 256, 256)


@pytest.mark.slow
def test_sat493m_hub_offline_is_one_line_naming_a_local_file():
    with pytest.raises(WeightsError) as err:
        create_backbone("vit_large_patch16_dinov3.sat493m", "hub")
    msg = str(err.value)
    assert "\n" not in msg and "--weights PATH" in msg
    assert "huggingface.co/timm/vit_large_patch16_dinov3.sat493m" in msg


@pytest.fixture(scope="module")
def ssl4eo_file(tmp_path_factory):
    """torchgeo's SSL4EO-S12 ResNet-50 layout: timm resnet50 keys, 13-band conv1, no fc."""
    torch.manual_seed(3)
    model = timm.create_model("resnet50", pretrained=False, num_classes=0, in_chans=13)
    path = tmp_path_factory.mktemp("ssl4eo") / "resnet50_sentinel2_all_moco-df8b932e.pth"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


@pytest.mark.slow
def test_ssl4eo_file_loads_for_13_bands_and_is_refused_for_rgb(ssl4eo_file):
    path, sd = ssl4eo_file
    model, _, _ = create_backbone("resnet50", str(path), in_chans=13)
    assert torch.equal(model.conv1.weight, sd["conv1.weight"])
    assert torch.equal(model.layer4[2].bn3.running_var, sd["layer4.2.bn3.running_var"])
    with pytest.raises(WeightsError) as err:
        create_backbone("resnet50", str(path))  # RGB data
    msg = str(err.value)
    assert "13-band" in msg and "3 bands" in msg and "\n" not in msg


def test_named_ssl4eo_weights_refuse_rgb_and_other_backbones_before_any_download():
    with pytest.raises(WeightsError, match=r"13-band input .* data has 3 bands"):
        create_backbone("resnet50", "ssl4eo-s12-moco")
    with pytest.raises(WeightsError, match="for --backbone resnet50, not 'resnet18'"):
        create_backbone("resnet18", "ssl4eo-s12-dino", in_chans=13)


@pytest.mark.slow
def test_named_ssl4eo_weights_offline_say_which_file_to_fetch(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(WeightsError) as err:
        create_backbone("resnet50", "ssl4eo-s12-moco", in_chans=13)
    msg = str(err.value)
    assert "resnet50_sentinel2_all_moco-df8b932e.pth" in msg and "--weights PATH" in msg
    assert "\n" not in msg


@pytest.mark.slow
def test_cli_refuses_13_band_weights_on_rgb_chips_in_one_line(ssl4eo_file, tmp_path):
    path, _ = ssl4eo_file
    args = ["train", "--data", str(AID_TINY), "--backbone", "resnet50", "--weights", str(path)]
    proc = subprocess.run(
        [*GEOTUNE_CLI, *args, "--output", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "13-band" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_backbone_entries_parse_and_duplicates_are_refused():
    parsed = parse_pretrainings(["tf_efficientnet_lite0", "resnet50:/x/ssl4eo.pth", "a:hub"])
    assert [p.label for p in parsed] == ["tf_efficientnet_lite0", "resnet50:ssl4eo.pth", "a:hub"]
    assert parsed[1].train_options() == {"backbone": "resnet50", "weights": "/x/ssl4eo.pth"}
    with pytest.raises(ConfigError, match="more than once"):
        parse_pretrainings(["resnet18:hub", "resnet18:hub"])
    with pytest.raises(ConfigError, match="no backbone"):
        make_compare_config(data=AID_TINY, backbones=":hub")


@pytest.mark.slow
def test_compare_backbones_ranks_pretrainings_with_paired_statistics(tmp_path):
    """Two pretrainings of the stub: random init vs a checkpoint (another random init)."""
    torch.manual_seed(5)
    ckpt = tmp_path / "other_init.pth"
    torch.save(timm.create_model(STUB_BACKBONE, num_classes=0).state_dict(), ckpt)
    config = make_compare_config(
        data=AID_TINY,
        strategies="linear-probe,feature-extraction",
        backbones=f"{STUB_BACKBONE}:random,{STUB_BACKBONE}:{ckpt}",
        labels_per_class="2",
        seeds=2,
        pool_fraction=0.5,
        output=tmp_path / "sweeps",
        name="pre",
        train={"image_size": 32, "batch_size": 8, "epochs": 1},
    )
    sweep = run_compare(config)
    runs = sorted(p.name for p in (sweep / "runs").iterdir() if not p.name.startswith("."))
    assert len(runs) == len(set(runs)) == 2 * 2 * 2
    assert "linear-probe-test_efficientnet_random-2-s0" in runs
    results = json.loads((sweep / "results.json").read_text())
    ranking = results["backbones"]
    assert {r["transfer_strategy"] for r in ranking} == {"linear-probe", "feature-extraction"}
    for s in ("linear-probe", "feature-extraction"):
        ranks = [r for r in ranking if r["transfer_strategy"] == s]
        assert [r["rank"] for r in ranks] == [1, 2]
        assert ranks[0]["score_mean"] >= ranks[1]["score_mean"]
        assert ranks[1]["diff_to_best"] == pytest.approx(
            ranks[1]["score_mean"] - ranks[0]["score_mean"]
        )
    assert {c["pretraining"] for c in results["cells"]} == {
        f"{STUB_BACKBONE}:random",
        f"{STUB_BACKBONE}:other_init.pth",
    }
    assert any("best pretraining" in line for line in results["recommendation"])
    assert "Pretrainings, ranked" in (sweep / "report.md").read_text()


def test_backbone_ensemble_concatenates_members_normalised_their_own_way(tmp_path):
    from conftest import stub_args

    from geotune.config import make_config
    from geotune.engine.trainer import train
    from geotune.evaluation.evaluate import evaluate_run
    from geotune.models.classifier import load_classifier

    pair = f"{STUB_BACKBONE}+test_resnet"
    net, prep, source = create_backbone(pair, "random")
    assert prep.mean == (0.0, 0.0, 0.0) and prep.std == (1.0, 1.0, 1.0)  # members normalise
    assert source == "random+random"
    first, second = net.members
    x = torch.rand(2, 3, 32, 32)
    net.eval()
    with torch.no_grad():
        feats = net(x)
        m0 = torch.tensor(first.pretrained_cfg["mean"]).view(1, 3, 1, 1)
        s0 = torch.tensor(first.pretrained_cfg["std"]).view(1, 3, 1, 1)
        assert torch.allclose(feats[:, : first.num_features], first((x - m0) / s0), atol=1e-5)
    assert feats.shape[1] == first.num_features + second.num_features
    run = train(
        make_config(**stub_args(AID_TINY, tmp_path, backbone=pair, strategy="linear-probe"))
    )
    assert run.summary["feature_dim"] == net.num_features
    again, _ = evaluate_run(run.run_dir)  # the checkpoint rebuilds the ensemble
    assert again["overall_accuracy"] == pytest.approx(run.test_metrics["overall_accuracy"])
    model, _, _ = load_classifier(run.run_dir / "checkpoints" / "best.pt")
    assert len(model.backbone.members) == 2
    with pytest.raises(ConfigError, match="serves linear-probe and knn"):
        make_config(**stub_args(AID_TINY, tmp_path, backbone=pair, strategy="full"))
    with pytest.raises(WeightsError, match="fits one backbone"):
        create_backbone(pair, str(tmp_path / "w.pth"))
