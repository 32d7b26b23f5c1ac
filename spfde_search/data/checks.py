"""The data errors and the checks that refuse a loaded set whose counts, shapes, dtype or labels disagree
with its registered entry (so a damaged or mismatched copy never trains silently)."""

from __future__ import annotations

import torch

from spfde_search.config import ConfigError

from .spec import DatasetEntry, _RawData


class DataNotFoundError(ConfigError):
    """The data set's files are not where the config says; the message says where we looked and how to fix it."""


class DataError(ConfigError):
    """The data set's files are there but unusable (truncated, corrupt, or images and labels that disagree);
    the message names the file and what is wrong. Checked when loading, so a bad set never trains silently."""


def check_raw(entry: DatasetEntry, raw: _RawData) -> None:
    """DataError unless both splits have as many labels as images, the entry's image shape and dtype, labels
    in [0, num_classes) and the set's known sizes (which the FLOPs prediction and subsets were computed from)."""
    fx, fy, vx, vy = raw.files
    want = (entry.channels, entry.image_size, entry.image_size)
    splits = (("training", raw.train_x, raw.train_y, fx, fy, entry.num_train),
              ("test", raw.test_x, raw.test_y, vx, vy, entry.num_test))
    for split, x, y, x_src, y_src, _ in splits:
        if y.ndim != 1:
            raise DataError(f"{entry.name}: {y_src} holds labels of shape {tuple(y.shape)}, expected one label per image")
        if len(x) != len(y):
            raise DataError(
                f"{entry.name}: {y_src} has {len(y)} labels but {x_src} has {len(x)} images; the {split} images "
                "and labels must come from the same copy of the set"
            )
        if tuple(x.shape[1:]) != want:
            raise DataError(f"{entry.name}: {x_src} holds images of shape {tuple(x.shape[1:])}, expected {want}")
        if entry.scale != 1.0 and x.dtype != torch.uint8:
            raise DataError(f"{entry.name}: {x_src} holds {x.dtype} pixels, expected uint8")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= entry.num_classes):
            raise DataError(
                f"{entry.name}: {y_src} has labels in [{int(y.min())}, {int(y.max())}], expected 0..{entry.num_classes - 1}"
            )
    for split, x, _, x_src, _, size in splits:  # after both splits' own checks: those name the broken file
        if len(x) != size:
            raise DataError(
                f"{entry.name}: {x_src} has {len(x)} {split} images, but {entry.name} has {size}: a partial or "
                "different copy; replace it with the complete set (data.train_subset / data.test_subset take fewer)"
            )

