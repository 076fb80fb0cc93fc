"""Probability calibration: temperature scaling (Guo et al., 2017), ECE, Brier score, reliability.

A fine-tuned network's softmax is usually over-confident. One scalar temperature T, fitted on the
validation split by minimising the negative log-likelihood, divides the logits; it changes no
prediction (argmax is unchanged) and only makes the probabilities honest. Expected calibration
error comes from torchmetrics; the Brier score and the reliability bins are a few lines each.

Everything here works on log-probabilities as well as on logits: softmax(log p / T) is the same
temperature scaling as softmax(z / T), because log p and z differ by a per-chip constant. So a
linear probe's probabilities calibrate exactly like a network's logits.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

N_BINS = 15


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under softmax(logits / T)."""
    return float(F.cross_entropy(logits.detach().float() / temperature, labels.long()))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature that minimises the NLL of ``labels`` (never worse than T = 1).

    Args:
        logits: (N, K) logits or log-probabilities of labelled chips (the validation split).
        labels: (N,) class indices.

    Returns:
        T > 0; calibrated probabilities are softmax(logits / T).
    """
    # clone: logits from inference_mode cannot take part in autograd otherwise.
    logits, labels = logits.detach().float().clone(), labels.long()
    if len(labels) == 0:
        return 1.0
    t = _minimise_temperature(lambda t: F.cross_entropy(logits / t, labels), max_iter=200)
    # A degenerate fit (e.g. a separable validation set pushes T to 0) must not hurt.
    return t if nll(logits, labels, t) < nll(logits, labels) else 1.0


def _minimise_temperature(loss_of, max_iter: int) -> float:
    """The T in [0.05, 20] that minimises ``loss_of(T)``, by L-BFGS on log T (T stays > 0)."""
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_of(log_t.exp())
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-label ECE (L1, 15 equal-width bins), from torchmetrics."""
    if len(labels) == 0:
        return float("nan")
    probs = probs.float().clamp(0, 1)
    return float(
        multiclass_calibration_error(
            probs, labels.long(), num_classes=probs.shape[1], n_bins=N_BINS, norm="l1"
        )
    )


def brier_score(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Multi-class Brier score: mean over chips of sum_k (p_k - y_k)^2 (0 best, 2 worst)."""
    if len(labels) == 0:
        return float("nan")
    onehot = F.one_hot(labels.long(), probs.shape[1]).float()
    return float(((probs.float() - onehot) ** 2).sum(1).mean())


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    """Per confidence bin: mean confidence, accuracy and chip count (the reliability diagram)."""
    conf, pred = probs.float().max(1)
    correct = (pred == labels.long()).float()
    edges = torch.linspace(0, 1, N_BINS + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        n = int(inside.sum())
        out.append(
            {
                "lower": float(lo),
                "upper": float(hi),
                "n": n,
                "confidence": float(conf[inside].mean()) if n else None,
                "accuracy": float(correct[inside].mean()) if n else None,
            }
        )
    return out


def calibration_record(
    val_lp: torch.Tensor,
    val_labels: torch.Tensor,
    test_probs: torch.Tensor,
    test_lp: torch.Tensor,
    test_labels: torch.Tensor,
) -> dict:
    """Fit T on validation; ECE / Brier on test before and after; reliability bins.

    Args:
        val_lp: validation log-probabilities (or logits) of the plain view.
        val_labels: validation class indices.
        test_probs: the test probabilities as reported (TTA-averaged when TTA is on).
        test_lp: test log-probabilities (or logits) of the plain view.
        test_labels: test class indices.

    Returns:
        ``ece`` and ``brier`` of the reported test probabilities, and a ``calibration`` dict.
    """
    val_lp, test_lp = val_lp.float().log_softmax(1), test_lp.float().log_softmax(1)
    t = fit_temperature(val_lp, val_labels) if len(val_labels) else 1.0
    calibrated = (test_lp / t).softmax(1)
    raw = test_lp.softmax(1)
    record = {
        "temperature": t,
        "fitted_on": "val" if len(val_labels) else None,
        "n_val": len(val_labels),
        "val_nll_before": nll(val_lp, val_labels) if len(val_labels) else None,
        "val_nll_after": nll(val_lp, val_labels, t) if len(val_labels) else None,
        "val_ece_before": expected_calibration_error(val_lp.softmax(1), val_labels)
        if len(val_labels)
        else None,
        "val_ece_after": expected_calibration_error((val_lp / t).softmax(1), val_labels)
        if len(val_labels)
        else None,
        "test_ece_before": expected_calibration_error(raw, test_labels),
        "test_ece_after": expected_calibration_error(calibrated, test_labels),
        "test_brier_before": brier_score(raw, test_labels),
        "test_brier_after": brier_score(calibrated, test_labels),
        "reliability_before": reliability_bins(raw, test_labels),
        "reliability_after": reliability_bins(calibrated, test_labels),
    }
    return {
        "ece": expected_calibration_error(test_probs, test_labels),
        "brier": brier_score(test_probs, test_labels),
        "calibration": record,
    }


def temperature_of(meta: dict) -> float:
    """The calibration temperature recorded in checkpoint or model-card metadata (1 if none)."""
    t = meta.get("temperature")
    return float(t) if t else 1.0


def reliability_arrays(bins: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean confidence, accuracy, count) of the non-empty bins, for plotting."""
    full = [b for b in bins if b["n"]]
    return (
        np.array([b["confidence"] for b in full]),
        np.array([b["accuracy"] for b in full]),
        np.array([b["n"] for b in full]),
    )


# --- multi-label: one temperature per label ---------------------------------------------------
def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)  # kNN votes can be exactly 0 or 1
    return np.log(p) - np.log1p(-p)


