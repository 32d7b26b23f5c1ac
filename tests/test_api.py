"""The notebook API (issue 32 item 6): ``spfde_search.run_search`` with a dict config naming the example package
by import path, a real tiny search on the embedded Ray, and the result object's front, knee, budget answer and
export; bad input raises before Ray starts, with the command's one-line message."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

import spfde_search
from spfde_search.config import ConfigError, load_config
from spfde_search.search import SearchError

ROOT = Path(__file__).resolve().parent.parent
CUSTOM = {
    "model.name": "examples.nets:small_net", "model.kwargs": {"width": 8, "blocks": 2},
    "data.name": "examples.data:stripes", "data.kwargs": {"n_train": 320, "n_test": 64, "classes": 2},
    "data.augment": False, "train.epochs": 2, "train.update_interval": 1, "train.batch_size": 32,
}


def test_import_spfde_search_stays_light_and_names_the_api() -> None:
    assert "run_search" in spfde_search.__all__ and callable(spfde_search.run_search)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        spfde_search.nope  # noqa: B018


def test_bad_input_raises_before_ray_starts(tmp_path: Path) -> None:
    with pytest.raises((ConfigError, SearchError), match=r"model.name: cannot import 'nopkg' \(No module named 'nopkg'\)"):
        spfde_search.run_search({**CUSTOM, "model.name": "nopkg:net"}, space="smoke", num_samples=1,
                                storage_path=str(tmp_path), tracking_uri="none", progress=False)
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.ray
@pytest.mark.slow
def test_a_notebook_search_of_the_custom_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))  # `examples` importable, as from the project's folder
    result = spfde_search.run_search(
        CUSTOM, space="smoke", num_samples=2, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        name="nb", storage_path=str(tmp_path / "results"), max_concurrent=1, num_cpus=1, sampler="random",
        seed=0, progress=False)
    assert isinstance(result.front, pd.DataFrame) and len(result.table) == 2
    assert len(result.front) >= 1 and result.metric == "val_accuracy"
    knee = result.knee
    assert knee is not None and knee["trial_id"] in set(result.front["trial_id"])
    best = result.at_budget(1.0)
    assert best is not None and best[result.metric] == result.front[result.metric].max()
    assert result.at_budget(1e-9) is None
    files = result.export(tmp_path / "exported")
    assert [f.name for f in files] == [f"nb-knee-{knee['trial_id']}.yaml"]
    again = load_config(files[0])
    assert again.to_dict() == json.loads(knee["config"]) and again.model.name == "examples.nets:small_net"
    assert (tmp_path / "mlflow.db").exists()
