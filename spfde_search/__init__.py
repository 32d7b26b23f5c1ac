"""SpFDE Search: sparse training with layer freezing and data sieving, and a search over their schedules.

``spfde_search.run_search(config, space=..., num_samples=..., tracking_uri=...)`` is the notebook API
(``api.py``); it is loaded on first use, so ``import spfde_search`` stays free of Ray, Optuna and MLflow.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "SearchResult", "extend_search", "load_config", "run_search", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """PEP 562: ``run_search`` / ``SearchResult`` import the search driver and the MLflow adapter on first use
    (by name, through importlib: the package's own ``__init__`` must not import the layers above it)."""
    if name in ("run_search", "extend_search", "SearchResult"):
        return getattr(importlib.import_module("spfde_search.api"), name)
    raise AttributeError(f"module 'spfde_search' has no attribute {name!r}")
