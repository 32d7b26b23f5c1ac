"""Small sets held whole on the device (airbench style): `_TensorBundle` normalises per batch and augments
with `crop_flip`, one vectorised random crop + flip per batch drawn from the caller's generator."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .bundle import DataBundle
from .spec import DatasetEntry, DatasetSpec, _RawData


class _Normalised:
    """Per-batch normalisation by the entry's channel statistics, and the crop padding: one rule for the bundles
    that hold a set whole (``_TensorBundle``) and that stream it (``stream._StreamBundle``)."""

    def _normalisation(self, entry: DatasetEntry, device: torch.device) -> None:
        shape = (1, entry.channels, 1, 1)
        self._mean = torch.tensor(entry.mean, dtype=torch.float32, device=device).reshape(shape)
        self._std = torch.tensor(entry.std, dtype=torch.float32, device=device).reshape(shape)
        self._scale = entry.scale
        self.pad = 2 if entry.image_size == 28 else 4

    def _normalise(self, x: Tensor) -> Tensor:
        x = x.to(torch.float32)
        if self._scale != 1.0:
            x = x * self._scale
        return (x - self._mean) / self._std


class _TensorBundle(_Normalised, DataBundle):
    """Whole set on the device; raw pixels stay in their stored dtype and are normalised per batch."""

    def __init__(self, spec: DatasetSpec, entry: DatasetEntry, raw: _RawData, device: torch.device) -> None:
        self.spec = spec
        self.device = device
        self.train_targets = raw.train_y.to(torch.long).cpu()
        self.test_targets = raw.test_y.to(torch.long).cpu()
        self._train_x = raw.train_x.to(device)
        self._train_y = raw.train_y.to(device=device, dtype=torch.long)
        self._test_x = raw.test_x.to(device)
        self._test_y = raw.test_y.to(device=device, dtype=torch.long)
        vx = raw.val_x if raw.val_x is not None else raw.test_x[:0]
        vy = raw.val_y if raw.val_y is not None else raw.test_y[:0]
        self.val_targets = vy.to(torch.long).cpu()
        self._val_x, self._val_y = vx.to(device), vy.to(device=device, dtype=torch.long)
        self._normalisation(entry, device)

    def train_batches(
        self, indices: Tensor, batch_size: int, generator: torch.Generator, augment: bool
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        idx = self._check_indices(indices, batch_size)
        n = idx.numel()
        order = idx[torch.randperm(n, generator=generator)]
        if augment:  # all of the epoch's augmentation draws at once: one transfer, reproducible
            p = self.pad
            shift = torch.randint(0, 2 * p + 1, (2, n), generator=generator).to(self.device)
            flip = (torch.rand(n, generator=generator) < 0.5).to(self.device)
        order_dev = order.to(self.device)
        for s in range(0, n, batch_size):
            b = order_dev[s : s + batch_size]
            x = self._train_x[b]
            if augment:
                x = crop_flip(
                    x, shift[0, s : s + batch_size], shift[1, s : s + batch_size], flip[s : s + batch_size], p
                )
            yield self._normalise(x), self._train_y[b], b

    def test_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        return self._in_order(self._test_x, self._test_y, batch_size)

    def val_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        return self._in_order(self._val_x, self._val_y, batch_size)

    def _in_order(self, x: Tensor, y: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for s in range(0, len(y), batch_size):
            yield self._normalise(x[s : s + batch_size]), y[s : s + batch_size]


def crop_flip(x: Tensor, dy: Tensor, dx: Tensor, flip: Tensor, pad: int) -> Tensor:
    """Random crop with zero padding plus horizontal flip, per sample, as one gather (no Python loop).

    Sample b is padded by `pad` on each side, cropped at offset (dy[b], dx[b]) in [0, 2*pad], and mirrored
    left-right where flip[b]; shapes are kept. Zero padding in raw pixel space, as torchvision's RandomCrop.
    """
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = dy.reshape(b, 1) + ar_h  # (B, H)
    cols = dx.reshape(b, 1) + torch.where(flip.reshape(b, 1), w - 1 - ar_w, ar_w)  # (B, W)
    bi = torch.arange(b, device=x.device).reshape(b, 1, 1, 1)
    ci = torch.arange(c, device=x.device).reshape(1, c, 1, 1)
    return xp[bi, ci, rows.reshape(b, 1, h, 1), cols.reshape(b, 1, 1, w)]
