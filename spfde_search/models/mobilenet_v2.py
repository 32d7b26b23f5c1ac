"""torchvision MobileNetV2 as units: ``features[0]`` (conv-BN-ReLU6) is the stem, each inverted residual and the
last 1x1 conv a unit; global average pooling + classifier the head (torchvision/models/mobilenetv2.py
``_forward_impl``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from .names import ADAPTERS, torchvision_family
from .units import UnitModel

__all__ = ["split_mobilenet_v2"]


@ADAPTERS.register("torchvision_mobilenet_v2")
def split_mobilenet_v2(model: nn.Module) -> UnitModel | None:
    if not torchvision_family(model, "torchvision.models.mobilenetv2", "MobileNetV2"):
        return None
    tv: Any = model  # torchvision's own class (checked above): features / avgpool / classifier are modules
    feats = list(tv.features)
    head = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(1), tv.classifier)
    return UnitModel(feats[0], feats[1:], head)
