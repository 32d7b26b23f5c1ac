"""Models as a sequence of freezable *units* (stem -> units -> head), from any ``nn.Module``.

Modules: ``units`` (:class:`UnitModel`, depths, shortcuts), ``names`` (the ``MODELS`` and ``ADAPTERS``
registries), one file per family adapter (``cifar``, ``torchvision_resnet``, ``vgg``, ``mobilenet_v2``,
``mobilenet_v3``, ``sequential``) and ``resolve`` (``model.name`` -> a split model, the one resolver).
"""

from __future__ import annotations

from .cifar import cifar_resnet
from .names import ADAPTERS, MODELS
from .resolve import build_model, check_logits, create_model, split
from .torchvision_resnet import init_like_torchvision
from .units import UnitModel, depth_layers, is_shortcut, whole

__all__ = [
    "ADAPTERS",
    "MODELS",
    "UnitModel",
    "build_model",
    "check_logits",
    "cifar_resnet",
    "create_model",
    "depth_layers",
    "init_like_torchvision",
    "is_shortcut",
    "split",
    "whole",
]
