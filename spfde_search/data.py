"""Data sets as device-resident tensors with batched on-device augmentation (airbench style).

Why this shape: the trainer needs the *sample id* of every training sample it sees (data sieving counts
forgetting events per sample, SPFDE.md §4) and a partial set that changes every Δτ epochs, so batches are
drawn from an explicit list of ids rather than from a fixed Dataset. Small sets (MNIST, Fashion-MNIST,
CIFAR, synthetic) live whole on the device and are cropped/flipped there in one vectorised op per batch;
``imagefolder`` (ImageNet-style) streams from disk through a multi-worker DataLoader with the same API.

``dataset_spec`` answers shapes and sizes from the config alone (the FLOPs predictor runs before any data
is read); only ``imagefolder`` has to look at its folder to count classes and files.
"""

from __future__ import annotations

import gzip
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from spfde_search.config import DEFAULT_FASHION_MNIST_ROOT, ConfigError, DataConfig
from spfde_search.registry import Registry

__all__ = [
    "DataBundle",
    "DataNotFoundError",
    "DatasetSpec",
    "DATASETS",
    "balanced_subset",
    "crop_flip",
    "dataset_spec",
    "load_data",
]

DEFAULT_MNIST_ROOT = "~/.cache/spfde/mnist"
DEFAULT_CIFAR_ROOT = "~/.cache/spfde/cifar"
_SYNTHETIC_DATA_SEED = (
    20220922  # fixed: the synthetic set is one data set, like a real one; run seeds pick subsets
)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class DataNotFoundError(ConfigError):
    """The data set's files are not where the config says; the message says where we looked and how to fix it."""


@dataclass(frozen=True)
class DatasetSpec:
    """Shapes and sizes of a configured data set, known before any file is read (except imagefolder)."""

    name: str
    channels: int
    image_size: int
    num_classes: int
    num_train: int  # after data.train_subset
    num_test: int  # after data.test_subset