def fit_label_temperatures(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-label temperatures (multi-label): label j's T_j minimises the binary NLL of
    sigmoid(logit(p_j) / T_j) on the validation chips (1 where it does not lower it, or where
    the label has no positive or no negative there). Temperature scaling is monotone per label,
    so it changes no label's ranking (AP) and no decision at a threshold mapped with it."""
    z, y = (
        torch.from_numpy(_logit(probs)).float(),
        torch.as_tensor(np.asarray(y), dtype=torch.float32),
    )
    temps = np.ones(z.shape[1])
    for j in range(z.shape[1]):
        if 0 < float(y[:, j].sum()) < len(y):
            temps[j] = _binary_temperature(z[:, j], y[:, j])
    return temps


def _binary_temperature(z: torch.Tensor, y: torch.Tensor) -> float:
    """One label's temperature (see fit_label_temperatures); 1 when the fit does not help."""
    t = _minimise_temperature(lambda t: F.binary_cross_entropy_with_logits(z / t, y), max_iter=100)
    better = F.binary_cross_entropy_with_logits(z / t, y) < F.binary_cross_entropy_with_logits(z, y)
    return t if better else 1.0


def apply_label_temperatures(probs: np.ndarray, temps) -> np.ndarray:
    """sigmoid(logit(p) / T) per label; ``temps`` broadcasts over the chips."""
    return 1 / (1 + np.exp(-_logit(probs) / np.asarray(temps, np.float64)))


def label_ece(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-label ECE: each label's binary calibration error (L1, 15 equal-width bins, over
    its probability of being present), from torchmetrics; NaN for no chips."""
    from torchmetrics.functional.classification import binary_calibration_error

    if len(y) == 0:
        return np.full(np.shape(probs)[1], np.nan)
    p = torch.as_tensor(np.asarray(probs), dtype=torch.float32).clamp(0, 1)
    t = torch.as_tensor(np.asarray(y)).long()
    return np.array([float(binary_calibration_error(p[:, j], t[:, j], n_bins=N_BINS, norm="l1"))
                     for j in range(p.shape[1])])  # fmt: skip


def label_calibration(y: np.ndarray, probs: np.ndarray, temps: np.ndarray, labels) -> dict:
    """Per-label temperatures and each label's test ECE before and after them."""
    before, after = label_ece(y, probs), label_ece(y, apply_label_temperatures(probs, temps))
    return {
        "method": "one temperature per label, fitted on the validation chips (binary NLL); "
        "probabilities = sigmoid(logit / T); decisions unchanged (thresholds map with T)",
        "label_temperatures": {c: float(t) for c, t in zip(labels, temps, strict=True)},
        "ece_before": {c: float(e) for c, e in zip(labels, before, strict=True)},
        "ece_after": {c: float(e) for c, e in zip(labels, after, strict=True)},
        "mean_ece_before": float(np.nanmean(before)) if len(y) else None,
        "mean_ece_after": float(np.nanmean(after)) if len(y) else None,
    }
