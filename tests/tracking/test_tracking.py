"""Tracking against a real MLflow SQLite store: parent/nested runs, frontier tags, artifacts, idempotence."""

from __future__ import annotations

import json
import logging

import pytest
import test_tracking_support as support
from test_tracking_support import independent_front, make_records

from spfde_search.config import flatten
from spfde_search.pareto import hypervolume
from spfde_search.tracking import (
    PARENT_ARTIFACTS,
    Tracker,
    TrialRecord,
    default_experiment_name,
    default_tracking_uri,
    frontier_flags,
    read_trials,
    resolve_tracking_uri,
    sqlite_path,
    trial_config,
)

synced_store = support.synced_store  # shared fixture: a store synced from make_records()

pytestmark = pytest.mark.mlflow

META = {"name": "s1", "space": "spfde", "sampler": "tpe", "seed": 0, "num_samples": 9}


def _client(uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _children(client, parent):
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")


def test_default_store_is_sqlite_in_cwd_and_env_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert sqlite_path(default_tracking_uri()) == tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert resolve_tracking_uri(None) == "http://127.0.0.1:1"
    assert resolve_tracking_uri(str(tmp_path / "x.db")) == f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(ValueError, match="file stores"):
        resolve_tracking_uri(f"file:{tmp_path}")
    assert default_experiment_name({"model": {"name": "resnet32", "width": 2}, "data": {"name": "cifar100"}}) == \
        "spfde-resnet32x2-cifar100"


def test_trial_config_accepts_flat_slash_and_nested_params():
    base = make_records()[0].config
    for given in ({"sparsity.ratio": 0.8, "seed_": 3}, {"sparsity/ratio": 0.8}, {"sparsity": {"ratio": 0.8}}):
        full, sampled = trial_config(given, base)
        assert sampled == {"sparsity.ratio": 0.8}
        assert full["sparsity"]["ratio"] == 0.8 and full["train"]["epochs"] == 2


def test_frontier_flags_match_an_independent_check():
    recs = make_records()
    flags = frontier_flags(recs)
    pts = {r.trial_id: (r.final["test_accuracy"], r.final["train_flops"]) for r in recs
           if r.status == "COMPLETED" and r.full_budget}
    assert {t for t, on in flags.items() if on} == independent_front(pts) == {"t0", "t1", "t3", "t4"}


def test_frontier_and_budget_metrics_select_on_validation():
    """Pareto tags, hypervolume, best and best-at-budget read validation accuracy; test accuracy rides along.
    Records without validation (a search from before it, e.g. make_records) select on test, as above."""
    from spfde_search.tracking import compute_frontier

    recs = make_records()[:5]
    # validation accuracies that disagree with test: by test the frontier is t0, t1, t3, t4
    val = {"t0": 0.95, "t1": 0.70, "t2": 0.75, "t3": 0.80, "t4": 0.80}
    for r in recs:
        r.final["val_accuracy"] = val[r.trial_id]
    front = compute_frontier(recs)
    pts = {r.trial_id: (val[r.trial_id], r.final["train_flops"]) for r in recs}
    assert {t for t, on in front.flags.items() if on} == independent_front(pts) == {"t0", "t1", "t2"}
    assert front.hypervolume == pytest.approx(hypervolume(list(val.values()), [r.final["flops_ratio"] for r in recs]))
    m = front.metrics()
    # best by validation is t0 (0.95), whose test accuracy is 0.80, not the best test accuracy (0.85, t3)
    assert (m["best_val_accuracy"], m["best_test_accuracy"]) == (0.95, 0.80)
    assert "best_at_0.05_val_accuracy" not in m and "best_at_0.1_val_accuracy" not in m  # nothing that cheap
    assert (m["best_at_0.2_val_accuracy"], m["best_at_0.2_test_accuracy"]) == (0.70, 0.78)
    # within 0.25: t2 (validation 0.75, test 0.70) answers, not t1 (validation 0.70, test 0.78)
    assert compute_frontier(recs, ratios=(0.25,)).at_budget == {0.25: (0.75, 0.70)}


def test_sync_writes_parent_nested_runs_frontier_and_artifacts(synced_store, tmp_path):
    uri, recs = synced_store["uri"], synced_store["records"]
    c = _client(uri)
    parents = c.search_runs([synced_store["experiment_id"]],
                            "tags.`spfde.role` = 'parent' and tags.`spfde.search` = 's1'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    p = parent.data.params
    assert p["search.sampler"] == "tpe" and p["search.seed"] == "0" and p["base.train.epochs"] == "2"
    assert p["version.mlflow"] and p["version.torch"] and "git_sha" in p
    children = _children(c, parent)
    assert sorted(r.data.tags["spfde.trial_id"] for r in children) == sorted(r.trial_id for r in recs)
    by_tid = {r.data.tags["spfde.trial_id"]: r for r in children}
    # pareto=true on exactly the non-dominated completed full-budget trials (computed independently)
    pts = {tid: (r.data.metrics["test_accuracy"], r.data.metrics["train_flops"]) for tid, r in by_tid.items()
           if r.data.tags["spfde.status"] == "COMPLETED" and r.data.tags["spfde.full_budget"] == "true"}
    tagged = {tid for tid, r in by_tid.items() if r.data.tags.get("pareto") == "true"}
    assert tagged == independent_front(pts)
    assert all(r.data.tags.get("pareto") in ("true", "false") for r in children)
    # statuses
    assert by_tid["t6"].info.status == "FAILED" and by_tid["t6"].data.tags["spfde.status"] == "FAILED"
    assert "boom" in by_tid["t6"].data.tags["spfde.error"]
    assert by_tid["t7"].data.tags["spfde.status"] == "INFEASIBLE"
    assert by_tid["t5"].info.status == "FINISHED" and by_tid["t5"].data.tags["spfde.status"] == "EARLY_STOPPED"
    # every config field a param; per-epoch metrics with step = epoch; final metrics incl. FLOPs saved
    r0 = by_tid["t0"]
    assert set(flatten(recs[0].config)) <= set(r0.data.params)
    assert r0.data.params["sparsity.ratio"] == "0.9"
    hist = c.get_metric_history(r0.info.run_id, "loss")
    assert sorted(m.step for m in hist) == [1, 2]
    for k in ("test_accuracy", "train_flops", "flops_ratio", "flops_saved_sparsity", "flops_saved_freezing",
              "flops_saved_sieving", "flops_saved_sparsity_fraction", "dense_train_flops"):
        assert k in r0.data.metrics, k
    assert r0.data.metrics["flops_saved_sparsity"] == pytest.approx(0.5e12)
    assert r0.data.metrics["flops_saved_sparsity_fraction"] == pytest.approx(0.5)
    assert r0.data.metrics["test_accuracy"] == pytest.approx(0.80)
    assert [f.path for f in c.list_artifacts(r0.info.run_id)] == ["config.yaml"]
    # runs named for what they are (issue 33 item 1), the trial id keeping the name unique
    assert r0.info.run_name == "mest s0.90 · t0"
    assert by_tid["t7"].info.run_name == "mest s0.80 f0.90 · t7"  # the infeasible point: what it asked for
    assert by_tid["t3"].info.run_name == "mest s0.50 · t3"
    # parent: hypervolume and frontier artifacts
    hv = c.get_metric_history(parent.info.run_id, "hypervolume")
    done = [r for r in recs if r.status == "COMPLETED" and r.full_budget]
    expect = hypervolume([r.final["test_accuracy"] for r in done], [r.final["flops_ratio"] for r in done])
    assert hv[-1].value == pytest.approx(expect) and hv[-1].step == len(done)
    names = {f.path for f in c.list_artifacts(parent.info.run_id)}
    assert set(PARENT_ARTIFACTS) <= names
    local = c.download_artifacts(parent.info.run_id, "pareto_front.csv", str(tmp_path))
    import pandas as pd

    front = pd.read_csv(local)
    assert sorted(front["trial_id"]) == ["t0", "t1", "t3", "t4"]
    assert list(front["train_flops"]) == sorted(front["train_flops"])
    assert set(front["run_id"]) == {by_tid[t].info.run_id for t in ("t0", "t1", "t3", "t4")}
    assert "MEST 90%" in set(front["paper_point"].fillna(""))


def test_sync_is_idempotent_and_completes_partial_runs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recs = make_records()
    # first pass: t0 still running with one epoch, t1 not started yet
    partial = TrialRecord("t0", "RUNNING", recs[0].config, recs[0].params, recs[0].epochs[:1])
    t = Tracker(uri, "exp", "s1")
    t.sync([partial], META, close=False)
    c = _client(uri)
    run0 = c.search_runs([t.experiment_id], "tags.`spfde.trial_id` = 't0'")[0]
    assert run0.info.status == "RUNNING" and run0.data.tags["spfde.epochs_logged"] == "1"
    # a fresh process (new Tracker) syncs everything, twice
    for _ in range(2):
        Tracker(uri, "exp", "s1").sync(recs, META, close=True)
    runs = c.search_runs([t.experiment_id], "tags.`spfde.role` = 'trial'")
    assert len(runs) == len(recs)
    assert len(c.search_runs([t.experiment_id], "tags.`spfde.role` = 'parent'")) == 1
    run0 = c.get_run(run0.info.run_id)
    assert run0.info.status == "FINISHED"
    assert [m.step for m in c.get_metric_history(run0.info.run_id, "loss")] == [1, 2]
    assert len(c.get_metric_history(run0.info.run_id, "test_accuracy")) == 2
    parent = c.search_runs([t.experiment_id], "tags.`spfde.role` = 'parent'")[0]
    assert len(c.get_metric_history(parent.info.run_id, "hypervolume")) == 1


def test_frontier_moves_as_trials_finish(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recs = {r.trial_id: r for r in make_records()}
    t = Tracker(uri, "exp", "s1")
    t.start(META)
    seen = []
    for tid in ("t2", "t1", "t0"):
        seen.append(recs[tid])
        assert t.upsert_trial(recs[tid]) and t.update_frontier(seen, artifacts=False)
    c = _client(uri)

    def tags():
        return {r.data.tags["spfde.trial_id"]: r.data.tags.get("pareto")
                for r in c.search_runs([t.experiment_id], "tags.`spfde.role` = 'trial'")}

    assert tags() == {"t2": "false", "t1": "true", "t0": "true"}  # t2 left the frontier when t1 arrived
    parent = c.get_run(t.parent_run_id)
    hv = c.get_metric_history(parent.info.run_id, "hypervolume")
    assert [m.step for m in hv] == [1, 2, 3]
    assert [m.value for m in hv] == sorted(m.value for m in hv)  # never decreases
    assert c.get_metric_history(parent.info.run_id, "hypervolume")[0].value == pytest.approx(0.70 * 0.75)


def test_read_trials_and_pareto_cli(synced_store):
    from typer.testing import CliRunner

    from spfde_search.cli import app

    uri = synced_store["uri"]
    parent, df = read_trials(uri, "s1")
    assert len(df) == 9 and set(df.loc[df["pareto"], "trial_id"]) == {"t0", "t1", "t3", "t4"}
    res = CliRunner().invoke(app, ["pareto", "s1", "--tracking-uri", uri, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["parent_run_id"] == parent.info.run_id and doc["trials"] == 9
    assert [r["trial_id"] for r in doc["frontier"]] == ["t1", "t0", "t3", "t4"] or \
        [r["trial_id"] for r in doc["frontier"]] == ["t1", "t0", "t4", "t3"]
    assert doc["frontier"][0]["params"]["sparsity.ratio"] == 0.95
    res = CliRunner().invoke(app, ["pareto", "s1", "--tracking-uri", uri])
    assert res.exit_code == 0 and "t1" in res.stdout and "Pareto frontier" in res.stdout
    res = CliRunner().invoke(app, ["pareto", "nope", "--tracking-uri", uri])
    assert res.exit_code == 2 and "no search named 'nope'" in res.output


def test_unreachable_server_warns_once_and_never_raises(caplog):
    from test_tracking_support import free_port

    t = Tracker(f"http://127.0.0.1:{free_port()}", "exp", "s1", retry_after=60)
    with caplog.at_level(logging.WARNING, logger="spfde_search.tracking"):
        assert t.start(META) is False
        assert t.upsert_trial(make_records()[0]) is False  # skipped: backing off, no second wait
        assert t.update_frontier(make_records()) is False
    assert t.failures == 1  # one attempt only: the later calls were skipped, not retried (no duration asserted)
    assert "spfde sync s1" in caplog.text


def test_callbacks_for_follows_the_search_settings(tmp_path):
    from ray.tune import Callback

    from spfde_search.search import SearchSettings
    from spfde_search.tracking import callbacks_for, describe_tracking, tracking_settings

    base = make_records()[0].config
    s = SearchSettings(name="n", base_config=base, storage_path=str(tmp_path))
    assert callbacks_for(s) == [] and describe_tracking(s) == "MLflow tracking off"
    s.tracking = tracking_settings("none", None, base)
    assert callbacks_for(s) == []
    s.tracking = tracking_settings(str(tmp_path / "m.db"), None, base)
    assert s.tracking == {"uri": f"sqlite:///{tmp_path / 'm.db'}", "experiment": "spfde-resnet8-fashion_mnist",
                          "enabled": True}
    (cb,) = callbacks_for(s)
    assert isinstance(cb, Callback) and cb.tracker.search == "n" and cb.search_dir == str(tmp_path / "n")
    assert "spfde ui n" in describe_tracking(s)
    assert not (tmp_path / "m.db").exists()  # nothing touches the store before the search starts


def test_per_trial_constants_are_not_epoch_metrics():
    """dense_train_flops is the same every epoch: logged once with the final metrics, not as an epoch curve."""
    from spfde_search.tracking.records import _epoch_metrics

    ep = _epoch_metrics({"epoch": 2, "loss": 0.5, "test_accuracy": 0.8, "train_flops": 2e9,
                         "predicted_train_flops": 2e9, "dense_train_flops": 1e10, "run_train_flops": 3e9})
    assert "dense_train_flops" not in ep and "run_train_flops" not in ep
    assert ep["train_flops"] == 2e9 and ep["predicted_train_flops"] == 2e9  # cumulative: a real curve


REFUSED = ("API request to endpoint /api/2.0/mlflow/runs/search failed with exception HTTPConnectionPool("
           "host='tracking.example.internal', port=5000): Max retries exceeded with url: /api/2.0/mlflow/runs/"
           "search?max_results=1000&order_by=attributes.start_time+DESC (Caused by NewConnectionError('<urllib3."
           "connection.HTTPConnection object at 0x7f3a2c1d5e50>: Failed to establish a new connection: [Errno 111] "
           "Connection refused'))\nTraceback lines that follow are not shown")


def test_a_failed_tracking_call_warns_in_whole_words_with_its_cause(tmp_path, caplog):
    """The warning shortens a long error between words and keeps its end, where the cause is (once it was cut
    at 300 characters, mid-word, and 'Connection refused' was lost)."""
    from spfde_search.tracking.store import Store

    assert len(REFUSED.splitlines()[0]) > 300
    store = Store(f"sqlite:///{tmp_path / 'm.db'}", "exp", "s1")

    def refused() -> None:
        raise ConnectionError(REFUSED)

    with caplog.at_level(logging.WARNING, logger="spfde_search.tracking"):
        assert store.guard("searching runs", refused) is None
    msg = caplog.records[-1].getMessage()
    shown = msg.split("(ConnectionError: ", 1)[1].split("); the search goes on", 1)[0]
    assert shown.endswith("Connection refused'))") and "…" in shown and len(shown) <= 300
    words = REFUSED.splitlines()[0].split()
    assert all(w in words for w in shown.replace(" … ", " ").split())  # whole words only, none cut
    assert store.last_error == f"ConnectionError: {shown}" and "Traceback" not in msg


def test_a_resumed_trial_has_one_value_per_step_of_each_metric(tmp_path):
    """Issue 34 item 4: val_accuracy twice at one step after a resume. The killed driver had logged epochs 1-3;
    the resumed driver closes the trial INTERRUPTED from Ray's result.json, which had only reached epoch 2, with
    the table's final value (epoch 3's): that final value went to step 2, beside epoch 2's own."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = support.make_config()
    eps = [{"epoch": e, "timestamp": 1_700_000_000 + 10 * e, "loss": 2.0 / e, "val_accuracy": 0.5 + 0.1 * e,
            "train_flops": 1e9 * e} for e in range(1, 5)]
    final = {"val_accuracy": eps[2]["val_accuracy"], "train_flops": 3e9, "epochs_completed": 3.0}
    Tracker(uri, "exp", "s1").sync([TrialRecord("t0", "RUNNING", cfg, {}, eps[:3])], META, close=False)
    Tracker(uri, "exp", "s1").sync([TrialRecord("t0", "INTERRUPTED", cfg, {}, eps[:2], final)], META, close=False)
    t = Tracker(uri, "exp", "s1")  # --resume: the trial restarts from epoch 3's state, re-reports it, trains 4
    rerun = TrialRecord("t0", "RUNNING", cfg, {}, [{**eps[2], "timestamp": 1_800_000_000}])
    t.sync([rerun], META, close=False)
    assert t.runs.reopen_trial(rerun)
    done = {**final, "val_accuracy": eps[3]["val_accuracy"], "train_flops": 4e9, "epochs_completed": 4.0}
    t.sync([TrialRecord("t0", "COMPLETED", cfg, {}, [rerun.epochs[0], eps[3]], done, True)], META, close=True)
    c = _client(uri)
    run = c.search_runs([t.experiment_id], "tags.`spfde.trial_id` = 't0'")[0]
    for key in run.data.metrics:
        steps = [m.step for m in c.get_metric_history(run.info.run_id, key)]
        assert len(steps) == len(set(steps)), (key, [(m.step, m.value) for m in
                                                     c.get_metric_history(run.info.run_id, key)])
    history = c.get_metric_history(run.info.run_id, "val_accuracy")
    assert sorted((m.step, m.value) for m in history) == [(e["epoch"], e["val_accuracy"]) for e in eps]
    assert run.data.metrics["val_accuracy"] == eps[3]["val_accuracy"] and run.info.status == "FINISHED"