@dataclass(frozen=True)
class _RawData:
    """Whole data set as CPU tensors: images (N, C, H, W) uint8 or float32, labels (N,) long."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
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


DATASETS: Registry[Callable[[DataConfig], DatasetEntry]] = Registry("data set")
"""Tensor data sets by name; each entry maps the data config to its `DatasetEntry` (imagefolder is apart)."""


# ---------------------------------------------------------------- spec


def dataset_spec(cfg: DataConfig) -> DatasetSpec:
    """Shapes and subset sizes of the configured data set; ConfigError if a subset is larger than the set."""
    if cfg.name == "imagefolder":
        scan = _scan_folder(_folder_root(cfg))
        full = DatasetSpec(
            "imagefolder",
            3,
            cfg.image_size,
            len(scan.classes),
            len(scan.train_targets),
            len(scan.test_targets),
        )
    else:
        e = DATASETS.get(cfg.name)(cfg)
        full = DatasetSpec(e.name, e.channels, e.image_size, e.num_classes, e.num_train, e.num_test)
    return DatasetSpec(
        full.name,
        full.channels,
        full.image_size,
        full.num_classes,
        _subset_size("data.train_subset", cfg.train_subset, full.num_train, full.name, "training"),
        _subset_size("data.test_subset", cfg.test_subset, full.num_test, full.name, "test"),
    )


def _subset_size(field: str, asked: int | None, size: int, name: str, split: str) -> int:
    if asked is None:
        return size
    if asked > size:
        raise ConfigError(
            f"{field}={asked} is larger than the {name} {split} set ({size} samples); "
            f"use at most {size} or null for the whole set"
        )
    return asked


def balanced_subset(targets: Tensor, k: int, rng: np.random.Generator) -> Tensor:
    """Sorted ids of a k-sample subset with class counts as equal as possible (exactly k in total).

    Water-filling: classes with fewer samples than the fair share give all they have and the rest is
    shared by the others; the remainder of the division goes to randomly chosen classes.
    """
    t = targets.cpu().numpy()
    if k > len(t):
        raise ValueError(f"subset of {k} asked from {len(t)} samples")
    classes = np.unique(t)
    by_class = {int(c): np.flatnonzero(t == c) for c in classes}
    quota: dict[int, int] = {}
    active = sorted(by_class)
    remaining = k
    while active:
        share = remaining // len(active)
        small = [c for c in active if len(by_class[c]) <= share]
        if not small:
            break
        for c in small:
            quota[c] = len(by_class[c])
            remaining -= quota[c]
        active = [c for c in active if c not in quota]
    if active:
        share, extra = divmod(remaining, len(active))
        lucky = set(rng.choice(len(active), size=extra, replace=False).tolist()) if extra else set()
        for i, c in enumerate(active):
            quota[c] = share + (1 if i in lucky else 0)
    chosen = [rng.choice(by_class[c], size=q, replace=False) for c, q in sorted(quota.items()) if q > 0]
    ids = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(ids.astype(np.int64))


def _subset_rng(seed: int, split: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, split]))


# ---------------------------------------------------------------- bundles


class DataBundle(ABC):
    """A loaded data set: batches of the training set by sample id, and the test set in order."""

    spec: DatasetSpec
    train_targets: Tensor  # long, CPU, length spec.num_train, in sample-id order
    test_targets: Tensor  # long, CPU, length spec.num_test
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


class _TensorBundle(DataBundle):
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
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for s in range(0, self.spec.num_test, batch_size):
            yield self._normalise(self._test_x[s : s + batch_size]), self._test_y[s : s + batch_size]


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


# ---------------------------------------------------------------- loading


def load_data(cfg: DataConfig, seed: int, device: torch.device) -> DataBundle:
    """Load the configured set (subsets drawn with `seed`) onto `device`; DataNotFoundError if files are missing."""
    spec = dataset_spec(cfg)
    if cfg.name == "imagefolder":
        return _FolderBundle(cfg, spec, seed, device)
    entry = DATASETS.get(cfg.name)(cfg)
    raw = entry.load(cfg)
    if cfg.train_subset is not None:
        ids = balanced_subset(raw.train_y, spec.num_train, _subset_rng(seed, 0))
        raw = _RawData(raw.train_x[ids], raw.train_y[ids], raw.test_x, raw.test_y)
    if cfg.test_subset is not None:
        ids = balanced_subset(raw.test_y, spec.num_test, _subset_rng(seed, 1))
        raw = _RawData(raw.train_x, raw.train_y, raw.test_x[ids], raw.test_y[ids])
    return _TensorBundle(spec, entry, raw, device)


def _idx_file(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format: big-endian magic, dims, then uint8 data), gzipped or not."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataNotFoundError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != math.prod(dims):
        raise DataNotFoundError(f"{path} is truncated: expected {math.prod(dims)} values, found {arr.size}")
    return arr.reshape(dims)


_FMNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _load_fashion_mnist(cfg: DataConfig) -> _RawData:
    root = Path(cfg.root or DEFAULT_FASHION_MNIST_ROOT).expanduser()
    paths = [_idx_file(root, stem) for stem in _FMNIST_FILES]
    missing = [stem for stem, p in zip(_FMNIST_FILES, paths, strict=True) if p is None]
    if missing:
        raise DataNotFoundError(
            f"fashion_mnist: looked in {root} for {', '.join(s + '[.gz]' for s in _FMNIST_FILES)}; "
            f"missing: {', '.join(missing)}. Install it with `apt-get install dataset-fashion-mnist` "
            f"(puts the files in {DEFAULT_FASHION_MNIST_ROOT}), or download the four idx files from "
            "https://github.com/zalandoresearch/fashion-mnist and set data.root to their folder"
        )
    arrays = [_read_idx(p) for p in paths if p is not None]
    tx, ty, vx, vy = (torch.from_numpy(a.copy()) for a in arrays)
    return _RawData(tx.unsqueeze(1), ty.long(), vx.unsqueeze(1), vy.long())


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


def _load_mnist(cfg: DataConfig) -> _RawData:
    train, test = _torchvision_set("MNIST", "mnist", DEFAULT_MNIST_ROOT, cfg)
    return _RawData(
        train.data.unsqueeze(1), train.targets.long(), test.data.unsqueeze(1), test.targets.long()
    )


def _cifar_loader(cls_name: str, name: str) -> Callable[[DataConfig], _RawData]:
    def load(cfg: DataConfig) -> _RawData:
        train, test = _torchvision_set(cls_name, name, DEFAULT_CIFAR_ROOT, cfg)

        def nchw(a: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))

        return _RawData(
            nchw(train.data), torch.tensor(train.targets), nchw(test.data), torch.tensor(test.targets)
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


# ---------------------------------------------------------------- imagefolder


@dataclass(frozen=True)
class _FolderScan:
    classes: tuple[str, ...]
    train: tuple[tuple[str, int], ...]
    test: tuple[tuple[str, int], ...]

    @property
    def train_targets(self) -> Tensor:
        return torch.tensor([t for _, t in self.train], dtype=torch.long)

    @property
    def test_targets(self) -> Tensor:
        return torch.tensor([t for _, t in self.test], dtype=torch.long)


def _folder_root(cfg: DataConfig) -> Path:
    if cfg.root is None:
        raise DataNotFoundError(
            "imagefolder: data.root is not set; point it at a folder with train/<class>/*.jpg and val/<class>/*.jpg "
            "(the ImageNet layout)"
        )
    return Path(cfg.root).expanduser().resolve()


@lru_cache(maxsize=8)
def _scan_folder(root: Path) -> _FolderScan:
    """List classes and image files once per process (a full ImageNet scan takes seconds)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    train_dir, val_dir = root / "train", root / "val"
    missing = [str(d) for d in (train_dir, val_dir) if not d.is_dir()]
    if missing:
        raise DataNotFoundError(
            f"imagefolder: looked in {root} for train/ and val/ subfolders; missing: {', '.join(missing)}. "
            "Set data.root to a folder laid out as train/<class>/*.jpg and val/<class>/*.jpg"
        )
    classes, class_to_idx = find_classes(str(train_dir))
    train = make_dataset(str(train_dir), class_to_idx, IMG_EXTENSIONS, allow_empty=True)
    test = make_dataset(str(val_dir), class_to_idx, IMG_EXTENSIONS, allow_empty=True)
    if not train or not test:
        raise DataNotFoundError(
            f"imagefolder: no images ({', '.join(IMG_EXTENSIONS)}) under {train_dir} or {val_dir}"
        )
    return _FolderScan(tuple(classes), tuple(train), tuple(test))


