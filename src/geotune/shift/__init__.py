"""Domain shift: simulated shifts, feature-space distances and `geotune shift`.

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "SHIFT_KINDS": "geotune.shift.simulate",
    "describe": "geotune.shift.measure",
    "feature_distances": "geotune.shift.distances",
    "measure_shift": "geotune.shift.measure",
    "shift_markdown": "geotune.shift.measure",
    "simulate_folder": "geotune.shift.simulate",
    "simulate_shift": "geotune.shift.simulate",
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
