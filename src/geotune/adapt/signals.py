"""Label-free signals on target chips: which chips the model does not know (open set), whether an
adaptation did harm, and which method to keep when no target label is available.

Everything here reads only predictions on target chips (never target labels), and the source
run's own recorded test confidences (``test_predictions.csv``), so it stays source-free.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from geotune.data.augment import tta_view
from geotune.data.batches import image_batches

# Two label-preserving views of an overhead chip: as is, and turned 90 degrees and mirrored.
VIEWS = ((0, False), (1, True))


@torch.inference_mode()
def view_probabilities(model, normalize, pixels: np.ndarray, device, batch: int = 64):
    """Class probabilities of every chip under each of ``VIEWS`` (list of N x K arrays)."""
    model.eval()
    out: list[list[np.ndarray]] = [[] for _ in VIEWS]
    for x in image_batches(pixels, np.arange(len(pixels)), batch, normalize, device):
        for i, (turns, flip) in enumerate(VIEWS):
            v = tta_view(x, turns, flip).contiguous(memory_format=torch.channels_last)
            out[i].append(model(v).float().softmax(-1).cpu().numpy())
    return [np.concatenate(o) if o else np.zeros((0, 0)) for o in out]


def unknown_threshold(run: Path, quantile: float) -> float | None:
    """The confidence below which a target chip counts as of a class the model does not know:
    the ``quantile`` of the source run's own test confidences (None when not recorded)."""
    path = Path(run) / "test_predictions.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        conf = [float(r["confidence"]) for r in csv.DictReader(fh)]
    return float(np.quantile(conf, quantile)) if conf else None


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, 1))).sum(-1)


def summarize(views: list[np.ndarray]) -> dict[str, float]:
    """Label-free figures of one model on the target chips."""
    p = views[0]
    marginal = p.mean(0)
    k_used = max(2, int((marginal > 1e-3).sum()))
    return {
        "mean_entropy": float(_entropy(p).mean()),
        "mean_confidence": float(p.max(1).mean()),
        # Rotation/flip consistency: overhead scenes keep their class under these views.
        "view_consistency": float((views[0].argmax(1) == views[1].argmax(1)).mean()),
        # Entropy of the mean prediction over the classes in use (1 = balanced, 0 = collapsed).
        "marginal_balance": float(_entropy(marginal[None])[0] / np.log(k_used)),
        "classes_predicted": int(len(np.unique(p.argmax(1)))),
    }


def harm_signals(source: list[np.ndarray], adapted: list[np.ndarray]) -> dict:
    """How an adapted model's target predictions differ from the source model's, and which
    differences predict that it got worse (``warnings``; empty when none)."""
    before, after = summarize(source), summarize(adapted)
    agreement = float((source[0].argmax(1) == adapted[0].argmax(1)).mean())
    warnings = []
    if after["view_consistency"] < before["view_consistency"] - 0.03:
        warnings.append(
            f"rotation consistency fell {100 * before['view_consistency']:.0f}% -> "
            f"{100 * after['view_consistency']:.0f}%"
        )
    if after["marginal_balance"] < 0.8 * before["marginal_balance"]:
        warnings.append("predictions collapse onto fewer classes")
    if after["classes_predicted"] < 0.7 * before["classes_predicted"]:
        warnings.append(
            f"{after['classes_predicted']} classes predicted instead of "
            f"{before['classes_predicted']}"
        )
    if agreement < 0.6:
        warnings.append(f"changes {100 * (1 - agreement):.0f}% of the source model's predictions")
    if after["mean_entropy"] > before["mean_entropy"] * 1.25:
        warnings.append("predictions became less certain")
    return {"before": before, "after": after, "agreement": agreement, "warnings": warnings}


def choose(candidates: dict[str, dict]) -> tuple[str, str]:
    """The method to keep, from label-free signals only: among "none" and the methods without
    a harm warning, the highest rotation consistency (ties: higher agreement with the source
    model, i.e. the smaller change). Returns (name, why)."""
    ok = {m: s for m, s in candidates.items() if m == "none" or not s["warnings"]}
    best = max(
        ok,
        key=lambda m: (round(ok[m]["after"]["view_consistency"], 3), ok[m]["agreement"]),
    )
    flagged = sorted(set(candidates) - set(ok))
    why = f"highest rotation consistency ({100 * ok[best]['after']['view_consistency']:.1f}%)"
    if flagged:
        why += f" among methods without harm warnings (flagged: {', '.join(flagged)})"
    return best, why
