"""`geotune pretrain`: continued self-supervised pretraining (lightly objectives, Fabric engine)."""

from __future__ import annotations

import pytest
import timm
import torch
from conftest import AID_TINY, STUB_BACKBONE, kill_after, stub_args

from geotune.config import build_config, make_config
from geotune.pretrain.config import PretrainConfig
from geotune.pretrain.run import pretrain, state_file


@pytest.fixture
def start(tmp_path):
    """Starting weights written to a file, so the result can be compared with them."""
    path = tmp_path / "start.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model(STUB_BACKBONE, num_classes=0).state_dict(), path)
    return path


def _config(tmp_path, start, **options) -> PretrainConfig:
    values = dict(
        data=AID_TINY, output=tmp_path / "ssl.pt", backbone=STUB_BACKBONE, weights=str(start),
        image_size=32, batch_size=16, device="cpu",
    )  # fmt: skip
    return build_config(PretrainConfig, **{**values, **options})


def test_two_steps_write_weights_that_train_loads_and_that_moved(tmp_path, start):
    from geotune.engine.trainer import train

    record = pretrain(_config(tmp_path, start, method="simclr"))
    assert record["steps"] == 2 and record["chips"] == 32  # 32 chips, batches of 16
    saved = torch.load(tmp_path / "ssl.pt", weights_only=True)
    before = torch.load(start, weights_only=True)
    moved = [k for k, v in saved["state_dict"].items() if not torch.equal(v, before[k])]
    assert moved and set(saved["state_dict"]) == set(before)  # the backbone alone, retrained
    assert saved["geotune_pretrain"]["preprocessing"]["size"] == 32
    assert not state_file(tmp_path / "ssl.pt").exists()
    args = stub_args(AID_TINY, tmp_path / "runs", weights=str(tmp_path / "ssl.pt"))
    result = train(make_config(**{**args, "strategy": "linear-probe"}))
    assert result.summary["weights"] == f"file:{(tmp_path / 'ssl.pt').resolve()}"
    assert result.summary["preprocessing"]["size"] == 32


@pytest.mark.parametrize("method", ["byol", "dino"])
def test_momentum_methods_take_steps(tmp_path, start, method):
    record = pretrain(_config(tmp_path, start, method=method))
    assert record["method"] == method and len(record["loss_by_epoch"]) == 1
    assert torch.isfinite(torch.tensor(record["loss_by_epoch"])).all()


@pytest.mark.slow
def test_a_killed_pretraining_resumes(tmp_path, start):
    out = tmp_path / "ssl.pt"
    args = ["pretrain", AID_TINY, "--output", out, "--backbone", STUB_BACKBONE,
            "--weights", start, "--image-size", "32", "--batch-size", "16", "--epochs", "6",
            "--device", "cpu"]  # fmt: skip
    kill_after(args, "epoch 1/6 done")
    assert state_file(out).is_file() and not out.exists()
    done = torch.load(state_file(out), weights_only=True)["epochs_done"]
    assert 1 <= done < 6
    record = pretrain(_config(tmp_path, start, epochs=6, resume=True))
    assert len(record["loss_by_epoch"]) == 6 and out.is_file()
    assert not state_file(out).exists()
