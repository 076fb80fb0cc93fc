"""The reliability diagram of a run: accuracy against confidence per bin, before and after the
validation-fitted temperature (geotune.metrics.calibration)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

from geotune.metrics.calibration import reliability_arrays  # noqa: E402


def reliability_figure(calibration: dict, ece: float | None = None):
    """Test-set reliability: a perfectly calibrated model lies on the diagonal.

    Args:
        calibration: the ``calibration`` record of ``test_metrics.json``.
        ece: the ECE of the reported probabilities (title).

    Returns:
        A matplotlib figure.
    """
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1, label="perfect")
    t = calibration.get("temperature", 1.0)
    for key, label, marker in (
        ("before", "raw softmax", "o"),
        ("after", f"temperature {t:.2f}", "s"),
    ):
        conf, acc, n = reliability_arrays(calibration.get(f"reliability_{key}") or [])
        if len(conf):
            ece_k = calibration.get(f"test_ece_{key}")
            text = f"{label} (ECE {100 * ece_k:.1f}%)" if ece_k is not None else label
            ax.plot(conf, acc, marker=marker, label=text)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    title = "reliability on the test split"
    if ece is not None:
        title += f" (reported ECE {100 * ece:.1f}%)"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    return fig
