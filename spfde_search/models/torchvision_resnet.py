"""torchvision ResNets (18/34/50, and any ``torchvision.models.ResNet``) as units: conv1 + bn1 + relu + maxpool
is the stem, every residual block a unit, avgpool + fc the head (torchvision/models/resnet.py ``_forward_impl``).

The registered names build torchvision's model with ``num_classes`` from the data; for images that are not RGB
the stem conv is replaced and initialised as torchvision initialises its convs (Kaiming normal, fan_out, relu),
so the new stem is not left at PyTorch's default init while the rest of the model is Kaiming.
"""

from __future__ import annotations

import sys
from typing import Any

from torch import nn

from ..choices import TORCHVISION_MODELS
from .names import ADAPTERS, MODELS
from .units import UnitModel

__all__ = ["init_like_torchvision", "split_resnet", "torchvision_resnet"]


def init_like_torchvision(conv: nn.Conv2d) -> nn.Conv2d:
    """torchvision's ResNet/VGG conv init (resnet.py ``__init__``); left alone on meta tensors (shapes only)."""
    if conv.weight.device.type != "meta":
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
    return conv


def torchvision_resnet(name: str, in_channels: int = 3, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    import torchvision

    tv = getattr(torchvision.models, name)(weights=None, num_classes=num_classes, **kwargs)
    if in_channels != 3:
        tv.conv1 = init_like_torchvision(nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False))
    return tv


def _builder(name: str) -> Any:
    def build(in_channels: int = 3, num_classes: int = 10, width: int = 1, **kwargs: Any) -> nn.Module:
        # width: model.width is for CIFAR ResNets; torchvision's widths are model.kwargs (width_per_group)
        return torchvision_resnet(name, in_channels, num_classes, **kwargs)

    build.__name__ = name
    return build


for _name in TORCHVISION_MODELS:
    MODELS.add(_name, _builder(_name))


@ADAPTERS.register("torchvision_resnet")
def split_resnet(model: nn.Module) -> UnitModel | None:
    tv = sys.modules.get("torchvision.models.resnet")
    if tv is None or not isinstance(model, tv.ResNet) or type(model).forward is not tv.ResNet.forward:
        return None
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    blocks = [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]
    return UnitModel(stem, blocks, nn.Sequential(model.avgpool, nn.Flatten(1), model.fc))
