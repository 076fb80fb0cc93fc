"""`geotune train`: fine-tune a pretrained backbone on a folder of scene chips and evaluate it.

The loop is plain PyTorch that reads top to bottom; Lightning Fabric supplies device placement
and precision around it. A strategy is a list of phases (geotune.strategies); each phase gets an
optimizer over exactly its trainable parameters and its own warmup + decay schedule. After every
epoch the complete training state is checkpointed atomically, so ``--resume`` continues a killed
run and, with ``--deterministic``, ends with the same numbers as an uninterrupted one.
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
from geotune.config import TrainConfig, load_config, save_config
from geotune.data import (
    DecodedImages,
    decode_folder,
    image_batches,
    iterate_batches,
    make_split,
    prefetch,
    read_split,
    scan_folder,
    write_split,
)
from geotune.errors import ConfigError
from geotune.freezing import (
    BatchNormPolicy,
    LayerGroup,
    apply_trainable,
    layer_groups,
    reestimate_batchnorm,
)
from geotune.metrics import classification_metrics, metrics_table, save_metrics
from geotune.model import SceneClassifier, build_classifier, save_classifier
from geotune.rundir import (
    RunDir,
    atomic_torch_save,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
)
from geotune.strategies import Phase, lr_multipliers, plan_phases


@dataclass
class Prepared:
    """Everything a run needs, validated before a run folder exists."""

    config: TrainConfig
    images: DecodedImages
    split: np.ndarray
    model: SceneClassifier
    preprocessing: Preprocessing
    weights: str
    groups: list[LayerGroup]
    phases: list[Phase]

    @property
    def classes(self) -> list[str]:
        return self.images.folder.classes

    @property
    def group_names(self) -> list[str]:
        return [g.name for g in self.groups]

    def indices(self, part: str) -> np.ndarray:
        return np.flatnonzero(self.split == part)

    def checkpoint_meta(self) -> dict:
        """What a classifier checkpoint needs besides its weights (see model.load_classifier)."""
        c = self.config
        return {
            "backbone": c.backbone,
            "weights": self.weights,
            "classes": self.classes,
            "head": c.head,
            "head_dropout": c.head_dropout,
            "preprocessing": self.preprocessing.to_dict(),
        }


@dataclass
class RunResult:
    run_dir: Path
    test_metrics: dict
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def prepare(
    config: TrainConfig, console: Console | None = None, split_file: Path | None = None
) -> Prepared:
    console = console or Console(stderr=True)
    folder = scan_folder(config.data, skip_bad=config.skip_bad_images)
    torch.manual_seed(config.seed)  # the new head's initialisation is part of the run's seed
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
    split_file = split_file or config.split
    if split_file is not None:
        split = read_split(split_file, images.folder)
    else:
        split = make_split(
            images.folder,
            config.train_fraction if config.labels_per_class is None else None,
            config.labels_per_class,
            config.val_fraction,
            config.seed,
        )
    groups = layer_groups(model)
    lr_multipliers(config, groups)  # validates group_lr names before anything is written
    phases = [] if config.uses_cached_features() else plan_phases(config, groups)
    return Prepared(config, images, split, model, prep, weights, groups, phases)


def _device_and_precision(config: TrainConfig) -> tuple[str, str]:
    accelerator = config.device
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    precision = config.precision
    if precision == "auto":
        precision = "bf16-mixed" if accelerator == "cuda" else "32-true"
    return accelerator, precision


def param_groups(
    groups: list[LayerGroup],
    flags: tuple[bool, ...] | list[bool],
    base_lr: float,
    multipliers: list[float],
    weight_decay: float,
) -> list[dict]:
    """Optimizer groups over trainable layer groups only, each at base_lr x its multiplier.

    No weight decay on biases and norm weights (1-D tensors), as in timm.
    """
    out = []
    for g, trainable, mult in zip(groups, flags, multipliers, strict=True):
        if not trainable:
            continue
        decay = [p for p in g.params if p.ndim > 1]
        no_decay = [p for p in g.params if p.ndim <= 1]
        for params, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if params:
                out.append(
                    {"params": params, "lr": base_lr * mult, "weight_decay": wd, "group": g.name}
                )
    return out


def build_optimizer(
    config: TrainConfig, groups: list[LayerGroup], phase: Phase
) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    lr = config.resolved_lr(phase.head_only)
    pg = param_groups(
        groups, phase.trainable, lr, lr_multipliers(config, groups), config.weight_decay
    )
    return create_optimizer_v2(pg, opt=config.optimizer, lr=lr, weight_decay=config.weight_decay)


def build_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int, epochs: int):
    """Linear warmup then cosine / step / constant, per optimizer step.

    torch's schedulers scale each group's own base LR, so per-group LR ratios hold throughout.
    """
    from torch.optim.lr_scheduler import (
        ConstantLR,
        CosineAnnealingLR,
        LinearLR,
        SequentialLR,
        StepLR,
    )

    total = steps_per_epoch * epochs
    warmup = (
        config.warmup_steps
        if config.warmup_steps is not None
        else round(config.warmup_epochs * steps_per_epoch)
    )
    warmup = min(warmup, max(total - 1, 0))
    if config.schedule == "cosine":
        decay = CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
    elif config.schedule == "step":
        decay = StepLR(
            optimizer, step_size=config.step_epochs * steps_per_epoch, gamma=config.step_gamma
        )
    else:
        decay = ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup == 0:
        return decay
    warm = LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    return SequentialLR(optimizer, [warm, decay], milestones=[warmup])


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
    for x, _ in prefetch(iterate_batches(pixels, dummy, indices, batch_size), device):
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


def reset_peak_memory(device: torch.device) -> None:
    """Start a run's peak-memory count afresh, so runs in one process (a compare grid) each
    report their own peak rather than the process's."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux >= 4.0: writing 5 resets the peak resident set size (VmHWM)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass  # elsewhere the figure stays the process's peak


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as fh:
            hwm = next(line for line in fh if line.startswith("VmHWM:"))
        return int(hwm.split()[1]) / 1024  # kB
    except (OSError, StopIteration):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return rss / 1024 if platform.system() == "Linux" else rss / 2**20


