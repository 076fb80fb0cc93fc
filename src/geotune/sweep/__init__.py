"""`geotune compare`: strategy x label budget x seed sweeps on shared test sets."""

from geotune.sweep.compare import (
    ALL,
    CompareConfig,
    atomic_write_text_yaml,
    cell_epochs,
    cell_name,
    cell_row,
    make_compare_config,
    recommend,
    run_compare,
    summarize,
    write_results,
)

__all__ = [
    "ALL",
    "CompareConfig",
    "atomic_write_text_yaml",
    "cell_epochs",
    "cell_name",
    "cell_row",
    "make_compare_config",
    "recommend",
    "run_compare",
    "summarize",
    "write_results",
]
