"""The `DataBundle` interface the trainer uses: training batches by sample id, the validation and test sets in
order."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import torch
from torch import Tensor

from .spec import DatasetSpec


class DataBundle(ABC):
    """A loaded data set: batches of the training set by sample id, and the test set in order."""

    spec: DatasetSpec
    train_targets: Tensor  # long, CPU, length spec.num_train, in sample-id order
    test_targets: Tensor  # long, CPU, length spec.num_test
    val_targets: Tensor  # long, CPU, length spec.num_val (empty: no validation split)
    device: torch.device

    @abstractmethod
    def train_batches(
        self, indices: Tensor, batch_size: int, generator: torch.Generator, augment: bool
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """Yield (x, y, idx) on the device, visiting each of `indices` once in an order shuffled by `generator`.

        The last batch may be smaller. Shuffling and augmentation draw only from `generator` (a CPU
        generator), so the same generator state gives the same batches.
        """

    @abstractmethod
    def test_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (x, y) on the device over the whole test set, in order, without augmentation."""

    @abstractmethod
    def val_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (x, y) on the device over the validation split, in order, without augmentation (none if
        ``spec.num_val`` is 0)."""

    def _check_indices(self, indices: Tensor, batch_size: int) -> Tensor:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        idx = torch.as_tensor(indices).reshape(-1)
        if idx.dtype.is_floating_point or idx.dtype == torch.bool:
            raise TypeError(f"indices must be an integer tensor of sample ids, got {idx.dtype}")
        idx = idx.to(device="cpu", dtype=torch.long)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.spec.num_train):
            raise IndexError(
                f"sample ids must lie in [0, {self.spec.num_train}), got [{int(idx.min())}, {int(idx.max())}]"
            )
        return idx
