"""Data sets: specs from the config alone, real Fashion-MNIST, batches by sample id, augmentation, and the
checks that refuse damaged or mismatched files (counts, shapes, label range, gzip integrity)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from spfde_search.config import DEFAULT_FASHION_MNIST_ROOT, ConfigError, DataConfig
from spfde_search.data import (
    DataBundle,
    DataError,
    DataNotFoundError,
    DatasetSpec,
    balanced_subset,
    crop_flip,
    dataset_spec,
    load_data,
)

CPU = torch.device("cpu")
FMNIST = Path(DEFAULT_FASHION_MNIST_ROOT)
needs_fmnist = pytest.mark.skipif(
    not (FMNIST / "train-images-idx3-ubyte.gz").is_file(), reason="apt-get install dataset-fashion-mnist"
)


@pytest.fixture(scope="module")
def fmnist() -> Iterator[DataBundle]:
    """A small class-balanced real subset, loaded once for the module."""
    if not (FMNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    yield load_data(DataConfig(name="fashion_mnist", train_subset=1000, test_subset=500), seed=0, device=CPU)


# ---------------------------------------------------------------- specs without files


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fashion_mnist", DatasetSpec("fashion_mnist", 1, 28, 10, 60000, 10000)),
        ("mnist", DatasetSpec("mnist", 1, 28, 10, 60000, 10000)),
        ("cifar10", DatasetSpec("cifar10", 3, 32, 10, 50000, 10000)),
        ("cifar100", DatasetSpec("cifar100", 3, 32, 100, 50000, 10000)),
        ("synthetic", DatasetSpec("synthetic", 3, 16, 10, 512, 256)),
    ],
)
def test_spec_without_files(tmp_path: Path, name: str, expected: DatasetSpec) -> None:
    root = str(tmp_path / "absent")
    assert dataset_spec(DataConfig(name=name, root=root)) == expected
    sub = dataset_spec(DataConfig(name=name, root=root, train_subset=100, test_subset=50))
    assert (sub.num_train, sub.num_test, sub.num_classes) == (100, 50, expected.num_classes)
    assert not (tmp_path / "absent").exists()


def test_synthetic_spec_follows_config() -> None:
    cfg = DataConfig(
        name="synthetic", synthetic_classes=4, synthetic_size=8, synthetic_train=40, synthetic_test=20
    )
    assert dataset_spec(cfg) == DatasetSpec("synthetic", 3, 8, 4, 40, 20)


def test_subset_larger_than_set_is_config_error() -> None:
    with pytest.raises(ConfigError, match=r"data\.train_subset=60001.*60000"):
        dataset_spec(DataConfig(name="fashion_mnist", train_subset=60001))
    with pytest.raises(ConfigError, match=r"data\.test_subset=10001.*10000"):
        dataset_spec(DataConfig(name="cifar100", test_subset=10001))


# ---------------------------------------------------------------- real Fashion-MNIST


@needs_fmnist
def test_fashion_mnist_full_set_loads() -> None:
    b = load_data(DataConfig(name="fashion_mnist"), seed=0, device=CPU)
    assert b.spec == DatasetSpec("fashion_mnist", 1, 28, 10, 60000, 10000)
    assert b.train_targets.dtype == torch.long and b.train_targets.shape == (60000,)
    assert b.train_targets.min() == 0 and b.train_targets.max() == 9
    assert torch.equal(b.train_targets.bincount(), torch.full((10,), 6000))
    x, y = next(b.test_batches(10000))
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32
    assert (
        abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05
    )  # normalised with the set's mean/std
    assert torch.equal(y, b.test_targets)


def test_fashion_mnist_subset_is_balanced(fmnist: DataBundle) -> None:
    assert fmnist.spec.num_train == 1000 and fmnist.spec.num_test == 500
    assert torch.equal(fmnist.train_targets.bincount(), torch.full((10,), 100))
    assert torch.equal(fmnist.test_targets.bincount(), torch.full((10,), 50))
    ys = torch.cat([y for _, y in fmnist.test_batches(128)])
    assert torch.equal(ys, fmnist.test_targets)


@needs_fmnist
def test_fashion_mnist_subset_seeded() -> None:
    def first_images(seed: int, n: int = 1005) -> tuple[torch.Tensor, torch.Tensor]:
        b = load_data(DataConfig(name="fashion_mnist", train_subset=n, test_subset=10), seed=seed, device=CPU)
        x, _, i = next(b.train_batches(torch.arange(n), n, torch.Generator().manual_seed(0), augment=False))
        return x[torch.argsort(i)], b.train_targets

    xa, ya = first_images(0)
    xb, yb = first_images(0)
    xc, _ = first_images(1)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(xa, xc)
    counts = ya.bincount()
    assert counts.sum() == 1005 and set(counts.tolist()) == {100, 101}


def test_balanced_subset_water_fills_small_classes() -> None:
    targets = torch.tensor([0] * 2 + [1] * 100 + [2] * 100)
    ids = balanced_subset(targets, 30, np.random.default_rng(0))
    assert targets[ids].bincount().tolist() == [2, 14, 14]
    assert torch.equal(ids, torch.sort(ids).values) and ids.unique().numel() == 30
    ids = balanced_subset(targets, 31, np.random.default_rng(0))
    assert sorted(targets[ids].bincount().tolist()) == [2, 14, 15]


def test_missing_root_names_the_path(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist") as e:
        load_data(DataConfig(name="fashion_mnist", root=str(root)), seed=0, device=CPU)
    assert str(root) in str(e.value)
    assert isinstance(e.value, ConfigError)


# ---------------------------------------------------------------- damaged or mismatched files


def fmnist_cfg(root: Path) -> DataConfig:
    return DataConfig(name="fashion_mnist", root=str(root))


@pytest.mark.parametrize(("split", "images", "labels"), [("train", "train-images", "train-labels"),
                                                         ("test", "t10k-images", "t10k-labels")])
def test_fmnist_label_count_mismatch(tmp_path: Path, trainer_idx_fmnist, split: str, images: str, labels: str) -> None:
    root = trainer_idx_fmnist(tmp_path, labels={split: 7})
    with pytest.raises(DataError) as e:
        load_data(fmnist_cfg(root), seed=0, device=CPU)
    msg = str(e.value)
    assert f"{root / labels}-idx1-ubyte.gz has 7 labels" in msg and f"{images}-idx3-ubyte.gz has" in msg


def test_fmnist_wrong_image_shape(tmp_path: Path, trainer_idx_fmnist) -> None:
    from conftest import idx_gz

    root = trainer_idx_fmnist(tmp_path)
    (root / "train-images-idx3-ubyte.gz").write_bytes(idx_gz(np.zeros((20, 27, 28), dtype=np.uint8)))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz holds images of shape \(1, 27, 28\), expected \(1, 28, 28\)"):
        load_data(fmnist_cfg(root), seed=0, device=CPU)


def test_fmnist_label_out_of_range(tmp_path: Path, trainer_idx_fmnist) -> None:
    from conftest import idx_gz

    root = trainer_idx_fmnist(tmp_path)
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(idx_gz(np.arange(10, 20, dtype=np.uint8)))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz has labels in \[10, 19\], expected 0..9"):
        load_data(fmnist_cfg(root), seed=0, device=CPU)


def test_fmnist_wrong_dimensions_in_header(tmp_path: Path, trainer_idx_fmnist) -> None:
    from conftest import idx_gz

    root = trainer_idx_fmnist(tmp_path)
    (root / "train-labels-idx1-ubyte.gz").write_bytes(idx_gz(np.zeros((20, 1), dtype=np.uint8)))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz has 2 dimensions in its header, expected 1"):
        load_data(fmnist_cfg(root), seed=0, device=CPU)


def test_fmnist_partial_copy(tmp_path: Path, trainer_idx_fmnist) -> None:
    """Consistent files, but not the 60,000 + 10,000 the FLOPs prediction and subsets were computed for."""
    root = trainer_idx_fmnist(tmp_path)
    with pytest.raises(DataError, match="has 20 training images, but fashion_mnist has 60000"):
        load_data(fmnist_cfg(root), seed=0, device=CPU)


def test_truncated_gz_names_the_file(tmp_path: Path, trainer_idx_fmnist) -> None:
    root = trainer_idx_fmnist(tmp_path)
    f = root / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:-200])
    with pytest.raises(DataError, match="truncated") as e:
        load_data(fmnist_cfg(root), seed=0, device=CPU)
    assert str(f) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("where", [0.5, -6])  # inside the deflate data; inside the CRC trailer
def test_bit_flipped_gz_names_the_file(tmp_path: Path, trainer_idx_fmnist, where: float) -> None:
    root = trainer_idx_fmnist(tmp_path)
    f = root / "train-images-idx3-ubyte.gz"
    data = bytearray(f.read_bytes())
    i = int(len(data) * where) if where > 0 else len(data) + int(where)
    data[i] ^= 0x10
    f.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt") as e:
        load_data(fmnist_cfg(root), seed=0, device=CPU)
    assert str(f) in str(e.value) and "\n" not in str(e.value)


class _FakeTorchvision:
    def __init__(self, n: int, labels: list[int], shape: tuple[int, ...]) -> None:
        self.data = torch.zeros((n, *shape), dtype=torch.uint8)
        self.targets = torch.tensor(labels)
        self.raw_folder = "/data/MNIST/raw"


@pytest.mark.parametrize(
    ("name", "shape", "n", "labels", "needle"),
    [
        ("mnist", (28, 28), 10, list(range(9)), r"has 9 labels but /data/MNIST/raw \(training images\) has 10 images"),
        ("mnist", (28, 28), 10, [0] * 9 + [10], r"labels in \[0, 10\], expected 0..9"),
        ("cifar10", (32, 32, 3), 10, [0] * 9 + [-1], r"labels in \[-1, 0\], expected 0..9"),
        ("cifar100", (32, 30, 3), 10, [0] * 10, r"shape \(3, 32, 30\), expected \(3, 32, 32\)"),
        ("cifar10", (32, 32, 3), 10, [0] * 10, "has 10 training images, but cifar10 has 50000"),
    ],
)
def test_torchvision_sets_are_checked(
    monkeypatch: pytest.MonkeyPatch, name: str, shape: tuple[int, ...], n: int, labels: list[int], needle: str
) -> None:
    """MNIST and CIFAR come through torchvision; the same checks apply to what it returns."""
    import spfde_search.data.sources as data  # where the MNIST / CIFAR loaders look it up

    fake = _FakeTorchvision(n, labels, shape)
    if name.startswith("cifar"):
        fake.data = fake.data.numpy()  # type: ignore[assignment]  # torchvision's CIFAR holds numpy NHWC
        fake.targets = labels  # type: ignore[assignment]
    monkeypatch.setattr(data, "_torchvision_set", lambda *a, **k: (fake, fake))
    with pytest.raises(DataError, match=needle):
        load_data(DataConfig(name=name), seed=0, device=CPU)  # type: ignore[arg-type]


# ---------------------------------------------------------------- batches


def collect(
    b: DataBundle, indices: torch.Tensor, bs: int, seed: int, augment: bool
) -> list[tuple[torch.Tensor, ...]]:
    return list(b.train_batches(indices, bs, torch.Generator().manual_seed(seed), augment))


def test_train_batches_visit_each_index_once(fmnist: DataBundle) -> None:
    indices = torch.randperm(1000, generator=torch.Generator().manual_seed(7))[:300]
    batches = collect(fmnist, indices, 64, seed=0, augment=True)
    assert [x.shape[0] for x, _, _ in batches] == [64, 64, 64, 64, 44]
    idx = torch.cat([i for _, _, i in batches])
    assert idx.dtype == torch.long
    assert torch.equal(torch.sort(idx).values, torch.sort(indices).values)
    assert torch.equal(torch.cat([y for _, y, _ in batches]), fmnist.train_targets[idx])
    assert not torch.equal(idx, indices)  # shuffled
    assert all(x.shape[1:] == (1, 28, 28) for x, _, _ in batches)


def test_train_batches_reproducible(fmnist: DataBundle) -> None:
    indices = torch.arange(200)
    a = collect(fmnist, indices, 50, seed=3, augment=True)
    b = collect(fmnist, indices, 50, seed=3, augment=True)
    c = collect(fmnist, indices, 50, seed=4, augment=True)
    assert all(torch.equal(u, v) for ba, bb in zip(a, b, strict=True) for u, v in zip(ba, bb, strict=True))
    assert not torch.equal(a[0][2], c[0][2])


def test_augmentation_changes_pixels_not_shape(fmnist: DataBundle) -> None:
    indices = torch.arange(256)
    [(xa, _, ia)] = collect(fmnist, indices, 256, seed=0, augment=True)
    [(xp, _, ip)] = collect(fmnist, indices, 256, seed=0, augment=False)
    assert torch.equal(ia, ip)  # the order is drawn before the augmentation
    assert xa.shape == xp.shape
    changed = (xa != xp).flatten(1).any(1).float().mean()
    assert changed > 0.8  # a few samples draw the identity crop without flip: 1/(5*5*2)


def test_bad_indices(fmnist: DataBundle) -> None:
    with pytest.raises(IndexError, match=r"\[0, 1000\)"):
        next(fmnist.train_batches(torch.tensor([0, 1000]), 8, torch.Generator(), False))
    with pytest.raises(TypeError):
        next(fmnist.train_batches(torch.tensor([0.0]), 8, torch.Generator(), False))


def test_crop_flip_golden() -> None:
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4).repeat(3, 1, 1, 1)
    dy = torch.tensor([2, 2, 0])
    dx = torch.tensor([2, 2, 0])
    flip = torch.tensor([False, True, False])
    out = crop_flip(x, dy, dx, flip, pad=2)
    assert torch.equal(out[0], x[0])  # centre crop, no flip: identity
    assert torch.equal(out[1], x[1].flip(-1))
    expected = torch.zeros(4, 4)
    expected[2:, 2:] = x[2, 0, :2, :2]  # shifted down-right by the padding, zeros come in
    assert torch.equal(out[2, 0], expected)
    u8 = crop_flip(x.to(torch.uint8), dy, dx, flip, pad=2)
    assert u8.dtype == torch.uint8 and torch.equal(u8.float(), out)


# ---------------------------------------------------------------- synthetic


def test_synthetic_is_learnable() -> None:
    cfg = DataConfig(
        name="synthetic", synthetic_classes=5, synthetic_size=12, synthetic_train=500, synthetic_test=200
    )
    b = load_data(cfg, seed=0, device=CPU)
    assert b.spec == DatasetSpec("synthetic", 3, 12, 5, 500, 200)
    x, y, i = next(b.train_batches(torch.arange(500), 500, torch.Generator().manual_seed(0), augment=False))
    means = torch.stack([x[y == k].mean(0) for k in range(5)])
    gaps = torch.cdist(means.flatten(1), means.flatten(1))
    assert gaps[~torch.eye(5, dtype=torch.bool)].min() > 5  # class means differ clearly
    xt, yt = next(b.test_batches(200))
    pred = torch.cdist(xt.flatten(1), means.flatten(1)).argmin(1)  # nearest class mean
    assert (pred == yt).float().mean() > 0.9
    again = load_data(cfg, seed=1, device=CPU)  # the set is fixed; the run seed only picks subsets
    assert torch.equal(next(again.test_batches(200))[0], xt)


# ---------------------------------------------------------------- validation split


def test_auto_val_size_golden() -> None:
    from spfde_search.data.subsets import auto_val_size

    assert auto_val_size(60000, 2000, 1000) == 1000  # the demo: as many as the test set, from outside
    assert auto_val_size(60000, 10000, 10000) == 5000  # capped at 5,000
    assert auto_val_size(60000, 60000, 10000) == 5000  # nothing outside: carved, a tenth would be 6,000
    assert auto_val_size(512, 512, 256) == 51  # small set: a tenth of the training set
    assert auto_val_size(200, 150, 100) == 15  # 50 outside is fewer than 100: carve a tenth instead


def test_val_split_outside_the_training_subset_leaves_training_unchanged() -> None:
    from spfde_search.data.subsets import train_val_ids

    y = torch.arange(300) % 3
    plain, none = train_val_ids(y, 120, 0, seed=4, name="s")
    train, val = train_val_ids(y, 120, 60, seed=4, name="s")
    assert none.numel() == 0 and torch.equal(train, plain)  # the same training images as without validation
    assert not set(train.tolist()) & set(val.tolist()) and len(set(val.tolist())) == 60
    assert y[val].bincount().tolist() == [20, 20, 20]  # class-balanced
    assert torch.equal(train_val_ids(y, 120, 60, seed=4, name="s")[1], val)  # same seed: same images
    assert not torch.equal(train_val_ids(y, 120, 60, seed=5, name="s")[1], val)


def test_val_split_carved_out_of_the_training_set() -> None:
    from spfde_search.data.subsets import train_val_ids

    y = torch.arange(100) % 4
    train, val = train_val_ids(y, None, 20, seed=0, name="s")
    assert len(train) == 80 and len(val) == 20 and not set(train.tolist()) & set(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(100))
    assert y[val].bincount().tolist() == [5, 5, 5, 5]
    cfg = DataConfig(name="synthetic", synthetic_train=100, synthetic_test=40, val_size=20)
    spec = dataset_spec(cfg)
    assert (spec.num_train, spec.num_val, spec.num_test) == (80, 20, 40)
    b = load_data(cfg, seed=0, device=CPU)
    xs, ys = zip(*b.val_batches(8), strict=True)
    assert torch.cat(xs).shape[0] == 20 and torch.equal(torch.cat(ys), b.val_targets)


def test_val_size_larger_than_what_is_left() -> None:
    cfg = DataConfig(name="synthetic", synthetic_train=200, synthetic_test=40, train_subset=100, val_size=101)
    with pytest.raises(ConfigError, match=r"data.val_size=101 is larger than what is left .* use at most 100"):
        dataset_spec(cfg)
    assert dataset_spec(cfg.model_copy(update={"val_size": 100})).num_train == 100  # exactly the 100 outside


# ---------------------------------------------------------------- imagefolder


def make_folder(root: Path, per_class: dict[str, tuple[int, int]]) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, (n_train, n_val) in per_class.items():
        for split, n in (("train", n_train), ("val", n_val)):
            d = root / split / cls
            d.mkdir(parents=True)
            for k in range(n):
                Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(d / f"{k}.png")


def test_imagefolder(tmp_path: Path) -> None:
    make_folder(tmp_path, {"a": (5, 2), "b": (4, 2), "c": (3, 1)})
    cfg = DataConfig(name="imagefolder", root=str(tmp_path), image_size=16, num_workers=0, train_subset=10)
    assert dataset_spec(cfg) == DatasetSpec("imagefolder", 3, 16, 3, 10, 5)
    b = load_data(cfg, seed=0, device=CPU)
    assert sorted(b.train_targets.bincount().tolist()) == [3, 3, 4]
    indices = torch.tensor([0, 2, 3, 5, 7, 9, 1])
    run1 = collect(b, indices, 3, seed=0, augment=True)
    run2 = collect(b, indices, 3, seed=0, augment=True)
    assert [x.shape for x, _, _ in run1] == [(3, 3, 16, 16), (3, 3, 16, 16), (1, 3, 16, 16)]
    idx = torch.cat([i for _, _, i in run1])
    assert sorted(idx.tolist()) == sorted(indices.tolist())
    assert torch.equal(torch.cat([y for _, y, _ in run1]), b.train_targets[idx])
    assert all(torch.equal(u, v) for p, q in zip(run1, run2, strict=True) for u, v in zip(p, q, strict=True))
    xs, ys = zip(*b.test_batches(4), strict=True)
    assert torch.cat(xs).shape == (5, 3, 16, 16) and torch.equal(torch.cat(ys), b.test_targets)


def test_imagefolder_val_folder_is_validation_beside_a_test_folder(tmp_path: Path) -> None:
    """train/ + val/: val/ is the test set and validation comes from train/; with test/ as well, val/ is the
    validation set and test/ the test set."""
    make_folder(tmp_path, {"a": (6, 2), "b": (6, 2)})
    cfg = DataConfig(name="imagefolder", root=str(tmp_path), image_size=16, num_workers=0, val_size=4)
    assert dataset_spec(cfg) == DatasetSpec("imagefolder", 3, 16, 2, 8, 4, 4)  # carved out of train/
    from spfde_search.data.folder import _scan_folder

    _scan_folder.cache_clear()
    for cls in ("a", "b"):
        (tmp_path / "test" / cls).mkdir(parents=True)
        (tmp_path / "val" / cls / "0.png").rename(tmp_path / "test" / cls / "0.png")
    spec = dataset_spec(cfg.model_copy(update={"val_size": 2}))
    assert (spec.num_train, spec.num_val, spec.num_test) == (12, 2, 2)
    b = load_data(cfg.model_copy(update={"val_size": 2}), 0, CPU)
    assert sorted(b.val_targets.tolist()) == [0, 1] and sum(len(y) for _, y in b.val_batches(4)) == 2
    with pytest.raises(ConfigError, match="larger than the imagefolder val/ folder"):
        dataset_spec(cfg.model_copy(update={"val_size": 3}))
    _scan_folder.cache_clear()


def test_imagefolder_missing(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="data.root"):
        dataset_spec(DataConfig(name="imagefolder"))
    (tmp_path / "train").mkdir()
    with pytest.raises(DataNotFoundError) as e:
        dataset_spec(DataConfig(name="imagefolder", root=str(tmp_path)))
    assert str(tmp_path / "val") in str(e.value)


def test_imagefolder_val_class_unknown_to_train(tmp_path: Path) -> None:
    make_folder(tmp_path, {"a": (2, 1), "b": (2, 1)})
    (tmp_path / "val" / "zebra").mkdir()
    with pytest.raises(DataError, match="class folders missing from .*train: zebra"):
        dataset_spec(DataConfig(name="imagefolder", root=str(tmp_path)))


def test_imagefolder_class_without_training_images(tmp_path: Path) -> None:
    make_folder(tmp_path, {"a": (2, 1), "b": (0, 1)})
    with pytest.raises(DataError, match="without training images .*: b"):
        dataset_spec(DataConfig(name="imagefolder", root=str(tmp_path)))


@pytest.mark.parametrize("workers", [0, 1])
def test_imagefolder_unreadable_image_is_one_line(tmp_path: Path, workers: int) -> None:
    make_folder(tmp_path, {"a": (2, 1), "b": (2, 1)})
    bad = tmp_path / "val" / "b" / "0.png"
    bad.write_bytes(b"not a png")
    b = load_data(DataConfig(name="imagefolder", root=str(tmp_path), image_size=16, num_workers=workers), 0, CPU)
    with pytest.raises(DataError) as e:
        list(b.test_batches(2))
    assert str(bad) in str(e.value) and "\n" not in str(e.value) and "Traceback" not in str(e.value)
