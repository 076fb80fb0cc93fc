"""geotune beside its peers: the same task, data, split, backbone, weights and epochs, timed in
one process, one after the other, on one machine.

Task: scene classification on an ImageFolder dataset (default: AID at 150 px), stratified split
made by geotune itself (``geotune.data.make_split``: ``--train-fraction`` of each class labelled,
``--val-fraction`` of that held out for validation, the rest test; ``--max-test-per-class`` caps
the test part for quick runs). Backbone: timm ``tf_efficientnet_lite0`` with the offline ImageNet
weights geotune ships (``geotune.backbones.create_backbone(name, "offline")``), frozen; only a new
linear head trains. Every peer sees exactly the same files through one folder of symlinks that
holds only the chips of the split, and reads the same split file. All train on the same
training part; the validation part is used the way each peer uses one: ignored by the seed,
torchgeo's LR scheduler watches its loss, geotune feature-extraction keeps its best epoch, and
geotune linear-probe chooses its regularisation on it and then refits on training + validation
(geotune's protocol). The test part is seen once, at the end.

The peers:

seed
    The recipe a practitioner writes first, as written: torchvision ``ImageFolder`` with PIL
    transforms (``Resize`` to the weights' input size with their interpolation, ``ToTensor``,
    ``Normalize`` with the weights' mean/std, 0.5/0.5 for Lite0), a ``DataLoader`` with one worker
    per core, fp32, ``torch.optim.Adam(lr=1e-3)`` over the trainable parameters only, the
    pretrained backbone frozen (``requires_grad=False`` and BatchNorm in eval mode) under a new
    ``nn.Linear`` head, cross-entropy, ``--epochs`` epochs on the training part, then accuracy on
    the test part. It is faithful because its backbone object is the very one geotune trains
    (same builder, same weights, pooled features), and its pixels are the ones geotune decodes:
    PIL's antialiased resize of the same decoded chip (tests/test_pipeline_equivalence.py checks
    that the uint8 chips are identical and the normalised tensors equal within 1e-6).

torchgeo
    torchgeo's ``ClassificationTask(model="tf_efficientnet_lite0", freeze_backbone=True)`` trained
    by a default Lightning ``Trainer`` (fp32, ``max_epochs=--epochs``, its default checkpointing and
    logger), then ``Trainer.test``. The task's own code builds the timm model, its AdamW at
    lr 1e-3 with ReduceLROnPlateau on ``val_loss`` (so it gets the validation part), its
    cross-entropy and its metrics. The same ImageNet weights go in through the task's own
    ``weights=PATH`` route: geotune's backbone state dict is saved as the Lightning-style checkpoint
    that route reads (``hyper_parameters.model`` + ``state_dict`` with ``model.`` keys), and the
    runner checks afterwards that every backbone tensor equals geotune's and that only the
    classifier was left new. Samples are torchgeo's ``{"image", "label"}`` dicts made by the seed's
    PIL pipeline, so the two differ only in the training framework. As in torchgeo, "frozen"
    means ``requires_grad=False`` only: BatchNorm statistics keep moving in train mode.
    torchgeo lives in benchmarks/.venv-peers (``bash benchmarks/install_peers.sh``; 0.8.1, the
    last release for Python 3.11); without it this peer is skipped with a one-line message.

geotune (one row per ``--strategies`` entry, default linear-probe and feature-extraction)
    ``geotune.engine.trainer.train(make_config(...))`` with the same split file, backbone, weights, image
    size, batch size, epochs and seed, ``tta="none"``, geotune's own defaults otherwise (decode-once
    uint8 cache, batched kornia augmentation, AdamW with warmup and cosine decay, label smoothing,
    bf16 on GPU). Each run starts from an empty cache (its own ``GEOTUNE_CACHE``), so decoding and,
    for linear-probe, computing features are inside its time.

Recorded per run: end-to-end wall time (from building the model and data to the test accuracy;
imports excluded, the OS file cache warmed for all alike), training time (the same without the
final test pass), time per training epoch and training images/s (training batches only; for
linear-probe the backbone's throughput over the chips), test accuracy, peak memory (CPU: peak
RSS of this process, reset before each run, and the largest DataLoader worker where it exceeds
the workers of earlier runs, as the kernel keeps one maximum for all finished children; GPU:
``torch.cuda.max_memory_allocated``) and, for every run that is not the seed, the time it took to
reach the seed's final test accuracy (its training time when its final test accuracy is at least
the seed's: none of the peers measures test accuracy during training). Results go to
``benchmarks/results/peers-DATE/`` as results.json and results.md (with geotune/peer ratios).

From the repository root (benchmarks/peers.sh picks benchmarks/.venv-peers when it exists):
    bash benchmarks/peers.sh --epochs 10
    bash benchmarks/peers.sh --train-fraction 0.05 --epochs 1 --image-size 64 \\
        --max-test-per-class 3 --classes 4          # a smoke test of a minute or two on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

import geotune.engine.trainer
from geotune.config import make_config
from geotune.data import SceneFolder, make_split, scan_folder, write_split
from geotune.models import create_backbone

REPO = Path(__file__).resolve().parents[1]
PEERS = ("seed", "torchgeo", "geotune")
STRATEGIES = ("linear-probe", "feature-extraction")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Time geotune beside a plain PyTorch recipe and torchgeo on the same task.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "aid150")
    p.add_argument("--train-fraction", type=float, default=0.2)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--image-size", type=int, default=None, help="default: the weights' size")
    p.add_argument("--max-test-per-class", type=int, default=None)
    p.add_argument("--classes", type=int, default=None, help="use only the first N classes")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", default="tf_efficientnet_lite0", help="needs offline weights")
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="geotune strategies")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--output", type=Path, default=None, help="default: results/peers-DATE")
    args = p.parse_args(argv)
    args.peers = [s.strip() for s in args.peers.split(",") if s.strip()]
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in args.peers if s not in PEERS]
    if unknown:
        p.error(f"unknown peer '{unknown[0]}'; choose from {', '.join(PEERS)}")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible to torch")
    if args.num_workers is None:
        args.num_workers = min(16, len(os.sched_getaffinity(0)))
    return args


# ----------------------------------------------------------------------------------------------
# Data: one split, one folder of symlinks that every peer reads
# ----------------------------------------------------------------------------------------------
class Task:
    """The shared split: a folder holding only the chips in use, and their split labels."""

    def __init__(self, args: argparse.Namespace, workdir: Path, out: Path):
        full = scan_folder(args.data)
        classes = full.classes[: args.classes] if args.classes else full.classes
        keep = full.labels < len(classes)  # labels follow the sorted class order
        folder = SceneFolder(
            full.root,
            classes,
            [p for p, k in zip(full.paths, keep, strict=True) if k],
            full.labels[keep],
        )
        split = make_split(folder, args.train_fraction, None, args.val_fraction, args.seed)
        split = split.astype(object)  # '<U5' would cut 'unused' to 'unuse'
        if args.max_test_per_class is not None:
            rng = np.random.default_rng(args.seed)
            for c in range(len(classes)):
                test = np.flatnonzero((folder.labels == c) & (split == "test"))
                drop = rng.permutation(test)[args.max_test_per_class :]
                split[drop] = "unused"
        self.root = workdir / "data"
        used = split != "unused"
        for rel in np.asarray(folder.paths)[used]:
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.root / rel).symlink_to((folder.root / rel).resolve())
        self.folder = scan_folder(self.root)
        if self.folder.classes != classes or self.folder.paths != list(
            np.asarray(folder.paths)[used]
        ):
            raise SystemExit("the symlinked data folder does not list the split's files")
        self.split = split[used].astype(str)
        self.split_file = out / "split.csv"
        write_split(self.split_file, self.folder, self.split)
        self.labels = self.folder.labels
        self.n = {s: int((self.split == s).sum()) for s in ("train", "val", "test")}

    def indices(self, part: str) -> list[int]:
        return np.flatnonzero(self.split == part).tolist()

    def warm_file_cache(self) -> float:
        """Read every chip once so no peer pays (or saves) the first disk read."""
        t0 = time.perf_counter()
        for rel in self.folder.paths:
            (self.root / rel).read_bytes()
        return time.perf_counter() - t0

    def imagefolder(self, transform):
        """torchvision's ImageFolder over the same folder, checked against geotune's listing."""
        from torchvision.datasets import ImageFolder

        ds = ImageFolder(str(self.root), transform=transform)
        rel = [Path(s).relative_to(self.root).as_posix() for s, _ in ds.samples]
        if ds.classes != self.folder.classes or rel != self.folder.paths:
            raise SystemExit("torchvision's ImageFolder orders classes or files unlike geotune")
        if [y for _, y in ds.samples] != self.labels.tolist():
            raise SystemExit("torchvision's ImageFolder labels differ from geotune's")
        return ds


def plain_transform(args, prep):
    """The seed recipe's per-sample PIL pipeline (also torchgeo's, see the module docstring)."""
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    size = args.image_size or prep.size
    return transforms.Compose(
        [
            transforms.Resize(
                (size, size), interpolation=InterpolationMode(prep.interpolation), antialias=True
            ),
            transforms.ToTensor(),
            transforms.Normalize(prep.mean, prep.std),
        ]
    )


# ----------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------
class Meter:
    """Wall clock (synchronised on GPU) and peak memory of one run."""

    def __init__(self, device: str):
        self.device = device
        self.rss_reset = _reset_peak_rss()
        # One process: libraries and whatever earlier runs left allocated are already resident.
        self.rss_start = _current_rss_mb()
        self.children0 = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self.t0 = self.now()

    def now(self) -> float:
        if self.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def since(self) -> float:
        return self.now() - self.t0

    def memory(self) -> dict:
        out = {
            "peak_rss_mb": _peak_rss_mb(),
            "rss_at_start_mb": self.rss_start,
            "rss_peak_reset": self.rss_reset,
        }
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        # ru_maxrss of children is the largest finished child so far: report it only if it grew.
        out["loader_worker_peak_rss_mb"] = children / 1024 if children > self.children0 else None
        if self.device == "cuda":
            out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return out


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets this process's peak RSS (VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _current_rss_mb() -> float | None:
    with contextlib.suppress(OSError, AttributeError):
        m = re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text())
        return int(m.group(1)) / 1024
    return None


def _peak_rss_mb() -> float:
    with contextlib.suppress(OSError, AttributeError):
        m = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
        return int(m.group(1)) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def restored_torch_state():
    """Peers must not inherit each other's global switches (geotune turns on cudnn.benchmark)."""
    saved = (torch.backends.cudnn.benchmark, torch.get_num_threads())
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, threads = saved
        torch.set_num_threads(threads)


