"""The registry of adaptation methods: one entry per method, one signature for all."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geotune.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    import torch

    from geotune.models.classifier import SceneClassifier


@dataclass
class AdaptContext:
    """What a method may use. Target chips come without labels, by construction.

    Attributes:
        model: the source run's classifier, on ``device``; a method changes it in place.
        config: the adaptation options.
        device: where the model is.
        normalize: the run's preprocessing for uint8 image batches.
        target_pixels: the target chips (uint8, N x C x S x S).
        target_batches: normalised target batches; ``target_batches(shuffle=True)`` shuffles.
        source: the source run's (pixels, labels, training indices), loaded when first called.
        source_example: (data root, relative path) of one of the source run's chips.
        target_native_size: the target chips' own size in pixels (before resizing).
        classes: the model's class names, in its output order.
    """

    model: SceneClassifier
    config: Any  # the AdaptConfig (adapt.config imports this module, not the reverse)
    device: torch.device
    normalize: Callable[[torch.Tensor], torch.Tensor]
    target_pixels: np.ndarray
    target_batches: Callable[..., Iterator[torch.Tensor]]
    source: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]
    source_example: Callable[[], tuple[Path, str]] = lambda: (Path("."), "")
    target_native_size: int = 0
    classes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AdaptMethod:
    """A registered adaptation method.

    Args:
        name: the ``--method`` value.
        description: one line for ``--help``.
        adapt: changes ``ctx.model`` in place; returns what to record in adaptation.json.
        needs_source: reads the source run's own training chips (not source-free).
        default_lr: learning rate when ``--lr`` is not given (None: the method has none).
    """

    name: str
    description: str
    adapt: Callable[[AdaptContext], dict[str, Any]]
    needs_source: bool = False
    default_lr: float | None = None


ADAPT_METHODS: Registry[AdaptMethod] = Registry("adaptation method", "method")


def register_adapt_method(method: AdaptMethod) -> AdaptMethod:
    """Add a method to the registry (its name becomes a valid ``--method``)."""
    return ADAPT_METHODS.register(method.name, method)
