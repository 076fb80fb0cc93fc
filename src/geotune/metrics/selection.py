"""What chooses on validation for multi-label data: macro mAP (the best epoch, the probe's C)
and each label's F1-optimal threshold. The engine selects with them; the test metrics that use
them are in geotune.metrics.multilabel."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import binary_average_precision

DEFAULT_THRESHOLD = 0.5


def per_label_ap(y_true: np.ndarray, probs: np.ndarray) -> list[float | None]:
    """Average precision of every label; None for a label without a positive in ``y_true``."""
    y = torch.as_tensor(np.asarray(y_true), dtype=torch.long)
    p = torch.as_tensor(np.asarray(probs), dtype=torch.float32)
    return [
        float(binary_average_precision(p[:, j], y[:, j])) if y[:, j].any() else None
        for j in range(y.shape[1])
    ]


def macro_average_precision(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Macro mAP over the labels that have a positive in ``y_true`` (what picks the best epoch)."""
    aps = [a for a in per_label_ap(y_true, probs) if a is not None]
    return float(np.mean(aps)) if aps else 0.0


def f1_thresholds(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per label, the threshold with the best F1 on these chips (predicted: p >= threshold);
    0.5 for a label without a positive here. Between two adjacent scores the midpoint is kept,
    so the choice does not sit on one validation chip's exact value."""
    y, p = np.asarray(y_true, dtype=bool), np.asarray(probs, dtype=np.float64)
    out = np.full(y.shape[1], DEFAULT_THRESHOLD)
    for j in range(y.shape[1]):
        n_pos = int(y[:, j].sum())
        if n_pos == 0:
            continue
        order = np.argsort(-p[:, j], kind="stable")
        s, tp = p[order, j], np.cumsum(y[order, j])
        k = np.arange(1, len(s) + 1)  # predicted positives when the top k are taken
        last = np.r_[s[1:] != s[:-1], True]  # only cut between different scores
        f1 = np.where(last, 2 * tp / (k + n_pos), -1.0)
        best = int(np.argmax(f1))
        out[j] = s[best] if best + 1 == len(s) else (s[best] + s[best + 1]) / 2
    return out


# Validation chips hold a few positives per label (8-10 on the multi-label benchmark), so a
# label's own F1-optimal threshold is noisy: it is shrunk towards the one threshold that is best
# for all labels together, by n_pos / (n_pos + THRESHOLD_PRIOR_POSITIVES) (an empirical-Bayes
# weight: a label with 10 positives keeps half of its own choice). On the multi-label benchmark
# (README probe, 5 seeds) the shrunk thresholds beat 0.5 on test macro F1 by +1.0 point (5 of 5
# seeds), the unshrunk ones lost 0.8 (0 of 5): benchmarks/results/2026-12-07-multilabel-thresholds.md.
THRESHOLD_PRIOR_POSITIVES = 10.0


def shared_threshold(y_true: np.ndarray, probs: np.ndarray) -> float:
    """The one threshold with the best macro F1 over the labels that have a positive here
    (candidates: 101 quantiles of the scores; 0.5 when no label has a positive)."""
    y, p = np.asarray(y_true, dtype=bool), np.asarray(probs, dtype=np.float64)
    has = y.any(0)
    if not has.any():
        return DEFAULT_THRESHOLD
    y, p = y[:, has], p[:, has]
    grid = np.unique(np.quantile(p, np.linspace(0, 1, 101)))
    n_pos = y.sum(0)

    def macro_f1(t: float) -> float:  # one threshold at a time: memory flat in the chips
        pred = p >= t
        return float((2 * (pred & y).sum(0) / (pred.sum(0) + n_pos)).mean())

    return float(grid[int(np.argmax([macro_f1(t) for t in grid]))])


def validation_thresholds(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per label: its F1-optimal threshold (:func:`f1_thresholds`) shrunk towards the shared
    one (:func:`shared_threshold`) by n_pos / (n_pos + THRESHOLD_PRIOR_POSITIVES); a label
    without a positive here takes the shared threshold."""
    own, shared = f1_thresholds(y_true, probs), shared_threshold(y_true, probs)
    n_pos = np.asarray(y_true, dtype=bool).sum(0)
    w = n_pos / (n_pos + THRESHOLD_PRIOR_POSITIVES)
    return w * own + (1 - w) * shared


def label_thresholds(meta: dict, classes: list[str]) -> list[float] | None:
    """A multi-label checkpoint's (list) or card's (label -> threshold) thresholds in class
    order; 0.5 where none was chosen; None for a single-label model."""
    t = meta.get("thresholds")
    if not meta.get("multilabel") and t is None:
        return None
    if isinstance(t, dict):
        return [float(t.get(c, DEFAULT_THRESHOLD)) for c in classes]
    return [float(v) for v in t] if t is not None else [DEFAULT_THRESHOLD] * len(classes)


# What a sweep ranks runs by (a results row's ``metric``), and its short name in reports.
METRIC_NAMES = {"overall_accuracy": "OA", "map_macro": "mAP"}


def metric_name(table: list[dict]) -> str:
    """The short name of what a sweep's table ranks by (OA, or mAP for multi-label data)."""
    return METRIC_NAMES[table[0].get("metric", "overall_accuracy")] if table else "OA"