def epoch_stats(epoch_s: list[float], n_train: int) -> dict:
    return {
        "epochs": len(epoch_s),
        "epoch_train_s": epoch_s,
        "time_per_epoch_s": float(np.mean(epoch_s)) if epoch_s else None,
        "train_images_per_s": float(np.mean([n_train / s for s in epoch_s])) if epoch_s else None,
    }


# ----------------------------------------------------------------------------------------------
# The peers
# ----------------------------------------------------------------------------------------------
def run_seed(args, task: Task) -> dict:
    from torch.utils.data import DataLoader, Subset

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    m = Meter(args.device)
    net, prep, source = create_backbone(args.backbone, "offline")
    head = nn.Linear(net.num_features, len(task.folder.classes))
    for p in net.parameters():
        p.requires_grad = False
    model = nn.Sequential(net, head).to(device)
    data = task.imagefolder(plain_transform(args, prep))
    loader = DataLoader(
        Subset(data, task.indices("train")),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(args.seed),
    )
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    epoch_s = []
    for _ in range(args.epochs):
        t = m.now()
        head.train()
        net.eval()  # frozen backbone: BatchNorm keeps its ImageNet statistics
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        epoch_s.append(m.now() - t)
    train_s = m.since()
    test = DataLoader(
        Subset(data, task.indices("test")),
        batch_size=max(64, args.batch_size),
        num_workers=args.num_workers,
        pin_memory=device.type == "cuda",
    )
    model.eval()
    correct = 0
    with torch.inference_mode():
        for x, y in test:
            correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
    return {
        "wall_s": m.since(),
        "train_s": train_s,
        **epoch_stats(epoch_s, task.n["train"]),
        "test_accuracy": correct / task.n["test"],
        **m.memory(),
        "weights": source,
        "precision": "fp32",
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def torchgeo_missing() -> str | None:
    try:
        from torchgeo.trainers import ClassificationTask  # noqa: F401
    except ImportError as err:
        return (
            f"skipped ({err}; run bash benchmarks/install_peers.sh, then bash benchmarks/peers.sh)"
        )
    return None


def run_torchgeo(args, task: Task, workdir: Path, out: Path) -> dict:
    import lightning.pytorch as pl
    import torchgeo
    from torch.utils.data import DataLoader, Dataset, Subset
    from torchgeo.trainers import ClassificationTask

    class Samples(Dataset):
        """torchgeo's sample format, {'image', 'label'}, over the ImageFolder subset."""

        def __init__(self, base):
            self.base = base

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            image, label = self.base[i]
            return {"image": image, "label": torch.tensor(label)}

    class EpochTimer(pl.Callback):
        """Training batches only (Lightning validates before on_train_epoch_end)."""

        def __init__(self, meter: Meter):
            self.meter, self.epoch_s, self.start = meter, [], 0.0

        def on_train_epoch_start(self, trainer, pl_module):
            self.start = self.meter.now()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == trainer.num_training_batches - 1:
                self.epoch_s.append(self.meter.now() - self.start)

    torch.manual_seed(args.seed)
    m = Meter(args.device)
    net, prep, source = create_backbone(args.backbone, "offline")
    # torchgeo's weights=PATH route reads a Lightning checkpoint: hyper_parameters.model and a
    # state_dict whose keys start with 'model.' (torchgeo.trainers.utils.extract_backbone).
    ckpt = workdir / "torchgeo-init.ckpt"
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    torch.save(
        {
            "hyper_parameters": {"model": args.backbone},
            "state_dict": {f"model.{k}": v for k, v in sd.items()},
        },
        ckpt,
    )
    task_module = ClassificationTask(
        model=args.backbone,
        weights=str(ckpt),
        in_channels=3,
        num_classes=len(task.folder.classes),
        loss="ce",
        lr=1e-3,
        freeze_backbone=True,
    )
    loaded = task_module.model.state_dict()
    new = sorted(k for k in loaded if k not in sd)
    same = all(torch.equal(loaded[k], v) for k, v in sd.items())
    if not same or any(not k.startswith("classifier.") for k in new):
        raise SystemExit(f"torchgeo did not take geotune's weights (new keys: {new[:4]})")
    data = task.imagefolder(plain_transform(args, prep))

    def loader(part: str, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(
            Samples(Subset(data, task.indices(part))),
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=args.num_workers,
            pin_memory=args.device == "cuda",
            generator=torch.Generator().manual_seed(args.seed) if shuffle else None,
        )

    timer = EpochTimer(m)
    trainer = pl.Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu",
        devices=1,
        max_epochs=args.epochs,
        default_root_dir=str(out / "torchgeo"),
        callbacks=[timer],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    eval_batch = max(64, args.batch_size)
    trainer.fit(
        task_module,
        train_dataloaders=loader("train", True, args.batch_size),
        val_dataloaders=loader("val", False, eval_batch),
    )
    train_s = m.since()
    (result,) = trainer.test(
        task_module, dataloaders=loader("test", False, eval_batch), verbose=False
    )
    return {
        "wall_s": m.since(),
        "train_s": train_s,
        **epoch_stats(timer.epoch_s, task.n["train"]),
        "test_accuracy": float(result["test_OverallAccuracy"]),
        **m.memory(),
        "weights": f"{source} (loaded through ClassificationTask(weights=PATH))",
        "precision": str(trainer.precision),
        "trainable_params": sum(p.numel() for p in task_module.parameters() if p.requires_grad),
        "torchgeo_version": torchgeo.__version__,
    }


def run_geotune(args, task: Task, strategy: str, workdir: Path, out: Path) -> dict:
    cache = workdir / f"cache-{strategy}"
    finished_at: list[float] = []
    original = geotune.engine.trainer.finish_run

    def finish_run(*a, **kw):  # the moment training (and the test pass) is over
        finished_at.append(m.now())
        return original(*a, **kw)

    config = make_config(
        data=task.root,
        split=task.split_file,
        backbone=args.backbone,
        weights="offline",
        strategy=strategy,
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
        seed=args.seed,
        tta="none",
        device=args.device,
        output=out / "geotune-runs",
        name=strategy,
    )
    old_cache = os.environ.get("GEOTUNE_CACHE")
    os.environ["GEOTUNE_CACHE"] = str(cache)  # an empty cache: decoding is part of the time
    geotune.engine.trainer.finish_run = finish_run
    try:
        torch.manual_seed(args.seed)
        m = Meter(args.device)
        result = geotune.engine.trainer.train(config)
        wall = m.since()
    finally:
        geotune.engine.trainer.finish_run = original
        if old_cache is None:
            os.environ.pop("GEOTUNE_CACHE", None)
        else:
            os.environ["GEOTUNE_CACHE"] = old_cache
    s = result.summary
    n_all = len(task.folder)
    if strategy in ("linear-probe", "knn"):
        # The backbone runs once over every chip before the fit; the test chips' share of that
        # pass is the test pass.
        test_s = s["feature_time_s"] * task.n["test"] / n_all
        stats = {
            "epochs": None,
            "time_per_epoch_s": None,
            "train_images_per_s": n_all / s["feature_time_s"],
            "note": "images/s: chips through the frozen backbone (features computed once)",
        }
    else:
        test_s = task.n["test"] / s["test_images_per_s"]
        epoch_s = [task.n["train"] / r["train_images_per_s"] for r in s["history"]]
        stats = {
            **epoch_stats(epoch_s, task.n["train"]),
            "epoch_s_with_validation": [r["epoch_time_s"] for r in s["history"]],
            "best_epoch": s.get("best_epoch"),
        }
    return {
        "wall_s": wall,
        "train_s": finished_at[0] - m.t0 - test_s,
        **stats,
        "test_accuracy": float(result.test_metrics["overall_accuracy"]),
        **m.memory(),
        "weights": s.get("weights"),
        "precision": s.get("precision", "fp32 (sklearn on fp32 features)"),
        "trainable_params": s.get("trainable_params"),
        "run_dir": str(result.run_dir),
    }


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def _fmt(v, digits: int = 1, pct: bool = False) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.2f}%" if pct else f"{v:,.{digits}f}"


def _rss(r: dict) -> str:
    start = r.get("rss_at_start_mb")
    grown = f" (+{r['peak_rss_mb'] - start:,.0f})" if start is not None else ""
    return f"{r['peak_rss_mb']:,.0f}{grown}"


def _to_seed(r: dict) -> str:
    if "time_to_seed_accuracy_s" not in r:  # the seed itself, or no seed run
        return "–"
    t = r["time_to_seed_accuracy_s"]
    return "not reached" if t is None else _fmt(t)


def markdown(report: dict) -> str:
    runs = [r for r in report["runs"] if "skipped" not in r]
    lines = [
        f"# peers — {report['date']}",
        "",
        f"Machine: {report['machine']['summary']}. Data: {report['task']['data']} "
        f"({report['task']['classes']} classes; {report['task']['n_train']} train / "
        f"{report['task']['n_val']} val / {report['task']['n_test']} test), {report['task']['image_size']} px, "
        f"{report['options']['epochs']} epochs, batch {report['options']['batch_size']}, backbone "
        f"{report['options']['backbone']} (offline ImageNet weights, frozen).",
        "",
        "| run | wall s | train s | s / epoch | train img/s | test OA | peak RSS MB (over start) | peak GPU MB | to seed OA s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['name']} | {_fmt(r['wall_s'])} | {_fmt(r['train_s'])} | "
            f"{_fmt(r.get('time_per_epoch_s'))} | {_fmt(r.get('train_images_per_s'))} | "
            f"{_fmt(r['test_accuracy'], pct=True)} | {_rss(r)} | "
            f"{_fmt(r.get('peak_gpu_mb'), 0)} | " + _to_seed(r) + " |"
        )
    if any(r.get("epochs") is None for r in runs):
        lines.append(
            "\nlinear-probe has no epochs: its images/s is the one pass of the frozen backbone over "
            "every chip, whose features the probe is then fitted on."
        )
    for r in report["runs"]:
        if "skipped" in r:
            lines.append(f"\n{r['name']}: {r['skipped']}")
    if report["ratios"]:
        lines += [
            "",
            "geotune / peer (time ratios below 1 and images/s ratios above 1: geotune is faster; "
            "OA difference in points):",
            "",
            "| geotune run | peer | wall | train | train img/s | OA diff | peak RSS |",
            "|---|---|---|---|---|---|---|",
        ]
        for q in report["ratios"]:
            lines.append(
                f"| {q['geotune']} | {q['peer']} | {_fmt(q['wall'], 2)} | {_fmt(q['train'], 2)} | "
                f"{_fmt(q['train_images_per_s'], 2)} | {q['accuracy_points']:+.2f} | "
                f"{_fmt(q['peak_rss'], 2)} |"
            )
    return "\n".join(lines) + "\n"


def ratios(runs: list[dict]) -> list[dict]:
    def ratio(a, b):
        return a / b if a is not None and b else None

    out = []
    done = [r for r in runs if "skipped" not in r]
    for g in (r for r in done if r["name"].startswith("geotune")):
        for p in (r for r in done if not r["name"].startswith("geotune")):
            out.append(
                {
                    "geotune": g["name"],
                    "peer": p["name"],
                    "wall": ratio(g["wall_s"], p["wall_s"]),
                    "train": ratio(g["train_s"], p["train_s"]),
                    "train_images_per_s": ratio(
                        g.get("train_images_per_s"), p.get("train_images_per_s")
                    ),
                    "accuracy_points": 100 * (g["test_accuracy"] - p["test_accuracy"]),
                    "peak_rss": ratio(g["peak_rss_mb"], p["peak_rss_mb"]),
                }
            )
    return out


def machine(device: str) -> dict:
    import timm
    import torchvision

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        m = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = m.group(1).strip() if m else cpu
    cores = len(os.sched_getaffinity(0))
    gpu = torch.cuda.get_device_name() if device == "cuda" else None
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    versions.update(torchvision=torchvision.__version__, timm=timm.__version__)
    for name in ("lightning", "torchgeo", "kornia"):
        with contextlib.suppress(ImportError):
            versions[name] = __import__(name).__version__
    return {
        "summary": f"{cores}-core {cpu}" + (f", {gpu}" if gpu else ", no GPU used"),
        "cpu": cpu,
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "versions": versions,
        "geotune_commit": commit,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = (args.output or REPO / "benchmarks" / "results" / f"peers-{stamp}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="geotune-peers-"))
    try:
        task = Task(args, workdir, out)
        warm_s = task.warm_file_cache()
        size = args.image_size or create_backbone(args.backbone, "offline")[1].size
        print(
            f"{len(task.folder.classes)} classes, {task.n['train']} train / {task.n['val']} val / "
            f"{task.n['test']} test chips at {size} px; {args.device}; file cache warmed in "
            f"{warm_s:.1f}s; results in {out}",
            flush=True,
        )
        todo: list[tuple[str, object]] = []
        if "seed" in args.peers:
            todo.append(("seed", lambda: run_seed(args, task)))
        if "torchgeo" in args.peers:
            todo.append(("torchgeo", lambda: run_torchgeo(args, task, workdir, out)))
        if "geotune" in args.peers:
            for s in args.strategies:
                todo.append((f"geotune {s}", lambda s=s: run_geotune(args, task, s, workdir, out)))
        runs = []
        for name, fn in todo:
            if name == "torchgeo" and (why := torchgeo_missing()):
                print(f"{name}: {why}", flush=True)
                runs.append({"name": name, "skipped": why})
                continue
            print(f"--- {name}", flush=True)
            with restored_torch_state():
                r = {"name": name, **fn()}
            # Counts, not float32 fractions: "at least the seed's accuracy" must compare exactly.
            r["test_correct"] = round(r["test_accuracy"] * task.n["test"])
            r["test_accuracy"] = r["test_correct"] / task.n["test"]
            print(
                f"{name}: test OA {r['test_accuracy']:.2%}, wall {r['wall_s']:.1f}s, "
                f"train {r['train_s']:.1f}s",
                flush=True,
            )
            runs.append(r)
        seed = next((r for r in runs if r["name"] == "seed"), None)
        for r in runs:
            if seed is not None and r is not seed and "skipped" not in r:
                reached = r["test_correct"] >= seed["test_correct"]
                r["time_to_seed_accuracy_s"] = r["train_s"] if reached else None
        report = {
            "date": datetime.now().isoformat(timespec="seconds"),
            "command": " ".join([sys.executable, *sys.argv]),
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": machine(args.device),
            "task": {
                "data": str(args.data),
                "classes": len(task.folder.classes),
                "image_size": size,
                "split_file": str(task.split_file),
                "file_cache_warm_s": warm_s,
                **{f"n_{k}": v for k, v in task.n.items()},
            },
            "runs": runs,
            "ratios": ratios(runs),
        }
        (out / "results.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        table = markdown(report)
        (out / "results.md").write_text(table)
        print(table)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
