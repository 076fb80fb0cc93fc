"""The one entry to a dataset on disk, whatever its layout: an index file (geotune.data.index),
chips with a label table (geotune.data.multilabel), BigEarthNet's patch folders
(geotune.data.bigearthnet), or class folders (geotune.data.folder)."""

from __future__ import annotations

from pathlib import Path

from geotune.data.bigearthnet import is_bigearthnet, scan_bigearthnet
from geotune.data.folder import SceneFolder, scan_folder
from geotune.data.index import is_index_file, scan_index
from geotune.data.multilabel import scan_labelled
from geotune.errors import ConfigError


def scan_chips(root: Path, labels: Path | None = None, skip_bad: bool = False) -> SceneFolder:
    """The one entry to a dataset on disk: an index file (``--data chips.csv``,
    geotune.data.index), chips with a label table (``labels``), BigEarthNet's patch folders
    (geotune.data.bigearthnet), or class folders (ImageFolder)."""
    if is_index_file(root):
        if labels is not None:
            raise ConfigError(
                f"--data {root} is an index file, which carries the labels itself; leave out "
                "--labels, or pass the chips' folder as --data"
            )
        return scan_index(root, skip_bad)
    if labels is not None:
        return scan_labelled(root, labels, skip_bad)
    if is_bigearthnet(root):
        return scan_bigearthnet(root, skip_bad)
    return scan_folder(root, skip_bad=skip_bad)


def single_label_chips(data: Path, why: str, skip_bad: bool = False) -> SceneFolder:
    """``data``'s chips (class folders or an index file) where one label per chip is needed;
    multi-label data is a one-line ConfigError saying ``why``."""
    folder = scan_chips(Path(data), None, bool(skip_bad))
    if folder.multilabel:
        raise ConfigError(f"{data} holds multi-label chips, but {why}; pass single-label data")
    return folder
