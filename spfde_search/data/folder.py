"""``imagefolder`` (ImageNet layout): scanning train/ and val/ (and test/) once per process, and `_FolderBundle`,
which streams images through a multi-worker DataLoader with per-item seeded augmentation behind the same API.

Which folder is which: in the two-folder ImageNet layout (train/, val/) val/ is the **test** set, as it is what
ImageNet results are reported on, and ``data.val_size`` draws validation from train/ like the tensor sets. With
a third folder test/, test/ is the test set and val/ the validation set (``data.val_size`` images of it,
class-balanced)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from spfde_search.config import DataConfig

from .bundle import DataBundle
from .checks import DataError, DataNotFoundError
from .spec import DatasetSpec
from .subsets import _subset_rng, balanced_subset, train_val_ids

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class _FolderScan:
    classes: tuple[str, ...]
    train: tuple[tuple[str, int], ...]
    test: tuple[tuple[str, int], ...]
    val: tuple[tuple[str, int], ...] | None = None  # val/ when a test/ folder holds the test set

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
    try:
        classes, class_to_idx = find_classes(str(train_dir))
        val_classes, _ = find_classes(str(val_dir))
    except FileNotFoundError as e:  # a split without class folders
        raise DataNotFoundError(f"imagefolder: {e}; lay it out as <split>/<class>/*.jpg") from None
    unknown = sorted(set(val_classes) - set(classes))
    if unknown:  # make_dataset would drop them silently: test images whose class was never trained
        raise DataError(
            f"imagefolder: {val_dir} has class folders missing from {train_dir}: {', '.join(unknown[:5])}"
            f"{' ...' if len(unknown) > 5 else ''}; both splits must use the same classes"
        )
    test_dir = root / "test"
    if test_dir.is_dir():  # three folders: test/ is the test set, val/ the validation set
        try:
            test_classes, _ = find_classes(str(test_dir))
        except FileNotFoundError as e:
            raise DataNotFoundError(f"imagefolder: {e}; lay it out as <split>/<class>/*.jpg") from None
        unknown = sorted(set(test_classes) - set(classes))
        if unknown:
            raise DataError(f"imagefolder: {test_dir} has class folders missing from {train_dir}: "
                            f"{', '.join(unknown[:5])}; all splits must use the same classes")
    else:
        test_dir = val_dir
    train = make_dataset(str(train_dir), class_to_idx, IMG_EXTENSIONS, allow_empty=True)
    test = make_dataset(str(test_dir), class_to_idx, IMG_EXTENSIONS, allow_empty=True)
    val = make_dataset(str(val_dir), class_to_idx, IMG_EXTENSIONS, allow_empty=True) if test_dir != val_dir else None
    if not train or not test or val == []:
        raise DataNotFoundError(
            f"imagefolder: no images ({', '.join(IMG_EXTENSIONS)}) under {train_dir}, {val_dir}"
            + (f" or {test_dir}" if test_dir != val_dir else "")
        )
    empty = sorted(set(classes) - {classes[t] for _, t in train})
    if empty:
        raise DataError(
            f"imagefolder: class folders without training images in {train_dir}: {', '.join(empty[:5])}"
            f"{' ...' if len(empty) > 5 else ''}; add images or remove the folders"
        )
    return _FolderScan(tuple(classes), tuple(train), tuple(test), None if val is None else tuple(val))


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
        try:
            img = default_loader(path)
        except (OSError, ValueError) as e:  # PIL: unidentified or truncated image
            raise DataError(f"imagefolder: {path} cannot be read as an image ({e}); replace or remove it") from None
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
        test_ids = torch.arange(len(scan.test))
        if scan.val is None:  # validation (if any) drawn from train/, as for the tensor sets
            train_ids, val_ids = train_val_ids(scan.train_targets, cfg.train_subset, cfg.val_size, seed, spec.name)
            self._val = [scan.train[i] for i in val_ids.tolist()]
        else:  # validation is the val/ folder, data.val_size images of it
            train_ids, _ = train_val_ids(scan.train_targets, cfg.train_subset, 0, seed, spec.name)
            val_targets = torch.tensor([t for _, t in scan.val], dtype=torch.long)
            val_ids = balanced_subset(val_targets, spec.num_val, _subset_rng(seed, 2))
            self._val = [scan.val[i] for i in val_ids.tolist()]
        if cfg.test_subset is not None:
            test_ids = balanced_subset(scan.test_targets, spec.num_test, _subset_rng(seed, 1))
        self._train = [scan.train[i] for i in train_ids.tolist()]
        self._test = [scan.test[i] for i in test_ids.tolist()]
        self.train_targets = torch.tensor([t for _, t in self._train], dtype=torch.long)
        self.test_targets = torch.tensor([t for _, t in self._test], dtype=torch.long)
        self.val_targets = torch.tensor([t for _, t in self._val], dtype=torch.long)
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
        for x, y, i in _one_line_errors(self._loader(items, batch_size)):
            yield x.to(self.device, non_blocking=nb), y.to(self.device, non_blocking=nb), i.to(self.device)

    def test_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        return self._in_order(self._test, batch_size)

    def val_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        return self._in_order(self._val, batch_size)

    def _in_order(self, samples: list[tuple[str, int]], batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        if not samples:
            return
        items = _FolderItems(samples, torch.arange(len(samples)), self._plain, None)
        nb = self.device.type == "cuda"
        for x, y, _ in _one_line_errors(self._loader(items, batch_size)):
            yield x.to(self.device, non_blocking=nb), y.to(self.device, non_blocking=nb)


def _one_line_errors(batches: Iterable[Any]) -> Iterator[Any]:
    """Re-raise a DataLoader worker's DataError as its own one-line message (the worker wraps it with its
    traceback text)."""
    try:
        yield from batches
    except DataError as e:
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        last = lines[-1] if lines else str(e)
        raise DataError(last.split("DataError: ", 1)[-1]) from None
