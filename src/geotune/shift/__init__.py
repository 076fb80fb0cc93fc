"""Domain shift: simulated shifts, feature-space distances and `geotune shift`."""

from geotune.shift.distances import feature_distances
from geotune.shift.measure import describe, measure_shift, shift_markdown
from geotune.shift.simulate import SHIFT_KINDS, simulate_folder, simulate_shift

__all__ = [
    "SHIFT_KINDS",
    "describe",
    "feature_distances",
    "measure_shift",
    "shift_markdown",
    "simulate_folder",
    "simulate_shift",
]
