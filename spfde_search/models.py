"""Models as a sequence of freezable *units*: the stem, then each residual block, then a head.

docs/method.md §3: units are the stem conv and each residual block in order. Keeping that structure explicit lets
the trainer run the frozen prefix under ``torch.no_grad()`` and the rest with autograd, without hooks.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .registry import Registry

__all__ = ["UnitModel", "create_model", "MODELS", "depth_layers"]

MODELS: Registry[Callable[..., UnitModel]] = Registry("model")


class UnitModel(nn.Module):
    """stem -> blocks -> head; ``forward(x, frozen_units=k)`` runs the first k units without autograd."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    @property
    def units(self) -> list[nn.Module]:
        return [self.stem, *self.blocks]

    def forward(self, x: torch.Tensor, frozen_units: int = 0) -> torch.Tensor:
        units = self.units
        if frozen_units > 0:
            with torch.no_grad():
                for u in units[:frozen_units]:
                    x = u(x)
        for u in units[frozen_units:]:
            x = u(x)
        return self.head(x)


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


def _torchvision_resnet(name: str, in_channels: int, num_classes: int) -> UnitModel:
    import torchvision

    tv = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    if in_channels != 3:
        tv.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    stem = nn.Sequential(tv.conv1, tv.bn1, tv.relu, tv.maxpool)
    blocks = [b for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4) for b in layer]
    head = nn.Sequential(tv.avgpool, nn.Flatten(1), tv.fc)
    return UnitModel(stem, blocks, head)


MODELS.add("resnet18", lambda width=1, **kw: _torchvision_resnet("resnet18", **kw))
MODELS.add("resnet50", lambda width=1, **kw: _torchvision_resnet("resnet50", **kw))
_CIFAR = re.compile(r"^resnet(\d+)$")


def create_model(name: str, width: int = 1, in_channels: int = 3, num_classes: int = 10) -> UnitModel:
    if name in MODELS:
        return MODELS.get(name)(width=width, in_channels=in_channels, num_classes=num_classes)
    m = _CIFAR.match(name)
    if m:
        return cifar_resnet(int(m.group(1)), width, in_channels, num_classes)
    raise ValueError(f"unknown model {name!r}; valid: resnet{{6n+2}}, {', '.join(MODELS.names())}")


def is_shortcut(name: str) -> bool:
    """1x1 projection convs of residual blocks (CIFAR 'shortcut', torchvision 'downsample').

    Matched by path segment, so a name relative to the block (``shortcut.0``, as ``depth_layers(unit)`` sees it)
    counts as well as a full one (``blocks.5.shortcut.0``)."""
    parts = name.split(".")
    return "shortcut" in parts or "downsample" in parts


def depth_layers(unit: nn.Module, prefix: str = "") -> int:
    """Weighted layers that count towards a ResNet's depth: convs and linears, not the 1x1 shortcuts."""
    return sum(
        1
        for n, m in unit.named_modules(prefix=prefix)
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not is_shortcut(n)
    )
