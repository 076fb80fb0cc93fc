"""Multi-label metrics (torchmetrics), per-label thresholds, and their table, JSON and CSV forms.

mAP (macro: the mean of per-label average precisions; micro: one AP over every chip-label
pair) ranks without a threshold. F1 (micro, macro, per sample), Hamming loss and subset
accuracy (exact match of the label set) need one decision per label: each label's threshold is
the F1-optimal one on the validation chips, or 0.5 where there is no validation positive.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.classification import (
    binary_average_precision,
    multilabel_exact_match,
    multilabel_f1_score,
    multilabel_hamming_distance,
    multilabel_precision,
    multilabel_recall,
)

from geotune.fileio import atomic_write_csv, atomic_write_json
from geotune.metrics.selection import (  # noqa: F401 - also this module's names
    DEFAULT_THRESHOLD,
    f1_thresholds,
    macro_average_precision,
    per_label_ap,
)


def multilabel_metrics(
    y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, labels: list[str]
) -> dict:
    """Every multi-label figure of one evaluation, at the given per-label thresholds."""
    y = torch.as_tensor(np.asarray(y_true), dtype=torch.long)
    p = torch.as_tensor(np.asarray(probs), dtype=torch.float32)
    th = torch.as_tensor(np.asarray(thresholds), dtype=torch.float32)
    k = len(labels)
    hard = (p >= th).float()  # per-label decisions; torchmetrics then thresholds 0/1 at 0.5
    aps = per_label_ap(y_true, probs)
    present = [a for a in aps if a is not None]
    args = {"num_labels": k, "threshold": 0.5}
    precision = multilabel_precision(hard, y, average=None, **args)
    recall = multilabel_recall(hard, y, average=None, **args)
    f1 = multilabel_f1_score(hard, y, average=None, **args)
    micro_ap = binary_average_precision(p.flatten(), y.flatten()) if y.any() else None
    return {
        "n": int(len(y)),
        "multilabel": True,
        "map_macro": float(np.mean(present)) if present else None,
        "map_macro_ci95": map_interval(np.asarray(y_true), np.asarray(probs)),
        "map_micro": None if micro_ap is None else float(micro_ap),
        "f1_micro": float(multilabel_f1_score(hard, y, average="micro", **args)),
        "f1_macro": float(multilabel_f1_score(hard, y, average="macro", **args)),
        "f1_samples": _f1_samples(hard, y),  # torchmetrics has no per-sample average
        "hamming_loss": float(multilabel_hamming_distance(hard, y, **args)),
        "subset_accuracy": float(multilabel_exact_match(hard, y, **args)),
        # The share of positives over chip-label pairs: what a constant score scores as mAP.
        "label_prevalence": float(y.float().mean()) if len(y) else 0.0,
        "per_label": {
            c: {
                "n_positive": int(y[:, j].sum()),
                "ap": aps[j],
                "precision": float(precision[j]),
                "recall": float(recall[j]),
                "f1": float(f1[j]),
                "threshold": float(th[j]),
            }
            for j, c in enumerate(labels)
        },
        "labels": list(labels),
        "thresholds": {c: float(th[j]) for j, c in enumerate(labels)},
    }


BOOTSTRAP_RESAMPLES = 200


def map_interval(
    y_true: np.ndarray, probs: np.ndarray, n_boot: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> list[float] | None:
    """95% percentile bootstrap interval of macro mAP over the chips (resampled with
    replacement; a label without a positive in a resample is left out of that mean, as in
    macro_average_precision). None for fewer than two chips."""
    if len(y_true) < 2:
        return None
    rng = np.random.default_rng(seed)
    draws = [macro_average_precision(y_true[i], probs[i])
             for i in rng.integers(0, len(y_true), (n_boot, len(y_true)))]  # fmt: skip
    return [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]


def _f1_samples(hard: torch.Tensor, y: torch.Tensor) -> float:
    """F1 of each chip's predicted label set against its true one, averaged over chips (a chip
    with neither predicted nor true labels counts 1: nothing to find, nothing wrongly found)."""
    tp = (hard * y).sum(1)
    denom = hard.sum(1) + y.sum(1)
    per = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.ones_like(tp))
    return float(per.mean()) if len(per) else 0.0


def save_multilabel_metrics(metrics: dict, folder: Path, prefix: str = "test") -> list[Path]:
    folder = Path(folder)
    paths = [folder / f"{prefix}_metrics.json", folder / f"{prefix}_per_label.csv"]
    atomic_write_json(paths[0], metrics)
    columns = ["n_positive", "ap", "precision", "recall", "f1", "threshold"]
    atomic_write_csv(
        paths[1],
        ["label", *columns],
        (
            [c, *("" if v[k] is None else (v[k] if k == "n_positive" else f"{v[k]:.6f}")
                  for k in columns)]
            for c, v in metrics["per_label"].items()
        ),
    )  # fmt: skip
    return paths


def multilabel_table(metrics: dict, title: str = "test metrics"):
    """A rich renderable: per-label AP, F1 and threshold, then the summary figures."""
    from rich.table import Table

    table = Table(title=f"{title} (n = {metrics['n']}, multi-label)", show_lines=False)
    for name, justify in (("label", "left"), ("positives", "right"), ("AP %", "right"),
                          ("F1 %", "right"), ("threshold", "right")):  # fmt: skip
        table.add_column(name, justify=justify)
    for c, v in metrics["per_label"].items():
        ap = "-" if v["ap"] is None else f"{100 * v['ap']:.1f}"
        table.add_row(c, str(v["n_positive"]), ap, f"{100 * v['f1']:.1f}", f"{v['threshold']:.3f}")
    table.add_section()
    for key, name in (("map_macro", "mAP (macro)"), ("map_micro", "mAP (micro)"),
                      ("f1_micro", "F1 micro"), ("f1_macro", "F1 macro"),
                      ("f1_samples", "F1 samples"), ("subset_accuracy", "subset accuracy")):  # fmt: skip
        value = metrics[key]
        table.add_row(name, "", "-" if value is None else f"{100 * value:.2f}", "", "")
    table.add_row("Hamming loss", "", f"{metrics['hamming_loss']:.4f}", "", "")
    ci = metrics.get("map_macro_ci95")
    if ci:
        table.add_row("mAP 95% CI", "", f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f}", "", "")
    return table
