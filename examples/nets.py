"""Two networks as a user would bring them (docs/own_model.md).

``mobilenet_v2``: torchvision's MobileNetV2 with a new head for the data's classes (as one fine-tunes it); the
MobileNetV2 adapter splits it into stem, 18 units and head, so freezing, sparsity and sieving all apply.
``small_net``: a custom network that names its own units by returning ``UnitModel(stem, blocks, head)``.
Both take ``num_classes`` and ``in_channels`` in their signature, so the data decides them; other keyword
arguments come from ``model.kwargs``.
"""

from __future__ import annotations

import functools

import torch
import torchvision
from torch import nn

from spfde_search.models import UnitModel, init_like_torchvision


def mobilenet_v2(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0,
                 bn_momentum: float = 0.1) -> nn.Module:
    """torchvision's MobileNetV2 (random init; pass ``weights=`` in your copy to fine-tune) with a new head.

    ``bn_momentum``: BatchNorm's running-statistics momentum (torchvision's 0.1 by default). A run of a few dozen
    steps from scratch moves the weights faster than running statistics at 0.1 follow, so the network evaluates
    at chance while it fits its training batches; a larger momentum (0.5) lets them keep up.
    """
    norm = functools.partial(nn.BatchNorm2d, momentum=bn_momentum)
    net = torchvision.models.mobilenet_v2(weights=None, width_mult=width_mult, norm_layer=norm)
    net.classifier[1] = nn.Linear(net.last_channel, num_classes)  # the new head: the data's classes
    if in_channels != 3:  # grey images: a new first conv, initialised as torchvision initialises its convs
        old = net.features[0][0]
        net.features[0][0] = init_like_torchvision(
            nn.Conv2d(in_channels, old.out_channels, 3, old.stride, 1, bias=False))
    return net


class Block(nn.Module):
    """conv-BN-ReLU twice with a residual connection (a shortcut 1x1 conv where the width changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut: nn.Module = nn.Identity()  # named 'shortcut': sparsity.dense_shortcuts applies to it
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def small_net(num_classes: int = 10, in_channels: int = 3, width: int = 16, blocks: int = 3) -> UnitModel:
    """A custom network naming its own freezable units: stem, ``blocks`` residual blocks, head."""
    stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
    units = [Block(width * 2 ** max(i - 1, 0), width * 2**i, 1 if i == 0 else 2) for i in range(blocks)]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(width * 2 ** (blocks - 1), num_classes))
    return UnitModel(stem, units, head)
