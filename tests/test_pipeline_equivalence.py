"""The decode-once cache path gives the same tensors as the plain torchvision path.

geotune decodes every chip once with PIL, resizes it (``resize_chip``) and keeps it as uint8 in a
memory-mapped cache; batches are fancy-indexed from that array (``iterate_batches``) and
normalised on the device. A plain recipe decodes and resizes each chip in a DataLoader worker with
torchvision transforms. Any difference between the two would make benchmark comparisons (and
models moved between the two) unfair, so the two are compared chip by chip here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets, transforms
from torchvision.transforms import InterpolationMode

from geotune.data import augment_batch, build_augment, decode_folder, iterate_batches, scan_folder
from geotune.models import OFFLINE_WEIGHTS

# The default backbone's own preprocessing (224 px, mean = std = 0.5, bicubic), read from its
# offline weights entry without building the model.
PREP = OFFLINE_WEIGHTS["tf_efficientnet_lite0"].preprocessing
# Both paths resize the same decoded PIL image with PIL's own antialiased bicubic resampling
# (torchvision's Resize hands PIL images to Image.resize), so uint8 pixels must match exactly.
PIXEL_TOLERANCE = 0
# Normalisation is the same float32 arithmetic (x / 255 - mean) / std on both sides; 1e-6 allows
# only for a different operation order in another torch build, far below one grey level (~0.008).
NORMALISED_ATOL = 1e-6


def _torchvision_dataset(root, size: int, normalise: bool) -> datasets.ImageFolder:
    steps = [
        transforms.Resize((size, size), interpolation=InterpolationMode.BICUBIC, antialias=True)
    ]
    if normalise:
        steps += [transforms.ToTensor(), transforms.Normalize(PREP.mean, PREP.std)]
    else:
        steps.append(transforms.PILToTensor())
    return datasets.ImageFolder(str(root), transform=transforms.Compose(steps))


def test_imagefolder_sees_the_same_classes_and_files(aid_small):
    folder = scan_folder(aid_small)
    plain = datasets.ImageFolder(str(aid_small))
    assert plain.classes == folder.classes
    rel = [(Path(s).relative_to(aid_small).as_posix(), y) for s, y in plain.samples]
    assert rel == list(zip(folder.paths, folder.labels.tolist(), strict=True))


@pytest.mark.parametrize("size", [64, PREP.size])  # downsampling (antialias) and upsampling
def test_cached_pixels_equal_plain_pil_resize(aid_small, tmp_path, size):
    folder = scan_folder(aid_small)
    plain = _torchvision_dataset(aid_small, size, normalise=False)
    order = np.random.default_rng(0).permutation(len(folder))  # batches keep the asked order
    # The first call decodes and writes the cache, the second reads the memmap back.
    for _ in range(2):
        images = decode_folder(folder, size, PREP.interpolation, cache_dir=tmp_path)
        seen = 0
        for x, y in iterate_batches(images.pixels, folder.labels, order, batch_size=7):
            assert x.dtype == torch.uint8 and x.shape[1:] == (3, size, size)
            for xi, yi, i in zip(x, y, order[seen : seen + len(x)], strict=True):
                ref, label = plain[int(i)]
                assert int(yi) == label
                diff = (xi.int() - ref.int()).abs().max().item()
                assert diff <= PIXEL_TOLERANCE, f"{folder.paths[i]} differs by {diff} grey levels"
            seen += len(x)
        assert seen == len(folder)


def test_normalised_batch_without_augmentation_equals_torchvision(aid_small, tmp_path):
    folder = scan_folder(aid_small)
    images = decode_folder(folder, PREP.size, PREP.interpolation, cache_dir=tmp_path)
    plain = _torchvision_dataset(aid_small, PREP.size, normalise=True)
    off = build_augment(PREP.size, flips=False, rot90=False, crop_scale=(1.0, 1.0))
    assert len(off) == 0
    idx = np.arange(0, len(folder), 5)
    x, _ = next(iterate_batches(images.pixels, folder.labels, idx, batch_size=len(idx)))
    ours = PREP.normalize(augment_batch(off, x))
    ref = torch.stack([plain[int(i)][0] for i in idx])
    assert ours.dtype == ref.dtype == torch.float32
    torch.testing.assert_close(ours, ref, atol=NORMALISED_ATOL, rtol=0)


def test_augmentation_is_reproducible_from_the_seed(aid_small, tmp_path):
    folder = scan_folder(aid_small)
    images = decode_folder(folder, 64, PREP.interpolation, cache_dir=tmp_path)
    x = torch.from_numpy(np.array(images.pixels[:16]))  # a writable copy of the memmap
    augment = build_augment(64, True, True, (0.5, 1.0))  # resized crops, flips, quarter turns

    def draw(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)  # kornia draws its parameters from torch's global generator
        return augment_batch(augment, x)

    a, b, c = draw(0), draw(0), draw(1)
    assert a.shape == (16, 3, 64, 64) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b), "same seed, different augmented batch"
    assert not torch.equal(a, c), "different seeds gave the same augmented batch"
    assert not torch.equal(a, x.float() / 255), "augmentation left the batch unchanged"


def test_the_training_default_turns_and_flips_whole_chips_without_cropping(aid_small, tmp_path):
    from geotune.config import make_config

    cfg = make_config(data=aid_small)
    images = decode_folder(scan_folder(aid_small), 64, PREP.interpolation, cache_dir=tmp_path)
    raw = torch.from_numpy(np.array(images.pixels[:8]))
    x = raw.float() / 255
    torch.manual_seed(0)
    out = augment_batch(build_augment(64, cfg.flips, cfg.rot90, cfg.crop_scale), raw)
    # No crop, no resampling: every chip comes back as one of its eight D4 transforms.
    for chip, got in zip(x, out, strict=True):
        turns = [torch.rot90(v, k, (-2, -1)) for v in (chip, chip.flip(-1)) for k in range(4)]
        assert any(torch.allclose(got, t, atol=1e-3) for t in turns)  # kornia warps: ~2e-5
