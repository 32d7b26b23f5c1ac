"""Unit models: stem / blocks / head structure, depths, parameter counts, frozen-prefix forward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spfde_search.models import UnitModel, create_model, depth_layers, is_shortcut


@pytest.mark.parametrize(("depth", "blocks"), [(8, 3), (20, 9), (32, 15), (56, 27)])
def test_cifar_resnet_units(depth: int, blocks: int) -> None:
    with torch.device("meta"):
        m = create_model(f"resnet{depth}")
    assert len(m.blocks) == blocks and len(m.units) == blocks + 1  # 3 stages of n = (depth - 2) / 6 blocks
    # depth = stem conv + 2 convs per block + fc (1x1 shortcuts do not count)
    assert [depth_layers(u) for u in m.units] == [1] + [2] * blocks
    assert sum(depth_layers(u) for u in m.units) + depth_layers(m.head) == depth


def test_torchvision_depths() -> None:
    with torch.device("meta"):
        r18 = create_model("resnet18")
        r50 = create_model("resnet50")
    assert [depth_layers(u) for u in r18.units] == [1] + [2] * 8
    assert [depth_layers(u) for u in r50.units] == [1] + [3] * 16  # 16 bottleneck blocks
    assert sum(depth_layers(u) for u in r50.units) + depth_layers(r50.head) == 50


def test_resnet32_width2_parameter_count() -> None:
    """The paper's model: about 1.87 M weights. Derivation (CIFAR-100, channels 32/64/128):
    convs: stem 3*32*9 = 864; stage 1: 10 x 32*32*9 = 92,160; stage 2: 32*64*9 + 9 x 64*64*9 = 350,208
    + shortcut 32*64 = 2,048; stage 3: 64*128*9 + 9 x 128*128*9 = 1,400,832 + shortcut 64*128 = 8,192
    -> 1,854,304. fc 128*100 + 100 = 12,900. BN (2 per channel): 32*2 + 10*64 + 11*128 + 11*256 = 4,928.
    Total 1,872,132."""
    m = create_model("resnet32", width=2, num_classes=100)
    conv = sum(mod.weight.numel() for mod in m.modules() if isinstance(mod, nn.Conv2d))
    assert conv == 1_854_304
    assert sum(p.numel() for p in m.parameters()) == 1_872_132


def test_shapes_and_channels() -> None:
    m = create_model("resnet8", in_channels=1, num_classes=7)
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    t = create_model("resnet18", in_channels=1, num_classes=5)
    assert t.stem[0].in_channels == 1
    assert t(torch.randn(2, 1, 32, 32)).shape == (2, 5)


def test_shortcut_names() -> None:
    m = create_model("resnet8")
    names = [n for n, mod in m.named_modules() if isinstance(mod, nn.Conv2d) and is_shortcut(n)]
    assert names == ["blocks.1.shortcut.0", "blocks.2.shortcut.0"]  # the two stage transitions
    with torch.device("meta"):
        r50 = create_model("resnet50")
    assert sum(isinstance(mod, nn.Conv2d) and is_shortcut(n) for n, mod in r50.named_modules()) == 4


def test_frozen_prefix_forward_same_output_no_grad() -> None:
    torch.manual_seed(0)
    m = create_model("resnet8").eval()
    x = torch.randn(3, 3, 16, 16)
    ref = m(x)
    for k in range(len(m.units) + 1):
        out = m(x, frozen_units=k)
        assert torch.equal(out, ref)
        m.zero_grad(set_to_none=True)
        out.sum().backward()
        for i, u in enumerate(m.units):
            got = [p.grad is not None for p in u.parameters()]
            assert all(not g for g in got) if i < k else all(got), (k, i)
        assert all(p.grad is not None for p in m.head.parameters())


def test_unit_model_composition() -> None:
    m = UnitModel(nn.Linear(4, 4), [nn.ReLU(), nn.Linear(4, 4)], nn.Identity())
    assert len(m.units) == 3 and m.units[0] is m.stem


@pytest.mark.parametrize("name", ["resnet7", "vgg11"])
def test_unknown_model(name: str) -> None:
    with pytest.raises(ValueError, match="(?i)resnet"):
        create_model(name)
