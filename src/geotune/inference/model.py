"""A trained classifier ready to predict: from a run folder (PyTorch) or from an exported model
(ONNX via onnxruntime, or TorchScript) with its JSON model card.

Either way a :class:`Predictor` carries what prediction needs besides the graph: the class
order, the preprocessing the model was trained with and its calibration temperature.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from geotune.data.augment import TTA_VIEWS, tta_view
from geotune.engine.fabric import resolve_device
from geotune.errors import ConfigError
from geotune.metrics.calibration import temperature_of
from geotune.metrics.selection import label_thresholds
from geotune.models.preprocessing import Preprocessing

EXPORT_SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript"}


class ModelCard(BaseModel):
    """The JSON card beside an exported model: everything needed to use it without geotune's
    training code or the run folder."""

    model_config = ConfigDict(extra="allow")

    format: str
    file: str
    classes: list[str]
    bands: list[str]
    input: dict[str, Any]
    preprocessing: dict[str, Any]
    temperature: float = 1.0
    training: dict[str, Any] = {}
    test_metrics: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    # Multi-label models: a label is present when its sigmoid probability reaches its threshold
    # (chosen per label on the validation chips); None for a single-label (softmax) model.
    multilabel: bool = False
    thresholds: dict[str, float] | None = None
    label_temperatures: dict[str, float] | None = None  # multi-label calibration


def card_path(model_file: Path) -> Path:
    """Where the card of ``model_file`` lives: ``model.onnx`` -> ``model.onnx.json``."""
    model_file = Path(model_file)
    return model_file.with_name(model_file.name + ".json")


@dataclass
class Predictor:
    """A classifier, its classes, preprocessing and temperature (and, for a multi-label
    classifier, its per-label decision thresholds).

    Attributes:
        classes: class names in the model's output order.
        preprocessing: input size, mean/std and resampling of the training chips.
        temperature: calibration temperature (1: none fitted).
        kind: ``torch``, ``onnx`` or ``torchscript``.
        source: the run folder or model file.
        logits: normalised float NCHW batch (on ``device``) -> CPU float logits.
        device: where batches go.
        meta: checkpoint metadata or the model card.
        thresholds: per-label thresholds in class order (multi-label); None: single-label.
    """

    classes: list[str]
    preprocessing: Preprocessing
    temperature: float
    kind: str
    source: Path
    logits: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device
    meta: dict = field(default_factory=dict)
    thresholds: list[float] | None = None
    label_temperatures: list[float] | None = None  # multi-label calibration (1 per label)

    @property
    def multilabel(self) -> bool:
        return self.thresholds is not None

    @torch.inference_mode()
    def probabilities(
        self, x_uint8: torch.Tensor, tta: str = "none", calibrated: bool = True
    ) -> torch.Tensor:
        """uint8 NCHW chips (already at the input size) -> class probabilities (CPU).

        Each TTA view's logits are divided by the temperature before the softmax (multi-label:
        one sigmoid per label); the views' probabilities are averaged.
        """
        x = self.preprocessing.normalize(x_uint8.to(self.device))
        t = self.temperature if calibrated else 1.0
        views = TTA_VIEWS[tta]
        if self.multilabel and calibrated and self.label_temperatures:
            t = torch.tensor(self.label_temperatures, dtype=torch.float32)
        squash = torch.sigmoid if self.multilabel else (lambda z: z.softmax(-1))
        total = sum(squash(self.logits(tta_view(x, k, f)) / t) for k, f in views)
        return total / len(views)

    def decision_thresholds(self, calibrated: bool = True) -> list[float] | None:
        """Multi-label: the thresholds on the scale of :meth:`probabilities` (calibration maps
        them with each label's temperature, so calibrating changes no decision)."""
        if self.thresholds is None or not calibrated or not self.label_temperatures:
            return self.thresholds
        th = torch.tensor(self.thresholds, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
        temps = torch.tensor(self.label_temperatures, dtype=torch.float64)
        return (torch.logit(th) / temps).sigmoid().tolist()

    def decisions(self, probs: torch.Tensor, calibrated: bool = True) -> torch.Tensor:
        """Multi-label: (N, L) bool, each label present at or above its threshold."""
        th = self.decision_thresholds(calibrated)
        if th is None:
            raise ConfigError(f"{self.source} is a single-label model; it has no label thresholds")
        return probs >= torch.tensor(th, dtype=probs.dtype)


def load_predictor(source: Path, device: str = "auto") -> Predictor:
    """A run folder's best checkpoint, or an exported model with its card.

    Args:
        source: a finished run folder, or a ``.onnx`` / ``.pt`` file written by `geotune export`.
        device: auto | cpu | cuda | cuda:N | mps (ONNX runs on onnxruntime's CPU or CUDA provider).

    Returns:
        The predictor.

    Raises:
        ConfigError: an unfinished run, a run without a classifier checkpoint, a model without
            its card.
    """
    source = Path(source)
    dev = resolve_device(device)
    if source.suffix.lower() in EXPORT_SUFFIXES and not source.is_dir():
        return exported_predictor(source, dev)
    return run_predictor(source, dev)


def run_checkpoint(run: Path) -> Path:
    """The classifier checkpoint of a finished run, with one-line errors for anything else."""
    from geotune.runs.rundir import require_complete_run

    run = require_complete_run(run)
    ckpt_path = run / "checkpoints" / "best.pt"
    if not ckpt_path.is_file():
        raise ConfigError(
            f"run {run} has no classifier checkpoint ({ckpt_path} missing; a kNN run keeps none); "
            "use a linear-probe or fine-tuned run"
        )
    return ckpt_path


def run_predictor(run: Path, device: torch.device) -> Predictor:
    """The PyTorch classifier of a finished run (its ``checkpoints/best.pt``)."""
    from geotune.models.classifier import load_classifier

    model, prep, ckpt = load_classifier(run_checkpoint(run))
    model = model.to(device).eval()

    @torch.inference_mode()
    def logits(x: torch.Tensor) -> torch.Tensor:
        return model(x.contiguous(memory_format=torch.channels_last)).float().cpu()

    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    classes = list(ckpt["classes"])
    return Predictor(
        classes, prep, temperature_of(ckpt), "torch", run, logits, device, meta,
        label_thresholds(ckpt, classes), ckpt.get("label_temperatures"),
    )  # fmt: skip


def read_card(model_file: Path) -> ModelCard:
    """The model card beside an exported model (one-line error when missing or damaged)."""
    path = card_path(model_file)
    if not Path(model_file).is_file():
        raise ConfigError(
            f"model file {model_file} not found; pass a run folder or an exported model"
        )
    try:
        return ModelCard.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ConfigError(
            f"model card {path} not found; keep the .json card `geotune export` wrote beside "
            f"{Path(model_file).name}"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValidationError) as err:
        raise ConfigError(
            f"model card {path} is damaged ({type(err).__name__}); export again"
        ) from None


def exported_predictor(model_file: Path, device: torch.device) -> Predictor:
    """An exported ONNX or TorchScript model and its card."""
    card = read_card(model_file)
    kind = EXPORT_SUFFIXES[Path(model_file).suffix.lower()]
    logits = (
        onnx_logits(model_file, device)
        if kind == "onnx"
        else torchscript_logits(model_file, device)
    )
    prep = Preprocessing.from_dict(card.preprocessing)
    meta = card.model_dump()
    return Predictor(
        card.classes, prep, card.temperature, kind, Path(model_file), logits, device, meta,
        label_thresholds(meta, card.classes), _card_temperatures(card),
    )  # fmt: skip


def _card_temperatures(card: ModelCard) -> list[float] | None:
    t = card.label_temperatures
    return None if t is None else [float(t.get(c, 1.0)) for c in card.classes]


def onnx_logits(model_file: Path, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """An onnxruntime session as a batch -> logits function."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(str(model_file), providers=providers)
    name = session.get_inputs()[0].name

    def logits(x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(session.run(None, {name: arr})[0]).float()

    return logits


def torchscript_logits(
    model_file: Path, device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A TorchScript module as a batch -> logits function."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still works
        module = torch.jit.load(str(model_file), map_location=device).eval()

    @torch.inference_mode()
    def logits(x: torch.Tensor) -> torch.Tensor:
        return module(x.contiguous()).float().cpu()

    return logits
