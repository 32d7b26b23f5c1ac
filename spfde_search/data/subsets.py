"""Subsets of a split: their validated sizes, the class-balanced draw, and the seeded generator per split
(train 0, test 1) shared by the tensor and folder sets."""

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

