"""The linear probe for labelled sets too large for scikit-learn's in-memory solver.

scikit-learn's lbfgs wants the standardised, power-normalised feature matrix in RAM (plus its
copies), so the probe's memory grew with the dataset (100k labelled chips x 1,712 features is
0.7 GB a copy). This solver streams blocks of rows from the memory-mapped feature cache,
power-normalises and standardises each block on the fly and minimises the same objective as
scikit-learn (multinomial cross-entropy plus an L2 penalty of 1/(C n), i.e. sklearn's
``C * sum(loss) + |W|^2 / 2`` per sample) with minibatch Adam, on the GPU when there is one.
Multi-hot targets (multi-label chips) get the one-vs-rest objective instead: the sum over labels
of each label's binary cross-entropy, which is scikit-learn's OneVsRestClassifier of logistic
regressions fitted jointly. Hand-written because no library fits a multinomial logistic regression streamed from disk:
scikit-learn's ``SGDClassifier.partial_fit`` is one-vs-rest, single-threaded and CPU-only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from geotune.data.cache import read_rows
from geotune.models.classifier import signed_power

# Labelled chips from which the probe streams (--probe-solver auto). On AID's 30 classes the
# fit times cross near 3-4k: lbfgs fitted the default 20 candidates in 14 s at 2.5k labelled
# chips (streamed 17 s), 24-36 s at 5k (streamed 19-20 s), 48 s at 9k (19 s); test accuracy
# differed by -0.2 points over 3 seeds at 5k and by +0.2 at 2.5k and 9k
# (benchmarks/results/2026-12-08-probe-solver.md). Above it the features' copies no longer grow
# RAM with N either. Multi-label chips keep the earlier threshold: their one-vs-rest switch was
# not measured below it.
STREAMED_PROBE_ROWS = 4096
STREAMED_MULTILABEL_ROWS = 20_000
BLOCK_ROWS = 4096  # rows per read: 28 MB of 1,712 float32 features, a few copies while scaled
BATCH = 512
EPOCHS = 8
MIN_STEPS = 300  # small sets get more epochs: convergence needs steps, not passes
LR = 3e-3


@dataclass
class Standardiser:
    """Power normalisation then standardisation, fitted by streaming (sklearn's names)."""

    power: float
    width: int
    mean_: np.ndarray
    scale_: np.ndarray

    def apply(self, block: np.ndarray, device: torch.device) -> torch.Tensor:
        x = signed_power(torch.from_numpy(block[:, : self.width]).to(device).float(), self.power)
        mean = torch.from_numpy(self.mean_).to(device)
        scale = torch.from_numpy(self.scale_).to(device)
        return (x - mean) / scale


def read_blocks(feats: np.ndarray, idx: np.ndarray, rows: int = BLOCK_ROWS) -> Iterator:
    """(positions in ``idx``, row numbers, feature rows) a block at a time, each block read in
    file order (sequential reads of the memory-mapped cache)."""
    for start in range(0, len(idx), rows):
        pos = start + np.argsort(idx[start : start + rows], kind="stable")
        yield pos, idx[pos], read_rows(feats, idx[pos], np.float32)  # RSS flat in N


def fit_standardiser(feats: np.ndarray, idx: np.ndarray, power: float, width: int) -> Standardiser:
    total = np.zeros(width)
    squares = np.zeros(width)
    for _, _, block in read_blocks(feats, idx):
        x = signed_power(torch.from_numpy(block[:, :width]), power).double().numpy()
        total += x.sum(0)
        squares += (x * x).sum(0)
    mean = total / len(idx)
    std = np.sqrt(np.maximum(squares / len(idx) - mean * mean, 0.0))
    std[std < 1e-12] = 1.0  # constant features: scikit-learn's StandardScaler leaves them be
    return Standardiser(power, width, mean.astype(np.float32), std.astype(np.float32))


@dataclass
class StreamedLogistic:
    """A fitted multinomial logistic regression over ``classes_`` (sklearn's attribute names,
    so the probe folds it into the checkpoint's linear head like an sklearn model)."""

    coef_: np.ndarray  # (classes, features), on standardised features
    intercept_: np.ndarray
    classes_: np.ndarray
    scaler: Standardiser
    multilabel: bool = False  # one sigmoid per label instead of one softmax

    def predict_proba(self, feats: np.ndarray, idx: np.ndarray, device) -> np.ndarray:
        W = torch.from_numpy(self.coef_).to(device)
        b = torch.from_numpy(self.intercept_).to(device)
        out = np.empty((len(idx), len(self.classes_)), dtype=np.float32)
        with torch.no_grad():
            for pos, _, block in read_blocks(feats, idx):
                z = self.scaler.apply(block, device) @ W.T + b
                out[pos] = (torch.sigmoid(z) if self.multilabel else torch.softmax(z, 1)).cpu()
        return out


def fit_streamed(
    feats: np.ndarray,
    y: np.ndarray,
    idx: np.ndarray,
    scaler: Standardiser,
    C: float,
    device: torch.device,
    seed: int = 0,
    init: StreamedLogistic | None = None,
    class_weight: str | None = None,
) -> StreamedLogistic:
    """Minimise mean cross-entropy + |W|^2 / (2 C n) over the rows ``idx`` (minibatch Adam,
    cosine-decayed; ``init`` warm-starts from a previous solution on the same rows). ``y`` of
    shape (N, L) is multi-hot: the loss is then the sum of the labels' binary cross-entropies."""
    multilabel = y.ndim == 2
    if multilabel:
        classes = np.arange(y.shape[1])
        target = torch.from_numpy(np.asarray(y[idx], dtype=np.float32))
    else:
        classes = np.unique(y[idx])
        target = torch.from_numpy(np.searchsorted(classes, y[idx]))  # by position in idx
    W = torch.zeros(len(classes), scaler.width, device=device)
    b = torch.zeros(len(classes), device=device)
    if init is not None and np.array_equal(init.classes_, classes):
        W.copy_(torch.from_numpy(init.coef_))
        b.copy_(torch.from_numpy(init.intercept_))
    W.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.Adam([W, b], lr=LR)
    per_epoch = -(-len(idx) // BATCH)
    epochs = max(EPOCHS, -(-MIN_STEPS // per_epoch))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * per_epoch)
    l2 = 1.0 / (C * len(idx))
    weight = None
    if class_weight == "balanced" and not multilabel:  # scikit-learn's rule: n / (classes * n_c)
        counts = np.bincount(target.numpy(), minlength=len(classes))
        weight = torch.from_numpy(len(idx) / (len(classes) * counts)).float().to(device)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(idx))
        for pos, _, block in read_blocks(feats, idx[order]):
            x = scaler.apply(block, device)
            t = target[order[pos]].to(device)
            for batch in torch.from_numpy(rng.permutation(len(pos))).split(BATCH):
                batch = batch.to(device)
                z = x[batch] @ W.T + b
                fit = (
                    F.binary_cross_entropy_with_logits(z, t[batch], reduction="none").sum(1).mean()
                    if multilabel
                    else F.cross_entropy(z, t[batch], weight=weight)
                )
                loss = fit + 0.5 * l2 * (W * W).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return StreamedLogistic(
        W.detach().cpu().numpy(), b.detach().cpu().numpy(), classes, scaler, multilabel
    )
