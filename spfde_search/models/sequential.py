"""``nn.Sequential`` as units: each weighted child (one holding a conv or linear) starts a unit and the
parameter-free children after it (activations, pooling, flatten) join it; the first is the stem, the last
the head. One weighted child gives nothing to split."""

from __future__ import annotations

from torch import nn

from .names import ADAPTERS
from .units import UnitModel

__all__ = ["weighted_groups", "split_sequential"]


def _weighted(m: nn.Module) -> bool:
    return any(isinstance(x, (nn.Conv2d, nn.Linear)) for x in m.modules())


def weighted_groups(children: list[nn.Module]) -> list[nn.Sequential]:
    """Children grouped so that each group starts at a weighted child (leading unweighted ones join the first)."""
    groups: list[list[nn.Module]] = []
    for c in children:
        if _weighted(c) or not groups:
            groups.append([c])
        else:
            groups[-1].append(c)
    if len(groups) > 1 and not any(_weighted(c) for c in groups[0]):
        groups[1] = groups[0] + groups[1]
        groups.pop(0)
    return [nn.Sequential(*g) for g in groups]


@ADAPTERS.register("sequential")
def split_sequential(model: nn.Module) -> UnitModel | None:
    if type(model) is not nn.Sequential:
        return None
    groups = weighted_groups(list(model))
    if len(groups) < 2:
        return None
    return UnitModel(groups[0], list(groups[1:-1]), groups[-1])
