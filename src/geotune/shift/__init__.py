"""Domain shift: simulated shifts, feature-space distances and `geotune shift`.

Names load on first use (PEP 562), so importing one submodule does not import them all.
"""

from geotune.lazy import lazy_exports

_LAZY = {
    "SHIFT_KINDS": "geotune.shift.simulate",
    "describe": "geotune.shift.measure",
    "feature_distances": "geotune.shift.distances",
    "measure_shift": "geotune.shift.measure",
    "shift_markdown": "geotune.shift.measure",
    "simulate_folder": "geotune.shift.simulate",
    "simulate_shift": "geotune.shift.simulate",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY)
