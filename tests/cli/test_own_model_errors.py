"""Bad user code through the commands (issue 32 item 8): one ``error:`` line naming the field, before any trial
starts, nothing written; and freezing asked of a model that cannot be split is one line too, while a space that
only samples what the model allows (``smoke``: freezing as a share of what is reachable) still searches it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from spfde_search.cli import app

OPAQUE = '''
import torch
from torch import nn

class Opaque(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.a, self.b = nn.Conv2d(in_channels, 8, 3, padding=1), nn.Conv2d(in_channels, 8, 1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.a(x) + self.b(x)).mean((2, 3)))

def broken(num_classes):
    raise RuntimeError("weights file missing")

def lazy(num_classes, in_channels):
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.LazyLinear(num_classes))
'''
SYNTH = ["--set", "data.name=synthetic", "--set", "train.epochs=2", "--set", "train.update_interval=1"]


@pytest.fixture()
def user_mod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "cli_user_nets.py").write_text(OPAQUE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "cli_user_nets"


def one_error(args: list[str]) -> str:
    r = CliRunner().invoke(app, args)
    lines = [ln for ln in r.output.splitlines() if ln.strip() and not ln.startswith("using the built-in")]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


@pytest.mark.parametrize(("name", "message"), [
    ("nopkg.nets:build_net", "model.name: cannot import 'nopkg.nets' (No module named 'nopkg')"),
    ("{mod}:build_net", "model.name: '{mod}' has no attribute 'build_net'"),
    ("{mod}:broken", "model.name: broken() raised RuntimeError: weights file missing; fix the callable or model.kwargs"),
    # PyTorch's "Can't access the shape of an uninitialized parameter" traceback from the FLOPs profile before
    ("{mod}:lazy", "model.name: lazy() uses lazy layers (LazyLinear '3') whose weight shapes are unknown until a "
                   "first forward; give their input sizes (in_features, in_channels), or build the model on one "
                   "input before returning it"),
])
def test_bad_model_paths_in_search_flops_and_train(user_mod: str, tmp_path: Path, name: str, message: str) -> None:
    model = ["--set", f"model.name={name.format(mod=user_mod)}"]
    store = ["--storage-path", str(tmp_path / "results"), "--tracking-uri", "none", "--name", "bad"]
    lines = {one_error(args) for args in (["search", "--space", "smoke", *model, *SYNTH, *store],
                                          ["flops", *model, *SYNTH], ["train", *model, *SYNTH])}
    assert len(lines) == 1, lines  # search says it as train and flops do: no prefix of its own
    assert lines.pop().startswith(f"error: {message.format(mod=user_mod)}")
    assert not (tmp_path / "results").exists()


def test_freezing_asked_of_a_model_held_whole(user_mod: str, tmp_path: Path) -> None:
    model = ["--set", f"model.name={user_mod}:Opaque", *SYNTH]
    line = one_error(["flops", *model, "--set", "freezing.start_epoch=1"])
    assert f"freezing: model {user_mod}:Opaque cannot be split into units" in line and "UnitModel" in line
    space = tmp_path / "freeze.yaml"
    space.write_text("freezing.target_flops_reduction: {type: float, low: 0.1, high: 0.3}\n")
    line = one_error(["search", "--space", str(space), *model, "--storage-path", str(tmp_path / "results"),
                      "--tracking-uri", "none", "--name", "bad"])
    assert "cannot be split into units" in line
    assert not (tmp_path / "results").exists()
