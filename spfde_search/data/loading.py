"""The two entry points: `dataset_spec` (shapes and subset sizes from the config alone, except imagefolder,
which counts its folder) and `load_data` (the configured set, checked and subset, on the device)."""

from __future__ import annotations

import torch

from spfde_search.config import DataConfig

from .bundle import DataBundle
from .checks import check_raw
from .folder import _folder_root, _FolderBundle, _scan_folder
from .spec import DATASETS, DatasetSpec, _RawData
from .subsets import _subset_rng, _subset_size, balanced_subset
from .tensor import _TensorBundle


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


def load_data(cfg: DataConfig, seed: int, device: torch.device) -> DataBundle:
    """Load the configured set (subsets drawn with `seed`) onto `device`; DataNotFoundError if files are missing."""
    spec = dataset_spec(cfg)
    if cfg.name == "imagefolder":
        return _FolderBundle(cfg, spec, seed, device)
    entry = DATASETS.get(cfg.name)(cfg)
    raw = entry.load(cfg)
    check_raw(entry, raw)
    if cfg.train_subset is not None:
        ids = balanced_subset(raw.train_y, spec.num_train, _subset_rng(seed, 0))
        raw = _RawData(raw.train_x[ids], raw.train_y[ids], raw.test_x, raw.test_y)
    if cfg.test_subset is not None:
        ids = balanced_subset(raw.test_y, spec.num_test, _subset_rng(seed, 1))
        raw = _RawData(raw.train_x, raw.train_y, raw.test_x[ids], raw.test_y[ids])
    return _TensorBundle(spec, entry, raw, device)

