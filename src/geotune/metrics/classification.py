"""Scene-classification metrics (torchmetrics), and their table, JSON and CSV forms.

Overall accuracy (OA), average accuracy (AA, the mean of per-class accuracies), macro F1 and
Cohen's kappa are the figures remote-sensing papers report; per-class accuracy and the
confusion matrix show where a model fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_cohen_kappa,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)

from geotune.fileio import atomic_write_csv, atomic_write_json


def classification_metrics(y_true, y_pred, classes: list[str]) -> dict:
    t = torch.as_tensor(np.asarray(y_true), dtype=torch.long)
    p = torch.as_tensor(np.asarray(y_pred), dtype=torch.long)
    k = len(classes)
    cm = multiclass_confusion_matrix(p, t, num_classes=k)
    support = cm.sum(1)
    per_class = torch.where(support > 0, cm.diag() / support.clamp(min=1), torch.nan)
    return {
        "n": int(len(t)),
        "overall_accuracy": float(multiclass_accuracy(p, t, num_classes=k, average="micro")),
        # AA over classes present in the evaluated data (a class with no samples has no accuracy).
        "average_accuracy": float(per_class[support > 0].mean()),
        "macro_f1": float(multiclass_f1_score(p, t, num_classes=k, average="macro")),
        "kappa": float(multiclass_cohen_kappa(p, t, num_classes=k)),
        "per_class": {
            c: {"n": int(support[i]), "accuracy": None if support[i] == 0 else float(per_class[i])}
            for i, c in enumerate(classes)
        },
        "classes": list(classes),
        "confusion_matrix": cm.tolist(),
    }


def save_metrics(metrics: dict, folder: Path, prefix: str = "test") -> list[Path]:
    folder = Path(folder)
    paths = [
        folder / f"{prefix}_metrics.json",
        folder / f"{prefix}_per_class.csv",
        folder / f"{prefix}_confusion.csv",
    ]
    atomic_write_json(paths[0], metrics)
    atomic_write_csv(
        paths[1],
        ["class", "n", "accuracy"],
        (
            (c, v["n"], "" if v["accuracy"] is None else f"{v['accuracy']:.6f}")
            for c, v in metrics["per_class"].items()
        ),
    )
    classes = metrics["classes"]
    atomic_write_csv(
        paths[2],
        ["true \\ predicted", *classes],
        ([c, *row] for c, row in zip(classes, metrics["confusion_matrix"], strict=True)),
    )
    return paths


def metrics_table(metrics: dict, title: str = "test metrics"):
    """A rich renderable: the summary figures and the per-class accuracies."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{title} (n = {metrics['n']})", show_lines=False)
    table.add_column("class")
    table.add_column("n", justify="right")
    table.add_column("accuracy %", justify="right")
    for c, v in metrics["per_class"].items():
        acc = "-" if v["accuracy"] is None else f"{100 * v['accuracy']:.1f}"
        table.add_row(Text(c), str(v["n"]), acc)  # a class name is text, not rich markup
    table.add_section()
    table.add_row("overall accuracy (OA)", "", f"{100 * metrics['overall_accuracy']:.2f}")
    table.add_row("average accuracy (AA)", "", f"{100 * metrics['average_accuracy']:.2f}")
    table.add_row("macro F1", "", f"{100 * metrics['macro_f1']:.2f}")
    table.add_row("Cohen's kappa", "", f"{metrics['kappa']:.4f}")
    return table
