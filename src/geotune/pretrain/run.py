"""`geotune pretrain`: continue a backbone's pretraining on the user's own unlabelled chips.

Hierarchical pretraining (Reed et al., WACV 2022): ImageNet weights, then a short
self-supervised run on in-domain imagery, then the usual transfer. Views suited to overhead
imagery: random resized crops, flips, 90-degree rotations and mild brightness/contrast/saturation
jitter (no hue change, no colour inversion, no grayscale). The engine is Lightning Fabric, as for
training (bf16 / DDP), and the state after every epoch is kept beside the output so a killed run
continues with ``--resume``. The result is an ordinary checkpoint for ``--weights PATH``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from geotune.data.augment import augment_batch, build_augment
from geotune.data.batches import index_batches, load_batch, shard
from geotune.data.decode import decode_folder
from geotune.data.folder import cache_root, list_unlabelled
from geotune.engine.fabric import make_fabric
from geotune.errors import ConfigError, DataError
from geotune.fileio import atomic_torch_save
from geotune.models.backbones import create_backbone
from geotune.models.preprocessing import Preprocessing
from geotune.pretrain.config import PretrainConfig
from geotune.pretrain.methods import SSL_METHODS
from geotune.runs.interrupt import note_kept
from geotune.runs.paths import CACHE, existing_file, refuse_outputs_in_inputs

FORMAT = "geotune-pretrain-v1"


def state_file(output: Path) -> Path:
    """Where a pretraining keeps its resumable state (removed when it finishes)."""
    return output.with_name(f".{output.name}.state")


def pretrain(config: PretrainConfig, console: Console | None = None) -> dict:
    """Run the self-supervised pretraining; returns what it recorded in the checkpoint.

    Raises:
        GeotuneError: no chips, fewer chips than a batch, an output that exists, a resume with
            nothing to resume; nothing is written then.
    """
    console = console or Console(stderr=True)
    output = config.output.resolve()
    refuse_outputs_in_inputs(
        {"--output": config.output, "--output (resumable state)": state_file(output)},
        {"DATA": config.data, "--weights": existing_file(config.weights)},
        {CACHE: cache_root()},
    )
    _check_output(output, config.resume)
    folder = _list_chips(config)  # cheap checks before any weights load
    backbone, prep, source = create_backbone(config.backbone, config.weights)
    if config.image_size:
        prep = Preprocessing(config.image_size, prep.mean, prep.std, prep.interpolation)
    images = decode_folder(folder, prep.size, prep.interpolation)
    if images.layout is not None:
        raise DataError(
            f"{config.data} holds multispectral chips; geotune pretrain takes 8-bit RGB chips "
            "(pretrain on their true-colour composites, or train with --band-init)"
        )
    fabric = make_fabric(config)
    torch.manual_seed(config.seed)
    model = SSL_METHODS[config.method].build(backbone)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    first_epoch, losses = 0, []
    if config.resume:
        first_epoch, losses = _restore(state_file(output), model, optimizer, generator)
        console.log(f"resuming {output.name} at epoch {first_epoch + 1}/{config.epochs}")
    module, optimizer = fabric.setup(model, optimizer)
    views = _views(prep.size, config.crop_scale).to(fabric.device)
    steps_per_epoch = len(images.pixels) // config.batch_size
    t0 = time.perf_counter()
    try:
        for epoch in range(first_epoch, config.epochs):
            run = _epoch(fabric, module, model, optimizer, views, prep, images.pixels, config,
                         generator, epoch * steps_per_epoch, config.epochs * steps_per_epoch,
                         console)  # fmt: skip
            losses.append(run)
            if fabric.is_global_zero:
                _save_state(state_file(output), model, optimizer, generator, epoch + 1, losses)
            fabric.barrier()
            console.log(f"epoch {epoch + 1}/{config.epochs} done: {config.method} loss {run:.4f}")
    except KeyboardInterrupt:
        if state_file(output).is_file():
            note_kept(
                f"the state after {len(losses)} finished epochs is kept in {state_file(output)}; "
                "continue with the same `geotune pretrain` command plus --resume"
            )
        raise
    record = {
        "format": FORMAT,
        "backbone": config.backbone,
        "started_from": source,
        "method": config.method,
        "epochs": config.epochs,
        "steps": config.epochs * steps_per_epoch,
        "chips": int(len(images.pixels)),
        "data": str(config.data.resolve()),
        "preprocessing": prep.to_dict(),
        "loss_by_epoch": losses,
        "seconds_this_run": time.perf_counter() - t0,
    }
    if fabric.is_global_zero:
        state = {k: v.detach().cpu() for k, v in model.backbone.state_dict().items()}
        atomic_torch_save({"state_dict": state, "geotune_pretrain": record}, output)
        state_file(output).unlink(missing_ok=True)
    return record


def _check_output(output: Path, resume: bool) -> None:
    state = state_file(output)
    if resume and not state.is_file():
        raise ConfigError(f"nothing to resume: {state} not found; run again without --resume")
    if not resume and state.is_file():
        raise ConfigError(
            f"a killed pretraining of {output} left {state}; add --resume to continue it, or "
            "delete it to start over"
        )
    if not resume and output.exists():
        raise ConfigError(f"{output} exists; choose another --output or delete it")
    if not output.parent.is_dir():
        raise ConfigError(f"folder {output.parent} does not exist; create it or change --output")


def _list_chips(config: PretrainConfig):
    if not Path(config.data).is_dir():
        raise DataError(f"{config.data} not found; pass a folder of unlabelled chips")
    try:
        folder = list_unlabelled(config.data)
    except DataError:
        raise DataError(
            f"{config.data} holds no images; pass a folder of chips (any depth, class folders "
            "not needed)"
        ) from None
    if len(folder) < config.batch_size:
        raise DataError(
            f"{config.data} holds {len(folder)} chips, fewer than one batch of {config.batch_size}; "
            "add chips or lower --batch-size"
        )
    return folder


def _views(size: int, crop_scale) -> torch.nn.Sequential:
    """Geometric views of overhead chips plus mild photometric jitter (no hue, no inversion)."""
    import kornia.augmentation as K

    geometric = build_augment(size, True, True, crop_scale)
    jitter = K.ColorJitter(0.3, 0.3, 0.2, 0.0, p=0.8)
    return torch.nn.Sequential(*geometric, jitter)


def _epoch(
    fabric, module, model, optimizer, views, prep, pixels, config, generator, step, total, console
):
    """One pass; returns the mean loss. Batches are global and sharded, as in training; the
    lead process logs the running loss every tenth of the epoch."""
    rank, world = fabric.global_rank, fabric.world_size
    labels = np.zeros(len(pixels), dtype=np.int64)
    batches = index_batches(np.arange(len(pixels)), config.batch_size, True, generator, True)
    module.train()
    total_loss = 0.0
    every = max(1, len(batches) // 10)
    for i, idx in enumerate(batches, 1):
        x, _ = load_batch(pixels, labels, shard(idx, rank, world))
        x = x.to(fabric.device)
        a, b = (
            prep.standardize(augment_batch(views, x, len(idx), rank, world)).contiguous(
                memory_format=torch.channels_last
            )
            for _ in range(2)
        )
        loss = module(a, b)
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        model.momentum_step(step, max(1, total))
        total_loss += float(loss.detach())
        if i % every == 0 and fabric.is_global_zero:
            console.log(f"step {i}/{len(batches)}: loss {total_loss / i:.4f}")
    return total_loss / max(1, len(batches))


def _save_state(path: Path, model, optimizer, generator, epochs_done: int, losses) -> None:
    atomic_torch_save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "rng_batches": generator.get_state(),
            "epochs_done": epochs_done,
            "losses": losses,
        },
        path,
    )


def _restore(path: Path, model, optimizer, generator) -> tuple[int, list[float]]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng_torch"])
    generator.set_state(state["rng_batches"])
    return int(state["epochs_done"]), list(state["losses"])
