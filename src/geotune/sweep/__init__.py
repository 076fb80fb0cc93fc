"""`geotune compare`: strategy x label budget x seed sweeps on shared test sets.

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from geotune.lazy import lazy_exports

_LAZY = {
    "ALL": "geotune.sweep.statistics",
    "CompareConfig": "geotune.sweep.config",
    "atomic_write_text_yaml": "geotune.sweep.compare",
    "cell_epochs": "geotune.sweep.compare",
    "cell_name": "geotune.sweep.compare",
    "cell_row": "geotune.sweep.compare",
    "make_compare_config": "geotune.sweep.config",
    "recommend": "geotune.sweep.recommendation",
    "run_compare": "geotune.sweep.compare",
    "summarize": "geotune.sweep.statistics",
    "write_results": "geotune.sweep.compare",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
