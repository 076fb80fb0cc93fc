"""The bad-input matrix: every command, run through the real CLI entry point, with inputs a
hostile new user would give. Each must end in one line ``error: ...``, exit code 2, no traceback,
and no change to any existing run, dataset or cache entry."""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import AID_TINY, REPO, STUB_BACKBONE
from PIL import Image

from geotune.cli.main import main


@dataclass
class World:
    """A finished stub run, its dataset, and the places a command must not touch."""

    tmp: Path
    data: Path
    runs: Path
    run: Path
    cache: Path

    @property
    def stub(self) -> list[str]:
        return [
            "--backbone", STUB_BACKBONE, "--weights", "random", "--image-size", "32",
            "--batch-size", "8", "--train-fraction", "0.5", "--epochs", "1",
            "--output", str(self.runs),
        ]  # fmt: skip

    def damaged(self, name: str, damage) -> Path:
        """A copy of the dataset with one file damaged by ``damage(class_folder)``."""
        copy = self.tmp / "damaged" / name
        if not copy.exists():
            shutil.copytree(self.data, copy)
            damage(copy / "Beach")
        return copy


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """Run `geotune ARGV` in-process; (exit code, stderr)."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    return code, capsys.readouterr().err


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``roots`` (hidden ones too) with its size and modification time."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")) if root.exists() else []:
            if p.is_file() and not p.is_symlink():
                st = p.stat()
                out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    from geotune.config import make_config
    from geotune.engine.trainer import train

    tmp = tmp_path_factory.mktemp("bad-input")
    data = tmp / "data"
    shutil.copytree(AID_TINY, data)
    runs = tmp / "runs"
    result = train(
        make_config(
            data=data, output=runs, name="done", backbone=STUB_BACKBONE, weights="random",
            image_size=32, batch_size=8, train_fraction=0.5, epochs=1,
        )
    )  # fmt: skip
    return World(tmp, data, runs, result.run_dir, Path(os.environ["GEOTUNE_CACHE"]))


# ---------------------------------------------------------------------------------------------
# Ways to damage a dataset
# ---------------------------------------------------------------------------------------------
def _first(folder: Path) -> Path:
    return sorted(folder.glob("*.jpg"))[0]


def truncate(folder: Path) -> None:
    f = _first(folder)
    f.write_bytes(f.read_bytes()[:300])


def zero_bytes(folder: Path) -> None:
    _first(folder).write_bytes(b"")


def not_an_image(folder: Path) -> None:
    (folder / "notes.txt").write_text("field notes")


def text_as_jpeg(folder: Path) -> None:
    (folder / "fake.jpg").write_text("not a jpeg")


def dangling_link(folder: Path) -> None:
    (folder / "gone.jpg").symlink_to(folder / "nowhere.jpg")


def link_loop(folder: Path) -> None:
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")


def decompression_bomb(folder: Path) -> None:
    # A valid 1-bit PNG of 30,000 x 30,000 pixels in a few kB: more pixels than PIL will open.
    w = h = 30_000
    raw = zlib.compress(b"".join(b"\x00" + bytes(w // 8) for _ in range(h)), 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
    (folder / "bomb.png").write_bytes(png + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def transparent_rgba(folder: Path) -> None:
    im = Image.new("RGBA", (48, 48), (10, 200, 30, 0))
    im.save(folder / "alpha.png")


def sixteen_bit(folder: Path) -> None:
    Image.new("I;16", (48, 48), 40_000).save(folder / "deep.png")


def cmyk(folder: Path) -> None:
    Image.new("CMYK", (48, 48), (0, 50, 90, 10)).save(folder / "print.jpg")


def empty_class(folder: Path) -> None:
    (folder.parent / "Desert").mkdir()


def one_class(folder: Path) -> None:
    for other in folder.parent.iterdir():
        if other != folder:
            shutil.rmtree(other)


DAMAGE = {
    f.__name__: f
    for f in (
        truncate, zero_bytes, not_an_image, text_as_jpeg, dangling_link, link_loop,
        decompression_bomb, transparent_rgba, sixteen_bit, cmyk, empty_class, one_class,
    )
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The matrix: (command, case, argv builder, words the error must contain)
# ---------------------------------------------------------------------------------------------
def _file(w: World, name: str, content: bytes) -> Path:
    p = w.tmp / "files" / name
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(content)
    return p


def _partial_run(w: World) -> Path:
    """A killed run: its staging folder exists, no finished folder."""
    staging = w.runs / ".killed.partial"
    if not staging.exists():
        shutil.copytree(w.run, staging)
        (staging / "status.json").write_text('{"state": "running"}')
    return w.runs / "killed"


def _run_copy(w: World, name: str, damage) -> Path:
    copy = w.tmp / "run-copies" / name
    if not copy.exists():
        shutil.copytree(w.run, copy)
        damage(copy)
    return copy


def _truncate_best(run: Path) -> None:
    f = run / "checkpoints" / "best.pt"
    f.write_bytes(f.read_bytes()[:1000])


def _corrupt_summary(run: Path) -> None:
    (run / "summary.json").write_text('{"strategy": ')


T = "train"
MATRIX = [
    # train: data
    (T, "data missing", lambda w: [T, "--data", w.tmp / "nope", *w.stub], "does not exist"),
    (T, "data is a file", lambda w: [T, "--data", w.run / "config.yaml", *w.stub], "is a file"),
    (T, "data without class folders", lambda w: [T, "--data", w.runs / "done" / "checkpoints", *w.stub], "no class sub-folders"),
    *[
        (T, f"data: {name}", lambda w, n=name: [T, "--data", w.damaged(n, DAMAGE[n]), *w.stub], words)
        for name, words in [
            ("truncate", "corrupt or truncated"),
            ("zero_bytes", "Beach"),
            ("not_an_image", "not an image"),
            ("text_as_jpeg", "not a readable image"),
            ("dangling_link", "broken symbolic link"),
            ("link_loop", "symbolic link loop"),
            ("decompression_bomb", "too large to decode safely"),
            ("transparent_rgba", "transparent alpha band"),
            ("sixteen_bit", "not 8-bit"),
            ("cmyk", "4 bands"),
            ("empty_class", "holds no images"),
            ("one_class", "at least two classes"),
        ]
    ],
    # train: options and config files
    (T, "unknown strategy", lambda w: [T, "--data", w.data, *w.stub, "--strategy", "magic"], "unknown strategy 'magic'"),
    (T, "unknown bn policy", lambda w: [T, "--data", w.data, *w.stub, "--bn-policy", "x"], "unknown bn_policy"),
    (T, "zero epochs", lambda w: [T, "--data", w.data, *w.stub, "--epochs", "0"], "'epochs'"),
    (T, "unknown class weights", lambda w: [T, "--data", w.data, *w.stub, "--class-weights", "inverse"], "'class_weights'"),
    (T, "class weights with knn", lambda w: [T, "--data", w.data, *w.stub, "--strategy", "knn", "--class-weights", "balanced"], "knn votes by neighbours"),
    (T, "auto with layer options", lambda w: [T, "--data", w.data, *w.stub, "--strategy", "auto", "--unfreeze-last", "2"], "auto chooses the layers"),
    (T, "backbone ensemble fine-tuned", lambda w: [T, "--data", w.data, *w.stub, "--backbone", f"{STUB_BACKBONE}+test_resnet", "--strategy", "full"], "serves linear-probe and knn"),
    (T, "sampler with a probe", lambda w: [T, "--data", w.data, *w.stub, "--strategy", "linear-probe", "--sampler", "balanced"], "sampler applies to trained strategies"),
    (T, "probe stages zero", lambda w: [T, "--data", w.data, *w.stub, "--strategy", "linear-probe", "--probe-stages", "0"], "probe_stages values must be >= 1"),
    (T, "more probe stages than the backbone has", lambda w: [T, "--data", w.data, *w.stub, "--strategy", "linear-probe", "--probe-stages", "1,40"], "use at most"),
    (T, "probe stages of an ensemble", lambda w: [T, "--data", w.data, *w.stub, "--backbone", f"{STUB_BACKBONE}+test_resnet", "--strategy", "linear-probe", "--probe-stages", "2"], "one plain backbone"),
    (T, "unknown probe solver", lambda w: [T, "--data", w.data, *w.stub, "--strategy", "linear-probe", "--probe-solver", "sgd"], "probe_solver"),
    (T, "unknown feature engine", lambda w: [T, "--data", w.data, *w.stub, "--strategy", "linear-probe", "--feature-engine", "tensorrt"], "feature_engine"),
    (T, "unknown cudnn benchmark", lambda w: [T, "--data", w.data, *w.stub, "--cudnn-benchmark", "sometimes"], "cudnn_benchmark"),
    (T, "feature extraction given several probe stages", lambda w: [T, "--data", w.data, *w.stub, "--strategy", "feature-extraction", "--probe-stages", "1,3"], "give one probe_stages value"),
    (T, "unknown cudnn setting", lambda w: [T, "--data", w.data, *w.stub, "--cudnn", "sometimes"], "cudnn"),
    (T, "negative lr", lambda w: [T, "--data", w.data, *w.stub, "--lr", "-1"], "'lr'"),
    (T, "train fraction > 1", lambda w: [T, "--data", w.data, *w.stub, "--train-fraction", "1.5"], "train_fraction"),
    (T, "epochs not a number", lambda w: [T, "--data", w.data, *w.stub, "--epochs", "many"], "epochs"),
    (T, "freeze-until with full", lambda w: [T, "--data", w.data, *w.stub, "--freeze-until", "blocks.2"], "applies to strategies"),
    (T, "unknown layer group", lambda w: [T, "--data", w.data, *w.stub, "--strategy", "partial", "--freeze-until", "layer9"], "not a layer group"),
    (T, "bad group-lr", lambda w: [T, "--data", w.data, *w.stub, "--group-lr", "stem"], "NAME=VALUE"),
    (T, "too many labels per class", lambda w: [T, "--data", w.data, *w.stub, "--labels-per-class", "50"], "too few for the requested split"),
    (T, "unknown backbone", lambda w: [T, "--data", w.data, *w.stub[2:], "--backbone", "no_such_net"], "no_such_net"),
    (T, "weights file missing", lambda w: [T, "--data", w.data, *w.stub[:2], "--weights", w.tmp / "none.pth", *w.stub[4:]], "not found"),
    (T, "weights file empty", lambda w: [T, "--data", w.data, *w.stub[:2], "--weights", _file(w, "empty.pth", b""), *w.stub[4:]], "empty"),
    (T, "weights file garbage", lambda w: [T, "--data", w.data, *w.stub[:2], "--weights", _file(w, "junk.pth", b"\x00junk" * 50), *w.stub[4:]], "cannot read checkpoint"),
    (T, "config missing", lambda w: [T, "--config", w.tmp / "none.yaml"], "not found"),
    (T, "config is a folder", lambda w: [T, "--config", w.tmp], "is a folder"),
    (T, "config not UTF-8", lambda w: [T, "--config", _file(w, "latin.yaml", "data: caf\xe9\n".encode("latin-1"))], "not UTF-8"),
    (T, "config not YAML", lambda w: [T, "--config", _file(w, "bad.yaml", b"data: [unclosed\n")], "not valid YAML"),
    (T, "config unknown key", lambda w: [T, "--config", _file(w, "key.yaml", f"data: {w.data}\nlearning_rate: 1\n".encode())], "unknown config key 'learning_rate'"),
    (T, "output is a file", lambda w: [T, "--data", w.data, *w.stub, "--output", w.run / "config.yaml"], "is a file"),
    (T, "output cannot be created", lambda w: [T, "--data", w.data, *w.stub, "--output", "/proc/geotune-runs"], "cannot create output folder"),
    (T, "split file missing", lambda w: [T, "--data", w.data, *w.stub, "--split", w.tmp / "none.csv"], "not found"),
    (T, "split of other data", lambda w: [T, "--data", _unknown_classes(w), *w.stub, "--split", w.run / "split.csv"], "split file"),
    (T, "bad run name", lambda w: [T, "--data", w.data, *w.stub, "--name", "a/b"], "not a folder name"),
    (T, "name of a finished run", lambda w: [T, "--data", w.data, *w.stub, "--name", "done"], "already exists"),
    (T, "name of a resumable killed run", lambda w: [T, "--data", w.data, *w.stub, "--name", _partial_run(w).name], "--resume"),
    (T, "resume nothing", lambda w: [T, "--resume", w.runs / "never"], "no unfinished run"),
    (T, "resume with options", lambda w: [T, "--resume", _partial_run(w), "--epochs", "3"], "--resume takes no other options"),
    (T, "resume a finished run", lambda w: [T, "--resume", w.run], "already finished"),
    (T, "unknown option", lambda w: [T, "--data", w.data, "--learning-rate", "1"], "No such option"),
    # evaluate
    ("evaluate", "run missing", lambda w: ["evaluate", w.runs / "never"], "not found"),
    ("evaluate", "run unfinished", lambda w: ["evaluate", _partial_run(w)], "did not finish"),
    ("evaluate", "not a run", lambda w: ["evaluate", w.data], "not a finished geotune run"),
    ("evaluate", "truncated checkpoint", lambda w: ["evaluate", _run_copy(w, "trunc", _truncate_best)], "cannot be read"),
    ("evaluate", "unknown device", lambda w: ["evaluate", w.run, "--device", "tpu"], "unknown device 'tpu'"),
    ("evaluate", "unknown tta", lambda w: ["evaluate", w.run, "--tta", "spin"], "'tta'"),
    ("evaluate", "batch size 0", lambda w: ["evaluate", w.run, "--batch-size", "0"], "batch_size"),
    ("evaluate", "data with unknown classes", lambda w: ["evaluate", w.run, "--data", _unknown_classes(w)], "--class-map"),
    ("evaluate", "empty class map", lambda w: ["evaluate", w.run, "--data", _unknown_classes(w), "--class-map", _file(w, "empty-map.yaml", b"")], "class map"),
    ("evaluate", "class map not a mapping", lambda w: ["evaluate", w.run, "--data", _unknown_classes(w), "--class-map", _file(w, "list-map.yaml", b"- a\n- b\n")], "must be a mapping"),
    ("evaluate", "the run's data changed", lambda w: ["evaluate", _run_on_changed_data(w)], "not the data run"),
    # compare
    ("compare", "auto among strategies", lambda w: ["compare", "--data", w.data, "--strategies", "auto,linear-probe", "--output", w.tmp / "sw"], "auto picks one of them"),
    ("compare", "unknown strategy", lambda w: ["compare", "--data", w.data, "--strategies", "knn,magic", "--output", w.tmp / "sw"], "unknown strategy 'magic'"),
    ("compare", "label budget 0", lambda w: ["compare", "--data", w.data, "--labels-per-class", "0", "--output", w.tmp / "sw"], "budgets"),
    ("compare", "label budget not a number", lambda w: ["compare", "--data", w.data, "--labels-per-class", "few", "--output", w.tmp / "sw"], "budgets"),
    ("compare", "no seeds", lambda w: ["compare", "--data", w.data, "--seeds", "0", "--output", w.tmp / "sw"], "seeds"),
    ("compare", "bad train options", lambda w: ["compare", "--data", w.data, "--config", _file(w, "c.yaml", b"epochz: 3\n"), "--output", w.tmp / "sw"], "epochz"),
    ("compare", "data missing", lambda w: ["compare", "--data", w.tmp / "nope", "--output", w.tmp / "sw"], "does not exist"),
    # report
    ("report", "folder missing", lambda w: ["report", w.tmp / "nope"], "neither a run folder nor a compare sweep"),
    ("report", "not a run", lambda w: ["report", w.data], "neither a run folder nor a compare sweep"),
    ("report", "corrupt summary", lambda w: ["report", _run_copy(w, "bad-summary", _corrupt_summary)], "damaged"),
    # simulate
    ("simulate", "source missing", lambda w: ["simulate", w.tmp / "nope", w.tmp / "sim1"], "does not exist"),
    ("simulate", "destination exists", lambda w: ["simulate", w.data, w.runs], "already exists"),
    ("simulate", "unknown shift", lambda w: ["simulate", w.data, w.tmp / "sim2", "--shift", "fog"], "unknown shift 'fog'"),
    ("simulate", "strength > 1", lambda w: ["simulate", w.data, w.tmp / "sim3", "--strength", "3"], "strength"),
    ("simulate", "split without part", lambda w: ["simulate", w.data, w.tmp / "sim4", "--split", w.run / "split.csv"], "--part"),
    # shift
    ("shift", "dataset missing", lambda w: ["shift", w.data, w.tmp / "nope", "--run", w.run, "--output", w.tmp / "sh"], "does not exist"),
    ("shift", "negative per-class", lambda w: ["shift", w.data, w.data, "--per-class", "-1"], "per_class"),
    ("shift", "run unfinished", lambda w: ["shift", w.data, w.data, "--run", _partial_run(w), "--output", w.tmp / "sh"], "did not finish"),
    ("shift", "too few bootstrap resamples", lambda w: ["shift", w.data, w.data, "--bootstrap", "2"], "bootstrap"),
    # adapt
    ("adapt", "run missing", lambda w: ["adapt", w.runs / "never", "--target", w.data], "not found"),
    ("adapt", "unknown method", lambda w: ["adapt", w.run, "--target", w.data, "--method", "adabn,magic"], "unknown method 'magic'"),
    ("pretrain", "no images", lambda w: ["pretrain", w.runs / "done" / "checkpoints", "--output", w.tmp / "p.pt"], "holds no images"),
    ("pretrain", "fewer chips than a batch", lambda w: ["pretrain", w.data, "--output", w.tmp / "p.pt", "--batch-size", "4096", "--backbone", STUB_BACKBONE, "--weights", "random"], "fewer than one batch"),
    ("pretrain", "mae on a CNN", lambda w: ["pretrain", w.data, "--output", w.tmp / "p.pt", "--method", "mae"], "use simclr, byol or dino"),
    ("pretrain", "nothing to resume", lambda w: ["pretrain", w.data, "--output", w.tmp / "p.pt", "--resume"], "nothing to resume"),
    ("pretrain", "output exists", lambda w: ["pretrain", w.data, "--output", w.run / "checkpoints" / "best.pt"], "exists"),
    ("adapt", "label-set without class map", lambda w: ["adapt", w.run, "--target", w.data, "--method", "label-set", "--output", w.tmp / "ad"], "label-set needs --class-map"),
    ("adapt", "target missing", lambda w: ["adapt", w.run, "--target", w.tmp / "nope", "--output", w.tmp / "ad"], "not found"),
    ("adapt", "batch size 1", lambda w: ["adapt", w.run, "--target", w.data, "--batch-size", "1"], "batch_size"),
    ("adapt", "no target given", lambda w: ["adapt", w.run], "target"),
    ("adapt", "unknown device", lambda w: ["adapt", w.run, "--target", w.data, "--device", "gpu9", "--output", w.tmp / "ad"], "unknown device"),
    # predict, export
    ("predict", "run missing", lambda w: ["predict", w.runs / "never", w.data, "--output", w.tmp / "p.csv"], "not found"),
    ("predict", "run unfinished", lambda w: ["predict", _partial_run(w), w.data, "--output", w.tmp / "p.csv"], "did not finish"),
    ("predict", "input missing", lambda w: ["predict", w.run, w.tmp / "nope", "--output", w.tmp / "p.csv"], "nope"),
    ("predict", "output exists", lambda w: ["predict", w.run, w.data, "--output", w.run / "config.yaml"], "--overwrite"),
    ("predict", "top-k 0", lambda w: ["predict", w.run, w.data, "--output", w.tmp / "p.csv", "--top-k", "0"], "top_k"),
    ("predict", "stride 0", lambda w: ["predict", w.run, w.data, "--scene", "--stride", "0", "--output", w.tmp / "m.tif"], "stride"),
    ("predict", "unknown tta", lambda w: ["predict", w.run, w.data, "--output", w.tmp / "p.csv", "--tta", "spin"], "tta"),
    ("export", "run missing", lambda w: ["export", w.runs / "never", "--output", w.tmp / "m.onnx"], "not found"),
    ("export", "unknown format", lambda w: ["export", w.run, "--format", "tflite", "--output", w.tmp / "m.x"], "format"),
    ("export", "output exists", lambda w: ["export", w.run, "--output", w.run / "config.yaml"], "--overwrite"),
    ("export", "truncated checkpoint", lambda w: ["export", _run_copy(w, "trunc", _truncate_best), "--output", w.tmp / "t.onnx"], "cannot be read"),
    # multispectral chips (real EuroSAT MS GeoTIFFs; synthetic ones only for the damage)
    (T, "bands: a chip with another band count", lambda w: [T, "--data", _ms(w, "four", _four_band_chip), *_ms_stub(w)], "has 4 bands"),
    (T, "bands: --bands names a band that does not exist", lambda w: [T, "--data", _ms(w), *_ms_stub(w), "--bands", "B04,B13"], "'B13'"),
    (T, "bands: --bands without band names", lambda w: [T, "--data", _ms(w), *w.stub, "--bands", "B04"], "sentinel2-13"),
    (T, "bands: unknown --band-names preset", lambda w: [T, "--data", _ms(w), *w.stub, "--band-names", "landsat9"], "preset"),
    (T, "bands: --band-init that does not fit", lambda w: [T, "--data", _ms(w), *_ms_stub(w), "--band-init", "zero"], "does not fit"),
    (T, "bands: unknown --band-init", lambda w: [T, "--data", _ms(w), *_ms_stub(w), "--band-init", "copy"], "unknown band_init"),
    (T, "bands: an all-nodata chip", lambda w: [T, "--data", _ms(w, "nodata", _nodata_chip), *_ms_stub(w)], "all nodata"),
    (T, "bands: a float chip with NaN", lambda w: [T, "--data", _ms(w, "nan", _nan_chip), *_ms_stub(w)], "NaN"),
    (T, "bands: 13-band weights on RGB data", lambda w: [T, "--data", w.data, *w.stub[:2], "--weights", _weights_13(w), *w.stub[4:]], "13-band input"),
    ("evaluate", "13-band run on RGB data", lambda w: ["evaluate", _ms_run(w), "--data", _rgb_like_ms(w)], "8-bit RGB"),
    # outputs inside inputs (geotune.runs.paths)
    ("simulate", "copy inside its source", lambda w: ["simulate", w.data, w.data / "sub", "--shift", "haze"], "lies inside input SRC"),
    (T, "output inside the data", lambda w: [T, "--data", w.data, *w.stub, "--output", w.data / "runs"], "lies inside input --data"),
    ("compare", "sweep inside the data", lambda w: ["compare", "--data", w.data, "--output", w.data / "sw"], "lies inside input --data"),
    ("shift", "report inside a dataset", lambda w: ["shift", w.data, w.data, "--output", w.data / "sh"], "lies inside input A"),
    ("adapt", "new run inside the target", lambda w: ["adapt", w.run, "--target", w.data, "--output", w.data / "ad"], "lies inside input --target"),
    ("pretrain", "checkpoint inside the chips", lambda w: ["pretrain", w.data, "--output", w.data / "p.pt"], "lies inside input DATA"),
    ("evaluate", "evaluation inside --data", lambda w: ["evaluate", w.run, "--data", w.runs], "lies inside input --data"),
    ("predict", "csv inside the chips", lambda w: ["predict", w.run, w.data, "--output", w.data / "p.csv"], "lies inside input INPUTS"),
    ("export", "model inside the run", lambda w: ["export", w.run, "--output", w.run / "m.onnx"], "lies inside input RUN"),
]  # fmt: skip


EUROSAT_MS = REPO.parent / "shared" / "datasets" / "eurosat_ms_dev"


def _ms(w: World, name: str = "clean", damage=None) -> Path:
    """2 classes x 4 real EuroSAT MS chips (13 bands, uint16), optionally with one bad chip."""
    if not EUROSAT_MS.is_dir():
        pytest.skip(f"EuroSAT MS copy not found at {EUROSAT_MS}")
    copy = w.tmp / "ms" / name
    if not copy.exists():
        for c in ("Forest", "River"):
            (copy / c).mkdir(parents=True)
            for f in sorted((EUROSAT_MS / c).glob("*.tif"))[:4]:
                shutil.copy2(f, copy / c / f.name)
        if damage is not None:
            damage(copy / "River")
    return copy


def _ms_stub(w: World) -> list:
    return [*w.stub, "--band-names", "sentinel2-13"]


def _write_tif(path: Path, arr) -> None:
    import rasterio
    from rasterio.transform import from_origin

    profile = {"driver": "GTiff", "width": arr.shape[2], "height": arr.shape[1]}
    profile["transform"] = from_origin(500_000, 4_800_000, 10, 10)  # a 10 m UTM-like grid
    with rasterio.open(path, "w", count=arr.shape[0], dtype=arr.dtype, **profile) as dst:
        dst.write(arr)


def _four_band_chip(folder: Path) -> None:
    import numpy as np

    _write_tif(folder / "zz_naip.tif", np.full((4, 64, 64), 900, dtype=np.uint16))


def _nodata_chip(folder: Path) -> None:
    import numpy as np

    _write_tif(folder / "zz_empty.tif", np.zeros((13, 64, 64), dtype=np.uint16))


def _nan_chip(folder: Path) -> None:
    import numpy as np

    arr = np.full((13, 64, 64), 0.12, dtype=np.float32)
    arr[:, :8, :8] = np.nan
    _write_tif(folder / "zz_float.tif", arr)


def _weights_13(w: World) -> Path:
    import timm

    path = w.tmp / "files" / "s2-13.pth"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        net = timm.create_model(STUB_BACKBONE, num_classes=0, in_chans=13)
        torch.save(net.state_dict(), path)
    return path


def _ms_run(w: World) -> Path:
    """A finished stub run on the 13-band chips (outside the watched runs folder)."""
    run = w.tmp / "ms-runs" / "ms13"
    if not run.exists():
        from geotune.config import make_config
        from geotune.engine.trainer import train

        train(
            make_config(
                data=_ms(w), output=run.parent, name=run.name, backbone=STUB_BACKBONE,
                weights="random", image_size=32, batch_size=8, train_fraction=0.5, epochs=1,
                band_names="sentinel2-13",
            )
        )  # fmt: skip
    return run


def _rgb_like_ms(w: World) -> Path:
    """8-bit RGB JPEGs in the 13-band run's classes (Forest, River)."""
    rgb = w.tmp / "rgb-forest-river"
    if not rgb.exists():
        for c in ("Forest", "River"):
            shutil.copytree(AID_TINY / c, rgb / c)
    return rgb


