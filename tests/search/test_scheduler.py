"""MOASHA: rung epochs, the rung book's decisions on hand-made rungs, its JSON state (for --resume)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest

from spfde_search.search.scheduler import RungBook, make_moasha, rung_epochs


def test_rung_epochs():
    assert rung_epochs(10, 1, 2) == [1, 2, 4, 8]
    assert rung_epochs(9, 1, 3) == [1, 3]  # 9 is the last epoch: the trial ends there anyway
    assert rung_epochs(20, 2, 3) == [2, 6, 18]
    assert rung_epochs(1, 1, 2) == []
    with pytest.raises(ValueError):
        rung_epochs(10, 1, 1)


def test_rung_book_decisions_golden():
    book = RungBook([1, 3], eta=3)
    # rung 1: the first arrival always goes on
    assert book.on_result("a", 1, 0.80, 5.0) is True
    # a dominated arrival at position 1 of 2: 1/2 > 1/3 -> stop
    assert book.on_result("b", 1, 0.70, 6.0) is False
    # a cheap one on the front: front {a, c}, epsilon-net from the most accurate (a), c second -> 1/3: go on
    assert book.on_result("c", 1, 0.50, 1.0) is True
    # an epoch between rungs records nothing
    assert book.on_result("a", 2, 0.85, 5.0) is None
    # rung 3 for a; re-reporting a rung (a restart from an older checkpoint) is not recorded twice
    assert book.on_result("a", 3, 0.9, 5.0) is True
    assert book.on_result("a", 3, 0.1, 5.0) is None
    assert book.stopped == {"b": 1}
    assert set(book.records[1]) == {"a", "b", "c"} and set(book.records[3]) == {"a"}


def test_rung_book_skipped_rung_records_the_highest():
    # a trial that reports epoch 4 first (say eval at 4 only) is recorded at rung 4, not 1 or 2
    book = RungBook([1, 2, 4], eta=2)
    assert book.on_result("a", 4, 0.5, 1.0) is True
    assert list(book.records.get(4, {})) == ["a"] and not book.records.get(1)


def test_rung_book_nan_accuracy_ranks_last():
    book = RungBook([1], eta=2)
    assert book.on_result("a", 1, 0.3, 1.0)
    assert book.on_result("b", 1, 0.2, 2.0)  # position 1 of 2: 1/2 <= 1/2 (Syne Tune's rule)
    assert book.on_result("c", 1, float("nan"), 0.5) is False  # diverged / not evaluated: last


def test_rung_book_json_round_trip():
    book = RungBook([1, 2], eta=2)
    book.on_result("a", 1, 0.8, 3.0)
    book.on_result("b", 1, 0.1, 4.0)
    book.on_result("c", 1, 0.05, 5.0)
    again = RungBook.from_json(json.loads(json.dumps(book.to_json())))
    assert again == book
    # the restored book goes on deciding the same way
    assert again.on_result("d", 1, 0.01, 6.0) is book.on_result("d", 1, 0.01, 6.0)


def test_rung_book_rename_moves_a_run_to_the_trial_that_continues_it():
    book = RungBook([1, 3], eta=3)
    assert book.on_result("a", 1, 0.9, 1.0) is True
    assert book.on_result("b", 1, 0.5, 2.0) is False  # dominated: stopped at rung 1
    assert book.on_result("c", 3, 0.7, 1.5) is True  # recorded at rung 3 (and not at 1: the highest it reached)
    assert book.rename("a", "y") and book.rename("b", "z")
    assert list(book.records[1]) == ["y", "z"] and book.records[1]["y"] == (0.9, 1.0)  # same place, same point
    assert book.stopped == {"z": 1}
    assert book.on_result("y", 1, 0.1, 9.0) is None  # the run is judged at a rung once
    assert not book.rename("nobody", "w") and not book.rename("c", "y")  # nothing to move; "y" is taken
    assert book.records[3] == {"c": (0.7, 1.5)}


class _Trial:
    def __init__(self, tid: str) -> None:
        self.trial_id = tid


def _b_stopped_at_rung_1(state: str, epochs: int) -> tuple[Any, dict[str, Any]]:
    """A MOASHA scheduler saving to ``state`` after "a" (0.9, 1 FLOP) reached rung 1 and "b" (0.5, 2 FLOPs, dominated)
    was stopped there; returns it and the result fields both trials share."""
    from ray.tune.schedulers import TrialScheduler

    s = make_moasha(epochs=epochs, grace_period=1, reduction_factor=3, state_uri=state)
    r = {"epochs_total": epochs, "run_train_flops": 1.0}
    assert s.on_trial_result(None, _Trial("a"), {**r, "epoch": 1, "val_accuracy": 0.9}) == TrialScheduler.CONTINUE
    assert s.on_trial_result(None, _Trial("b"), {**r, "epoch": 1, "val_accuracy": 0.5, "run_train_flops": 2.0}) \
        == TrialScheduler.STOP
    return s, r


def test_a_trial_continuing_a_lost_run_inherits_its_rung_decisions(tmp_path):
    """After a crash, trial "y" continues "a"'s saved state and "z" continues "b"'s (search/rebuild.py take_over):
    at their first result the book judges neither again; "a" went on at rung 1, so "y" goes on (judged afresh, its
    re-reported epoch 1 would be dominated by "a"'s own record), and "b" was stopped, so "z" stops."""
    from ray.tune.schedulers import TrialScheduler

    from spfde_search.search.rebuild import continued_from, take_over

    state = str(tmp_path / "moasha_rungs.json")
    _, r = _b_stopped_at_rung_1(state, epochs=4)
    uri = str(tmp_path)
    take_over(uri, "a", "y")
    take_over(uri, "b", "z")
    assert (continued_from(uri, "y"), continued_from(uri, "z"), continued_from(uri, "a")) == ("a", "b", None)
    s = make_moasha(epochs=4, grace_period=1, reduction_factor=3, state_uri=state)  # the --resume's scheduler
    assert s.on_trial_result(None, _Trial("y"), {**r, "epoch": 1, "val_accuracy": 0.1}) == TrialScheduler.CONTINUE
    assert s.on_trial_result(None, _Trial("z"), {**r, "epoch": 1, "val_accuracy": 0.99}) == TrialScheduler.STOP
    saved = json.loads((tmp_path / "moasha_rungs.json").read_text())
    assert saved["records"]["1"] == {"y": [0.9, 1.0], "z": [0.5, 2.0]} and saved["stopped"] == {"z": 1}


def test_ray_adapter_stops_and_persists(tmp_path):
    from ray.tune.schedulers import TrialScheduler

    state = str(tmp_path / "moasha_rungs.json")
    s, r = _b_stopped_at_rung_1(state, epochs=4)
    # infeasible reports and the last epoch never stop a trial
    assert s.on_trial_result(None, _Trial("c"), {"infeasible": True, "epoch": 0}) == TrialScheduler.CONTINUE
    assert s.on_trial_result(None, _Trial("a"), {**r, "epoch": 4, "val_accuracy": 0.1}) == TrialScheduler.CONTINUE
    saved = json.loads((tmp_path / "moasha_rungs.json").read_text())
    assert saved["stopped"] == {"b": 1}
    # a fresh scheduler (a --resume) continues from the saved rungs: "b" was recorded, a third arrival is ranked
    # among a and b
    s2 = make_moasha(epochs=4, grace_period=1, reduction_factor=3, state_uri=state)
    assert s2.book.records[1].keys() == {"a", "b"}
    assert s2.on_trial_result(None, _Trial("d"), {**r, "epoch": 1, "val_accuracy": 0.4, "run_train_flops": 3.0}) \
        == TrialScheduler.STOP
    assert not math.isnan(s2.book.records[1]["d"][0])
    # it ranks on the selection accuracy it was given: validation, never a test accuracy in the same result
    s3 = make_moasha(epochs=4, grace_period=1, reduction_factor=3, state_uri=None)
    s3.on_trial_result(None, _Trial("a"), {**r, "epoch": 1, "val_accuracy": 0.9, "test_accuracy": 0.1})
    assert s3.on_trial_result(None, _Trial("b"), {**r, "epoch": 1, "val_accuracy": 0.5, "test_accuracy": 0.99,
                                                  "run_train_flops": 2.0}) == TrialScheduler.STOP
    import ray.cloudpickle as cp

    assert cp.loads(cp.dumps(s2)).rungs == [1, 3]  # the Tuner pickles its scheduler into tuner.pkl


def test_asha_counts_epochs_and_ends_at_the_runs_last_one(tmp_path):
    """ASHA's clock is the trainer's epoch, not Ray's iteration count: a trial resumed from its own state
    (trainables/_state.py) can be epochs ahead of the iterations Ray has counted for it."""
    from ray.tune.schedulers import TrialScheduler

    from spfde_search.search import SearchSettings
    from spfde_search.search.runtime import _scheduler

    s = SearchSettings(name="a", space="smoke", early_stopping="asha", grace_period=1, reduction_factor=3,
                       storage_path=str(tmp_path))
    asha = _scheduler(s, epochs=4)
    asha.on_trial_add(None, _Trial("a"))
    # epoch 4 of 4 is the run's end even where Ray counted only 2 iterations since the restore
    assert asha.on_trial_result(None, _Trial("a"), {"epoch": 4, "training_iteration": 2, "val_accuracy": 0.5}) \
        == TrialScheduler.STOP


# ---------------------------------------------------------------- the searcher: pruned trials, skipped points


def _searcher(space_name: str, base_over: dict, budget: str | None = None, max_skipped: int = 50, state=None):
    from search_spaces import resolve_space
    from spfde_search.config import load_config
    from spfde_search.search.optuna_search import _search_cls, make_sampler
    from trainables import Budget

    base = load_config(None, base_over)
    space = resolve_space(space_name, base)
    s = _search_cls()(space=space.fn, metric=["test_accuracy", "run_train_flops"], mode=["max", "min"],
                      sampler=make_sampler("random", 0, space, 8))
    s.configure(base.to_dict(), Budget.parse(budget) if budget else None, 1.0, max_skipped, state)
    return s


SYN = {"data.name": "synthetic", "model.name": "resnet8", "train.epochs": 4, "train.update_interval": 1}


def test_early_stopped_trial_is_pruned_in_optuna():
    import optuna

    s = _searcher("smoke", SYN)
    cfg = s.suggest("t1")
    assert "freezing.saving_fraction" not in cfg  # auxiliary parameters never reach the trial's config
    s.on_trial_complete("t1", {"epoch": 1, "epochs_total": 4, "test_accuracy": 0.9, "run_train_flops": 1.0})
    s.suggest("t2")
    s.on_trial_complete("t2", {"epoch": 4, "epochs_total": 4, "test_accuracy": 0.5, "run_train_flops": 2.0,
                               "constraint_violation": -1.0})
    states = [t.state for t in s._ot_study.trials]
    assert states == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE]
    assert s._ot_study.trials[0].values is None  # never a complete trial with partial metrics


