"""A data callable as a user would write one (docs/own_model.md): it returns ``(train, test)``, here as pairs
of tensors ``(images, labels)``; a ``torch.utils.data.Dataset`` of ``(image, label)`` works the same. Class
count, image shape and normalisation are read from what it returns; its keyword arguments are ``data.kwargs``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def stripes(n_train: int = 1024, n_test: int = 512, classes: int = 4, size: int = 16, noise: float = 0.8,
            seed: int = 0) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Grey images of stripes whose angle is the class, plus noise. A horizontal flip changes a stripe's angle,
    so train it with ``data.augment: false``."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")

    def split(n: int) -> tuple[Tensor, Tensor]:
        y = torch.arange(n) % classes
        angle = (y.float() / classes * math.pi / 2).view(-1, 1, 1)
        phase = torch.rand(n, 1, 1, generator=g) * 2 * math.pi
        img = torch.sin((xs * torch.cos(angle) + ys * torch.sin(angle)) * 1.2 + phase)
        img = img + noise * torch.randn(n, size, size, generator=g)
        return img.unsqueeze(1), y

    return split(n_train), split(n_test)
