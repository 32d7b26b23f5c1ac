"""The one resolver: ``model.name`` (a registered name, ``resnet{6n+2}``, or an import path ``module:callable``)
plus ``model.kwargs`` -> an ``nn.Module`` split into units by its family's adapter.

The model contract is as small as it can be: any ``nn.Module`` mapping a batch of images to logits. The callable
gets ``num_classes`` and ``in_channels`` from the data where its signature takes them (registered models also
``width``). A ``UnitModel`` is used as returned (the explicit way to name units); otherwise the family adapters
(``ADAPTERS``) split it; a model none of them knows is held whole (trains, sparsity and sieving apply, nothing
to freeze). Every failure is one ConfigError line naming ``model.name``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn
from torch.nn.parameter import is_lazy

from ..choices import cifar_resnet_depth, is_import_path
from ..config import ConfigError
from ..user_code import call_user, load_callable
from . import mobilenet_v2, mobilenet_v3, sequential, torchvision_resnet, vgg  # noqa: F401  (register adapters)
from .cifar import cifar_resnet
from .names import ADAPTERS, MODELS
from .units import UnitModel, whole

__all__ = ["build_model", "create_model", "split", "check_logits", "check_not_lazy"]


def split(model: nn.Module) -> UnitModel:
    """A UnitModel as given; else the first family adapter that knows the model; else the model held whole."""
    if isinstance(model, UnitModel):
        return model
    for name in ADAPTERS:
        units = ADAPTERS.get(name)(model)
        if units is not None:
            return units
    return whole(model)


def build_model(
    name: str, width: int = 1, in_channels: int = 3, num_classes: int = 10, kwargs: Mapping[str, Any] | None = None
) -> UnitModel:
    """Resolve and build ``name`` (see the module docstring); ConfigError naming ``model.name`` on any failure."""
    kwargs = dict(kwargs or {})
    offered: dict[str, Any] = {"num_classes": num_classes, "in_channels": in_channels}
    depth = cifar_resnet_depth(name)
    if depth is not None:
        def resnet(width: int = 1, in_channels: int = 3, num_classes: int = 10) -> UnitModel:
            return cifar_resnet(depth, width, in_channels, num_classes)

        resnet.__name__ = name
        return call_user("model.name", resnet, {**offered, "width": width}, kwargs)
    if name in MODELS:
        fn = MODELS.get(name)
        offered["width"] = width
    elif is_import_path(name):
        fn = load_callable("model.name", name)
    else:
        raise ConfigError(f"model.name: unknown model {name!r}; registered: resnet{{6n+2}}, "
                          f"{', '.join(MODELS.names())}, or an import path 'module:callable'")
    model = call_user("model.name", fn, offered, kwargs)
    label = getattr(fn, "__name__", name)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.name: {label}() returned a {type(model).__name__}, expected an nn.Module that maps "
                          "a batch of images to logits")
    check_not_lazy(label, model)
    return split(model)


def check_not_lazy(label: str, model: nn.Module) -> None:
    """ConfigError if a layer's shapes are still unknown (``nn.LazyLinear``, ``nn.LazyConv2d``, ...): the FLOPs
    profile and the sparsity masks read every weight's shape before the first forward, where PyTorch raises
    "Can't access the shape of an uninitialized parameter"."""
    lazy = [(n or type(model).__name__, type(m).__name__) for n, m in model.named_modules()
            if any(is_lazy(t) for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)))]
    if lazy:
        where = ", ".join(f"{k} {n!r}" for n, k in lazy[:3]) + (f" and {len(lazy) - 3} more" if len(lazy) > 3 else "")
        raise ConfigError(f"model.name: {label}() uses lazy layers ({where}) whose weight shapes are unknown "
                          "until a first forward; give their input sizes (in_features, in_channels), or build the "
                          "model on one input before returning it")


def create_model(name: str, width: int = 1, in_channels: int = 3, num_classes: int = 10) -> UnitModel:
    """:func:`build_model` without kwargs (the built-in models' old signature)."""
    return build_model(name, width, in_channels, num_classes)


def check_logits(name: str, out_shape: tuple[int, ...], num_classes: int) -> None:
    """ConfigError unless a batch of one image gave ``(1, num_classes)`` logits."""
    if tuple(out_shape) != (1, num_classes):
        raise ConfigError(
            f"model.name: {name} maps one image to an output of shape {tuple(out_shape)}, expected logits of shape "
            f"(1, {num_classes}) for the data's {num_classes} classes; give its classifier num_classes outputs "
            "(take `num_classes` in the callable's signature)"
        )
