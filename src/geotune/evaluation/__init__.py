"""Evaluation: scene-classification metrics and `geotune evaluate`."""

from geotune.evaluation.evaluate import evaluate_run, run_images
from geotune.evaluation.metrics import classification_metrics, metrics_table, save_metrics

__all__ = ["classification_metrics", "evaluate_run", "metrics_table", "run_images", "save_metrics"]
