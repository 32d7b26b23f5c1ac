"""torchvision MobileNetV3 (small): stem, 11 inverted residuals (squeeze-excitation) and the last conv."""

from __future__ import annotations

import family_nets
import golden

from spfde_search.models import split


def test_split_is_faithful() -> None:
    net = family_nets.tiny_mobilenet_v3()
    u = split(net)
    assert u.splittable and len(u.units) == 13
    golden.same_outputs(net, u, (3, 16, 16))


def test_flops_exact() -> None:
    assert golden.check_flops("family_nets:tiny_mobilenet_v3") == 13
