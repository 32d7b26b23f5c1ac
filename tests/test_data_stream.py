"""User Datasets through the DataLoader path (issue 32 item 5): a ``Dataset`` too large to hold on the device,
or any with ``data.stream: true``, is read item by item every epoch instead of once, and keeps what the trainer
needs from it: sample ids for sieving, the validation split, and exact FLOPs. Tensor sets and small sets stay on
the device."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import pytest
import torch

from spfde_search.config import Config, ConfigError
from spfde_search.data import dataset_spec, load_data
from spfde_search.data.custom import entry_for
from spfde_search.method.flops import predict
from spfde_search.trainer import Trainer

FASHION = Path("/usr/share/datasets/fashion-mnist")

LAZY = '''
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset


class LazyIdx(Dataset):
    """Fashion-MNIST from its uncompressed IDX files, one image decoded per item (np.memmap): nothing is read
    until asked for. `reads` counts the items asked for in this process; no `targets`, so the labels are read
    through the items too."""

    def __init__(self, root, split, n):
        self.images = np.memmap(Path(root) / f"{split}-images-idx3-ubyte", np.uint8, "r", offset=16).reshape(-1, 28, 28)
        self.labels = np.memmap(Path(root) / f"{split}-labels-idx1-ubyte", np.uint8, "r", offset=8)
        self.n, self.reads = n, 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        self.reads += 1
        return torch.from_numpy(np.array(self.images[i])), int(self.labels[i])


def fashion(root, n_train=1200, n_test=300):
    return LazyIdx(root, "train", n_train), LazyIdx(root, "t10k", n_test)


def ragged():
    items = [(torch.zeros(3, 8, 8), 0), (torch.zeros(3, 8, 8), 1), (torch.zeros(3, 7, 8), 0)]
    return items, items
'''


@pytest.fixture()
def lazy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """The module holding the lazy Dataset, and a folder with Fashion-MNIST's IDX files uncompressed."""
    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST is not in {FASHION}")
    root = tmp_path / "fashion"
    root.mkdir()
    for split in ("train", "t10k"):
        for part in ("images-idx3", "labels-idx1"):
            name = f"{split}-{part}-ubyte"
            (root / name).write_bytes(gzip.decompress((FASHION / f"{name}.gz").read_bytes()))
    (tmp_path / "lazy_fashion.py").write_text(LAZY)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("lazy_fashion", None)
    return "lazy_fashion", root


def _config(mod: str, root: Path, epochs: int = 3, **data: object) -> Config:
    return Config.parse({
        "model": {"name": "resnet8"},
        "data": {"name": f"{mod}:fashion", "root": str(root), "val_size": 200, "num_workers": 0, **data},
        "train": {"epochs": epochs, "batch_size": 64, "update_interval": 1, "device": "cpu", "threads": 1},
        "sparsity": {"algorithm": "mest", "ratio": 0.8}, "sieving": {"fraction": 0.3}})


@pytest.mark.slow
def test_a_streamed_dataset_is_read_every_epoch_with_sieving_and_exact_flops(lazy: tuple[str, Path]) -> None:
    cfg = _config(*lazy, stream=True)
    tr = Trainer(cfg)
    assert type(tr.data).__module__ == "spfde_search.data.stream"  # the DataLoader path, not the device tensors
    sets = entry_for(cfg.data).streamed
    assert sets is not None
    train, test = sets.train, sets.test
    spec = dataset_spec(cfg.data)
    assert (spec.num_train, spec.num_val, spec.num_test, spec.num_classes) == (1000, 200, 300, 10)
    before = (train.reads, test.reads)
    metrics = list(tr.epochs())
    # read again in every epoch, item by item: each training sample the epoch trains on (the partial set after
    # sieving), the validation images at each evaluation, the test set at the end; held whole, neither would grow
    evals = sum(m.val_accuracy is not None for m in metrics)
    assert train.reads - before[0] == sum(m.partial_size for m in metrics) + spec.num_val * evals
    assert test.reads - before[1] == spec.num_test
    assert evals == 3 and metrics[-1].test_accuracy is not None
    assert min(m.partial_size for m in metrics) < spec.num_train  # sieving removed samples by their ids
    s = tr.summary()
    assert s["train_flops"] == s["predicted_train_flops"] == predict(cfg).train_flops > 0
    assert s["val_accuracy"] > 0.3  # it learns (chance: 0.1)


@pytest.mark.slow
def test_streamed_and_held_whole_train_the_same_run(lazy: tuple[str, Path]) -> None:
    """The same batches either way (order, crops and flips from the same generator; the statistics of a set under
    STATS_SAMPLE images are its own), so the runs match number for number; the streamed one through 2 workers."""
    small = {"kwargs": {"n_train": 700, "n_test": 200}, "val_size": 100}
    held = Trainer(_config(*lazy, epochs=2, stream=False, **small))
    assert type(held.data).__module__ == "spfde_search.data.tensor"
    streamed = Trainer(_config(*lazy, epochs=2, stream=True, num_workers=2, **small))
    assert type(streamed.data).__module__ == "spfde_search.data.stream"
    a, b = ([m.as_dict() for m in t.epochs()] for t in (held, streamed))
    for x, y in zip(a, b, strict=True):
        for k in ("loss", "train_accuracy", "val_accuracy", "test_accuracy", "train_flops", "partial_size"):
            assert x[k] == y[k], (k, x, y)


def test_a_small_dataset_stays_on_the_device_and_a_large_one_streams(
        lazy: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config(*lazy)  # data.stream unset: by size
    assert type(load_data(cfg.data, 0, torch.device("cpu"))).__module__ == "spfde_search.data.tensor"
    import spfde_search.data.custom as custom

    monkeypatch.setattr(custom, "STREAM_ABOVE", 1000 * 28 * 28)  # 1,200 images of 784 bytes are over it
    monkeypatch.setattr(custom, "_CACHE", {})
    assert type(load_data(cfg.data, 0, torch.device("cpu"))).__module__ == "spfde_search.data.stream"


def test_a_streamed_set_with_images_of_two_shapes_is_one_line(lazy: tuple[str, Path]) -> None:
    cfg = Config.parse({"data": {"name": f"{lazy[0]}:ragged", "stream": True, "num_workers": 0}})
    with pytest.raises(ConfigError) as e:
        dataset_spec(cfg.data)
    assert str(e.value) == ("data.name: the training images have different shapes ((3, 8, 8) at 0, (3, 7, 8) at 2); "
                            "give them one size in the data callable (e.g. a torchvision Resize + CenterCrop transform)")