def _unknown_classes(w: World) -> Path:
    other = w.tmp / "other-classes"
    if not other.exists():
        for c in ("Desert", "Farmland"):
            shutil.copytree(AID_TINY / "Beach", other / c)
    return other


def _run_on_changed_data(w: World) -> Path:
    """A copy of the finished run whose data folder lost a chip after training."""
    data = w.tmp / "changing-data"
    copy = w.tmp / "run-copies" / "changed"
    if not copy.exists():
        shutil.copytree(w.data, data)
        shutil.copytree(w.run, copy)
        cfg = (copy / "config.yaml").read_text().replace(str(w.data), str(data))
        (copy / "config.yaml").write_text(cfg)
        _first(data / "River").unlink()
    return copy


@pytest.mark.parametrize(
    ("command", "case", "argv", "words"),
    MATRIX,
    ids=[f"{c}: {case}" for c, case, *_ in MATRIX],
)
def test_bad_input_is_one_clear_line(world, capsys, command, case, argv, words):
    args = argv(world)  # builds damaged copies first, so they are not counted as changes
    capsys.readouterr()
    watched = (world.runs, world.data, world.cache, world.tmp / "run-copies")
    before = snapshot(*watched)
    code, err = cli(args, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2, err
    # One error line, the last one; anything before it is progress a run logged on the way.
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err
    assert words.lower() in errors[0].lower(), errors[0]
    after = snapshot(*watched)
    # Nothing existing changed; at most new cache entries appeared.
    assert {k: v for k, v in after.items() if k in before} == before
    assert all(k.startswith(str(world.cache)) for k in set(after) - set(before)), set(after) - set(
        before
    )


def test_matrix_covers_every_command():
    from geotune.cli.main import app

    commands = {c.name for c in app.registered_commands} - {"backbones"}
    assert commands <= {c for c, *_ in MATRIX}, commands - {c for c, *_ in MATRIX}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line(world, capsys):
    code, err = cli(["train", "--data", world.data, *world.stub, "--device", "cuda"], capsys)
    assert code == 2 and err.strip().startswith("error: ") and "no usable CUDA GPU" in err


def test_skip_bad_images_skips_every_kind_of_bad_file(world, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(world.data, data)
    for name in ("truncate", "not_an_image", "dangling_link", "link_loop", "decompression_bomb",
                 "transparent_rgba", "sixteen_bit", "cmyk"):  # fmt: skip
        DAMAGE[name](data / "Beach")
    code, err = cli(
        ["train", "--data", data, *world.stub, "--output", tmp_path, "--skip-bad-images",
         "--name", "skips"], capsys,
    )  # fmt: skip
    assert code == 0, err
    listed = (tmp_path / "skips" / "skipped_files.txt").read_text().splitlines()
    reasons = dict(line.split("\t", 1) for line in listed)
    assert len(reasons) == 8
    assert "symbolic link loop" in reasons["Beach/loop.jpg"]
    assert "transparent alpha band" in reasons["Beach/alpha.png"]
    # Reasons are kept whole (an earlier version cut them at the first ';').
    assert all(r and not r.endswith(",") for r in reasons.values())


def test_unexpected_errors_are_one_line_with_a_log(monkeypatch, capsys, world):
    import geotune.engine.trainer as trainer

    def boom(*a, **k):
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(trainer, "prepare", boom)
    code, err = cli(["train", "--data", world.data, *world.stub], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith("error: unexpected RuntimeError: something broke; traceback in ")
    log = Path(lines[0].rsplit("traceback in ", 1)[1])
    assert "Traceback" in log.read_text() and "boom" in log.read_text()


def test_damaged_cache_entries_are_rebuilt_with_one_warning(world, tmp_path, capsys, monkeypatch):
    from geotune.config import make_config
    from geotune.data.decode import decode_folder
    from geotune.data.folder import scan_folder

    monkeypatch.setenv("GEOTUNE_CACHE", str(tmp_path / "cache"))
    folder = scan_folder(world.data)
    first = decode_folder(folder, 32)
    entry = tmp_path / "cache" / "images" / f"{first.key}.npy"
    reference = first.pixels.copy()
    for damage in (lambda b: b[: len(b) // 2], lambda b: b"", lambda b: b[:100]):
        entry.write_bytes(damage(entry.read_bytes()))
        capsys.readouterr()
        again = decode_folder(folder, 32)
        err = capsys.readouterr().err
        assert err.count("warning") == 1 and "damaged" in err and str(entry) in err
        assert (again.pixels == reference).all()
    # A stray temporary of a killed process goes; one of a live process stays.
    dead = entry.parent / ".deadbeef.999999.npy"
    live = entry.parent / f".cafe.{os.getpid()}.npy"
    dead.write_bytes(b"x")
    live.write_bytes(b"x")
    entry.unlink()
    decode_folder(folder, 32)
    assert not dead.exists() and live.exists()
    # The feature cache is validated the same way: a 0-byte entry is recomputed.
    cfg = make_config(
        data=world.data, output=tmp_path / "runs", strategy="knn", backbone=STUB_BACKBONE,
        weights="random", image_size=32, train_fraction=0.5,
    )  # fmt: skip
    from geotune.engine.trainer import train

    r1 = train(cfg)
    feats = next((tmp_path / "cache" / "features").glob("*.npy"))
    feats.write_bytes(b"")
    r2 = train(cfg.model_copy(update={"name": "again"}))
    summary = json.loads((r2.run_dir / "summary.json").read_text())
    assert summary["features_from_cache"] is False
    assert r1.test_metrics["confusion_matrix"] == r2.test_metrics["confusion_matrix"]
