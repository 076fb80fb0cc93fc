"""User-facing errors.

Every problem a user can fix (bad data, bad config, missing weights) is raised as a
``GeotuneError`` whose message is one line naming the problem and the fix. The CLI prints it
without a traceback; the Python API lets it propagate like any exception. Each error also
subclasses the builtin a library user would catch (``ValueError`` for bad values and data,
``RuntimeError`` for weights that cannot be had).
"""


class GeotuneError(Exception):
    """A problem with the user's input, data, weights or environment, with a one-line fix."""

    def __init__(self, message: str):
        # One line, always: multi-line messages get lost in logs and CI output.
        super().__init__(" ".join(str(message).split()))


class DataError(GeotuneError, ValueError):
    """The dataset on disk cannot be used as given."""


class WeightsError(GeotuneError, RuntimeError):
    """Pretrained weights cannot be found, downloaded or loaded."""


class ConfigError(GeotuneError, ValueError):
    """A configuration value is invalid."""


class ExportError(GeotuneError, RuntimeError):
    """An exported model does not reproduce the PyTorch model (or cannot be written)."""
