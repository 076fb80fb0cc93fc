"""Reports (HTML and Markdown) for runs and sweeps.

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "run_report": "geotune.report.reports",
    "sweep_report": "geotune.report.reports",
    "write_report": "geotune.report.reports",
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
