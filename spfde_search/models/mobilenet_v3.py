"""torchvision MobileNetV3 (small and large) as units: ``features[0]`` is the stem, each inverted residual (with
its squeeze-excitation) and the last 1x1 conv a unit; avgpool + classifier the head (torchvision/models/
mobilenetv3.py ``_forward_impl``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from .names import ADAPTERS, torchvision_family
from .units import UnitModel

__all__ = ["split_mobilenet_v3"]


@ADAPTERS.register("torchvision_mobilenet_v3")
def split_mobilenet_v3(model: nn.Module) -> UnitModel | None:
    if not torchvision_family(model, "torchvision.models.mobilenetv3", "MobileNetV3"):
        return None
    tv: Any = model  # torchvision's own class (checked above): features / avgpool / classifier are modules
    feats = list(tv.features)
    return UnitModel(feats[0], feats[1:], nn.Sequential(tv.avgpool, nn.Flatten(1), tv.classifier))
