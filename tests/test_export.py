"""``spfde export``: picks and filters on the frontier, complete configs with a provenance header."""

from __future__ import annotations

import pandas as pd
import pytest
import test_tracking_support as support
import yaml

from spfde_search.config import Config, load_config
from spfde_search.export import PICKS, choose, export_search

synced_store = support.synced_store  # shared fixture: a store synced from make_records()

FRONT = pd.DataFrame({
    "trial_id": ["a", "b", "c", "d"], "run_id": ["ra", "rb", "rc", "rd"],
    "test_accuracy": [0.70, 0.80, 0.82, 0.83], "train_flops": [1e11, 2e11, 5e11, 1e12],
    "flops_ratio": [0.1, 0.2, 0.5, 1.0],
})


def test_picks():
    assert choose(FRONT, "max-accuracy")["trial_id"].tolist() == ["d"]
    assert choose(FRONT, "min-flops")["trial_id"].tolist() == ["a"]
    assert choose(FRONT, "all")["trial_id"].tolist() == ["a", "b", "c", "d"]
    assert choose(FRONT, "knee")["trial_id"].tolist() == ["b"]  # the bend: +10 points for 1e11 more FLOPs
    assert set(choose(FRONT, "all")["pick"]) == {"all"}
    with pytest.raises(ValueError, match="knee, max-accuracy, min-flops, all"):
        choose(FRONT, "best")


def test_filters():
    assert choose(FRONT, "max-accuracy", max_flops=6e11)["trial_id"].tolist() == ["c"]
    assert choose(FRONT, "max-accuracy", max_flops=0.25)["trial_id"].tolist() == ["b"]  # <= 1: a FLOPs ratio
    assert choose(FRONT, "min-flops", min_accuracy=0.81)["trial_id"].tolist() == ["c"]
    assert choose(FRONT, "min-flops", min_accuracy=81)["trial_id"].tolist() == ["c"]  # percent accepted
    assert choose(FRONT, "all", max_flops=6e11, min_accuracy=0.75)["trial_id"].tolist() == ["b", "c"]
    assert choose(FRONT, "knee", min_accuracy=0.99).empty
    with pytest.raises(ValueError, match="positive"):
        choose(FRONT, "all", max_flops=-1)


def test_picks_read_validation_never_test():
    """With validation accuracies every pick and filter reads them: the test order (d best) is ignored."""
    front = FRONT.assign(val_accuracy=[0.71, 0.79, 0.85, 0.84])  # on validation c beats d
    assert choose(front, "max-accuracy")["trial_id"].tolist() == ["c"]
    assert choose(front, "max-accuracy", max_flops=0.25)["trial_id"].tolist() == ["b"]
    assert choose(front, "min-flops", min_accuracy=0.845)["trial_id"].tolist() == ["c"]  # test 0.82 < 0.845



@pytest.mark.mlflow
def test_export_writes_complete_configs_with_a_provenance_header(synced_store, tmp_path):
    uri, recs = synced_store["uri"], synced_store["records"]
    by_id = {r.trial_id: r for r in recs}
    for pick in PICKS:
        out = tmp_path / pick
        written = export_search("s1", pick, out, tracking_uri=uri)
        assert written and all(w.path.parent == out for w in written)
        for w in written:
            text = w.path.read_text()
            head = [line for line in text.splitlines() if line.startswith("#")]
            assert any(w.run_id in line for line in head)
            assert any(f"{w.train_flops:.0f}" in line for line in head)
            assert any("test accuracy" in line for line in head) and any("ratio" in line for line in head)
            cfg = load_config(w.path)
            assert cfg == Config.parse(by_id[w.trial_id].config)  # exactly what the trial ran
            assert yaml.safe_load(text)["sparsity"]["ratio"] == by_id[w.trial_id].config["sparsity"]["ratio"]
    assert sorted(w.trial_id for w in export_search("s1", "all", tmp_path / "x", tracking_uri=uri)) == \
        ["t0", "t1", "t3", "t4"]
    assert [w.trial_id for w in export_search("s1", "max-accuracy", tmp_path / "y", tracking_uri=uri,
                                              max_flops=0.35)] == ["t0"]
    with pytest.raises(LookupError, match="passes the filters"):
        export_search("s1", "knee", tmp_path / "z", tracking_uri=uri, min_accuracy=0.99)


@pytest.mark.mlflow
def test_export_cli_errors_are_one_line(synced_store, tmp_path):
    from typer.testing import CliRunner

    from spfde_search.cli import app

    uri = synced_store["uri"]
    r = CliRunner().invoke(app, ["export", "s1", "--pick", "best", "--out", str(tmp_path), "--tracking-uri", uri])
    assert r.exit_code == 2 and "--pick must be one of" in r.output
    r = CliRunner().invoke(app, ["export", "zz", "--out", str(tmp_path), "--tracking-uri", uri])
    assert r.exit_code == 2 and "no search named 'zz'" in r.output
    r = CliRunner().invoke(app, ["export", "s1", "--pick", "min-flops", "--out", str(tmp_path / "o"),
                                 "--tracking-uri", uri])
    assert r.exit_code == 0, r.output
    assert "trial t1" in r.stdout and len(list((tmp_path / "o").glob("*.yaml"))) == 1
