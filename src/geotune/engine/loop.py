"""The training loop, in the shape of Lightning Fabric's "build your own trainer" example.

``Engine`` holds what stays fixed during a run (Fabric, device, data, augmentation, loss);
``train_epoch`` and ``validate`` are plain PyTorch; ``TrainState`` is everything that changes
between epochs and the only thing written to and read from ``checkpoints/last.pt``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from geotune.data.augment import augment_batch, build_augment
from geotune.data.balance import balanced_class_weights, balanced_draw
from geotune.data.batches import index_batches, load_batch, prefetch, shard
from geotune.engine.fabric import (
    make_fabric,
    resolve_cudnn,
    resolve_cudnn_benchmark,
    resolve_precision,
)
from geotune.engine.predict import predict
from geotune.engine.prepare import Prepared
from geotune.errors import DataError
from geotune.fileio import atomic_torch_save
from geotune.runs.metering import count_params
from geotune.transfer.batchnorm import BN_POLICIES, BatchNormPolicy
from geotune.transfer.groups import apply_trainable
from geotune.transfer.optim import build_optimizer, build_scheduler
from geotune.transfer.strategies import Phase


@dataclass
class TrainState:
    """Where a run stands between two epochs: enough to continue exactly there."""

    phase: int = 0
    epoch_in_phase: int = 0
    history: list[dict] = field(default_factory=list)
    best_acc: float = -1.0
    best_epoch: int = 0
    stale: int = 0
    bn_note: str | None = None
    stopped_early: bool = False
    out_of_time: bool = False  # stopped by max_time (engine.budget), not by patience
    train_seconds: float = 0.0  # time in training passes (not validation), across resumes
    last_phase_epochs: int | None = None  # set by --epochs-by-time after its first epoch
    model: dict | None = None
    optimizer: dict | None = None
    scheduler: dict | None = None
    rng_torch: torch.Tensor | None = None
    rng_shuffle: torch.Tensor | None = None

    @property
    def fresh(self) -> bool:
        return self.model is None

    def save(self, path: Path) -> None:
        # Atomic (temporary file + rename) rather than Fabric.save: a kill mid-write must leave
        # the previous epoch's state readable.
        atomic_torch_save(asdict(self), path)

    @classmethod
    def load(cls, path: Path) -> TrainState | None:
        """The state in ``path`` (None when absent); a damaged file is a one-line DataError."""
        if not path.is_file():
            return None
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
            state = cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})
            if state.model is None or state.rng_shuffle is None:
                raise KeyError("model")
        except Exception as err:  # noqa: BLE001 - any unreadable state means the same to the user
            raise DataError(
                f"{path} is damaged ({type(err).__name__}); delete it to restart the run from "
                "its first epoch with --resume, or start a new run"
            ) from None
        return state


class Engine:
    """Fabric, the model on its device and the fixed parts of one training run."""

    def __init__(self, prep: Prepared, console: Console):
        config = prep.config
        self.prep, self.config = prep, config
        torch.manual_seed(config.seed)
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.fabric = make_fabric(config)
        self.precision = resolve_precision(config.precision, self.fabric.device)
        self.rank, self.world = self.fabric.global_rank, self.fabric.world_size
        self.lead = self.fabric.is_global_zero
        self.console = console if self.lead else Console(quiet=True)  # one process reports
        self.device = self.fabric.device
        # channels_last: 1.5x (train) to 4x (inference) faster on CPU (oneDNN) as well as GPU.
        self.raw = prep.model.to(device=self.device, memory_format=torch.channels_last)
        n_train = len(prep.indices("train"))
        planned = config.epochs * n_train
        # Process-wide switches, like cudnn.benchmark: a training run owns its process.
        self.cudnn = resolve_cudnn(config.cudnn, self.device, self.raw, planned)
        torch.backends.cudnn.enabled = self.cudnn or self.device.type != "cuda"
        self.cudnn_benchmark = (
            self.cudnn
            and not config.deterministic
            and resolve_cudnn_benchmark(config.cudnn_benchmark, self.device, planned)
        )
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        self.forward_module = torch.compile(self.raw) if config.compile else self.raw
        self.module: nn.Module = self.forward_module
        self.augment = build_augment(
            prep.preprocessing.size, config.flips, config.rot90, config.crop_scale
        ).to(self.device)
        self.multilabel = prep.multilabel
        if self.multilabel:
            self.loss_fn = MultiLabelLoss(self._pos_weight(), config.label_smoothing)
        else:
            self.loss_fn = nn.CrossEntropyLoss(
                weight=self._class_weights(),
                label_smoothing=config.label_smoothing,
                reduction="sum",
            )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.eval_batch = max(64, config.batch_size)
        self.batches_per_epoch = max(1, math.ceil(n_train / config.batch_size))
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / config.accumulate)

    def _class_weights(self) -> torch.Tensor | None:
        if self.config.class_weights == "none":
            return None
        p = self.prep
        labels = p.images.folder.labels[p.indices("train")]
        w = balanced_class_weights(labels, len(p.classes))
        return torch.as_tensor(w, dtype=torch.float32, device=self.device)

    def _pos_weight(self) -> torch.Tensor:
        """Per-label BCE weight of the positives: n_neg / n_pos of the training chips, clipped
        to [1, 100] so a rare label is not ignored and one positive cannot dominate the loss
        (``label_pos_weight none``: 1 for every label, plain BCE)."""
        Y = self.prep.targets[self.prep.indices("train")].astype(np.float64)
        n_pos = Y.sum(0)
        w = np.clip((len(Y) - n_pos) / np.maximum(n_pos, 1), 1.0, POS_WEIGHT_MAX)
        if self.config.label_pos_weight == "none":
            w = np.ones_like(w)
        return torch.as_tensor(w, dtype=torch.float32, device=self.device)

    def _epoch_batches(self) -> list[np.ndarray]:
        """This epoch's global batches of chip indices (shuffled, or class-balanced draws)."""
        p, cfg = self.prep, self.config
        train = p.indices("train")
        if cfg.sampler == "balanced":
            drawn = balanced_draw(train, p.images.folder.labels, self.generator)
            return index_batches(drawn, cfg.batch_size)
        return index_batches(train, cfg.batch_size, True, self.generator)

    # -- state --------------------------------------------------------------------------------
    def restore(self, state: TrainState) -> None:
        # Nothing between two epochs draws random numbers, so restoring here is exact.
        self.raw.load_state_dict(state.model)
        torch.set_rng_state(state.rng_torch)
        self.generator.set_state(state.rng_shuffle)

    def snapshot(self, state: TrainState, optimizer, scheduler) -> None:
        state.model = self.raw.state_dict()
        state.optimizer = optimizer.state_dict()
        state.scheduler = scheduler.state_dict()
        state.rng_torch = torch.get_rng_state()
        state.rng_shuffle = self.generator.get_state()

    def reestimate_batchnorm(self) -> str | None:
        """AdaBN-style policies: statistics from the (unlabelled) training chips, then frozen."""
        if not BN_POLICIES[self.config.bn_policy].reestimate:
            return None
        from geotune.data.batches import image_batches
        from geotune.transfer.batchnorm import reestimate_batchnorm

        p = self.prep
        batches = image_batches(
            p.images.pixels,
            p.indices("train"),
            self.eval_batch,
            p.preprocessing.normalize,
            self.device,
        )
        n = reestimate_batchnorm(self.raw, batches)
        return f"re-estimated on {n} training images (labels unused), then frozen"

    # -- one phase ----------------------------------------------------------------------------
    def setup_phase(self, phase: Phase, state: TrainState, resumed_here: bool):
        """Trainable flags, BN policy, optimizer and schedule of a phase, wrapped by Fabric."""
        groups, flags = self.prep.groups, list(phase.trainable)
        apply_trainable(groups, flags)
        bn = BatchNormPolicy(self.raw, groups, flags, self.config.bn_policy)
        optimizer = build_optimizer(self.config, groups, phase)
        scheduler = build_scheduler(optimizer, self.config, self.steps_per_epoch, phase.epochs)
        if resumed_here:
            optimizer.load_state_dict(state.optimizer)
            scheduler.load_state_dict(state.scheduler)
        # Wrapped per phase: DDP only syncs parameters that were trainable when wrapped.
        self.module = self.fabric.setup_module(self.forward_module)
        optimizer = self.fabric.setup_optimizers(optimizer)
        trainable, total = count_params(self.raw)
        log = {
            "phase": phase.name,
            "epochs": phase.epochs,
            "trainable_params": trainable,
            "total_params": total,
            "bn": bn.describe(),
            "trainable_groups": [g.name for g, f in zip(groups, flags, strict=True) if f],
            "optimizer_params": sum(p.numel() for g in optimizer.param_groups for p in g["params"]),
        }
        return bn, optimizer, scheduler, log

    # -- one epoch ----------------------------------------------------------------------------
    def train_epoch(self, bn: BatchNormPolicy, optimizer, scheduler, progress=None) -> dict:
        """One pass over the training chips; each process loads and augments only its shard."""
        p, cfg = self.prep, self.config
        bn.train_mode(self.raw)
        seen = correct = 0
        loss_sum = 0.0
        lr_now = optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        batches = self._epoch_batches()
        sizes = [len(b) for b in batches]
        mine = [shard(b, self.rank, self.world) for b in batches]
        loaded = prefetch((load_batch(p.images.pixels, p.targets, b) for b in mine), self.device)
        for i, ((x, y), n_global) in enumerate(zip(loaded, sizes, strict=True)):
            if n_global < self.world:
                continue  # a last global batch too small to give every process a chip
            x = augment_batch(
                self.augment,
                x.to(self.device, non_blocking=True),
                n_global,
                self.rank,
                self.world,
                p.preprocessing.to_unit,
            )
            x = p.preprocessing.standardize(x).contiguous(memory_format=torch.channels_last)
            y = y.to(self.device, non_blocking=True)
            step_now = (i + 1) % cfg.accumulate == 0 or i + 1 == len(batches)
            with self.fabric.no_backward_sync(self.module, enabled=not step_now):
                logits = self.module(x)
                # Scaled so DDP's gradient average equals the one-process gradient of the batch.
                loss = self.loss_fn(logits, y) * (self.world / n_global)
                self.fabric.backward(loss / cfg.accumulate)
            if step_now:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
            seen += len(y)
            loss_sum += float(loss.detach()) * n_global / self.world
            if self.multilabel:  # label-wise accuracy (1 - Hamming loss), per chip
                correct += float(((logits > 0) == (y > 0)).float().mean(1).sum())
            else:
                correct += int((logits.argmax(1) == y).sum())
            if progress is not None:
                progress(loss_sum / seen, correct / seen)
        elapsed = time.perf_counter() - t0
        return {
            "lr": lr_now,
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "train_seconds": elapsed,
            "train_images_per_s": seen / max(elapsed, 1e-9),
        }

    def validate(self) -> dict[str, Any]:
        """Validation loss and accuracy of the plain view (empty without a validation part);
        multi-label: loss and macro mAP (``val_map``)."""
        p = self.prep
        val_idx = p.indices("val")
        if not len(val_idx):
            return {}
        if self.multilabel:
            return self._validate_multilabel(val_idx)
        _, logits = self.val_probabilities(val_idx)
        from sklearn.metrics import balanced_accuracy_score

        yv = torch.from_numpy(np.asarray(p.images.folder.labels)[val_idx])
        pred = logits.argmax(1)
        return {
            "val_loss": float(nn.functional.cross_entropy(logits, yv)),
            "val_accuracy": float((pred == yv).float().mean()),
            # Mean per-class recall, as the probe selects with balanced class weights.
            "val_average_accuracy": float(balanced_accuracy_score(yv.numpy(), pred.numpy())),
        }

    def _validate_multilabel(self, val_idx: np.ndarray) -> dict[str, Any]:
        from geotune.metrics.selection import macro_average_precision

        p = self.prep
        probs, logits = self.val_probabilities(val_idx)
        yv = torch.from_numpy(p.targets[val_idx].astype(np.float32))
        return {
            "val_loss": float(nn.functional.binary_cross_entropy_with_logits(logits, yv)),
            "val_map": macro_average_precision(p.targets[val_idx], probs.numpy()),
        }

    def val_probabilities(
        self, val_idx=None, shared: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities and logits of the plain view on the validation chips (``shared``:
        split across the DDP processes; False when the lead predicts alone after training)."""
        p = self.prep
        val_idx = p.indices("val") if val_idx is None else val_idx
        return predict(
            self.module,
            p.preprocessing,
            p.images.pixels,
            val_idx,
            self.eval_batch,
            self.device,
            self.fabric,
            shared=shared,
            multilabel=self.multilabel,
        )

    @property
    def selection_metric(self) -> str:
        """What picks the best epoch: average accuracy when the run balances its classes;
        macro mAP for multi-label data."""
        if self.multilabel:
            return "val_map"
        balanced = self.config.class_weights != "none" or self.config.sampler != "shuffle"
        return "val_average_accuracy" if balanced else "val_accuracy"

    def test(self, tta: str) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Test probabilities (with ``tta``), plain-view logits, and the seconds it took."""
        p = self.prep
        t0 = time.perf_counter()
        probs, plain = predict(
            self.module,
            p.preprocessing,
            p.images.pixels,
            p.indices("test"),
            self.eval_batch,
            self.device,
            self.fabric,
            tta,
            shared=False,  # the lead alone: the other processes stop after training
            multilabel=self.multilabel,
        )
        return probs, plain, time.perf_counter() - t0


POS_WEIGHT_MAX = 100.0


class MultiLabelLoss(nn.Module):
    """BCE with logits over every label, summed (as the single-label loss sums over chips),
    with per-label positive weights; label smoothing pulls targets towards 0.5."""

    def __init__(self, pos_weight: torch.Tensor, smoothing: float = 0.0):
        super().__init__()
        self.pos_weight, self.smoothing = pos_weight, smoothing

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = y.float() * (1 - self.smoothing) + 0.5 * self.smoothing
        return nn.functional.binary_cross_entropy_with_logits(
            logits.float(), target, pos_weight=self.pos_weight, reduction="sum"
        )


def gradient_steps(
    batches, loss_of, optimizer: torch.optim.Optimizer, before_step=None
) -> list[tuple[float, ...]]:
    """The plain optimisation loop shared by adaptation methods (TENT, DANN).

    For each batch: ``before_step()`` (e.g. a train-mode policy), ``loss, logs = loss_of(batch)``,
    then zero_grad / backward / step. Returns one ``(loss, *logs)`` tuple per step.
    """
    out = []
    for batch in batches:
        if before_step is not None:
            before_step()
        loss, logs = loss_of(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        out.append((float(loss.detach()), *logs))
    return out
