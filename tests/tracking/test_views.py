"""The saved runs-table view ``spfde ui`` links to (``tracking/views.py``) and the URLs it prints."""

from __future__ import annotations

import json

import pytest

from spfde_search.tracking import run_url
from spfde_search.tracking.views import VIEW_TAG_PREFIX, ensure_runs_view, runs_view_key, runs_view_state


def test_view_state_filters_the_trials_and_shows_accuracy_flops_and_pareto():
    st = runs_view_state("it's", ["loss", "train_accuracy", "test_accuracy", "val_accuracy", "flops_ratio"])
    assert st["searchFilter"] == "tags.`spfde.search` = 'it\\'s' and tags.`spfde.role` = 'trial'"
    # validation first (what selects), then test (the report)
    assert st["selectedColumns"] == ["metrics.`val_accuracy`", "metrics.`test_accuracy`", "metrics.`train_accuracy`",
                                     "metrics.`flops_ratio`", "tags.`pareto`"]
    assert (st["orderByKey"], st["orderByAsc"]) == ("metrics.`flops_ratio`", True)
    assert runs_view_state("s")["selectedColumns"][0] == "metrics.`test_accuracy`"  # before any metric is logged
    assert runs_view_key("a") == runs_view_key("a") != runs_view_key("b")
    assert runs_view_key("a/b c").replace("-", "").isalnum()  # URL-safe


def test_urls():
    assert run_url("http://h:1/", "7", view="k") == \
        "http://h:1/#/experiments/7/runs?viewStateShareKey=k&workflowType=machine_learning"
    assert run_url("http://h:1", "7", "r") == "http://h:1/#/experiments/7/runs/r?workflowType=machine_learning"
    assert run_url("http://h:1", "7", "r", artifact="pareto_front.html") == \
        "http://h:1/#/experiments/7/runs/r/artifactPath/pareto_front.html?workflowType=machine_learning"


@pytest.mark.mlflow
def test_ensure_runs_view_writes_the_experiment_tag(tmp_path):
    from mlflow import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = c.create_experiment("e")
    key = ensure_runs_view(c, exp, "s1", ["test_accuracy"])
    key2 = ensure_runs_view(c, exp, "s1", ["test_accuracy", "val_accuracy"])  # refreshed in place
    tags = c.get_experiment(exp).tags
    assert key == key2 and [k for k in tags if k.startswith(VIEW_TAG_PREFIX)] == [VIEW_TAG_PREFIX + key]
    assert json.loads(tags[VIEW_TAG_PREFIX + key]) == runs_view_state("s1", ["val_accuracy"])
