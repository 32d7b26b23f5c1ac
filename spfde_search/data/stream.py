"""A user's ``Dataset`` too large to hold on the device (``data.stream``), read item by item each epoch through a
``torch.utils.data.DataLoader`` (``data.num_workers`` workers, pinned memory on CUDA) behind the `DataBundle` API.

Sieving counts forgetting per sample, so every item travels with its sample id (the index-returning wrapper
`_Items`), and the epoch's order, crops and flips are drawn from the caller's generator exactly as the tensor sets
draw them (``tensor.crop_flip`` on the device after the transfer): a set streamed and the same set held whole
give the same batches, and the trainer counts the same samples, so the FLOPs stay exact.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from .bundle import DataBundle
from .checks import DataError
from .folder import _one_line_errors
from .spec import DatasetEntry, DatasetSpec, _UserSets
from .tensor import _Normalised, crop_flip

STATS_SAMPLE = 2048  # images (evenly spaced) whose per-channel mean and std normalise a streamed set


def image_of(item: Any) -> Tensor:
    """An item's image as a (C, H, W) tensor ((H, W): one channel), as the tensor path reads it."""
    x = torch.as_tensor(item[0])
    return x.unsqueeze(0) if x.ndim == 2 else x


def _stack(which: str, images: Sequence[Tensor], ids: Sequence[int]) -> Tensor:
    first = tuple(images[0].shape)
    odd = next((i for i, im in enumerate(images) if tuple(im.shape) != first), None)
    if odd is not None:
        raise DataError(f"data.name: the {which} images have different shapes ({first} at {ids[0]}, "
                        f"{tuple(images[odd].shape)} at {ids[odd]}); give them one size in the data callable (e.g. a "
                        "torchvision Resize + CenterCrop transform)")
    return torch.stack(list(images))


class _Items(torch.utils.data.Dataset):
    """Items of the user's Dataset at ``positions``, each returned with its sample id (``ids``) for sieving."""

    def __init__(self, which: str, data: Any, positions: Tensor, ids: Tensor) -> None:
        self.which, self.data, self.positions, self.ids = which, data, positions.tolist(), ids.tolist()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        item = self.data[self.positions[i]]
        return image_of(item), int(item[1]), i

    def collate(self, batch: list[tuple[Tensor, int, int]]) -> tuple[Tensor, Tensor, Tensor]:
        """(images, labels, sample ids); DataError naming the items' positions in the user's set where the
        images' shapes differ."""
        at = [b[2] for b in batch]
        x = _stack(self.which, [b[0] for b in batch], [self.positions[i] for i in at])
        return x, torch.tensor([b[1] for b in batch], dtype=torch.long), torch.tensor([self.ids[i] for i in at])


def read_labels(which: str, data: Any, workers: int) -> tuple[Tensor, tuple[int, ...]]:
    """(every item's label, the image shape): a Dataset's ``targets`` (torchvision's name) where it has one per
    item, else one pass through a DataLoader that keeps the labels and drops the images; DataError for images of
    different shapes."""
    first = tuple(image_of(data[0]).shape)
    targets = getattr(data, "targets", None)
    if targets is not None and len(targets) == len(data):
        return torch.as_tensor(targets).reshape(-1).to(torch.long), first
    items = _Items(which, data, torch.arange(len(data)), torch.arange(len(data)))
    loader = torch.utils.data.DataLoader(items, batch_size=256, num_workers=workers, collate_fn=_labels_only)
    labels = []
    for y, shapes in _one_line_errors(loader):
        odd = next((i for i, s in shapes if s != first), None)
        if odd is not None:
            raise DataError(f"data.name: the {which} images have different shapes ({first} at 0, "
                            f"{dict(shapes)[odd]} at {odd}); give them one size in the data callable (e.g. a "
                            "torchvision Resize + CenterCrop transform)")
        labels.append(y)
    return torch.cat(labels), first


def _labels_only(batch: list[tuple[Tensor, int, int]]) -> tuple[Tensor, list[tuple[int, tuple[int, ...]]]]:
    return torch.tensor([b[1] for b in batch], dtype=torch.long), [(b[2], tuple(b[0].shape)) for b in batch]


def stats_sample(data: Any) -> Tensor:
    """Up to ``STATS_SAMPLE`` evenly spaced training images, stacked (all of them in order for a smaller set, so
    its statistics are those the tensor path computes)."""
    n = len(data)
    picks = range(n) if n <= STATS_SAMPLE else torch.linspace(0, n - 1, STATS_SAMPLE).round().long().tolist()
    return torch.stack([image_of(data[i]) for i in picks])


class _StreamBundle(_Normalised, DataBundle):
    """The user's Datasets streamed through a DataLoader; normalisation and augmentation on the device."""

    def __init__(self, spec: DatasetSpec, entry: DatasetEntry, sets: _UserSets, ids: tuple[Tensor, Tensor, Tensor],
                 workers: int, device: torch.device) -> None:
        self.spec, self.device, self._workers = spec, device, workers
        self._sets = sets
        self._train_pos, self._val_pos, self._test_pos = ids  # positions in the user's train / train / test set
        self.train_targets = sets.train_y[self._train_pos]
        self.val_targets = sets.train_y[self._val_pos]
        self.test_targets = sets.test_y[self._test_pos]
        self._normalisation(entry, device)

    def _batches(self, items: _Items, batch_size: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        cuda = self.device.type == "cuda"
        loader = torch.utils.data.DataLoader(items, batch_size=batch_size, shuffle=False, num_workers=self._workers,
                                             pin_memory=cuda, collate_fn=items.collate)
        for x, y, i in _one_line_errors(loader):
            yield x.to(self.device, non_blocking=cuda), y.to(self.device, non_blocking=cuda), i.to(self.device)

    def train_batches(
        self, indices: Tensor, batch_size: int, generator: torch.Generator, augment: bool
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        idx = self._check_indices(indices, batch_size)
        n = idx.numel()
        order = idx[torch.randperm(n, generator=generator)]  # the draws of the tensor path, in its order
        if augment:
            p = self.pad
            shift = torch.randint(0, 2 * p + 1, (2, n), generator=generator).to(self.device)
            flip = (torch.rand(n, generator=generator) < 0.5).to(self.device)
        s = 0
        for x, y, sid in self._batches(_Items("training", self._sets.train, self._train_pos[order], order), batch_size):
            b = len(y)
            if augment:
                x = crop_flip(x, shift[0, s : s + b], shift[1, s : s + b], flip[s : s + b], p)
            s += b
            yield self._normalise(x), y, sid

    def test_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        return self._in_order("test", self._sets.test, self._test_pos, batch_size)

    def val_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        return self._in_order("validation", self._sets.train, self._val_pos, batch_size)

    def _in_order(self, which: str, data: Any, pos: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(pos) == 0:
            return
        for x, y, _ in self._batches(_Items(which, data, pos, torch.arange(len(pos))), batch_size):
            yield self._normalise(x), y
