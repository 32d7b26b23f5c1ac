"""Subsets of a split: their validated sizes, the class-balanced draw, the validation split's size and origin,
and the seeded generator per split (train 0, test 1, validation 2) shared by the tensor and folder sets."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from spfde_search.config import ConfigError


def _subset_size(field: str, asked: int | None, size: int, name: str, split: str) -> int:
    if asked is None:
        return size
    if asked > size:
        raise ConfigError(
            f"{field}={asked} is larger than the {name} {split} set ({size} samples); "
            f"use at most {size} or null for the whole set"
        )
    return asked


AUTO_VAL_MAX = 5000  # the automatic validation size of a search: min(5000, the test set's size)


def auto_val_size(full: int, used: int, num_test: int) -> int:
    """The validation size a search uses when ``data.val_size`` is unset: as many images as the test set
    evaluates (at most 5,000), so selection is as precise as the report and validation costs no more per
    evaluation than the test set did; if there are not that many training images outside the training
    subset, a tenth of the training set (carved out of it) instead."""
    v = min(AUTO_VAL_MAX, num_test)
    return v if full - used >= v else min(v, used // 10)


def val_split(asked: int | None, full: int, used: int, name: str) -> tuple[int, bool]:
    """(validation size, drawn from outside the training subset?) for ``data.val_size`` = ``asked``.

    ``full`` training images exist and ``used`` of them train (``data.train_subset``). Validation comes from the
    ``full - used`` images outside when they suffice (the training set stays exactly what it was), else it is
    carved out of the training set, at most half of it; larger is a ConfigError naming the maximum.
    """
    v = asked or 0
    if v == 0:
        return 0, False
    room = full - used
    if room >= v:
        return v, True
    if v <= used // 2:
        return v, False
    raise ConfigError(
        f"data.val_size={v} is larger than what is left for validation: {name} has {room} training images outside "
        f"the {used} that train, and at most half of the training set ({used // 2}) may be carved out; use at most "
        f"{max(room, used // 2)}, or 0 for no validation (then the search selects on test)"
    )


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



def train_val_ids(targets: Tensor, train_subset: int | None, val_size: int | None, seed: int,
                  name: str) -> tuple[Tensor, Tensor]:
    """(training ids, validation ids) into a split of ``len(targets)`` images. The training subset is drawn
    exactly as without validation (generator (seed, 0)); the validation images, class-balanced with generator
    (seed, 2), come from outside it or are carved out of it (``val_split``). The same seed gives the same
    images to every trial of a search."""
    full = len(targets)
    used = full if train_subset is None else train_subset
    train = torch.arange(full) if train_subset is None else balanced_subset(targets, used, _subset_rng(seed, 0))
    v, outside = val_split(val_size, full, used, name)
    if v == 0:
        return train, torch.zeros(0, dtype=torch.long)
    if outside:
        rest = torch.ones(full, dtype=torch.bool)
        rest[train] = False
        pool = rest.nonzero().reshape(-1)
        return train, pool[balanced_subset(targets[pool], v, _subset_rng(seed, 2))]
    pos = balanced_subset(targets[train], v, _subset_rng(seed, 2))
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[pos] = False
    return train[keep], train[pos]
