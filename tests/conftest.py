"""Shared fixtures for the trainer's test suite (names prefixed ``trainer_`` to stay clear of other suites).

- ``trainer_cfg``: a factory for the tiny synthetic config (ResNet-8 on 256 16x16 images, 4 epochs, dtau = 1):
  a whole training run takes about a second on one CPU core, so the contract suites can afford one per case.
- ``trainer_fmnist_cfg``: a factory for a small real Fashion-MNIST subset config (skips if the files are absent).

Both use ``train.threads=1``: on the shared 2-core machine, two torch threads under contention made a 1 s run
take 11 s (measured); one thread per test process keeps the suite's time predictable.

``checkout_left_alone`` (session, autouse) fails the run if the suite leaves anything new or changed in the
checkout, ignored files included: a test that ran the CLI from the repository root once wrote the user's own
``./mlflow.db``, so ``spfde pareto`` showed a test search as the latest. Tests use their ``tmp_path``, and every
test runs in a fresh temporary working folder (``cwd_in_a_temporary_folder``), so a command that writes to
its defaults (``./mlflow.db``, ``./exported``) writes there, for in-process CLI calls and child processes alike.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from spfde_search.config import DEFAULT_FASHION_MNIST_ROOT, Config, apply_overrides

REPO = Path(__file__).resolve().parents[1]
# what running Python and the linters leaves in a checkout by design (all git-ignored)
_CACHES = {".venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}

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


def _fingerprint(path: Path) -> tuple[int, int, int]:
    """(files, total bytes, newest mtime) of a file or a whole folder, caches skipped: a test that writes into an
    already present ``mlflow.db`` or ``runs/`` changes it even though the path itself is not new."""
    if not path.is_dir():
        st = path.lstat() if path.exists() or path.is_symlink() else None
        return (1, st.st_size, st.st_mtime_ns) if st else (0, 0, 0)
    files, size, newest = 0, 0, path.stat().st_mtime_ns
    for root, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if d not in _CACHES and not d.endswith(".egg-info")]
        for d in dirs:
            newest = max(newest, (Path(root) / d).lstat().st_mtime_ns)
        for n in names:
            st = (Path(root) / n).lstat()
            files, size, newest = files + 1, size + st.st_size, max(newest, st.st_mtime_ns)
    return files, size, newest


def checkout_state(repo: Path) -> dict[str, tuple[str, tuple[int, int, int]]] | None:
    """Every untracked or ignored path ``git status --porcelain --ignored`` lists, caches aside, with its
    fingerprint; None outside a git checkout (an unpacked sdist has nothing to guard). Tracked files are left
    out: a person edits them while the suite runs, and a test that rewrote one would show in ``git diff``."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--ignored", "-z"], cwd=repo, capture_output=True,
                             text=True, check=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    entries, state = iter(out.split("\0")), {}
    for entry in entries:
        if not entry:
            continue
        code, path = entry[:2], entry[3:]
        if code[0] in "RC":  # a rename or copy: its source path follows as the next field
            next(entries, None)
        if code not in ("??", "!!"):
            continue
        parts = Path(path.rstrip("/")).parts
        if any(p in _CACHES or p.endswith(".egg-info") for p in parts):
            continue
        state[path] = (code, _fingerprint(repo / path))
    return state


@pytest.fixture(autouse=True)
def cwd_in_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test starts in its own empty folder, apart from its ``tmp_path`` (which some tests list)."""
    cwd = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(cwd)
    return cwd


@pytest.fixture(scope="session", autouse=True)
def checkout_left_alone() -> Iterator[None]:
    """After the whole session, the checkout holds nothing new and nothing changed (``git status --ignored``)."""
    before = checkout_state(REPO)
    yield
    after = checkout_state(REPO) if before is not None else None
    if before is None or after is None:
        return
    touched = sorted(p for p, v in after.items() if before.get(p) != v)
    assert not touched, (f"the test session wrote into the checkout {REPO}: {touched}; tests must write only "
                         "under their tmp_path (cwd=tmp_path, --storage-path and --tracking-uri into it)")


@pytest.fixture(scope="session")
def _empty_mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, made once per session: making one runs MLflow's schema migrations, which took
    35 s on the loaded 2-core machine (issue 34 item 9) against 0.5 s to open a copy."""
    import contextlib

    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow-template")
    with contextlib.chdir(folder):  # before any test's own working folder: MLflow writes nothing into the checkout
        MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
    return folder / "mlflow.db"


@pytest.fixture
def fresh_mlflow_store(tmp_path: Path, _empty_mlflow_store: Path) -> str:
    """The URI of a new, empty MLflow SQLite store at ``tmp_path / "mlflow.db"`` (a copy of the session's empty
    store): for tests whose subject is a search, not how MLflow makes a store (tests/tracking covers that)."""
    import shutil

    shutil.copyfile(_empty_mlflow_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def read_only() -> Iterator[Callable[[Path], Path]]:
    """``read_only(folder)`` makes an existing folder read-only for real, with what it holds kept: a read-only bind
    mount onto itself as root (root ignores permission bits), ``chmod 0555`` otherwise. Undone at the end."""
    undo: list[Callable[[], object]] = []

    def make(folder: Path) -> Path:
        if os.geteuid() != 0:
            folder.chmod(0o555)
            undo.append(lambda: folder.chmod(0o755))
            return folder
        for cmd in (["mount", "--bind", str(folder), str(folder)], ["mount", "-o", "remount,bind,ro", str(folder)]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                if undo or cmd[1] == "-o":
                    subprocess.run(["umount", "-l", str(folder)], check=False)
                pytest.skip(f"cannot make {folder} read-only as root: {r.stderr.strip()}")
        undo.append(lambda: subprocess.run(["umount", "-l", str(folder)], check=False))
        return folder

    yield make
    for u in reversed(undo):
        u()
