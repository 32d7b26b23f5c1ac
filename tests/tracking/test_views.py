"""The saved runs-table view ``spfde ui`` links to (``tracking/views.py``) and the URLs it prints."""

from __future__ import annotations

import json
import math

import pytest

from spfde_search.tracking import run_url
from spfde_search.tracking.views import (
    CHART_SECTION,
    LOG_FLOPS_METRIC,
    VIEW_TAG_PREFIX,
    ensure_runs_view,
    ensure_search_view,
    runs_view_key,
    runs_view_state,
    sampled_keys,
)


def test_view_state_filters_the_trials_and_shows_sampled_params_accuracy_flops_and_pareto():
    st = runs_view_state("it's", ["loss", "train_accuracy", "test_accuracy", "val_accuracy", "flops_ratio"],
                         ["sparsity.ratio", "freezing.target_flops_reduction"])
    assert st["searchFilter"] == "tags.`spfde.search` = 'it\\'s' and tags.`spfde.role` = 'trial'"
    # the sampled parameters, then validation (what selects), test (the report), the FLOPs, the front
    assert st["selectedColumns"] == ["params.`freezing.target_flops_reduction`", "params.`sparsity.ratio`",
                                     "metrics.`val_accuracy`", "metrics.`test_accuracy`", "metrics.`train_flops`",
                                     "metrics.`flops_ratio`", "tags.`pareto`"]
    assert (st["orderByKey"], st["orderByAsc"]) == ("metrics.`flops_ratio`", True)
    assert runs_view_state("s")["selectedColumns"][0] == "metrics.`test_accuracy`"  # before any metric is logged
    assert runs_view_key("a") == runs_view_key("a") != runs_view_key("b")
    assert runs_view_key("a/b c").replace("-", "").isalnum()  # URL-safe


def test_view_state_opens_the_chart_view_on_accuracy_vs_log_flops_scatters():
    st = runs_view_state("s", ["val_accuracy", "test_accuracy"])
    assert st["runsHiddenMode"] == "SHOW_ALL"  # MLflow charts the first 10 runs otherwise
    ours, *generated = st["compareRunSections"]
    assert (ours["name"], ours["display"]) == (CHART_SECTION, True)
    assert {s["name"]: s["display"] for s in generated} == {"Model metrics": False, "System metrics": False}
    charts = st["compareRunCharts"]
    assert [(c["type"], c["xaxis"]["key"], c["yaxis"]["key"]) for c in charts] == [
        ("SCATTER", LOG_FLOPS_METRIC, "val_accuracy"), ("SCATTER", LOG_FLOPS_METRIC, "test_accuracy")]
    assert {c["metricSectionId"] for c in charts} == {ours["uuid"]}
    assert len({c["uuid"] for c in charts}) == 2 and runs_view_state("s", ["val_accuracy"]) == \
        runs_view_state("s", ["val_accuracy"])  # stable ids: refreshing the view changes nothing
    assert [c["yaxis"]["key"] for c in runs_view_state("s")["compareRunCharts"]] == ["test_accuracy"]


def test_sampled_keys_are_config_paths_of_the_sampled_tags():
    assert sampled_keys(['{"sparsity.ratio": 0.9, "fidelity.epochs": 2}', '{"sieving.fraction": 0.1}', None,
                         "not json"]) == ["sieving.fraction", "sparsity.ratio"]


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
    assert len(tags[VIEW_TAG_PREFIX + key]) < 5000  # within MLflow's tag value limit


@pytest.mark.mlflow
def test_search_view_columns_the_sampled_config_paths_and_gives_older_runs_log_flops(tmp_path):
    """``spfde ui``'s view of a search: its columns are the sampled parameters that are run params (an auxiliary
    one, never a config field, is none); a trial run logged before ``log10_train_flops`` existed gets it."""
    from mlflow import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = c.create_experiment("e")
    parent = c.create_run(exp, tags={"spfde.search": "s", "spfde.role": "parent"})
    old = c.create_run(exp, tags={"mlflow.parentRunId": parent.info.run_id, "spfde.search": "s",
                                  "spfde.role": "trial", "spfde.final_logged": "true", "spfde.epochs_logged": "3",
                                  "spfde.sampled": '{"sparsity.ratio": 0.9, "freezing.saving_fraction": 0.5}'})
    c.log_param(old.info.run_id, "sparsity.ratio", "0.9")
    c.log_metric(old.info.run_id, "train_flops", 2.5e11, step=3)
    key = ensure_search_view(c, c.get_run(parent.info.run_id))
    history = c.get_metric_history(old.info.run_id, LOG_FLOPS_METRIC)
    assert [(m.value, m.step) for m in history] == [(pytest.approx(math.log10(2.5e11)), 3)]
    state = json.loads(c.get_experiment(exp).tags[VIEW_TAG_PREFIX + key])
    assert state["selectedColumns"][0] == "params.`sparsity.ratio`"
    assert not any("saving_fraction" in col for col in state["selectedColumns"])
    ensure_search_view(c, c.get_run(parent.info.run_id))  # again: nothing added twice
    assert len(c.get_metric_history(old.info.run_id, LOG_FLOPS_METRIC)) == 1