def test_over_budget_points_are_skipped_untrained_and_bounded(tmp_path):
    import json

    from ray.tune.search import Searcher

    from trainables import assess

    state = tmp_path / "skipped.json"
    s = _searcher("smoke", SYN, budget="0.15", state=str(state))
    got = [s.suggest(f"t{i}") for i in range(4)]
    assert all(isinstance(g, dict) for g in got)
    for cfg in got:  # every point handed to Ray is within the budget
        assert assess(cfg, s.skip_base, s.skip_budget).feasible
    doc = json.loads(state.read_text())
    assert doc["count"] == len(s.skipped) > 0  # some points were over 15% of dense and were skipped
    told = [t for t in s._ot_study.trials if t.state.name == "COMPLETE"]
    assert len(told) == doc["count"] and all(t.constraints and min(t.constraints.values()) > 0 for t in told)
    # a budget nothing meets: the searcher gives up after max_skipped in a row, with a clear reason
    s = _searcher("smoke", SYN, budget="1e-9", max_skipped=5, state=str(state))
    assert s.suggest("x") is Searcher.FINISHED
    doc = json.loads(state.read_text())
    assert doc["count"] == 5 and "5 predicted-infeasible points in a row" in doc["stop_reason"]


# ---------------------------------------------------------------- end to end on Fashion-MNIST

