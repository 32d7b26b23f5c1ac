"""End to end with one real search (embedded Ray, real Fashion-MNIST subset) logged live to two real MLflow stores:

- a SQLite file (the default kind of store): one parent run, one nested run per trial, ``pareto=true`` on exactly
  the non-dominated completed trials (checked independently through ``MlflowClient``), frontier artifacts; export ->
  ``spfde train --config`` then reproduces a frontier trial's training FLOPs exactly;
- a real ``mlflow server`` on 127.0.0.1 (the search's own ``--tracking-uri``), stopped as soon as the first trial
  ends: the search keeps running, and ``spfde sync`` afterwards leaves every trial in MLflow exactly once.

One search feeds both stores (two independent driver callbacks) to keep the suite inside its time budget.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_tracking_support import MlflowServer, independent_front
from typer.testing import CliRunner

from spfde_search.cli import app
from spfde_search.config import load_config

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.mlflow]

TINY = {"data.name": "fashion_mnist", "data.train_subset": 1000, "data.test_subset": 500, "model.name": "resnet8",
        "train.epochs": 2, "train.update_interval": 1, "train.threads": 1}
NAME = "readme"


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    from spfde_search.search import SearchSettings, drive_search, experiment_uri
    from spfde_search.tracking import callbacks_for, make_callback, tracking_settings

    tmp = tmp_path_factory.mktemp("search")
    (tmp / "srv").mkdir()
    server = MlflowServer(tmp / "srv").start()
    sqlite_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    stopped: list[bool] = []

    def stop_after_first(table):
        if not stopped and table["status"].isin(["COMPLETED", "EARLY_STOPPED", "FAILED", "INFEASIBLE"]).any():
            server.stop()  # the first trial has ended; the rest of the search runs without its tracking server
            stopped.append(True)

    try:
        base = load_config(None, TINY).to_dict()
        s = SearchSettings(name=NAME, space="smoke", base_config=base, num_samples=4, sampler="tpe", seed=3,
                           initial="paper", max_concurrent=2, storage_path=str(tmp / "runs"), num_cpus=2,
                           tracking=tracking_settings(server.url, None, base))
        # exactly what `spfde search --tracking-uri URL` does (docs/tracking.md) ...
        cbs = callbacks_for(s)
        assert len(cbs) == 1
        # ... plus a second, independent tracker writing the same search to a SQLite file
        cbs.append(make_callback(sqlite_uri, None, NAME, search_dir=experiment_uri(s.storage_path, NAME),
                                 base_config=base))
        out = drive_search(s, callbacks=cbs, on_results=stop_after_first)
        assert stopped
        yield {"tmp": tmp, "sqlite": sqlite_uri, "server": server, "out": out,
               "table": pd.read_parquet(out.path + "/trials.parquet")}
    finally:
        server.stop()


def _mlflow_view(uri, name):
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name("spfde-resnet8-fashion_mnist")
    runs = c.search_runs([exp.experiment_id], f"tags.`spfde.search` = '{name}'", max_results=1000)
    parents = [r for r in runs if r.data.tags["spfde.role"] == "parent"]
    trials = [r for r in runs if r.data.tags["spfde.role"] == "trial"]
    return c, parents, trials


def _check_store(c, parents, trials, table: pd.DataFrame):
    assert len(parents) == 1, [p.info.run_id for p in parents]
    parent = parents[0]
    ids = [r.data.tags["spfde.trial_id"] for r in trials]
    assert sorted(ids) == sorted(table["trial_id"]) and len(set(ids)) == len(ids)  # each trial exactly once
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)
    by = {r.data.tags["spfde.trial_id"]: r for r in trials}
    for _, row in table.iterrows():
        r = by[row["trial_id"]]
        assert r.data.tags["spfde.status"] == row["status"]
        if row["status"] == "COMPLETED":
            assert r.data.metrics["train_flops"] == row["train_flops"]
            assert r.data.metrics["test_accuracy"] == pytest.approx(row["test_accuracy"])
            assert r.data.metrics["val_accuracy"] == pytest.approx(row["val_accuracy"])
            # validation every epoch (train.eval_every 1); test once, after the last epoch
            hist = c.get_metric_history(r.info.run_id, "val_accuracy")
            assert sorted(m.step for m in hist) == list(range(1, int(row["epochs_completed"]) + 1))
            hist = c.get_metric_history(r.info.run_id, "test_accuracy")
            assert [m.step for m in hist] == [int(row["epochs_completed"])]
            assert r.data.params["data.val_size"] == "500"  # the search's default: min(5000, the test set)
            assert r.data.params["data.train_subset"] == "1000"
            assert [f.path for f in c.list_artifacts(r.info.run_id)] == ["config.yaml"]
    # pareto=true on exactly the trials non-dominated on (validation accuracy, training FLOPs) among the completed
    # full-budget ones above chance (10 classes + CHANCE_FRONT_MARGIN), computed here from MLflow alone
    from spfde_search.pareto import CHANCE_FRONT_MARGIN

    pts = {t: (r.data.metrics["val_accuracy"], r.data.metrics["train_flops"]) for t, r in by.items()
           if r.data.tags["spfde.status"] == "COMPLETED" and r.data.tags.get("spfde.full_budget") == "true"
           and r.data.metrics["val_accuracy"] > 0.1 + CHANCE_FRONT_MARGIN}
    assert pts, "no completed trial"
    tagged = {t for t, r in by.items() if r.data.tags.get("pareto") == "true"}
    assert tagged == independent_front(pts)
    names = {f.path for f in c.list_artifacts(parent.info.run_id)}
    assert {"pareto_front.parquet", "pareto_front.csv", "pareto_front.png", "pareto_front.html",
            "search.json"} <= names
    assert c.get_metric_history(parent.info.run_id, "hypervolume")
    # best-at-budget metrics: the best validation accuracy within each ratio, and that trial's test accuracy
    for cap in (0.05, 0.1, 0.2):
        fits = [r for t, r in by.items() if t in pts and r.data.metrics["flops_ratio"] <= cap]
        key = f"best_at_{cap:g}_val_accuracy"
        if not fits:
            assert key not in parent.data.metrics
            continue
        best = max(fits, key=lambda r: r.data.metrics["val_accuracy"])
        assert parent.data.metrics[key] == pytest.approx(best.data.metrics["val_accuracy"])
        assert parent.data.metrics[f"best_at_{cap:g}_test_accuracy"] == pytest.approx(best.data.metrics["test_accuracy"])
    assert parent.data.params["search.space"] == "smoke" and "space.sparsity.ratio" in parent.data.params
    return parent, by, tagged


def test_readme_search_lands_in_the_sqlite_store(search):
    uri, table = search["sqlite"], search["table"]
    assert len(table) == 4
    c, parents, trials = _mlflow_view(uri, NAME)
    parent, by, tagged = _check_store(c, parents, trials, table)
    assert parent.info.status == "FINISHED"
    assert tagged == set(json.loads((search["tmp"] / "runs" / NAME / "search.json").read_text())["front_trial_ids"])
    # spfde pareto reads the same frontier back
    res = CliRunner().invoke(app, ["pareto", NAME, "--tracking-uri", uri, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert {r["trial_id"] for r in doc["frontier"]} == tagged and doc["selected_on"] == "val_accuracy"
    for r in doc["frontier"]:  # both accuracies, as MLflow holds them
        m = by[r["trial_id"]].data.metrics
        assert (r["val_accuracy"], r["test_accuracy"]) == (m["val_accuracy"], m["test_accuracy"])
    # the answer at a budget: the best validation accuracy within R x dense, whatever the test accuracies say
    from spfde_search.pareto import CHANCE_FRONT_MARGIN

    done = table[(table["status"] == "COMPLETED") & table["full_budget"]
                 & (table["val_accuracy"] > 0.1 + CHANCE_FRONT_MARGIN)]  # the front's candidates
    cap = float(done["flops_ratio"].median())
    fits = done[done["flops_ratio"] <= cap]
    want = fits.sort_values(["val_accuracy", "train_flops"], ascending=[False, True]).iloc[0]
    res = CliRunner().invoke(app, ["pareto", NAME, "--tracking-uri", uri, "--max-flops", str(cap), "--json"])
    assert res.exit_code == 0, res.output
    best = json.loads(res.stdout)["at_budget"]["best"]
    assert best["trial_id"] == want["trial_id"] and best["flops_ratio"] <= cap
    assert best["val_accuracy"] == pytest.approx(want["val_accuracy"])
    assert best["test_accuracy"] == pytest.approx(want["test_accuracy"])
    res = CliRunner().invoke(app, ["pareto", NAME, "--tracking-uri", uri, "--max-flops", str(cap)])
    assert res.exit_code == 0, res.output
    assert f"trial {want['trial_id']}" in res.output and "validation accuracy" in res.output


def test_export_then_train_reproduces_training_flops_exactly(search, tmp_path):
    uri, table = search["sqlite"], search["table"].set_index("trial_id")
    res = CliRunner().invoke(app, ["export", NAME, "--pick", "min-flops", "--out", str(tmp_path / "exp"),
                                   "--tracking-uri", uri])
    assert res.exit_code == 0, res.output
    (path,) = list((tmp_path / "exp").glob("*.yaml"))
    text = path.read_text()
    tid = text.split("(trial ")[1].split(")")[0]
    assert f"training FLOPs: {table.loc[tid, 'train_flops']:.0f}" in text
    res = CliRunner().invoke(app, ["train", "--config", str(path), "--json", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["train_flops"] == int(table.loc[tid, "train_flops"])  # exactly the trial's measured FLOPs
    assert summary["config"] == json.loads(table.loc[tid, "config"])


def test_server_stopped_mid_search_then_sync_has_every_trial_once(search):
    server, table = search["server"], search["table"]
    assert table["status"].isin(["COMPLETED", "EARLY_STOPPED", "INFEASIBLE"]).all()  # the search went on
    server.start()
    c, parents, trials = _mlflow_view(server.url, NAME)
    assert len(trials) < len(table) or any(r.data.tags.get("spfde.final_logged") != "true" for r in trials)
    for _ in range(2):  # idempotent; the store comes from search.json
        res = CliRunner().invoke(app, ["sync", NAME, "--storage-path", str(search["tmp"] / "runs")])
        assert res.exit_code == 0, res.output
        assert f"synced 4/4 trials of {NAME} to {server.url}" in res.stdout
    c, parents, trials = _mlflow_view(server.url, NAME)
    parent, by, tagged = _check_store(c, parents, trials, table)
    assert parent.info.status == "FINISHED"
    sqlite_front = {r.data.tags["spfde.trial_id"] for r in _mlflow_view(search["sqlite"], NAME)[2]
                    if r.data.tags.get("pareto") == "true"}
    assert tagged == sqlite_front