class _FolderItems(torch.utils.data.Dataset):
    """Images at given file positions, returned with their sample ids; augmentation seeded per item.

    Each item's transform runs under a forked RNG seeded with (epoch seed + position), so the random
    crops depend only on the caller's generator, not on worker count or scheduling.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        ids: Tensor,
        transform: Callable[[Any], Tensor],
        seed: int | None,
    ) -> None:
        self.samples, self.ids, self.transform, self.seed = samples, ids.tolist(), transform, seed

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        from torchvision.datasets.folder import default_loader

        path, target = self.samples[i]
        img = default_loader(path)
        if self.seed is None:
            x = self.transform(img)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed + i)
                x = self.transform(img)
        return x, target, self.ids[i]


class _FolderBundle(DataBundle):
    """ImageNet-style folder streamed through a multi-worker DataLoader; same API as the tensor sets."""

    def __init__(self, cfg: DataConfig, spec: DatasetSpec, seed: int, device: torch.device) -> None:
        import torchvision.transforms as T

        scan = _scan_folder(_folder_root(cfg))
        self.spec, self.device, self._workers = spec, device, cfg.num_workers
        train_ids = torch.arange(len(scan.train))
        test_ids = torch.arange(len(scan.test))
        if cfg.train_subset is not None:
            train_ids = balanced_subset(scan.train_targets, spec.num_train, _subset_rng(seed, 0))
        if cfg.test_subset is not None:
            test_ids = balanced_subset(scan.test_targets, spec.num_test, _subset_rng(seed, 1))
        self._train = [scan.train[i] for i in train_ids.tolist()]
        self._test = [scan.test[i] for i in test_ids.tolist()]
        self.train_targets = torch.tensor([t for _, t in self._train], dtype=torch.long)
        self.test_targets = torch.tensor([t for _, t in self._test], dtype=torch.long)
        size = cfg.image_size
        norm = [T.ToTensor(), T.Normalize(_IMAGENET_MEAN, _IMAGENET_STD)]
        self._aug = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *norm])
        self._plain = T.Compose([T.Resize(round(size / 0.875)), T.CenterCrop(size), *norm])

    def _loader(self, items: _FolderItems, batch_size: int) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            items,
            batch_size=batch_size,
            shuffle=False,  # the order is already shuffled by the caller's generator
            num_workers=self._workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def train_batches(
        self, indices: Tensor, batch_size: int, generator: torch.Generator, augment: bool
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        idx = self._check_indices(indices, batch_size)
        order = idx[torch.randperm(idx.numel(), generator=generator)]
        seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if augment else None
        samples = [self._train[i] for i in order.tolist()]
        items = _FolderItems(samples, order, self._aug if augment else self._plain, seed)
        nb = self.device.type == "cuda"
        for x, y, i in self._loader(items, batch_size):
            yield x.to(self.device, non_blocking=nb), y.to(self.device, non_blocking=nb), i.to(self.device)

    def test_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        items = _FolderItems(self._test, torch.arange(len(self._test)), self._plain, None)
        nb = self.device.type == "cuda"
        for x, y, _ in self._loader(items, batch_size):
            yield x.to(self.device, non_blocking=nb), y.to(self.device, non_blocking=nb)
