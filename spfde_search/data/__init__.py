"""Data sets as device-resident tensors with batched on-device augmentation (airbench style).

Why this shape: the trainer needs the *sample id* of every training sample it sees (data sieving counts
forgetting events per sample, docs/method.md §4) and a partial set that changes every Δτ epochs, so batches are
drawn from an explicit list of ids rather than from a fixed Dataset. Small sets (MNIST, Fashion-MNIST,
CIFAR, synthetic) live whole on the device and are cropped/flipped there in one vectorised op per batch;
``imagefolder`` (ImageNet-style) and a large user Dataset stream through a multi-worker DataLoader with the same
API.

``dataset_spec`` answers shapes and sizes from the config alone (the FLOPs predictor runs before any data
is read); only ``imagefolder`` has to look at its folder to count classes and files.

Modules: ``spec`` (what a data set is, the ``DATASETS`` registry), ``checks`` (the data errors and the
checks of a loaded set), ``subsets`` (balanced subsets), ``bundle`` (the ``DataBundle`` interface),
``tensor`` (device-resident sets, ``crop_flip``), ``idx`` (IDX / .gz files), ``sources`` (the registered
sets and their loaders), ``folder`` (``imagefolder``), ``custom`` (the user's data behind an import path),
``stream`` (a user's Dataset through a DataLoader, ``data.stream``), ``loading`` (``dataset_spec``,
``load_data``).
"""

from __future__ import annotations

from .bundle import DataBundle
from .checks import DataError, DataNotFoundError, check_raw
from .loading import dataset_spec, default_val_size, load_data
from .sources import DEFAULT_CIFAR_ROOT, DEFAULT_MNIST_ROOT
from .spec import DATASETS, DatasetEntry, DatasetSpec
from .subsets import balanced_subset
from .tensor import crop_flip

__all__ = [
    "DataBundle",
    "DataError",
    "DataNotFoundError",
    "DatasetEntry",
    "DatasetSpec",
    "DATASETS",
    "DEFAULT_CIFAR_ROOT",
    "DEFAULT_MNIST_ROOT",
    "balanced_subset",
    "check_raw",
    "crop_flip",
    "dataset_spec",
    "default_val_size",
    "load_data",
]
