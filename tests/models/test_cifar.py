"""Our CIFAR ResNets through the same golden check as every other family."""

from __future__ import annotations

import golden


def test_flops_exact() -> None:
    assert golden.check_flops("resnet8") == 4
