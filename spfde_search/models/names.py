"""The two registries of the models package: models by name (timm's ``register_model``) and family adapters.

A registered model is a callable taking ``num_classes``, ``in_channels`` and ``width`` where its signature has
them, plus ``model.kwargs``, and returning an ``nn.Module``. An adapter takes an ``nn.Module`` and returns it
split into a :class:`UnitModel`, or None if the module is not of its family; adding a family is one file that
registers one adapter, and one test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..registry import Registry
from .units import UnitModel

__all__ = ["ADAPTERS", "MODELS"]

MODELS: Registry[Callable[..., Any]] = Registry("model")
ADAPTERS: Registry[Callable[[nn.Module], UnitModel | None]] = Registry("model adapter")
