"""torchvision VGG: one unit per conv (BN, ReLU, pool after it), avgpool + classifier the head."""

from __future__ import annotations

import family_nets
import golden

from spfde_search.config import Config
from spfde_search.method.flops import build_profile
from spfde_search.models import split


def test_split_is_faithful() -> None:
    net = family_nets.tiny_vgg()
    u = split(net)
    assert u.splittable and len(u.units) == 4  # four convs
    golden.same_outputs(net, u, (3, 16, 16))


def test_only_the_last_linear_is_the_dense_classifier() -> None:
    profile, _ = build_profile(Config.parse({"model": {"name": "family_nets:tiny_vgg"},
                                             "data": {"name": "synthetic", "synthetic_size": 16}}))
    dense = [r.name for r in profile.layers if not r.sparse]
    assert dense == ["stem.0", "head.2.6"]  # first conv, last linear; the hidden classifier layers are sparse


def test_flops_exact() -> None:
    assert golden.check_flops("family_nets:tiny_vgg") == 4
