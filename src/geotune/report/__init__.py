"""Reports (HTML and Markdown) for runs and sweeps.

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from geotune.lazy import lazy_exports

_LAZY = dict.fromkeys(("run_report", "sweep_report", "write_report"), "geotune.report.reports")

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
