"""The torch-native data interface: SceneFolder/DecodedImages as a Dataset, Python datasets in."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from geotune.data.batches import load_batch
from geotune.data.dataset import materialise
from geotune.data.decode import decode_folder
from geotune.data.folder import scan_folder
from geotune.data.splits import make_split
from geotune.errors import DataError


class FixtureChips(torch.utils.data.Dataset):
    """A torchgeo-style dataset over real fixture chips: {'image': CxHxW float, 'label'}."""

    def __init__(self, root, bad=None):
        folder = scan_folder(root)
        self.classes, self.files, self.labels = folder.classes, folder.paths, folder.labels
        self.root, self.bad = root, bad

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        arr = np.asarray(Image.open(self.root / self.files[i]).convert("RGB"), dtype=np.float32)
        image = torch.from_numpy(arr).permute(2, 0, 1)
        if self.bad == "nan" and i == 5:
            image[0, 0, 0] = float("nan")
        if self.bad == "bands" and i == 3:
            image = torch.cat([image, image[:1]])
        return {"image": image, "label": torch.tensor(int(self.labels[i]))}


def test_dataloader_matches_engine_batch(aid_tiny):
    ds = decode_folder(scan_folder(aid_tiny), 32)
    idx = np.array([3, 0, 17, 9])
    x, y = next(iter(DataLoader(torch.utils.data.Subset(ds, idx), batch_size=4)))
    ex, ey = load_batch(ds.pixels, ds.folder.labels, idx)
    assert x.dtype == ex.dtype == torch.uint8
    assert torch.equal(x, ex) and torch.equal(y, ey)
    assert ds.targets == list(ds.folder.labels) and len(ds.samples) == len(ds)
    assert ds.class_to_idx[ds.classes[1]] == 1


def test_dataset_equals_folder_split_and_pixels(aid_tiny):
    folder_images = decode_folder(scan_folder(aid_tiny), 32)
    mat = materialise(FixtureChips(aid_tiny), 32)
    assert np.array_equal(np.asarray(mat.pixels), np.asarray(folder_images.pixels))
    a = make_split(folder_images.folder, 0.5, None, 0.25, seed=3)
    b = make_split(mat.folder, 0.5, None, 0.25, seed=3)
    assert list(a) == list(b)


@pytest.mark.parametrize(("bad", "words"), [("nan", "sample 5"), ("bands", "sample 3")])
def test_bad_samples_one_line(aid_tiny, bad, words):
    with pytest.raises(DataError) as err:
        materialise(FixtureChips(aid_tiny, bad=bad), 32)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_train_on_python_dataset(aid_tiny, tmp_path):
    import geotune
    from geotune.config import make_config

    config = make_config(
        data=tmp_path,
        output=tmp_path / "runs",
        backbone="resnet18",
        weights="random",
        image_size=32,
        epochs=1,
        batch_size=8,
        train_fraction=0.5,
        device="cpu",
        name="ds",
    )
    result = geotune.train(config, dataset=FixtureChips(aid_tiny))
    assert (result.run_dir / "metrics.csv").is_file()
    assert "python-dataset:FixtureChips[32]" in (result.run_dir / "config.yaml").read_text()
    assert 0 <= result.test_metrics["overall_accuracy"] <= 1
