"""nn.Sequential: each weighted child starts a unit; split faithfully; FLOPs exact (golden.py)."""

from __future__ import annotations

import family_nets
import golden

from spfde_search.models import split


def test_units_are_the_weighted_children_with_what_follows() -> None:
    net = family_nets.tiny_sequential()
    u = split(net)
    assert u.splittable and len(u.blocks) == 2  # conv 2 and conv 3 (with pool and flatten)
    assert [type(m).__name__ for m in u.stem] == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert [type(m).__name__ for m in u.head] == ["Linear"]
    golden.same_outputs(net, u, (3, 16, 16))


def test_flops_exact() -> None:
    assert golden.check_flops("family_nets:tiny_sequential") == 3
