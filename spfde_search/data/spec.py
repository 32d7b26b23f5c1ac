"""What a data set is, before and after loading: `DatasetSpec` (shapes and sizes), `DatasetEntry` (a
registered tensor set: geometry, normalisation, loader), `_RawData` (a loaded set as CPU tensors) and the
`DATASETS` registry the loaders in `sources` fill."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from spfde_search.config import DataConfig
from spfde_search.registry import Registry


@dataclass(frozen=True)
class DatasetSpec:
    """Shapes and sizes of a configured data set, known before any file is read (except imagefolder)."""

    name: str
    channels: int
    image_size: int
    num_classes: int
    num_train: int  # after data.train_subset, and after carving the validation split out of it
    num_test: int  # after data.test_subset
    num_val: int = 0  # data.val_size (0: no validation split)


@dataclass(frozen=True)
class _RawData:
    """Whole data set as CPU tensors: images (N, C, H, W) uint8 or float32, labels (N,) long.

    ``files`` names where each of the four came from (for error messages)."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    files: tuple[str, str, str, str] = ("training images", "training labels", "test images", "test labels")
    val_x: Tensor | None = None  # the validation split (drawn from the training images by `load_data`)
    val_y: Tensor | None = None


@dataclass(frozen=True)
class _UserSets:
    """A user's (train, test) Datasets read item by item (``data.stream``), with every item's label read once."""

    train: Any  # torch.utils.data.Dataset of (image, label)
    test: Any
    train_y: Tensor  # long, CPU, one label per item of `train`
    test_y: Tensor


@dataclass(frozen=True)
class DatasetEntry:
    """A registered tensor data set: fixed geometry, normalisation and a loader of the full set."""

    name: str
    channels: int
    image_size: int
    num_classes: int
    num_train: int
    num_test: int
    mean: tuple[float, ...]  # per channel, in [0, 1] pixel units (after `scale`)
    std: tuple[float, ...]
    scale: float  # raw value -> [0, 1] units (1/255 for uint8 sets, 1 for synthetic floats)
    load: Callable[[DataConfig], _RawData]
    streamed: _UserSets | None = None  # set: a user's Datasets streamed through a DataLoader (`load` unused)


DATASETS: Registry[Callable[[DataConfig], DatasetEntry]] = Registry("data set")
"""Tensor data sets by name; each entry maps the data config to its `DatasetEntry` (imagefolder is apart)."""
