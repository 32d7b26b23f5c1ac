"""Shared fixtures for the trainer's test suite (names prefixed ``trainer_`` to stay clear of other suites).

- ``trainer_cfg``: a factory for the tiny synthetic config (ResNet-8 on 256 16x16 images, 4 epochs, dtau = 1):
  a whole training run takes about a second on one CPU core, so the contract suites can afford one per case.
- ``trainer_fmnist_cfg``: a factory for a small real Fashion-MNIST subset config (skips if the files are absent).

Both use ``train.threads=1``: on the shared 2-core machine, two torch threads under contention made a 1 s run
take 11 s (measured); one thread per test process keeps the suite's time predictable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from spfde_search.config import DEFAULT_FASHION_MNIST_ROOT, Config, apply_overrides

REPO = Path(__file__).resolve().parents[1]

TRAINER_SYNTHETIC: dict[str, Any] = {
    "seed": 0,
    "model": {"name": "resnet8", "width": 1},
    "data": {"name": "synthetic", "synthetic_train": 256, "synthetic_test": 128, "synthetic_size": 16},
    "train": {"epochs": 4, "batch_size": 64, "update_interval": 1, "device": "cpu", "threads": 1},
}

TRAINER_FMNIST: dict[str, Any] = {
    "seed": 0,
    "model": {"name": "resnet8", "width": 1},
    "data": {"name": "fashion_mnist", "train_subset": 2000, "test_subset": 1000},
    "train": {"epochs": 3, "batch_size": 64, "lr": 0.1, "weight_decay": 5e-4, "update_interval": 1, "device": "cpu", "threads": 1},
}


def _factory(base: Mapping[str, Any]) -> Callable[..., Config]:
    def make(overrides: Mapping[str, Any] | None = None, **dotted: Any) -> Config:
        """``make({"sparsity.ratio": 0.8})`` or ``make(**{"sparsity.ratio": 0.8})``: base config + dotted overrides."""
        return Config.parse(apply_overrides(base, {**(overrides or {}), **dotted}))

    return make


def fashion_mnist_available() -> bool:
    root = Path(DEFAULT_FASHION_MNIST_ROOT)
    return root.is_dir() and any(root.glob("train-images-idx3-ubyte*"))


@pytest.fixture
def trainer_cfg() -> Callable[..., Config]:
    """Factory: the tiny synthetic config plus dotted overrides."""
    return _factory(TRAINER_SYNTHETIC)


@pytest.fixture
def trainer_fmnist_cfg() -> Callable[..., Config]:
    """Factory: a 2,000-image Fashion-MNIST subset config plus dotted overrides (skips without the files)."""
    if not fashion_mnist_available():
        pytest.skip(f"Fashion-MNIST files not found in {DEFAULT_FASHION_MNIST_ROOT}")
    return _factory(TRAINER_FMNIST)


@pytest.fixture
def trainer_repo() -> Path:
    """The repository root (configs/ lives there)."""
    return REPO


def idx_gz(arr: Any) -> bytes:
    """A numpy uint8 array as a gzipped IDX file (the MNIST format)."""
    import gzip

    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return gzip.compress(head + arr.tobytes())


def write_idx_fmnist(root: Path, n_train: int = 20, n_test: int = 10, labels: dict[str, int] | None = None) -> Path:
    """A tiny Fashion-MNIST folder of gzipped IDX files (random pixels, labels k % 10); ``labels`` gives some
    label files another length ({"train": 12}), to build mismatched sets without the real 60,000 images."""
    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n, split in (("train", n_train, "train"), ("t10k", n_test, "test")):
        m = (labels or {}).get(split, n)
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(idx_gz(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(idx_gz((np.arange(m) % 10).astype(np.uint8)))
    return root


@pytest.fixture
def trainer_idx_fmnist() -> Callable[..., Path]:
    """Factory ``make(root, n_train=20, n_test=10, labels=None)`` of tiny gzipped Fashion-MNIST folders."""
    return write_idx_fmnist
