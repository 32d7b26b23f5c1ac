"""torchvision ResNet 18/34/50: conv1-bn-relu-maxpool stem, each residual block a unit; a replaced stem is
initialised as torchvision initialises its convs."""

from __future__ import annotations

import golden
import pytest
import torch
import torchvision
from torch import nn

from spfde_search.models import build_model, depth_layers, split


@pytest.mark.parametrize(("name", "blocks", "per_block"), [("resnet18", 8, 2), ("resnet34", 16, 2), ("resnet50", 16, 3)])
def test_units_and_depths(name: str, blocks: int, per_block: int) -> None:
    with torch.device("meta"):
        m = build_model(name)
    assert [depth_layers(u) for u in m.units] == [1] + [per_block] * blocks
    assert sum(depth_layers(u) for u in m.units) + depth_layers(m.head) == int(name[6:])


def test_split_is_faithful() -> None:
    net = torchvision.models.resnet18(num_classes=10)
    golden.same_outputs(net, split(net), (3, 32, 32))


def test_replaced_stem_is_initialised_like_torchvision() -> None:
    """Kaiming normal, fan_out, relu: std = sqrt(2 / (64 * 7 * 7)) (PyTorch's default would be ~3x smaller)."""
    torch.manual_seed(0)
    conv = build_model("resnet18", in_channels=1).stem[0]
    assert isinstance(conv, nn.Conv2d) and conv.weight.shape[1] == 1
    w = conv.weight.detach()
    assert abs(float(w.std()) / (2 / (64 * 49)) ** 0.5 - 1) < 0.05


def test_flops_exact() -> None:
    assert golden.check_flops("resnet18") == 9