def count_params(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def _progress(console: Console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f} acc {task.fields[acc]:.1%}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def write_run_header(path: Path, prep: Prepared) -> None:
    """The files that define a run: resolved config, split, skipped inputs."""
    save_config(prep.config, path / "config.yaml")
    write_split(path / "split.csv", prep.images.folder, prep.split)
    if prep.images.folder.skipped:
        atomic_write_text(
            path / "skipped_files.txt",
            "".join(f"{p}\t{r}\n" for p, r in prep.images.folder.skipped),
        )


def finish_run(
    run: RunDir, prep: Prepared, probs, plain, summary: dict, console: Console, best_epoch=None
) -> RunResult:
    """Test metrics (with and without TTA), summary.json, then the atomic rename into place."""
    labels = prep.images.folder.labels[prep.indices("test")]
    metrics = classification_metrics(labels, probs.argmax(1).numpy(), prep.classes)
    plain_oa = float((plain.argmax(1).numpy() == labels).mean()) if len(labels) else 0.0
    metrics.update(
        split="test",
        data=str(prep.config.data),
        tta=prep.config.tta,
        overall_accuracy_without_tta=plain_oa,
        best_epoch=best_epoch,
    )
    save_metrics(metrics, run.path, "test")
    # Per-chip predictions: what bootstrap intervals, confused pairs and thumbnails are made from.
    test_idx = prep.indices("test")
    pred = probs.argmax(1).numpy()
    atomic_write_csv(
        run.path / "test_predictions.csv",
        ["path", "true", "predicted", "confidence"],
        (
            (prep.images.folder.paths[i], prep.classes[t], prep.classes[p], f"{float(c):.4f}")
            for i, t, p, c in zip(test_idx, labels, pred, probs.max(1).values.numpy(), strict=True)
        ),
    )
    summary.update(
        strategy=prep.config.strategy,
        backbone=prep.config.backbone,
        weights=prep.weights,
        preprocessing=prep.preprocessing.to_dict(),
        layer_groups=prep.group_names,
        n_train=len(prep.indices("train")),
        n_val=len(prep.indices("val")),
        n_test=len(labels),
        epochs=None if prep.config.strategy in ("linear-probe", "knn") else prep.config.epochs,
        test_overall_accuracy=metrics["overall_accuracy"],
        tta=prep.config.tta,
        test_overall_accuracy_without_tta=plain_oa,
        torch_threads=torch.get_num_threads(),
    )
    atomic_write_json(run.path / "summary.json", summary)
    try:
        from geotune.report import run_report

        run_report(run.path)
    except Exception as err:  # noqa: BLE001 - a report must never cost the run it describes
        console.log(
            f"warning: report.html not written ({type(err).__name__}: {err}); `geotune report RUN` retries"
        )
    console.print(
        metrics_table(
            metrics, "test metrics" + (f", best epoch {best_epoch}" if best_epoch else "")
        )
    )
    final = run.commit()
    return RunResult(final, metrics, summary.get("history", []), summary)


def fit(
    prep: Prepared,
    console: Console | None = None,
    run: RunDir | None = None,
    state: dict | None = None,
) -> RunResult:
    """Train phase by phase, keep the best epoch on validation, evaluate it on the test part."""
    config = prep.config
    console = console or Console(stderr=True)
    resuming = run is not None
    run = run or RunDir(
        config.output, config.name, prefix=f"{config.strategy}-{config.backbone.split('.')[0]}"
    )
    torch.manual_seed(config.seed)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    accelerator, precision = _device_and_precision(config)
    world = config.devices * config.num_nodes
    fabric = Fabric(
        accelerator=accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy="ddp" if world > 1 else "auto",
        precision=precision,
    )
    # DDP: Fabric's launcher re-runs this command for the other local ranks (as torchrun would).
    fabric.launch()
    rank, lead = fabric.global_rank, fabric.is_global_zero
    if not lead:
        console = Console(quiet=True)  # one process reports; the others only train
    device = fabric.device
    raw = prep.model
    # channels_last: 1.5x (train) to 4x (inference) faster on CPU (oneDNN) as well as on GPU.
    raw = raw.to(device=device, memory_format=torch.channels_last)
    if device.type == "cuda" and not config.deterministic:
        torch.backends.cudnn.benchmark = True
    forward_module = torch.compile(raw) if config.compile else raw

    reset_peak_memory(device)
    pixels, labels = prep.images.pixels, prep.images.folder.labels
    train_idx, val_idx, test_idx = prep.indices("train"), prep.indices("val"), prep.indices("test")
    batches_per_epoch = max(1, math.ceil(len(train_idx) / config.batch_size))
    steps_per_epoch = math.ceil(batches_per_epoch / config.accumulate)
    augment = build_augment(
        prep.preprocessing.size, config.flips, config.rot90, config.crop_scale
    ).to(device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing, reduction="sum")
    generator = torch.Generator().manual_seed(config.seed)
    eval_batch = max(64, config.batch_size)
    ckpt_meta = prep.checkpoint_meta()

    path = run.path if resuming or not lead else run.create()
    try:
        if lead and not resuming:
            write_run_header(path, prep)
        bn_note = None
        if config.bn_policy == "adabn" and state is None:
            # AdaBN: statistics re-estimated on the (unlabelled) training chips, then frozen.
            n = reestimate_batchnorm(
                raw,
                image_batches(pixels, train_idx, eval_batch, prep.preprocessing.normalize, device),
            )
            bn_note = f"re-estimated on {n} training images (labels unused), then frozen"
        elif state is not None:
            bn_note = state.get("bn_note")
        history: list[dict] = list(state["history"]) if state else []
        best_acc, best_epoch = (state["best_acc"], state["best_epoch"]) if state else (-1.0, 0)
        stale = state["stale"] if state else 0
        start_phase, start_epoch = (state["phase"], state["epoch_in_phase"]) if state else (0, 0)
        console.log(
            f"run {run.final}: {config.strategy} on {config.backbone} ({prep.weights}); "
            f"{len(train_idx)} train / {len(val_idx)} val / {len(test_idx)} test; {accelerator} {precision}"
            + (f"; resumed at phase {start_phase + 1}, epoch {start_epoch + 1}" if state else "")
        )
        if state is not None:
            # Nothing between two epochs draws random numbers, so restoring here is exact.
            raw.load_state_dict(state["model"])
            torch.set_rng_state(state["rng_torch"])
            generator.set_state(state["rng_shuffle"])
        phase_log: list[dict] = []
        global_epoch = sum(p.epochs for p in prep.phases[:start_phase]) + start_epoch
        total_epochs = sum(p.epochs for p in prep.phases)
        stopped_early = False
        train_time = 0.0
        with _progress(console) as progress:
            for pi, phase in enumerate(prep.phases):
                if pi < start_phase or stopped_early:
                    continue
                apply_trainable(prep.groups, list(phase.trainable))
                policy = "frozen" if config.bn_policy == "adabn" else config.bn_policy
                bn = BatchNormPolicy(raw, prep.groups, list(phase.trainable), policy)
                optimizer = build_optimizer(config, prep.groups, phase)
                scheduler = build_scheduler(optimizer, config, steps_per_epoch, phase.epochs)
                first_epoch = 0
                if state is not None and pi == start_phase:
                    optimizer.load_state_dict(state["optimizer"])
                    scheduler.load_state_dict(state["scheduler"])
                    first_epoch = start_epoch
                # Wrapped per phase: DDP only syncs parameters that were trainable when wrapped.
                model = fabric.setup_module(forward_module)
                optimizer = fabric.setup_optimizers(optimizer)
                trainable, total = count_params(raw)
                phase_log.append(
                    {
                        "phase": phase.name,
                        "epochs": phase.epochs,
                        "trainable_params": trainable,
                        "total_params": total,
                        "bn": bn.describe(),
                        "trainable_groups": [
                            g.name for g, f in zip(prep.groups, phase.trainable, strict=True) if f
                        ],
                        "optimizer_params": sum(
                            p.numel() for g in optimizer.param_groups for p in g["params"]
                        ),
                    }
                )
                console.log(
                    f"phase {pi + 1}/{len(prep.phases)} '{phase.name}': {trainable:,} of {total:,} parameters trainable"
                )
                for e in range(first_epoch, phase.epochs):
                    global_epoch += 1
                    t0 = time.perf_counter()
                    task = progress.add_task(
                        "train",
                        total=batches_per_epoch,
                        epoch=f"{global_epoch}/{total_epochs}",
                        loss=0.0,
                        acc=0.0,
                    )
                    bn.train_mode(raw)
                    seen = correct = 0
                    loss_sum = 0.0
                    lr_now = optimizer.param_groups[0]["lr"]
                    batches = prefetch(
                        iterate_batches(
                            pixels,
                            labels,
                            train_idx,
                            config.batch_size,
                            shuffle=True,
                            generator=generator,
                        ),
                        device,
                    )
                    for i, (x, y) in enumerate(batches):
                        if len(y) < world:
                            continue  # a last global batch too small to give every process a chip
                        # Every process draws the same global batch and augmentation (same RNG) and
                        # keeps its slice; the loss is scaled so DDP's gradient average equals the
                        # single-process gradient of the whole batch.
                        x = prep.preprocessing.normalize(
                            augment_batch(augment, x.to(device, non_blocking=True))
                        )
                        x = x[rank::world].contiguous(memory_format=torch.channels_last)
                        y_all, y = y, y[rank::world].to(device, non_blocking=True)
                        step_now = (i + 1) % config.accumulate == 0 or i + 1 == batches_per_epoch
                        with fabric.no_backward_sync(model, enabled=not step_now):
                            logits = model(x)
                            loss = loss_fn(logits, y) * (world / len(y_all))
                            fabric.backward(loss / config.accumulate)
                        if step_now:
                            optimizer.step()
                            optimizer.zero_grad(set_to_none=True)
                            scheduler.step()
                        seen += len(y)
                        loss_sum += float(loss.detach()) * len(y_all) / world
                        correct += int((logits.argmax(1) == y).sum())
                        progress.update(task, advance=1, loss=loss_sum / seen, acc=correct / seen)
                    epoch_train_time = time.perf_counter() - t0
                    train_time += epoch_train_time
                    row = {
                        "epoch": global_epoch,
                        "phase": phase.name,
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
                    score = row.get(
                        "val_accuracy", float(global_epoch)
                    )  # no validation: the last epoch
                    row.update(
                        epoch_time_s=time.perf_counter() - t0,
                        train_images_per_s=seen / epoch_train_time,
                    )
                    history.append(row)
                    progress.remove_task(task)
                    val_txt = f" val acc {row['val_accuracy']:.1%}" if "val_accuracy" in row else ""
                    console.log(
                        f"epoch {global_epoch}/{total_epochs} ({phase.name}): loss {row['train_loss']:.3f} "
                        f"acc {row['train_accuracy']:.1%}{val_txt} ({row['epoch_time_s']:.0f}s)"
                    )
                    if score > best_acc:
                        best_acc, best_epoch, stale = score, global_epoch, 0
                        if lead:
                            save_classifier(
                                path / "checkpoints" / "best.pt",
                                raw,
                                {**ckpt_meta, "epoch": global_epoch},
                            )
                    else:
                        stale += 1
                    columns = list(dict.fromkeys(k for r in history for k in r))
                    if lead:
                        atomic_write_csv(
                            path / "metrics.csv",
                            columns,
                            ([r.get(k, "") for k in columns] for r in history),
                        )
                    last_phase = pi == len(prep.phases) - 1
                    stopped_early = bool(
                        config.patience and last_phase and stale >= config.patience
                    )
                    # Everything needed to continue exactly here, written after best.pt.
                    if lead:
                        atomic_torch_save(
                            {
                                "phase": pi,
                                "epoch_in_phase": e + 1,
                                "model": raw.state_dict(),
                                "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(),
                                "rng_torch": torch.get_rng_state(),
                                "rng_shuffle": generator.get_state(),
                                "history": history,
                                "best_acc": best_acc,
                                "best_epoch": best_epoch,
                                "stale": stale,
                                "bn_note": bn_note,
                                "stopped_early": stopped_early,
                            },
                            path / "checkpoints" / "last.pt",
                        )
                    if stopped_early:
                        console.log(f"early stop: no better validation accuracy for {stale} epochs")
                        break
        if not lead:
            return RunResult(run.final, {}, history, {})  # the lead process evaluates and writes
        best = torch.load(path / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
        raw.load_state_dict(best["state_dict"])
        t0 = time.perf_counter()
        probs, plain = predict(
            model, prep.preprocessing, pixels, test_idx, eval_batch, device, fabric, config.tta
        )
        test_time = time.perf_counter() - t0
        trainable, total = count_params(raw)
        summary = {
            "phases": phase_log,
            "bn_policy": config.bn_policy,
            "bn_note": bn_note,
            "trainable_params": max((p["trainable_params"] for p in phase_log), default=trainable),
            "total_params": total,
            "best_epoch": best_epoch,
            "best_val_accuracy": best_acc if len(val_idx) else None,
            # Accuracy on the (augmented) training batches of the kept epoch: train - test = overfitting gap.
            "train_accuracy": next(
                (r["train_accuracy"] for r in history if r["epoch"] == best_epoch), None
            ),
            "stopped_early": stopped_early,
            "epochs_run": len(history),
            "train_time_s": train_time,
            "time_per_epoch_s": float(np.mean([r["epoch_time_s"] for r in history]))
            if history
            else 0.0,
            "train_images_per_s": float(np.mean([r["train_images_per_s"] for r in history]))
            if history
            else 0.0,
            "test_images_per_s": len(test_idx) / max(test_time, 1e-9),
            "peak_memory_mb": peak_memory_mb(device),
            "device": str(device),
            "precision": precision,
            "compile": config.compile,
            "history": history,
        }
        (path / "checkpoints" / "last.pt").unlink(
            missing_ok=True
        )  # training state: not needed once done
        return finish_run(run, prep, probs, plain, summary, console, best_epoch)
    except BaseException:
        if lead:
            run.write_status("failed")
        raise


def train(config: TrainConfig, console: Console | None = None) -> RunResult:
    """Validate inputs, then train and evaluate; the Python API behind `geotune train`."""
    prep = prepare(config, console)
    if config.uses_cached_features():
        from geotune.probe import fit_probe

        return fit_probe(prep, console)
    return fit(prep, console)


def resume(run_dir: Path, console: Console | None = None) -> RunResult:
    """Continue a killed or failed run from its last completed epoch (`geotune train --resume`)."""
    run = RunDir.reopen(run_dir)
    config = load_config(run.path / "config.yaml")
    if config.uses_cached_features():
        raise ConfigError(
            f"strategy '{config.strategy}' has no epochs to resume; run it again (features are cached)"
        )
    prep = prepare(config, console, split_file=run.path / "split.csv")
    last = run.path / "checkpoints" / "last.pt"
    state = torch.load(last, map_location="cpu", weights_only=True) if last.is_file() else None
    if state is not None and state.get("stopped_early"):
        state["phase"] = len(prep.phases)
    return fit(prep, console, run=run, state=state)
