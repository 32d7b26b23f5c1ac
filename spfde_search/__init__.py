"""SpFDE Search: sparse training with layer freezing and data sieving, and a search over their schedules."""

from __future__ import annotations

from .config import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "load_config", "__version__"]
__version__ = "0.1.0"
