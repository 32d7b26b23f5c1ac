"""The unit model every family is split into: stem -> units -> head (docs/method.md §3).

Units are what freezing freezes, front to back. Keeping that structure explicit lets the trainer run the frozen
prefix under ``torch.no_grad()`` and the rest with autograd, without hooks. A model no adapter can split is held
whole (:func:`whole`): it still trains, and sparsity and sieving still apply, but it has no units to freeze.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["UnitModel", "depth_layers", "is_shortcut", "whole"]


class UnitModel(nn.Module):
    """stem -> blocks -> head; ``forward(x, frozen_units=k)`` runs the first k units without autograd.

    The explicit way for any model no adapter knows: return ``UnitModel(stem, blocks, head)`` from the model
    callable, where ``head(blocks[-1](... stem(x)))`` is the model's forward. ``splittable=False`` marks a model
    held whole (one unit, nothing freezable)."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module, splittable: bool = True) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.splittable = splittable

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


def whole(model: nn.Module) -> UnitModel:
    """A model that cannot be split: the whole of it is the stem, the head passes its logits through."""
    return UnitModel(model, [], nn.Identity(), splittable=False)


def is_shortcut(name: str) -> bool:
    """1x1 projection convs of residual blocks (CIFAR 'shortcut', torchvision 'downsample').

    Matched by path segment, so a name relative to the block (``shortcut.0``, as ``depth_layers(unit)`` sees it)
    counts as well as a full one (``blocks.5.shortcut.0``)."""
    parts = name.split(".")
    return "shortcut" in parts or "downsample" in parts


def depth_layers(unit: nn.Module, prefix: str = "") -> int:
    """Weighted layers that count towards a model's depth: convs and linears, not the 1x1 shortcuts."""
    return sum(
        1
        for n, m in unit.named_modules(prefix=prefix)
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not is_shortcut(n)
    )
