"""geotune: transfer learning and fine-tuning for remote-sensing scene classification.

The public API (each name is documented where it lives)::

    from geotune import make_config, train, evaluate, compare, adapt_run

- ``make_config(**options)`` / ``TrainConfig``: a validated `geotune train` configuration;
- ``train(config)``, ``resume(run_dir)``: fine-tune and evaluate, write a run folder;
- ``evaluate(run_dir, data=None, ...)``: re-evaluate a run, on its test split or other data;
- ``compare(make_compare_config(...))``: strategies x label budgets x seeds, with a report;
- ``adapt_run(run_dir, make_adapt_config(...))``: unsupervised domain adaptation of a run;
- ``measure_shift(a, b, ...)``: the domain shift between two datasets;
- ``load_predictor(run_or_model)`` with ``predict_chips`` / ``predict_scene``: use a trained
  model on chips or a GeoTIFF scene; ``export_model(run, "onnx")``: ONNX / TorchScript export;
- errors: ``GeotuneError`` and its ``ConfigError``, ``DataError``, ``WeightsError``.

Heavy modules (torch, timm) load on first use of a name, so ``import geotune`` stays fast.
"""

from geotune.errors import ConfigError, DataError, GeotuneError, WeightsError
from geotune.lazy import lazy_exports

__version__ = "0.1.0"

_LAZY = {
    "TrainConfig": ("geotune.config", "TrainConfig"),
    "make_config": ("geotune.config", "make_config"),
    "load_config": ("geotune.config", "load_config"),
    "train": ("geotune.engine.trainer", "train"),
    "resume": ("geotune.engine.trainer", "resume"),
    "RunResult": ("geotune.engine.prepare", "RunResult"),
    "evaluate": ("geotune.evaluation.evaluate", "evaluate_run"),
    "EvaluateConfig": ("geotune.evaluation.evaluate", "EvaluateConfig"),
    "compare": ("geotune.sweep.compare", "run_compare"),
    "CompareConfig": ("geotune.sweep.config", "CompareConfig"),
    "make_compare_config": ("geotune.sweep.config", "make_compare_config"),
    "adapt_run": ("geotune.adapt.run", "adapt_run"),
    "AdaptConfig": ("geotune.adapt.config", "AdaptConfig"),
    "make_adapt_config": ("geotune.adapt.config", "make_adapt_config"),
    "measure_shift": ("geotune.shift.measure", "measure_shift"),
    "write_report": ("geotune.report.reports", "write_report"),
    "load_predictor": ("geotune.inference.model", "load_predictor"),
    "predict_chips": ("geotune.inference.chips", "predict_chips"),
    "predict_scene": ("geotune.inference.scene", "predict_scene"),
    "export_model": ("geotune.inference.export", "export_model"),
}

__getattr__, _, _exported = lazy_exports(__name__, _LAZY)
__all__ = ["ConfigError", "DataError", "GeotuneError", "WeightsError", "__version__", *_exported]


def __dir__() -> list[str]:
    return sorted(__all__)
