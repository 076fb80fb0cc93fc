"""Imbalanced classes: loss weights and a class-balanced draw of the training chips.

Real labelling is rarely balanced; overall accuracy then hides the small classes, which average
accuracy (AA) and macro F1 expose. Two remedies, usable together: weight the loss per class
(``--class-weights balanced``, also the linear probe's ``class_weight``), or draw the training
chips so every class is seen equally often (``--sampler balanced``).
"""

from __future__ import annotations

import numpy as np
import torch


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """scikit-learn's 'balanced' weights, n / (k * n_c) for the k classes present, so the mean
    weight over the training chips is 1 (the loss keeps its scale); absent classes get 1."""
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels)
    present = np.unique(labels)
    weights = np.ones(n_classes)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return weights


def balanced_draw(
    indices: np.ndarray, labels: np.ndarray, generator: torch.Generator
) -> np.ndarray:
    """One epoch's chips, drawn with replacement with probability inversely proportional to
    their class's size: as many draws as chips, every class equally likely per draw."""
    from torch.utils.data import WeightedRandomSampler

    indices = np.asarray(indices)
    y = np.asarray(labels)[indices]
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    weights = torch.as_tensor(1.0 / counts[inverse], dtype=torch.double)
    order = list(WeightedRandomSampler(weights, len(indices), True, generator=generator))
    return indices[np.asarray(order, dtype=np.int64)]
