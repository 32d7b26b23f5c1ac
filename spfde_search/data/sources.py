"""The registered tensor data sets and their loaders: Fashion-MNIST from IDX files, MNIST and CIFAR-10/100
through torchvision, and the synthetic set. Importing this module registers them in `DATASETS`, in the
order below."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from spfde_search.config import DEFAULT_FASHION_MNIST_ROOT, DataConfig

from .checks import DataNotFoundError
from .idx import _idx_file, _read_idx
from .spec import DATASETS, DatasetEntry, _RawData

DEFAULT_MNIST_ROOT = "~/.cache/spfde/mnist"
DEFAULT_CIFAR_ROOT = "~/.cache/spfde/cifar"
_SYNTHETIC_DATA_SEED = (
    20220922  # fixed: the synthetic set is one data set, like a real one; run seeds pick subsets
)


_FMNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _load_fashion_mnist(cfg: DataConfig) -> _RawData:
    root = Path(cfg.root or DEFAULT_FASHION_MNIST_ROOT).expanduser()
    paths = [_idx_file(root, stem) for stem in _FMNIST_FILES]
    found = [p for p in paths if p is not None]
    if len(found) != len(paths):
        missing = [stem for stem, p in zip(_FMNIST_FILES, paths, strict=True) if p is None]
        raise DataNotFoundError(
            f"fashion_mnist: looked in {root} for {', '.join(s + '[.gz]' for s in _FMNIST_FILES)}; "
            f"missing: {', '.join(missing)}. Install it with `apt-get install dataset-fashion-mnist` "
            f"(puts the files in {DEFAULT_FASHION_MNIST_ROOT}), or download the four idx files from "
            "https://github.com/zalandoresearch/fashion-mnist and set data.root to their folder"
        )
    tx, ty, vx, vy = (torch.from_numpy(_read_idx(p, 3 if "images" in p.name else 1).copy()) for p in found)
    files = (str(found[0]), str(found[1]), str(found[2]), str(found[3]))
    if tx.ndim == 3 and vx.ndim == 3:  # (N, 28, 28) -> (N, 1, 28, 28); check_raw names any other shape
        tx, vx = tx.unsqueeze(1), vx.unsqueeze(1)
    return _RawData(tx, ty.long(), vx, vy.long(), files)


def _torchvision_set(cls_name: str, name: str, root_default: str, cfg: DataConfig) -> tuple[Any, Any]:
    """Open a torchvision set from disk, downloading only if it is absent; DataNotFoundError if that fails."""
    try:
        import torchvision.datasets as tvd
    except ImportError as e:  # pragma: no cover - torchvision is a dependency
        raise DataNotFoundError(f"{name} needs torchvision (pip install torchvision)") from e
    cls = getattr(tvd, cls_name)
    root = Path(cfg.root or root_default).expanduser()
    try:
        return cls(str(root), train=True, download=False), cls(str(root), train=False, download=False)
    except (RuntimeError, OSError):
        pass
    try:
        root.mkdir(parents=True, exist_ok=True)
        return cls(str(root), train=True, download=True), cls(str(root), train=False, download=True)
    except Exception as e:  # network, disk or checksum failure: all mean "the data is not here"
        raise DataNotFoundError(
            f"{name}: not found in {root} and the download failed ({type(e).__name__}: {e}). torchvision "
            f"downloads it there when the machine is online; otherwise copy the torchvision {cls_name} files "
            "into that folder or set data.root to a folder that has them"
        ) from e


def _torchvision_files(train: Any, test: Any) -> tuple[str, str, str, str]:
    """Where a torchvision set's splits live, for error messages (its own files have fixed names there)."""

    def where(ds: Any) -> str:
        return str(getattr(ds, "raw_folder", None) or os.path.join(ds.root, getattr(ds, "base_folder", "")))

    a, b = where(train), where(test)
    return (f"{a} (training images)", f"{a} (training labels)", f"{b} (test images)", f"{b} (test labels)")


def _load_mnist(cfg: DataConfig) -> _RawData:
    train, test = _torchvision_set("MNIST", "mnist", DEFAULT_MNIST_ROOT, cfg)
    return _RawData(
        train.data.unsqueeze(1),
        train.targets.long(),
        test.data.unsqueeze(1),
        test.targets.long(),
        _torchvision_files(train, test),
    )


def _cifar_loader(cls_name: str, name: str) -> Callable[[DataConfig], _RawData]:
    def load(cfg: DataConfig) -> _RawData:
        train, test = _torchvision_set(cls_name, name, DEFAULT_CIFAR_ROOT, cfg)

        def nchw(a: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))

        return _RawData(
            nchw(train.data),
            torch.tensor(train.targets),
            nchw(test.data),
            torch.tensor(test.targets),
            _torchvision_files(train, test),
        )

    return load


def _load_synthetic(cfg: DataConfig) -> _RawData:
    """Class-dependent colour + smooth pattern plus unit noise: learnable, and robust to crop and flip."""
    g = torch.Generator().manual_seed(_SYNTHETIC_DATA_SEED)
    k, s = cfg.synthetic_classes, cfg.synthetic_size
    colour = torch.randn(k, 3, 1, 1, generator=g)
    coarse = torch.randn(k, 3, 4, 4, generator=g)
    means = 0.8 * colour + 0.8 * F.interpolate(coarse, size=(s, s), mode="bilinear", align_corners=False)

    def split(n: int) -> tuple[Tensor, Tensor]:
        y = (torch.arange(n) % k)[torch.randperm(n, generator=g)]
        x = means[y] + torch.randn(n, 3, s, s, generator=g)
        return x, y

    tx, ty = split(cfg.synthetic_train)
    vx, vy = split(cfg.synthetic_test)
    return _RawData(tx, ty, vx, vy)


def _fixed(
    name: str,
    channels: int,
    size: int,
    classes: int,
    sizes: tuple[int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    load: Callable[[DataConfig], _RawData],
) -> Callable[[DataConfig], DatasetEntry]:
    """Entry of a uint8 set whose geometry does not depend on the config."""
    entry = DatasetEntry(name, channels, size, classes, sizes[0], sizes[1], mean, std, 1 / 255, load)
    return lambda cfg: entry


def _synthetic_entry(cfg: DataConfig) -> DatasetEntry:
    k, s = cfg.synthetic_classes, cfg.synthetic_size
    return DatasetEntry(
        "synthetic",
        3,
        s,
        k,
        cfg.synthetic_train,
        cfg.synthetic_test,
        (0.0,) * 3,
        (1.0,) * 3,
        1.0,
        _load_synthetic,
    )


# name, channels, size, classes, (train, test), per-channel mean and std of the training set (usual values)
DATASETS.add(
    "fashion_mnist",
    _fixed("fashion_mnist", 1, 28, 10, (60000, 10000), (0.2860,), (0.3530,), _load_fashion_mnist),
)
DATASETS.add("mnist", _fixed("mnist", 1, 28, 10, (60000, 10000), (0.1307,), (0.3081,), _load_mnist))
DATASETS.add(
    "cifar10",
    _fixed(
        "cifar10",
        3,
        32,
        10,
        (50000, 10000),
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        _cifar_loader("CIFAR10", "cifar10"),
    ),
)
DATASETS.add(
    "cifar100",
    _fixed(
        "cifar100",
        3,
        32,
        100,
        (50000, 10000),
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        _cifar_loader("CIFAR100", "cifar100"),
    ),
)
DATASETS.add("synthetic", _synthetic_entry)
