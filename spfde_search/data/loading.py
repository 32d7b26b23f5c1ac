"""The two entry points: `dataset_spec` (shapes, subset and validation sizes from the config alone, except
imagefolder, which counts its folder) and `load_data` (the configured set, checked, subset and split, on the
device)."""

from __future__ import annotations

import torch

from spfde_search.config import ConfigError, DataConfig

from .bundle import DataBundle
from .checks import check_raw
from .custom import entry_for
from .folder import _folder_root, _FolderBundle, _scan_folder
from .spec import DatasetSpec, _RawData
from .stream import _StreamBundle
from .subsets import _subset_rng, _subset_size, auto_val_size, balanced_subset, train_val_ids, val_split
from .tensor import _TensorBundle


def dataset_spec(cfg: DataConfig) -> DatasetSpec:
    """Shapes and sizes of the configured data set (training size net of a validation split carved out of it);
    ConfigError if a subset or the validation split is larger than what the set has."""
    val_folder: int | None = None  # imagefolder with a test/ folder: validation is its val/ folder
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
        val_folder = None if scan.val is None else len(scan.val)
    else:
        e = entry_for(cfg)
        full = DatasetSpec(e.name, e.channels, e.image_size, e.num_classes, e.num_train, e.num_test)
    used = _subset_size("data.train_subset", cfg.train_subset, full.num_train, full.name, "training")
    if val_folder is not None:
        num_val, num_train = cfg.val_size or 0, used
        if num_val > val_folder:
            raise ConfigError(f"data.val_size={num_val} is larger than the imagefolder val/ folder ({val_folder} "
                              f"images, the validation set beside test/); use at most {val_folder}, or 0")
    else:
        num_val, outside = val_split(cfg.val_size, full.num_train, used, full.name)
        num_train = used if outside else used - num_val
    return DatasetSpec(
        full.name,
        full.channels,
        full.image_size,
        full.num_classes,
        num_train,
        _subset_size("data.test_subset", cfg.test_subset, full.num_test, full.name, "test"),
        num_val,
    )


def default_val_size(cfg: DataConfig) -> int:
    """The validation size a search gives ``data.val_size`` when the base config leaves it unset (``subsets.
    auto_val_size``; an imagefolder val/ beside test/ gives at most what it holds)."""
    plain = dataset_spec(cfg.model_copy(update={"val_size": 0}))
    if cfg.name == "imagefolder":
        scan = _scan_folder(_folder_root(cfg))
        if scan.val is not None:
            return min(auto_val_size(1, 1, plain.num_test), len(scan.val))
        full = len(scan.train)
    else:
        full = entry_for(cfg).num_train
    return auto_val_size(full, plain.num_train, plain.num_test)


def load_data(cfg: DataConfig, seed: int, device: torch.device) -> DataBundle:
    """Load the configured set (subsets and validation split drawn with `seed`) onto `device`; DataNotFoundError
    if files are missing."""
    spec = dataset_spec(cfg)
    if cfg.name == "imagefolder":
        return _FolderBundle(cfg, spec, seed, device)
    entry = entry_for(cfg)
    if entry.streamed is not None:  # a user's Dataset read item by item each epoch (data.stream)
        sets = entry.streamed
        train, val = train_val_ids(sets.train_y, cfg.train_subset, cfg.val_size, seed, spec.name)
        test = torch.arange(len(sets.test_y))
        if cfg.test_subset is not None:
            test = balanced_subset(sets.test_y, spec.num_test, _subset_rng(seed, 1))
        return _StreamBundle(spec, entry, sets, (train, val, test), cfg.num_workers, device)
    raw = entry.load(cfg)
    check_raw(entry, raw)
    train, val = train_val_ids(raw.train_y, cfg.train_subset, cfg.val_size, seed, spec.name)
    test_x, test_y = raw.test_x, raw.test_y
    if cfg.test_subset is not None:
        ids = balanced_subset(raw.test_y, spec.num_test, _subset_rng(seed, 1))
        test_x, test_y = raw.test_x[ids], raw.test_y[ids]
    raw = _RawData(raw.train_x[train], raw.train_y[train], test_x, test_y, raw.files,
                   raw.train_x[val], raw.train_y[val])
    return _TensorBundle(spec, entry, raw, device)
