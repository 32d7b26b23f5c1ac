"""torchvision VGG as units: each conv (with its BN, ReLU and any max-pool after it) is a unit, the first one
the stem; avgpool + classifier is the head (torchvision/models/vgg.py ``forward``)."""

from __future__ import annotations

import sys

from torch import nn

from .names import ADAPTERS
from .sequential import weighted_groups
from .units import UnitModel

__all__ = ["split_vgg"]


@ADAPTERS.register("torchvision_vgg")
def split_vgg(model: nn.Module) -> UnitModel | None:
    tv = sys.modules.get("torchvision.models.vgg")
    if tv is None or not isinstance(model, tv.VGG) or type(model).forward is not tv.VGG.forward:
        return None
    groups = weighted_groups(list(model.features))
    return UnitModel(groups[0], list(groups[1:]), nn.Sequential(model.avgpool, nn.Flatten(1), model.classifier))
