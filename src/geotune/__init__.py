"""geotune: transfer learning and fine-tuning for remote-sensing scene classification."""

from geotune.errors import ConfigError, DataError, GeotuneError, WeightsError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "GeotuneError", "WeightsError", "__version__"]
