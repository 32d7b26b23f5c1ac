"""The resolver: registered names, import paths, kwargs, models held whole, the explicit UnitModel, and one
ConfigError line naming the field for each way a path or callable can be wrong (issue 32 items 1, 3 and 8)."""

from __future__ import annotations

import sys
from pathlib import Path

import family_nets
import golden
import pytest
import torch

from spfde_search.config import Config, ConfigError
from spfde_search.method.flops import build_profile, predict
from spfde_search.models import UnitModel, build_model


def test_import_path_gets_num_classes_and_in_channels_and_kwargs() -> None:
    m = build_model("family_nets:tiny_sequential", in_channels=1, num_classes=7)
    assert m(torch.randn(2, 1, 16, 16)).shape == (2, 7)
    v3 = build_model("family_nets:tiny_mobilenet_v3", num_classes=4)
    assert v3.head[-1][-1].out_features == 4
    wide = build_model("torchvision.models:mobilenet_v2", num_classes=3, kwargs={"width_mult": 0.5})
    assert wide.stem[0].out_channels == 16  # 32 x 0.5: the kwargs reached torchvision


def test_a_model_no_adapter_knows_is_held_whole_and_trains_sparse_but_cannot_freeze() -> None:
    m = build_model("family_nets:Opaque")
    assert not m.splittable and len(m.units) == 1
    golden.check_flops("family_nets:Opaque", prefixes=("0",))
    cfg = golden.config("family_nets:Opaque", sparse=True).with_overrides({"freezing.target_flops_reduction": 0.2})
    with pytest.raises(ConfigError, match=r"^freezing: model family_nets:Opaque cannot be split.*UnitModel"):
        predict(cfg)


def test_explicit_units_are_kept_and_freeze() -> None:
    m = build_model("family_nets:opaque_as_units")
    assert isinstance(m, UnitModel) and len(m.units) == 3
    assert golden.check_flops("family_nets:opaque_as_units") == 3
    p = predict(golden.config("family_nets:opaque_as_units", sparse=False).with_overrides({"freezing.start_epoch": 2}))
    assert max(p.frozen_prefix_per_epoch) > 0


def _module(tmp_path: Path, text: str) -> str:
    name = f"user_nets_{abs(hash(text)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(text)
    sys.path.insert(0, str(tmp_path))
    return name


@pytest.mark.parametrize(("path", "body", "message"), [
    ("mypkg.nets:build_net", None, "model.name: cannot import 'mypkg.nets' (No module named 'mypkg')"),
    ("{mod}:build_net", "x = 1\n", "model.name: '{mod}' has no attribute 'build_net'"),
    ("{mod}:x", "x = 1\n", "model.name: {mod}:x is a int, not callable"),
    ("{mod}:build_net", "import torch\ndef build_net():\n    return torch.zeros(1)\n",
     "model.name: build_net() returned a Tensor, expected an nn.Module"),
    ("{mod}:build_net", "def build_net(num_classes):\n    raise ValueError('no GPU here')\n",
     "model.name: build_net() raised ValueError: no GPU here; fix the callable or model.kwargs"),
    ("{mod}:build_net", "import torch\ndef build_net():\n    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), "
     "torch.nn.Flatten(1), torch.nn.Linear(3, 7))\n", "output of shape (1, 7), expected logits of shape (1, 10) "
     "for the data's 10 classes"),
])
def test_bad_paths_are_one_line_naming_the_field(tmp_path: Path, path: str, body: str | None, message: str) -> None:
    mod = _module(tmp_path, body) if body else ""
    cfg = Config.parse({"model": {"name": path.format(mod=mod)}, "data": {"name": "synthetic", "synthetic_size": 8}})
    with pytest.raises(ConfigError) as e:
        build_profile(cfg)
    assert "\n" not in str(e.value) and message.format(mod=mod) in str(e.value)


def test_unknown_kwargs_name_model_kwargs() -> None:
    cfg = Config.parse({"model": {"name": "family_nets:tiny_sequential", "kwargs": {"depth": 3}},
                        "data": {"name": "synthetic", "synthetic_size": 8}})
    with pytest.raises(ConfigError, match=r"^model.kwargs: tiny_sequential\(\) does not accept \['depth'\]"):
        build_profile(cfg)


def test_family_nets_module_is_the_one_tests_import() -> None:
    assert family_nets.__name__ == "family_nets"
