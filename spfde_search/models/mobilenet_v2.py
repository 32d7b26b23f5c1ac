"""torchvision MobileNetV2 as units: ``features[0]`` (conv-BN-ReLU6) is the stem, each inverted residual and the
last 1x1 conv a unit; global average pooling + classifier the head (torchvision/models/mobilenetv2.py
``_forward_impl``)."""

from __future__ import annotations

import sys

from torch import nn

from .names import ADAPTERS
from .units import UnitModel

__all__ = ["split_mobilenet_v2"]


@ADAPTERS.register("torchvision_mobilenet_v2")
def split_mobilenet_v2(model: nn.Module) -> UnitModel | None:
    tv = sys.modules.get("torchvision.models.mobilenetv2")
    cls = getattr(tv, "MobileNetV2", None)
    if cls is None or not isinstance(model, cls) or type(model)._forward_impl is not cls._forward_impl:
        return None
    feats = list(model.features)
    head = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(1), model.classifier)
    return UnitModel(feats[0], feats[1:], head)
