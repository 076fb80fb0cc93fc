"""`geotune train`: fine-tune a pretrained backbone on a folder of scene chips and evaluate it.

The loop is plain PyTorch that reads top to bottom; Lightning Fabric supplies device placement
and precision around it.
"""

from __future__ import annotations

import contextlib
import math
import platform
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from lightning_fabric import Fabric
from rich.console import Console
from torch import nn

from geotune.augment import TTA_VIEWS, augment_batch, build_augment, tta_view
from geotune.backbones import Preprocessing
from geotune.config import TrainConfig, save_config
from geotune.data import (
    DecodedImages,
    decode_folder,
    iterate_batches,
    make_split,
    read_split,
    scan_folder,
    write_split,
)
from geotune.freezing import BatchNormPolicy, apply_trainable, layer_groups, trainable_groups
from geotune.metrics import classification_metrics, metrics_table, save_metrics
from geotune.model import SceneClassifier, build_classifier, save_classifier
from geotune.rundir import RunDir, atomic_write_csv, atomic_write_json, atomic_write_text


@dataclass
class Prepared:
    """Everything a run needs, validated before a run folder exists."""

    config: TrainConfig
    images: DecodedImages
    split: np.ndarray
    model: SceneClassifier
    preprocessing: Preprocessing
    weights: str
    group_names: list[str]
    trainable: list[bool]
    bn_policy: BatchNormPolicy

    @property
    def classes(self) -> list[str]:
        return self.images.folder.classes

    def indices(self, part: str) -> np.ndarray:
        return np.flatnonzero(self.split == part)


@dataclass
class RunResult:
    run_dir: Path
    test_metrics: dict
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def prepare(config: TrainConfig, console: Console | None = None) -> Prepared:
    console = console or Console(stderr=True)
    folder = scan_folder(config.data, skip_bad=config.skip_bad_images)
    model, prep, weights = build_classifier(
        config.backbone,
        config.weights,
        len(folder.classes),
        config.head,
        config.head_dropout,
        config.image_size,
    )
    t0 = time.perf_counter()
    images = decode_folder(
        folder,
        prep.size,
        prep.interpolation,
        workers=config.num_workers,
        skip_bad=config.skip_bad_images,
    )
    console.log(
        f"{len(images.folder)} images in {len(folder.classes)} classes at {prep.size} px "
        f"(decoded/cached in {time.perf_counter() - t0:.1f}s)"
    )
    if config.split is not None:
        split = read_split(config.split, images.folder)
    else:
        split = make_split(
            images.folder,
            config.train_fraction if config.labels_per_class is None else None,
            config.labels_per_class,
            config.val_fraction,
            config.seed,
        )
    groups = layer_groups(model)
    flags = trainable_groups(groups, config.strategy, config.freeze_until, config.unfreeze_last)
    apply_trainable(groups, flags)
    policy = BatchNormPolicy(model, groups, flags, config.bn_policy)
    return Prepared(
        config, images, split, model, prep, weights, [g.name for g in groups], flags, policy
    )


def _device_and_precision(config: TrainConfig) -> tuple[str, str]:
    accelerator = config.device
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    precision = config.precision
    if precision == "auto":
        precision = "bf16-mixed" if accelerator == "cuda" else "32-true"
    return accelerator, precision


