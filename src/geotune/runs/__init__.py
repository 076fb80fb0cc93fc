"""Run folders: atomic writes, staging, locks and commit, typed artifacts, resource metering.

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from geotune.lazy import lazy_exports

_LAZY = {
    "RunDir": "geotune.runs.rundir",
    "RunSummary": "geotune.runs.artifacts",
    "STATUS_FILE": "geotune.runs.rundir",
    "TestMetrics": "geotune.runs.artifacts",
    "atomic_torch_save": "geotune.fileio",
    "atomic_write_bytes": "geotune.fileio",
    "atomic_write_csv": "geotune.fileio",
    "atomic_write_json": "geotune.fileio",
    "atomic_write_text": "geotune.fileio",
    "count_params": "geotune.runs.metering",
    "new_run": "geotune.runs.rundir",
    "peak_memory_mb": "geotune.runs.metering",
    "read_run_config": "geotune.runs.artifacts",
    "require_complete_run": "geotune.runs.rundir",
    "reset_peak_memory": "geotune.runs.metering",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
