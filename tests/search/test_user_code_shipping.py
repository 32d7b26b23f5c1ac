"""What ``--ship-user-code`` sends to the Ray workers (issue 32 item 2): the modules behind the import paths a
trial may resolve, which are the base config's ``model.name`` / ``data.name`` and every choice of a search space
that samples them; installed packages and our own are never shipped. The two-node loopback test
(tests/search/test_ray_cluster.py) runs a search whose space samples a module only the driver's folder holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from search_spaces import resolve_space
from spfde_search.config import Config
from spfde_search.search.runtime import shipped_user_code, user_import_paths
from spfde_search.search.settings import SearchSettings

NET = ("from torch import nn\n\ndef net(num_classes, in_channels):\n    return nn.Sequential(nn.Conv2d(in_channels, 4, 3), "
       "nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(4, num_classes))\n")


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder holding two modules and one package, importable from the current directory only."""
    (tmp_path / "base_nets.py").write_text(NET)
    (tmp_path / "space_nets.py").write_text(NET)
    (tmp_path / "space_pkg").mkdir()
    (tmp_path / "space_pkg" / "__init__.py").write_text("")
    (tmp_path / "space_pkg" / "nets.py").write_text(NET)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_the_modules_a_space_samples_are_shipped_with_the_base_configs(project: Path) -> None:
    space_file = project / "models.yaml"
    space_file.write_text('model.name: {type: categorical, choices: ["space_nets:net", "space_pkg.nets:net", '
                          '"resnet8", "base_nets:net", "torchvision.models:resnet18"]}\n'
                          "sparsity.ratio: {type: float, low: 0.5, high: 0.9}\n")
    base = Config.parse({"model": {"name": "base_nets:net"}})
    space = resolve_space(str(space_file), base)
    settings = SearchSettings(name="s", base_config=base.to_dict(), space=str(space_file))
    assert user_import_paths(base.to_dict(), space.distributions) == [
        "base_nets:net", "space_nets:net", "space_pkg.nets:net", "torchvision.models:resnet18"]
    shipped = shipped_user_code(settings, space.distributions)
    # the base's module, then each module of the space's choices; a package goes as its folder; torchvision is
    # installed (the cluster's to install) and resnet8 is registered: neither is shipped
    assert shipped == [str(project / "base_nets.py"), str(project / "space_nets.py"), str(project / "space_pkg")]
    assert shipped_user_code(settings) == [str(project / "base_nets.py")]  # without the space: the base's only
    off = settings.model_copy(update={"ship_user_code": False})
    assert shipped_user_code(off, space.distributions) == []


def test_a_built_in_space_ships_the_base_configs_module(project: Path) -> None:
    base = Config.parse({"model": {"name": "base_nets:net"}, "data": {"name": "synthetic"}})
    space = resolve_space("smoke", base)
    assert "model.name" not in space.distributions
    settings = SearchSettings(name="s", base_config=base.to_dict(), space="smoke")
    assert shipped_user_code(settings, space.distributions) == [str(project / "base_nets.py")]
