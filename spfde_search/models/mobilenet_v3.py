"""torchvision MobileNetV3 (small and large) as units: ``features[0]`` is the stem, each inverted residual (with
its squeeze-excitation) and the last 1x1 conv a unit; avgpool + classifier the head (torchvision/models/
mobilenetv3.py ``_forward_impl``)."""

from __future__ import annotations

import sys

from torch import nn

from .names import ADAPTERS
from .units import UnitModel

__all__ = ["split_mobilenet_v3"]


@ADAPTERS.register("torchvision_mobilenet_v3")
def split_mobilenet_v3(model: nn.Module) -> UnitModel | None:
    tv = sys.modules.get("torchvision.models.mobilenetv3")
    cls = getattr(tv, "MobileNetV3", None)
    if cls is None or not isinstance(model, cls) or type(model)._forward_impl is not cls._forward_impl:
        return None
    feats = list(model.features)
    return UnitModel(feats[0], feats[1:], nn.Sequential(model.avgpool, nn.Flatten(1), model.classifier))
