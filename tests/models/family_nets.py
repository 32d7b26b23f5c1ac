"""Tiny members of each adapted family, named by import path (``family_nets:tiny_vgg``) in the golden tests.

Small widths and 16-pixel images keep each FlopCounterMode step to milliseconds; the structure (units, shortcuts,
depthwise convs, squeeze-excitation, hidden classifier layers) is the family's own."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from spfde_search.models import UnitModel


def tiny_vgg(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """torchvision's VGG class with a small feature stack and classifier (VGG-11's 4096-wide layers would hold
    100 M weights); built on the meta device first so its 25088x4096 default layer is never allocated."""
    from torchvision.models.vgg import VGG, make_layers

    features = make_layers([8, "M", 16, "M", 16, 16, "M"], batch_norm=True)
    if in_channels != 3:
        features[0] = nn.Conv2d(in_channels, 8, 3, padding=1)
    with torch.device("meta"):
        model = VGG(features, num_classes=num_classes, init_weights=False)
    model.avgpool = nn.AdaptiveAvgPool2d((2, 2))
    model.classifier = nn.Sequential(
        nn.Linear(16 * 4, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, 24), nn.ReLU(True), nn.Dropout(),
        nn.Linear(24, num_classes),
    )
    return model


def tiny_mobilenet_v2(num_classes: int = 10) -> nn.Module:
    return torchvision.models.mobilenet_v2(num_classes=num_classes, width_mult=0.25)


def tiny_mobilenet_v3(num_classes: int = 10) -> nn.Module:
    return torchvision.models.mobilenet_v3_small(num_classes=num_classes, width_mult=0.5)


def tiny_sequential(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
        nn.Linear(16, num_classes),
    )


class Opaque(nn.Module):
    """A forward no adapter can read (two branches joined): held whole, nothing to freeze."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.a = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.b = nn.Conv2d(in_channels, 8, 1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.a(x) + self.b(x)).mean((2, 3)))


def opaque_as_units(num_classes: int = 10, in_channels: int = 3) -> UnitModel:
    """The explicit way: name the units yourself."""
    stem = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU())
    blocks = [nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()) for _ in range(2)]
    return UnitModel(stem, blocks, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(8, num_classes)))
