"""Devices and precision, resolved once for every command, and the Lightning Fabric around them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from geotune.errors import ConfigError

if TYPE_CHECKING:
    from lightning_fabric import Fabric

    from geotune.config import RuntimeSection

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` -> a usable torch device, or a one-line
    ConfigError naming what is missing (every command resolves devices here)."""
    kind, _, index = str(name).partition(":")
    if kind not in DEVICE_CHOICES or (index and (kind != "cuda" or not index.isdigit())):
        raise ConfigError(f"unknown device '{name}'; use one of {', '.join(DEVICE_CHOICES)}")
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device '{name}' asked for, but this machine has no usable CUDA GPU; "
                "pass --device cpu (or auto)"
            )
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(
                f"device '{name}' does not exist: {torch.cuda.device_count()} GPU(s) visible"
            )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' asked for, but MPS is not available; pass --device cpu")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 autocast on CUDA (fast, no loss scaling), fp32 elsewhere."""
    if precision == "auto":
        return "bf16-mixed" if device.type == "cuda" else "32-true"
    return precision


# cudnn.benchmark times every candidate kernel the first time it meets a convolution shape, and
# cuDNN 9 compiles some of them at runtime (NVIDIA/cudnn-frontend#1066). Measured on an H200
# (benchmarks/gpu_warmup.py, tf_efficientnet_lite0, bf16, 224 px): 46 s more warm-up than without
# it, then 1.58x the training images/s: it pays back after ~110,000 training images.
BENCHMARK_PAYS_BACK_IMAGES = 100_000


def resolve_cudnn_benchmark(setting: str, device: torch.device, planned_images: int) -> bool:
    """Whether to autotune cuDNN: never off CUDA; ``auto`` only for runs long enough to repay it."""
    if device.type != "cuda" or setting == "off":
        return False
    return setting == "on" or planned_images >= BENCHMARK_PAYS_BACK_IMAGES


# cuDNN itself costs a warm-up for models with depthwise convolutions (EfficientNet, MobileNet,
# ConvNeXt): cuDNN 9 compiles a plan for each new depthwise shape, batch sizes included. Measured on
# an H200 (benchmarks/results/2026-11-29-gpu-h200.md), Lite0 in geotune, 870 chips x 6 epochs:
# first epoch 27-42 s with
# cuDNN, 3 s without; steady 840 vs 370 images/s, so cuDNN pays back after ~20,000 training images.
# ResNets (no depthwise convolutions) warm up in ~1 s with cuDNN and run 5x slower without it.
CUDNN_PAYS_BACK_IMAGES = 20_000


def has_depthwise_convs(model: torch.nn.Module) -> bool:
    """Whether any convolution is grouped (depthwise convolutions are the grouped ones in use)."""
    return any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in model.modules())


def resolve_cudnn(
    setting: str, device: torch.device, model: torch.nn.Module, planned_images: int
) -> bool:
    """Whether CUDA convolutions go through cuDNN: ``auto`` = yes, except for runs of depthwise
    models too short to repay cuDNN's per-shape compilation."""
    if device.type != "cuda" or setting == "off":
        return False
    if setting == "on":
        return True
    return planned_images >= CUDNN_PAYS_BACK_IMAGES or not has_depthwise_convs(model)


@contextmanager
def cudnn_enabled(enabled: bool) -> Iterator[None]:
    """``torch.backends.cudnn.enabled`` for one block (the switch is process-wide)."""
    saved = torch.backends.cudnn.enabled
    torch.backends.cudnn.enabled = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.enabled = saved


def make_fabric(config: RuntimeSection) -> Fabric:
    """A launched Fabric for a run's runtime options (DDP when more than one process)."""
    from lightning_fabric import Fabric

    device = resolve_device(config.device)
    world = config.devices * config.num_nodes
    if world > 1 and device.type == "mps":
        raise ConfigError("DDP over MPS is not supported; use --devices 1 or CUDA / CPU")
    fabric = Fabric(
        accelerator=device.type,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy="ddp" if world > 1 else "auto",
        precision=resolve_precision(config.precision, device),
    )
    # DDP: Fabric's launcher re-runs this command for the other local ranks (as torchrun would).
    fabric.launch()
    return fabric
