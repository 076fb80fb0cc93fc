"""Reports (HTML and Markdown) for runs and sweeps."""

from geotune.report.reports import run_report, sweep_report, write_report

__all__ = ["run_report", "sweep_report", "write_report"]
