"""The `geotune` command line: a thin layer over the Python API."""

from geotune.cli.main import app, main

__all__ = ["app", "main"]
