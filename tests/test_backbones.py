from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from geotune.errors import WeightsError
from geotune.models import (
    OFFLINE_WEIGHTS,
    backbone_status,
    create_backbone,
    imagenet_classifier,
    read_checkpoint,
)

# ImageNet-1k indices: 281 tabby, 282 tiger cat, 285 Egyptian cat, 967 espresso.
CATS = {281, 282, 283, 284, 285}
ESPRESSO = 967


def _imagenet_top1(model, prep, image: np.ndarray) -> tuple[int, float]:
    im = Image.fromarray(image).resize((prep.size, prep.size), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.array(im)).permute(2, 0, 1)[None]
    with torch.inference_mode():
        p = model(prep.normalize(x)).softmax(-1)[0]
    return int(p.argmax()), float(p.max())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "mobilenetv2_100"])
def test_offline_weights_are_genuine_imagenet(name):
    skimage_data = pytest.importorskip("skimage.data")
    model = imagenet_classifier(name)
    prep = OFFLINE_WEIGHTS[name].preprocessing
    cat, p_cat = _imagenet_top1(model, prep, skimage_data.chelsea())
    coffee, p_coffee = _imagenet_top1(model, prep, skimage_data.coffee())
    assert cat in CATS and p_cat > 0.5
    assert coffee == ESPRESSO and p_coffee > 0.8


def test_mobilenet_v2_matches_torchvision():
    # The renamed weights in timm's mobilenetv2_100 give torchvision's own logits.
    import torchvision

    path = OFFLINE_WEIGHTS["mobilenetv2_100"].path()
    tv = torchvision.models.mobilenet_v2()
    tv.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    ours = imagenet_classifier("mobilenetv2_100")
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), tv.eval()(x), atol=1e-4, rtol=1e-4)


def test_preprocessing_comes_from_the_weights():
    _, lite, _ = create_backbone("tf_efficientnet_lite0", "offline")
    assert (lite.size, lite.mean, lite.std) == (224, (0.5,) * 3, (0.5,) * 3)
    _, rn, _ = create_backbone("resnet18", "random")
    assert rn.mean == timm.models.get_pretrained_cfg("resnet18").mean


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_checkpoint_round_trip(tmp_path, suffix):
    src = timm.create_model("resnet18", pretrained=False, num_classes=7)
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(src.state_dict(), path)
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    model, _, source = create_backbone("resnet18", str(path))
    assert source.startswith("file:")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, src.state_dict()[k], rtol=0, atol=0)


def test_mismatched_checkpoint_names_keys_and_shapes(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    with pytest.raises(
        WeightsError, match=r"does not fit resnet34: .*missing keys \(layer1\.2\."
    ) as err:
        create_backbone("resnet34", str(path))
    assert "\n" not in str(err.value)
    # A stem made for other bands is named as such, with both band counts.
    four_band = timm.create_model("resnet18", pretrained=False, in_chans=4)
    torch.save(four_band.state_dict(), path)
    with pytest.raises(
        WeightsError,
        match=r"takes 4-band input \(conv1.weight \[64, 4, 7, 7\]\) but the data has 3",
    ):
        create_backbone("resnet18", str(path))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(
        {"model": timm.create_model("resnet18", pretrained=False)}, path
    )  # a whole pickled module
    with pytest.raises(WeightsError, match="without executing code"):
        read_checkpoint(path)


def test_unknown_backbone_suggests_names():
    with pytest.raises(WeightsError, match=r"unknown backbone 'resnet5O'; did you mean .*resnet50"):
        create_backbone("resnet5O", "random")


@pytest.mark.slow
def test_hub_weights_offline_name_the_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        WeightsError, match=r"need a download .*offline backbone \(tf_efficientnet_lite0"
    ) as err:
        create_backbone("resnet50", "hub")
    assert "\n" not in str(err.value)


def test_offline_weights_for_a_backbone_without_them():
    with pytest.raises(
        WeightsError, match="backbone 'resnet18' has no offline weights; offline backbones:"
    ):
        create_backbone("resnet18", "offline")


def test_backbones_listing_reports_usability():
    rows = backbone_status()
    by = {(r["backbone"], r["weights"]): r["status"] for r in rows}
    assert by[("tf_efficientnet_lite0", "offline")] == "installed"
    assert by[("mobilenetv2_100", "offline")] == "installed"
    assert by[("resnet50", "hub")] in {"cached", "needs a download"}
