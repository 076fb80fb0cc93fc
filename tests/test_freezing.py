from __future__ import annotations

import numpy as np
import pytest
import torch

from geotune.config import make_config
from geotune.data import augment_batch, build_augment, decode_folder, scan_folder
from geotune.errors import ConfigError
from geotune.models import build_classifier
from geotune.transfer import (
    BatchNormPolicy,
    apply_trainable,
    build_optimizer,
    frozen_prefix,
    layer_groups,
    plan_phases,
    trainable_flags,
)


def _model(backbone="resnet18", weights="random", classes=4):
    model, prep, _ = build_classifier(backbone, weights, classes)
    return model, prep


def test_groups_come_from_the_model():
    model, _ = _model("resnet18")
    names = [g.name for g in layer_groups(model)]
    assert names == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    lite, _ = _model("tf_efficientnet_lite0", "offline")
    names = [g.name for g in layer_groups(lite)]
    assert names[0] == "stem" and names[-1] == "head" and "blocks.3" in names
    # Every parameter belongs to exactly one group.
    for m in (model, lite):
        ids = [id(p) for g in layer_groups(m) for p in g.params]
        assert len(ids) == len(set(ids)) == len(list(m.parameters()))


def test_freeze_until_and_unfreeze_last_agree():
    model, _ = _model("resnet18")
    groups = layer_groups(model)
    until = trainable_flags(groups, frozen_prefix(groups, freeze_until="layer3"))
    last = trainable_flags(groups, frozen_prefix(groups, unfreeze_last=1))
    assert until == last == (False, False, False, False, True, True)
    apply_trainable(groups, until)
    trainable = {
        n.split(".")[1]
        for n, p in model.named_parameters()
        if p.requires_grad and n.startswith("backbone")
    }
    assert trainable == {"layer4"}


def test_unknown_group_lists_the_groups():
    model, _ = _model("resnet18")
    with pytest.raises(
        ConfigError, match="freeze_until 'layer5' is not a layer group .*groups are: stem, layer1"
    ):
        frozen_prefix(layer_groups(model), freeze_until="layer5")
    with pytest.raises(ConfigError, match="unfreeze_last=9 but the backbone has 5 layer groups"):
        frozen_prefix(layer_groups(model), unfreeze_last=9)


@pytest.mark.parametrize(
    ("strategy", "extra"),
    [("feature-extraction", {}), ("partial", {"freeze_until": "layer2"}), ("full", {})],
)
def test_optimizer_sees_only_trainable_parameters(tmp_path, strategy, extra):
    config = make_config(
        data=tmp_path, backbone="resnet18", weights="random", strategy=strategy, **extra
    )
    model, _ = _model("resnet18")
    groups = layer_groups(model)
    (phase,) = plan_phases(config, groups)
    apply_trainable(groups, list(phase.trainable))
    opt = build_optimizer(config, groups, phase)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in model.parameters() if p.requires_grad}
    assert len(in_opt) < len(list(model.parameters())) or strategy == "full"


def _train_steps(model, policy, prep, pixels, labels, steps=3, lr=1e-2):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    aug = build_augment(prep.size, True, True, (0.5, 1.0))
    for i in range(steps):
        policy.train_mode(model)
        x = prep.normalize(augment_batch(aug, torch.from_numpy(pixels[i * 4 : i * 4 + 8])))
        loss = torch.nn.functional.cross_entropy(
            model(x), torch.from_numpy(labels[i * 4 : i * 4 + 8])
        )
        opt.zero_grad()
        loss.backward()
        opt.step()


def _bn_state(model):
    return {
        k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strategy", "policy", "frozen_prefixes", "moving_prefixes"),
    [
        # requires_grad=False alone would let these running statistics drift: eval mode keeps them.
        ("feature-extraction", "frozen-in-frozen-groups", ("backbone.",), ()),
        (
            "partial",
            "frozen-in-frozen-groups",
            ("backbone.blocks.0.", "backbone.bn1."),
            ("backbone.bn2.",),
        ),
        ("full", "frozen", ("backbone.",), ()),
        # The control: in plain train mode the statistics do move, so the test can fail.
        ("feature-extraction", "train", (), ("backbone.bn1.", "backbone.blocks.0.")),
    ],
)
def test_batchnorm_buffers_bitwise(aid_small, strategy, policy, frozen_prefixes, moving_prefixes):
    model, prep, _ = build_classifier("tf_efficientnet_lite0", "offline", 4)
    prep = type(prep)(64, prep.mean, prep.std, prep.interpolation)  # small chips keep the test fast
    images = decode_folder(scan_folder(aid_small), 64)
    groups = layer_groups(model)
    cut = {"full": 0, "partial": len(groups) - 2, "feature-extraction": len(groups) - 1}[strategy]
    flags = list(trainable_flags(groups, cut))
    apply_trainable(groups, flags)
    bn = BatchNormPolicy(model, groups, flags, policy)
    before = _bn_state(model)
    weights_before = {
        n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad
    }
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images.folder))
    _train_steps(model, bn, prep, np.asarray(images.pixels)[order], images.folder.labels[order])
    after = _bn_state(model)
    for k in before:
        if k.startswith(frozen_prefixes):
            assert torch.equal(before[k], after[k]), k
    for prefix in moving_prefixes:
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)), (
            prefix
        )
    for n, p in model.named_parameters():
        if n in weights_before:
            assert torch.equal(weights_before[n], p), n
