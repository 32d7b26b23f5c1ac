"""torchvision MobileNetV2: stem, 17 inverted residuals and the last 1x1 conv as units (depthwise convs)."""

from __future__ import annotations

import family_nets
import golden

from spfde_search.models import split


def test_split_is_faithful() -> None:
    net = family_nets.tiny_mobilenet_v2()
    u = split(net)
    assert u.splittable and len(u.units) == 19
    golden.same_outputs(net, u, (3, 16, 16))


def test_flops_exact() -> None:
    assert golden.check_flops("family_nets:tiny_mobilenet_v2") == 19