def param_groups(
    model: SceneClassifier, lr: float, backbone_lr_scale: float, weight_decay: float
) -> list[dict]:
    """Only trainable parameters; no weight decay on biases and norm weights (1-D tensors)."""
    groups = []
    for part, part_lr in ((model.head, lr), (model.backbone, lr * backbone_lr_scale)):
        params = [p for p in part.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        if decay:
            groups.append({"params": decay, "lr": part_lr, "weight_decay": weight_decay})
        if no_decay:
            groups.append({"params": no_decay, "lr": part_lr, "weight_decay": 0.0})
    return groups


def build_optimizer(model: SceneClassifier, config: TrainConfig) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    groups = param_groups(
        model, config.resolved_lr(), config.backbone_lr_scale, config.weight_decay
    )
    return create_optimizer_v2(
        groups, opt=config.optimizer, lr=config.resolved_lr(), weight_decay=config.weight_decay
    )


def build_scheduler(optimizer, total_steps: int, warmup_steps: int):
    """Linear warmup then cosine decay, per step; multiplicative, so per-group LR ratios hold."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps))
    if warmup_steps == 0:
        return cosine
    warm = LinearLR(optimizer, start_factor=1.0 / (warmup_steps + 1), total_iters=warmup_steps)
    return SequentialLR(optimizer, [warm, cosine], milestones=[warmup_steps])


@torch.inference_mode()
def predict(
    model: nn.Module,
    prep: Preprocessing,
    pixels,
    indices,
    batch_size: int,
    device,
    fabric=None,
    tta: str = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities for the chips at ``indices``, averaged over the ``tta`` views.

    Also returns the logits of the plain view, so one pass gives the figures with and without TTA.
    """
    model.eval()
    probs, plain = [], []
    dummy = np.zeros(len(pixels), dtype=np.int64)
    for x, _ in iterate_batches(pixels, dummy, indices, batch_size):
        x = prep.normalize(x.to(device, non_blocking=True))
        p_sum = None
        for turns, flip in TTA_VIEWS[tta]:
            v = tta_view(x, turns, flip).contiguous(memory_format=torch.channels_last)
            with fabric.autocast() if fabric is not None else contextlib.nullcontext():
                logits = model(v).float()
            if turns == 0 and not flip:
                plain.append(logits.cpu())
            p = logits.softmax(-1)
            p_sum = p if p_sum is None else p_sum + p
        probs.append((p_sum / len(TTA_VIEWS[tta])).cpu())
    if not probs:
        return torch.empty(0), torch.empty(0)
    return torch.cat(probs), torch.cat(plain)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return rss / 1024 if platform.system() == "Linux" else rss / 2**20


def count_params(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def fit(prep: Prepared, console: Console | None = None) -> RunResult:
    """Train, select the best epoch on validation, evaluate on the test part; write the run."""
    config = prep.config
    console = console or Console(stderr=True)
    run = RunDir(
        config.output, config.name, prefix=f"{config.strategy}-{config.backbone.split('.')[0]}"
    )
    torch.manual_seed(config.seed)
    accelerator, precision = _device_and_precision(config)
    fabric = Fabric(accelerator=accelerator, devices=1, precision=precision)
    device = fabric.device
    model = prep.model
    # channels_last: 1.5x (train) to 4x (inference) faster on CPU (oneDNN) as well as on GPU.
    model = model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    optimizer = build_optimizer(model, config)
    model, optimizer = fabric.setup(model, optimizer)
    raw: SceneClassifier = model.module

    pixels, labels = prep.images.pixels, prep.images.folder.labels
    train_idx, val_idx, test_idx = prep.indices("train"), prep.indices("val"), prep.indices("test")
    steps_per_epoch = max(1, math.ceil(len(train_idx) / config.batch_size))
    scheduler = build_scheduler(
        optimizer, steps_per_epoch * config.epochs, round(config.warmup_epochs * steps_per_epoch)
    )
    augment = build_augment(
        prep.preprocessing.size, config.flips, config.rot90, config.crop_scale
    ).to(device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    generator = torch.Generator().manual_seed(config.seed)
    trainable, total = count_params(raw)
    eval_batch = max(64, config.batch_size)

    path = run.create()
    try:
        save_config(config, path / "config.yaml")
        write_split(path / "split.csv", prep.images.folder, prep.split)
        if prep.images.folder.skipped:
            atomic_write_text(
                path / "skipped_files.txt",
                "".join(f"{p}\t{r}\n" for p, r in prep.images.folder.skipped),
            )
        console.log(
            f"run {run.final}: {config.strategy} on {config.backbone} ({prep.weights}); "
            f"{len(train_idx)} train / {len(val_idx)} val / {len(test_idx)} test; "
            f"{trainable:,} of {total:,} parameters trainable; {accelerator} {precision}"
        )
        history: list[dict] = []
        best_acc, best_epoch = -1.0, 0
        ckpt_meta = {
            "backbone": config.backbone,
            "weights": prep.weights,
            "classes": prep.classes,
            "head": config.head,
            "head_dropout": config.head_dropout,
            "preprocessing": prep.preprocessing.to_dict(),
        }
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f} acc {task.fields[acc]:.1%}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        train_start = time.perf_counter()
        with progress:
            for epoch in range(1, config.epochs + 1):
                t0 = time.perf_counter()
                task = progress.add_task(
                    "train",
                    total=steps_per_epoch,
                    epoch=f"{epoch}/{config.epochs}",
                    loss=0.0,
                    acc=0.0,
                )
                prep.bn_policy.train_mode(raw)
                seen = correct = 0
                loss_sum = 0.0
                lr_now = optimizer.param_groups[0]["lr"]
                for x, y in iterate_batches(
                    pixels, labels, train_idx, config.batch_size, shuffle=True, generator=generator
                ):
                    x = x.to(device, non_blocking=True)
                    y = y.to(device, non_blocking=True)
                    x = prep.preprocessing.normalize(augment_batch(augment, x))
                    x = x.contiguous(memory_format=torch.channels_last)
                    logits = model(x)
                    loss = loss_fn(logits, y)
                    optimizer.zero_grad(set_to_none=True)
                    fabric.backward(loss)
                    optimizer.step()
                    scheduler.step()
                    seen += len(y)
                    loss_sum += float(loss.detach()) * len(y)
                    correct += int((logits.argmax(1) == y).sum())
                    progress.update(task, advance=1, loss=loss_sum / seen, acc=correct / seen)
                train_time = time.perf_counter() - t0
                row = {
                    "epoch": epoch,
                    "lr": lr_now,
                    "train_loss": loss_sum / max(seen, 1),
                    "train_accuracy": correct / max(seen, 1),
                }
                if len(val_idx):
                    _, logits = predict(
                        model, prep.preprocessing, pixels, val_idx, eval_batch, device, fabric
                    )
                    yv = torch.from_numpy(labels[val_idx])
                    row["val_loss"] = float(nn.functional.cross_entropy(logits, yv))
                    row["val_accuracy"] = float((logits.argmax(1) == yv).float().mean())
                score = row.get("val_accuracy", float(epoch))  # no validation: keep the last epoch
                row.update(
                    epoch_time_s=time.perf_counter() - t0, train_images_per_s=seen / train_time
                )
                history.append(row)
                progress.remove_task(task)
                val_txt = f" val acc {row['val_accuracy']:.1%}" if "val_accuracy" in row else ""
                console.log(
                    f"epoch {epoch}/{config.epochs}: loss {row['train_loss']:.3f} "
                    f"acc {row['train_accuracy']:.1%}{val_txt} ({row['epoch_time_s']:.0f}s)"
                )
                if score > best_acc:
                    best_acc, best_epoch = score, epoch
                    save_classifier(
                        path / "checkpoints" / "best.pt", raw, {**ckpt_meta, "epoch": epoch}
                    )
                atomic_write_csv(
                    path / "metrics.csv",
                    list(history[0]),
                    ([r.get(k, "") for k in history[0]] for r in history),
                )
        train_time = time.perf_counter() - train_start

        # Test with the best epoch's weights.
        best = torch.load(path / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
        raw.load_state_dict(best["state_dict"])
        t0 = time.perf_counter()
        probs, plain = predict(
            model, prep.preprocessing, pixels, test_idx, eval_batch, device, fabric, config.tta
        )
        test_time = time.perf_counter() - t0
        metrics = classification_metrics(labels[test_idx], probs.argmax(1).numpy(), prep.classes)
        plain_oa = (
            float((plain.argmax(1).numpy() == labels[test_idx]).mean()) if len(test_idx) else 0.0
        )
        metrics.update(
            split="test",
            best_epoch=best_epoch,
            data=str(config.data),
            tta=config.tta,
            overall_accuracy_without_tta=plain_oa,
        )
        save_metrics(metrics, path, "test")
        summary = {
            "strategy": config.strategy,
            "backbone": config.backbone,
            "weights": prep.weights,
            "preprocessing": prep.preprocessing.to_dict(),
            "layer_groups": prep.group_names,
            "trainable_groups": [
                n for n, f in zip(prep.group_names, prep.trainable, strict=True) if f
            ],
            "bn_policy": prep.bn_policy.describe(),
            "trainable_params": trainable,
            "total_params": total,
            "n_train": len(train_idx),
            "n_val": len(val_idx),
            "n_test": len(test_idx),
            "best_epoch": best_epoch,
            "best_val_accuracy": best_acc if len(val_idx) else None,
            "test_overall_accuracy": metrics["overall_accuracy"],
            "tta": config.tta,
            "test_overall_accuracy_without_tta": plain_oa,
            "train_time_s": train_time,
            "time_per_epoch_s": train_time / config.epochs,
            "train_images_per_s": float(np.mean([r["train_images_per_s"] for r in history])),
            "test_images_per_s": len(test_idx) / max(test_time, 1e-9),
            "peak_memory_mb": _peak_memory_mb(device),
            "device": str(device),
            "precision": precision,
            "torch_threads": torch.get_num_threads(),
        }
        atomic_write_json(path / "summary.json", summary)
        console.print(metrics_table(metrics, f"test metrics, best epoch {best_epoch}"))
        final = run.commit()
    except BaseException:
        run.write_status("failed")
        raise
    return RunResult(final, metrics, history, summary)


def train(config: TrainConfig, console: Console | None = None) -> RunResult:
    """Validate inputs, then train and evaluate; the Python API behind `geotune train`."""
    return fit(prepare(config, console), console)
