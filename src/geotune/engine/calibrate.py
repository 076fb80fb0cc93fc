"""Calibrating a finished run: its temperature fitted on its validation chips (the math is in
geotune.metrics.calibration) and stored in its checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from geotune.engine.fabric import resolve_device
from geotune.engine.predict import predict
from geotune.engine.prepare import Prepared
from geotune.fileio import atomic_torch_save
from geotune.metrics.calibration import calibration_record
from geotune.models.classifier import load_classifier


def calibrate_run(run_path: Path, prep: Prepared, probs, plain, val_scores=None) -> dict:
    """Fit a finished run's temperature on its validation chips and store it in its checkpoint.

    Args:
        run_path: the run folder being written (its ``checkpoints/best.pt`` gets ``temperature``).
        prep: the prepared run (images, split, config).
        probs: test probabilities as reported.
        plain: test logits of the plain view (or probabilities, for cached-feature probes).
        val_scores: validation scores to fit on, when the checkpoint's own would be biased
            (a probe refit on its validation chips passes those of a head fitted without them).

    Returns:
        The fields to add to ``test_metrics.json`` (see :func:`calibration_record`).
    """
    labels = prep.images.folder.labels
    test_labels = torch.as_tensor(labels[prep.indices("test")])
    ckpt_path = Path(run_path) / "checkpoints" / "best.pt"
    val_idx = prep.indices("val")
    given, val_labels = val_scores, torch.empty(0, dtype=torch.long)
    val_scores = torch.empty(0, len(prep.classes))
    if given is not None and len(val_idx):
        val_labels = torch.as_tensor(labels[val_idx])
        val_scores = torch.as_tensor(given).float().clamp_min(1e-12).log()
    elif ckpt_path.is_file() and len(val_idx):
        model, pre, _ = load_classifier(ckpt_path)
        device = resolve_device(prep.config.device)
        batch = max(64, prep.config.batch_size)
        _, val_scores = predict(model.to(device), pre, prep.images.pixels, val_idx, batch, device)
        val_labels = torch.as_tensor(labels[val_idx])
    plain = torch.as_tensor(plain).float()
    # Cached-feature probes report probabilities, not logits: their log is as good (see above).
    test_lp = plain.clamp_min(1e-12).log() if prep.config.uses_cached_features() else plain
    out = calibration_record(val_scores, val_labels, torch.as_tensor(probs), test_lp, test_labels)
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        ckpt["temperature"] = out["calibration"]["temperature"]
        atomic_torch_save(ckpt, ckpt_path)
    return out