FMNIST = "/usr/share/datasets/fashion-mnist"


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.mlflow
@pytest.mark.skipif(not any(__import__("pathlib").Path(FMNIST).glob("train-images-idx3-ubyte*")),
                    reason="Fashion-MNIST not installed")
def test_moasha_joint_search_on_fashion_mnist(tmp_path, fresh_mlflow_store):
    """`spfde search --space joint --early-stopping moasha` at train.epochs=3: some trials EARLY_STOPPED, exactly
    those the rule stops in the order they reached the rung, none of them pareto=true in MLflow, no INFEASIBLE
    freezing target, and search.json's total compute equals the sum of every trial's measured training FLOPs as
    Ray recorded them (result.json).

    One trial at a time (issue 34): whether MOASHA stops a trial depends on which trials reached the rung before
    it, and with two at once that was a race (once all 6 completed). In trial order, with seeded sampling and
    seeded single-thread training, the rung sees the same points in the same order on every run."""
    import json
    from pathlib import Path

    import pandas as pd
    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from spfde_search.cli import app
    from spfde_search.pareto import moasha_continues

    uri = fresh_mlflow_store
    args = ["search", "--space", "joint", "--early-stopping", "moasha", "--reduction-factor", "3",
            "--num-samples", "6", "--max-concurrent", "1", "--seed", "1", "--storage-path", str(tmp_path),
            "--name", "ms", "--tracking-uri", uri, "--num-cpus", "2",
            "--set", "data.name=fashion_mnist", "--set", "data.train_subset=300", "--set", "data.test_subset=200",
            "--set", "train.epochs=3", "--set", "train.eval_every=3", "--set", "train.threads=1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    d = Path(tmp_path) / "ms"
    table = pd.read_parquet(d / "trials.parquet")
    assert len(table) == 6
    # every trial reached rung 1, and the rung stopped exactly those the rule stops in the order they came
    book = json.loads((d / "moasha_rungs.json").read_text())
    arrived = list(book["records"]["1"])
    assert sorted(arrived) == sorted(table["trial_id"]), (arrived, sorted(table["trial_id"]))
    points = [book["records"]["1"][t] for t in arrived]
    rule = {t for k, t in enumerate(arrived)
            if not moasha_continues([p[0] for p in points[: k + 1]], [p[1] for p in points[: k + 1]], 3.0)}
    assert set(book["stopped"]) == rule == set(table.loc[table["status"] == "EARLY_STOPPED", "trial_id"])
    assert (table["status"] == "EARLY_STOPPED").sum() >= 1, table[["status", "epochs_completed"]]
    assert not table["error"].str.contains("freezing", case=False).any()
    assert "INFEASIBLE" not in set(table["status"])
    # stopped trials were evaluated on validation at their rung (epoch 1) although train.eval_every = 3; the test
    # set is evaluated once, at the end of a trial, so only completed trials have a test accuracy
    stopped = table[table["status"] == "EARLY_STOPPED"]
    assert (stopped["epochs_completed"] == 1).all() and stopped["val_accuracy"].notna().all()
    assert stopped["test_accuracy"].isna().all()
    done = table[table["status"] == "COMPLETED"]
    assert len(done) and done["val_accuracy"].notna().all() and done["test_accuracy"].notna().all()
    # compute: search.json == sum over Ray's own per-trial records of the last measured train_flops
    meta = json.loads((d / "search.json").read_text())
    ray_total = 0.0
    for t in table["trial_id"]:
        lines = (d / f"trial_{t}" / "result.json").read_text().strip().splitlines()
        ray_total += float(json.loads(lines[-1])["train_flops"])
    assert meta["cost"]["train_flops"] == pytest.approx(ray_total, rel=1e-12)
    assert meta["cost"]["train_flops_by_status"]["EARLY_STOPPED"] > 0
    assert meta["cost"]["trial_seconds"] > 0 and meta["cost"]["wall_seconds"] > 0
    assert re.search(r"search cost: .* skipped untrained", res.output), "the cost line must stay one line"
    curve = pd.read_csv(d / "hypervolume_vs_compute.csv")
    assert curve["spent_train_flops"].iloc[-1] == pytest.approx(ray_total, rel=1e-12)
    assert (d / "moasha_rungs.json").is_file()
    # MLflow: no early-stopped trial is on the frontier; the parent run has the search's compute
    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name(meta["tracking"]["experiment"])
    runs = c.search_runs([exp.experiment_id], max_results=100)
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    stopped_ids = set(stopped["trial_id"])
    tagged = {r.data.tags.get("spfde.trial_id"): r.data.tags.get("pareto") for r in trials}
    assert stopped_ids and all(tagged[t] == "false" for t in stopped_ids)
    assert parent.data.metrics["search_train_flops"] == pytest.approx(ray_total, rel=1e-9)


def test_a_stopped_trial_stays_stopped_after_a_restart(tmp_path):
    """Issue 23 (1): Ray's snapshot may predate MOASHA's stop, so a --resume reruns the stopped trial from its state;
    the restored scheduler stops it again at its first result (the rung epoch it re-reports, or any later one)."""
    from ray.tune.schedulers import TrialScheduler

    state = str(tmp_path / "moasha_rungs.json")
    _, r = _b_stopped_at_rung_1(state, epochs=6)
    for _ in range(2):  # any number of resumes
        s = make_moasha(epochs=6, grace_period=1, reduction_factor=3, state_uri=state)
        for epoch in (1, 2):
            assert s.on_trial_result(None, _Trial("b"), {**r, "epoch": epoch, "val_accuracy": 0.5,
                                                         "run_train_flops": 2.0}) == TrialScheduler.STOP
        assert s.on_trial_result(None, _Trial("a"), {**r, "epoch": 2, "val_accuracy": 0.9}) == TrialScheduler.CONTINUE
    assert json.loads((tmp_path / "moasha_rungs.json").read_text())["stopped"] == {"b": 1}


def test_rows_ray_never_saw_are_kept_with_their_decisions():
    """Issue 23 (0): a row of the table before a crash whose trial Ray's older snapshot lacks keeps its result if it
    ended; a running one is INTERRUPTED (its compute kept), or EARLY_STOPPED where MOASHA had stopped it at a rung
    it reached; a pending one (nothing spent) goes; a trial Ray holds is Ray's to report."""
    from spfde_search.search.callbacks import _kept_rows

    rows = [
        {"trial_id": "done", "status": "COMPLETED", "epochs_completed": 3, "spent_train_flops": 9.0},
        {"trial_id": "ran", "status": "RUNNING", "epochs_completed": 2, "spent_train_flops": 6.0, "error": ""},
        {"trial_id": "cut", "status": "RUNNING", "epochs_completed": 1, "spent_train_flops": 3.0, "error": ""},
        {"trial_id": "wait", "status": "PENDING", "epochs_completed": 0, "spent_train_flops": 0.0},
        {"trial_id": "ray", "status": "COMPLETED", "epochs_completed": 3, "spent_train_flops": 9.0},
    ]
    kept = {r["trial_id"]: r for r in _kept_rows(rows, {"ray"}, {"cut": 1})}
    assert set(kept) == {"done", "ran", "cut"}
    assert kept["done"] == rows[0]
    assert kept["ran"]["status"] == "INTERRUPTED" and kept["ran"]["spent_train_flops"] == 6.0 and kept["ran"]["error"]
    assert kept["cut"]["status"] == "EARLY_STOPPED" and kept["cut"]["epochs_completed"] == 1


def test_driver_alive_follows_the_search_lock(tmp_path):
    """Issue 23 (3): `spfde pareto` asks the folder's lock whether a driver still runs the search."""
    from spfde_search.search import driver_alive
    from spfde_search.search.lock import search_lock

    folder = str(tmp_path / "s")
    assert driver_alive(folder) is None  # no search folder here: cannot tell (it may live on another machine)
    with search_lock(folder, "s"):
        assert driver_alive(folder) is True
    assert driver_alive(folder) is False  # its driver ended (a SIGKILL drops the flock the same way)


def test_resume_of_a_finished_search_says_so_and_changes_nothing(tmp_path):
    """Issue 23 (4): nothing to resume: one line, exit 0, no Ray started, not a byte of the folder changed."""
    from typer.testing import CliRunner

    from spfde_search.cli import app
    from spfde_search.search import SearchSettings

    folder = tmp_path / "f"
    folder.mkdir()
    s = SearchSettings(name="f", space="smoke", storage_path=str(tmp_path), num_samples=2,
                       tracking={"uri": None, "experiment": None, "enabled": False})
    (folder / "search.json").write_text(json.dumps({"name": "f", "status": "finished", "finished": "2026-01-01",
                                                    "counts": {"COMPLETED": 2}, "settings": s.model_dump(mode="json")}))
    (folder / "trials.parquet").write_bytes(b"not read")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    res = CliRunner().invoke(app, ["search", "--resume", "f", "--storage-path", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "already finished" in res.output and "2 trials" in res.output and "nothing to resume" in res.output
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
