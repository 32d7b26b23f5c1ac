"""The two registries of the models package: models by name (timm's ``register_model``) and family adapters.

A registered model is a callable taking ``num_classes``, ``in_channels`` and ``width`` where its signature has
them, plus ``model.kwargs``, and returning an ``nn.Module``. An adapter takes an ``nn.Module`` and returns it
split into a :class:`UnitModel`, or None if the module is not of its family; adding a family is one file that
registers one adapter, and one test.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from torch import nn

from ..registry import Registry
from .units import UnitModel

__all__ = ["ADAPTERS", "MODELS", "torchvision_family"]

MODELS: Registry[Callable[..., Any]] = Registry("model")
ADAPTERS: Registry[Callable[[nn.Module], UnitModel | None]] = Registry("model adapter")


def torchvision_family(model: nn.Module, module: str, name: str) -> bool:
    """Is ``model`` torchvision's ``module.name`` with its own forward (a subclass that overrides the forward is
    not split: its units may not run in that order)? torchvision is looked up only if already imported."""
    cls = getattr(sys.modules.get(module), name, None)
    return cls is not None and isinstance(model, cls) and type(model)._forward_impl is cls._forward_impl
