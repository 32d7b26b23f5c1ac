"""The data contract (issue 32 item 5): ``data.name: module:callable`` returns (train, test) as tensors or as
Datasets of (image, label); class count, image shape and sizes come from the data, and so do chance level, the
classifier's size and the validation split. Bad data is one ConfigError line naming data.name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from spfde_search.config import Config, ConfigError
from spfde_search.data import dataset_spec, load_data
from spfde_search.plots import chance_of_config
from spfde_search.trainer import Trainer

USER_DATA = '''
import torch
from torch.utils.data import TensorDataset

def blobs(n_train=120, n_test=60, classes=4, size=12, as_dataset=False, root=None):
    g = torch.Generator().manual_seed(0)
    def part(n):
        y = torch.arange(n) % classes
        x = (torch.randn(n, 1, size, size, generator=g) + y.view(-1, 1, 1, 1)).float()
        return (TensorDataset(x, y) if as_dataset else (x, y))
    return part(n_train), part(n_test)

def one_class():
    x = torch.zeros(20, 3, 8, 8)
    return (x, torch.zeros(20, dtype=torch.long)), (x, torch.ones(20, dtype=torch.long))

def ragged():
    items = [(torch.zeros(3, 8, 8), 0), (torch.zeros(3, 8, 8), 1), (torch.zeros(3, 7, 8), 0)]
    return items, items

def not_square():
    x = torch.zeros(20, 3, 8, 6)
    y = torch.arange(20) % 2
    return (x, y), (x, y)

def one_thing():
    return torch.zeros(3)
'''


@pytest.fixture()
def user_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "user_data_mod.py").write_text(USER_DATA)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("user_data_mod", None)
    return "user_data_mod"


@pytest.mark.parametrize("as_dataset", [False, True], ids=["tensors", "dataset"])
def test_shape_classes_and_sizes_come_from_the_data(user_data: str, as_dataset: bool) -> None:
    cfg = Config.parse({"data": {"name": f"{user_data}:blobs", "kwargs": {"as_dataset": as_dataset, "classes": 5},
                                 "val_size": 20}})
    spec = dataset_spec(cfg.data)
    assert (spec.channels, spec.image_size, spec.num_classes) == (1, 12, 5)
    assert (spec.num_train, spec.num_test, spec.num_val) == (100, 60, 20)  # validation carved out of 120
    assert chance_of_config(cfg.to_dict()) == pytest.approx(1 / 5)
    bundle = load_data(cfg.data, 0, torch.device("cpu"))
    x, _ = next(iter(bundle.test_batches(64)))
    assert x.shape == (60, 1, 12, 12) and abs(float(x.mean())) < 0.2  # normalised with the data's own statistics


def test_a_custom_model_trains_on_custom_data(user_data: str) -> None:
    cfg = Config.parse({"model": {"name": "resnet8"}, "data": {"name": f"{user_data}:blobs", "augment": False},
                        "train": {"epochs": 1, "batch_size": 32, "update_interval": 1, "device": "cpu"}})
    tr = Trainer(cfg)
    assert tr.model.head.fc.out_features == 4  # the classifier follows the data's class count
    s = tr.fit()
    assert s["train_flops"] == s["predicted_train_flops"] > 0


@pytest.mark.parametrize(("fn", "message"), [
    ("one_class", "data.name: {mod}:one_class's training set has one class (0); a classifier needs at least two"),
    ("ragged", "data.name: the training images have different shapes ((3, 8, 8) at 0, (3, 7, 8) at 2)"),
    ("not_square", "data.name: {mod}:not_square has 8x6 images; make them square"),
    ("one_thing", "data.name: {mod}:one_thing returned a Tensor; return (train, test)"),
    ("nope", "data.name: '{mod}' has no attribute 'nope'"),
])
def test_bad_data_is_one_line_naming_data_name(user_data: str, fn: str, message: str) -> None:
    cfg = Config.parse({"data": {"name": f"{user_data}:{fn}"}})
    with pytest.raises(ConfigError) as e:
        dataset_spec(cfg.data)
    assert "\n" not in str(e.value) and message.format(mod=user_data) in str(e.value)
