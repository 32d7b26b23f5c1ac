"""CIFAR-style ResNet-(6n+2) (He et al. 2016, §4.2), built as units: the 3x3 stem, then each basic block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .units import UnitModel

__all__ = ["BasicBlock", "cifar_resnet"]


class BasicBlock(nn.Module):
    """CIFAR ResNet block (He et al. 2016); a 1x1 conv + BN shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _Head(nn.Module):
    def __init__(self, features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def cifar_resnet(depth: int, width: int = 1, in_channels: int = 3, num_classes: int = 10) -> UnitModel:
    """ResNet-(6n+2) for small images: 3 stages of n blocks at 16w/32w/64w channels."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (8, 14, 20, 32, 56, ...), got {depth}")
    n = (depth - 2) // 6
    c = [16 * width, 32 * width, 64 * width]
    stem = nn.Sequential(nn.Conv2d(in_channels, c[0], 3, 1, 1, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU())
    blocks: list[nn.Module] = []
    cin = c[0]
    for stage, cout in enumerate(c):
        for i in range(n):
            blocks.append(BasicBlock(cin, cout, 2 if (stage > 0 and i == 0) else 1))
            cin = cout
    model = UnitModel(stem, blocks, _Head(cin, num_classes))
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.device.type != "meta":  # meta: shapes only (FLOPs), no init
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model
