"""Run folders: atomic writes, staging, locks and commit, typed artifacts, resource metering.

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "RunDir": "geotune.runs.rundir",
    "RunSummary": "geotune.runs.artifacts",
    "STATUS_FILE": "geotune.runs.rundir",
    "TestMetrics": "geotune.runs.artifacts",
    "atomic_torch_save": "geotune.runs.io",
    "atomic_write_bytes": "geotune.runs.io",
    "atomic_write_csv": "geotune.runs.io",
    "atomic_write_json": "geotune.runs.io",
    "atomic_write_text": "geotune.runs.io",
    "count_params": "geotune.runs.metering",
    "new_run": "geotune.runs.rundir",
    "peak_memory_mb": "geotune.runs.metering",
    "read_run_config": "geotune.runs.artifacts",
    "require_complete_run": "geotune.runs.rundir",
    "reset_peak_memory": "geotune.runs.metering",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
