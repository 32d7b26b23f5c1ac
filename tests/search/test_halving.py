"""``spfde search --fidelity schedule``: a real search on embedded Ray runs complete short schedules as their own
trials, promotes the top of each rung, and puts only full-length trials on the front (search/halving.py); bad
combinations are one ``error:`` line before anything starts."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

FMNIST = ["--set", "data.name=fashion_mnist", "--set", "data.train_subset=1000", "--set", "data.test_subset=300",
          "--set", "data.val_size=300", "--set", "model.name=resnet8", "--set", "train.epochs=2",
          "--set", "train.batch_size=64", "--set", "train.update_interval=1", "--set", "train.threads=1"]


def _search(tmp_path, *args: str, tracking: str = "none"):
    from spfde_search.cli import app

    return CliRunner().invoke(app, ["search", *args, *FMNIST, "--storage-path", str(tmp_path), "--tracking-uri",
                                    tracking, "-q"])


@pytest.mark.parametrize(("extra", "match"), [
    (["--fidelity", "schedule", "--early-stopping", "moasha"], "drop --early-stopping moasha"),
    (["--fidelity", "schedule", "--grace-period", "2"], "--grace-period 2: the first rung must be shorter"),
    (["--fidelity", "rungs"], "--fidelity"),
    (["--max-compute", "lots"], "--max-compute 'lots' is not understood"),
])
def test_bad_halving_options_fail_before_anything(tmp_path, extra, match):
    res = _search(tmp_path, "--space", "smoke", "--name", "bad", *extra)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert match in lines[0]
    assert not (tmp_path / "bad").exists()


def test_halving_search_runs_rungs_as_trials_and_fronts_full_length_only(tmp_path, fresh_mlflow_store):
    store = fresh_mlflow_store
    res = _search(tmp_path, "--space", "budget", "--fidelity", "schedule", "--grace-period", "1",
                  "--reduction-factor", "2", "-n", "2", "--max-concurrent", "2", "--name", "sh", "--seed", "0",
                  tracking=store)
    assert res.exit_code == 0, res.output
    folder = tmp_path / "sh"
    table = pd.read_parquet(folder / "trials.parquet")
    rung = table["param.fidelity.rung"].astype(int)
    full, short = table[rung == 1], table[rung == 0]
    # -n counts full-length trials: two of them, each the full 2 epochs, on the front's side of the table
    assert len(full) == 2 and (full["status"] == "COMPLETED").all() and full["full_budget"].all()
    assert (full["epochs_completed"] == 2).all() and full["test_accuracy"].notna().all()
    # the first rung: complete 1-epoch schedules, never full budget, never scored on test
    # (ASHA may promote past ⌊n/η⌋ while results arrive: the top of a rung changes as it fills)
    assert len(short) >= 2 and (short["epochs_completed"] == 1).all() and not short["full_budget"].any()
    assert short["test_accuracy"].isna().all()
    for _, row in table.iterrows():
        cfg = json.loads(row["config"])
        assert cfg["train"]["epochs"] == int(row["param.fidelity.epochs"])
    # a promoted config is one that ran the first rung, with the same sampled parameters
    drop = ("fidelity.", "train.")
    for _, row in full.iterrows():
        first = short[short["param.fidelity.config"] == row["param.fidelity.config"]]
        assert len(first) == 1
        a = {k: v for k, v in json.loads(row["params"]).items() if not k.startswith(drop)}
        b = {k: v for k, v in json.loads(first.iloc[0]["params"]).items() if not k.startswith(drop)}
        assert a.keys() == b.keys()
        assert all(a[k] == b[k] for k in a if not k.startswith("freezing.target"))
    # only full-length trials reach the front
    meta = json.loads((folder / "search.json").read_text())
    assert meta["status"] == "finished" and meta["front_trial_ids"]
    assert set(meta["front_trial_ids"]) <= set(full["trial_id"])
    assert meta["cost"]["trials_by_rung_epochs"] == {"1": len(short), "2": len(full)}  # the cost split by rung
    # MLflow: every trial run says its rung; only full-length runs may carry pareto=true
    from mlflow import MlflowClient

    runs = [r for r in MlflowClient(store).search_runs(
        [e.experiment_id for e in MlflowClient(store).search_experiments()]) if r.data.tags.get("spfde.role") == "trial"]
    assert len(runs) == len(table)
    by_id = {r.data.tags["spfde.trial_id"]: r for r in runs}
    for _, row in table.iterrows():
        tags = by_id[row["trial_id"]].data.tags
        assert tags["spfde.rung"] == str(int(row["param.fidelity.rung"]))
        assert tags["spfde.rung_epochs"] == str(int(row["param.fidelity.epochs"]))
        assert by_id[row["trial_id"]].info.run_name.startswith(f"r{tags['spfde.rung']} {tags['spfde.rung_epochs']}ep ")
        if int(row["param.fidelity.rung"]) == 0:
            assert tags.get("pareto") != "true"
    # the rung book agrees with the table
    book = json.loads((folder / "halving_rungs.json").read_text())
    assert book["lengths"] == [1, 2]
    assert {k for k, t in book["trials"].items() if t["state"] == "done"} == set(table["trial_id"])


def _halving(tmp_path, num_samples: int = 2):
    from search_spaces import resolve_space
    from spfde_search.config import load_config
    from spfde_search.search.halving import HALVING_JSON, make_halving
    from spfde_search.search.optuna_search import _search_cls, make_sampler

    base = load_config(None, {"data.name": "synthetic", "model.name": "resnet8", "train.epochs": 4,
                              "train.update_interval": 1})
    space = resolve_space("smoke", base)
    inner = _search_cls()(space=space.fn, metric=["val_accuracy", "run_train_flops"], mode=["max", "min"],
                          sampler=make_sampler("random", 0, space, num_samples))
    inner.configure(base.to_dict(), None, 1.0, 50, str(tmp_path / "skipped.json"), num_samples, None)
    return make_halving(inner, base.to_dict(), 4, 1, 2, num_samples, str(tmp_path / HALVING_JSON), None,
                        ["val_accuracy", "run_train_flops"], ["max", "min"])


def _end(epochs: int, acc: float) -> dict:
    return {"val_accuracy": acc, "run_train_flops": 1e9, "epoch": epochs, "epochs_total": epochs}


def test_the_rung_book_survives_a_restore_and_reruns_only_what_was_lost(tmp_path):
    """Ray restores the searcher from its last snapshot; halving_rungs.json, written at every change, is newer.
    A finished rung is never rerun, a promotion is never forgotten, and a trial started after the snapshot (lost
    with the driver: Ray never saw it) runs its (config, rung) again."""
    s = _halving(tmp_path)
    assert s.book.lengths == [1, 2, 4]
    p = {t: s.suggest(t) for t in ("a", "b")}
    assert all(isinstance(v, dict) and v["fidelity.rung"] == 0 and v["train.epochs"] == 1 for v in p.values())
    s.on_trial_complete("a", _end(1, 0.6))
    s.on_trial_complete("b", _end(1, 0.4))
    up = s.suggest("c")  # two results, eta 2: the top one goes up to 2 epochs
    assert up["fidelity.rung"] == 1 and up["train.epochs"] == 2 and up["fidelity.config"] in (0, 1)
    snap = tmp_path / "searcher.pkl"
    s.save(str(snap))  # Ray's snapshot: "c" running
    s.on_trial_complete("c", _end(2, 0.7))  # after the snapshot: "c" ends ...
    lost = s.suggest("d")  # ... and "d" starts, then the driver dies
    assert lost["fidelity.rung"] == 0
    r = _halving(tmp_path)
    r.restore(str(snap))
    book = r.book
    assert book.trials["c"]["state"] == "done" and book.trials["c"]["acc"] == 0.7  # the file's end is kept
    assert "d" not in book.trials and book.queue == [(lost["fidelity.config"], 0)]  # lost: its rung runs again
    again = r.suggest("e")
    assert {k: v for k, v in again.items()} == lost  # the same config, the same rung, a new trial
    assert r.book.trials["e"]["config"] == lost["fidelity.config"] and not r.book.queue
    on_disk = json.loads((tmp_path / "halving_rungs.json").read_text())
    assert set(on_disk["trials"]) == {"a", "b", "c", "e"}
    # the config that went up is not promoted a second time from the first rung
    r.on_trial_complete("e", _end(1, 0.1))
    nxt = r.suggest("f")
    assert not (nxt["fidelity.rung"] == 1 and nxt["fidelity.config"] == up["fidelity.config"])
