"""Issue 31: a search never spends two trials on one run. The searcher dedupes on the run key (the config without
the fields only the epoch plan reads, plus the plan): a duplicate is told the earlier trial's result, costs no
training and does not count toward -n, and a resumed search still knows which runs were trained."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pandas as pd
import pytest

from spfde_search.config import load_config

# one run under four names: periodic freezing gives per_unit and global one LR schedule, and the sieve window is
# unread with sieving off; two sparsities make two runs
SPACE = """\
sparsity.ratio: {type: categorical, choices: [0.8, 0.9]}
freezing.lr_schedule: {type: categorical, choices: [per_unit, global]}
sieving.window: {type: categorical, choices: [2, 3]}
"""
SYN = {"data.name": "synthetic", "model.name": "resnet8", "train.epochs": 2, "train.update_interval": 1,
       "freezing.scheme": "periodic", "freezing.target_flops_reduction": 0.05}


def _searcher(tmp_path: Path, base_over: dict, max_skipped: int = 12, num_samples: int = 8, table: str | None = None):
    from search_spaces import resolve_space
    from spfde_search.search.optuna_search import _search_cls, make_sampler

    (tmp_path / "space.yaml").write_text(SPACE)
    base = load_config(None, base_over)
    space = resolve_space(str(tmp_path / "space.yaml"), base)
    s = _search_cls()(space=space.fn, metric=["test_accuracy", "run_train_flops"], mode=["max", "min"],
                      sampler=make_sampler("random", 0, space, num_samples))
    s.configure(base.to_dict(), None, 1.0, max_skipped, str(tmp_path / "skipped.json"), num_samples, table)
    return s


def _done(flops: float, acc: float) -> dict:
    return {"test_accuracy": acc, "run_train_flops": flops, "epoch": 2, "epochs_total": 2}


def test_duplicates_are_told_the_earlier_result_and_survive_a_restore(tmp_path):
    """Two runs among eight points: the searcher hands Ray two trials, tells every other proposal the result of
    the trial that trains its run (when that trial ends, if it is still running), and stops once only
    duplicates are left; a searcher restored from its pickle (Ray's snapshot, `--resume`) still knows both."""
    from ray.tune.search import Searcher

    s = _searcher(tmp_path, SYN)
    a, b = s.suggest("a"), s.suggest("b")
    assert isinstance(a, dict) and isinstance(b, dict) and a["sparsity.ratio"] != b["sparsity.ratio"]
    assert s.suggest("c") is Searcher.FINISHED  # only duplicates left: 12 in a row
    doc = json.loads((tmp_path / "skipped.json").read_text())
    assert doc["count"] == 0 and doc["duplicates"] == len(doc["points"]) >= 12
    assert {p["duplicate_of"] for p in doc["points"]} <= {"a", "b"} and "same run" in doc["stop_reason"]
    # the duplicates of running trials wait for them; then each is told its own original's values
    waiting = [t for t in s._ot_study.trials if t.state.name == "RUNNING"]
    assert len(waiting) == len(doc["points"]) + 2
    s.on_trial_complete("a", _done(1e9, 0.5))
    s.on_trial_complete("b", _done(2e9, 0.25))
    ratio = {"a": a["sparsity.ratio"], "b": b["sparsity.ratio"]}
    want = {ratio["a"]: [0.5, 1e9], ratio["b"]: [0.25, 2e9]}
    trials = s._ot_study.trials
    assert all(t.state.name == "COMPLETE" and t.values == want[t.params["sparsity.ratio"]] for t in trials)
    # restored from its pickle (as Ray restores it): proposals of either run are told at once, never trained
    path = tmp_path / "searcher.pkl"
    s.save(str(path))
    r = _searcher(tmp_path, SYN)
    r.restore(str(path))
    r.skip_streak = 0
    assert r.suggest("d") is Searcher.FINISHED
    new = r._ot_study.trials[len(trials):]
    assert new and all(t.state.name == "COMPLETE" and t.values == want[t.params["sparsity.ratio"]] for t in new)
    assert pickle.loads(pickle.dumps(r.run_keys)) == s.run_keys and set(s.run_keys.values()) == {"a", "b"}


def test_a_trial_known_only_from_trials_parquet_is_not_trained_again(tmp_path):
    """A trial Ray's snapshot predates (the driver died after it ended) is in trials.parquet only: a restored
    searcher reads its params, knows its run and tells a proposal of that run the stored result."""
    from search_spaces import trial_config
    from spfde_search.method.flops import predict
    from spfde_search.search.results import rows_to_arrow, write_parquet

    base = load_config(None, SYN)
    params = {"sparsity.ratio": 0.8, "freezing.lr_schedule": "global", "sieving.window": 2}
    flops = predict(trial_config(base, params)).train_flops
    row = {"trial_id": "lost", "status": "COMPLETED", "full_budget": True, "test_accuracy": 0.625,
           "train_flops": float(flops), "params": json.dumps(params), "config": json.dumps(base.to_dict())}
    table = tmp_path / "trials.parquet"
    write_parquet(rows_to_arrow([row]), str(table))
    s = _searcher(tmp_path, SYN, table=str(table))
    from ray.tune.search import Searcher

    got = s.suggest("t1")
    assert isinstance(got, dict) and got["sparsity.ratio"] == 0.9  # the 0.8 run was trained: never again
    assert s.suggest("t2") is Searcher.FINISHED  # only duplicates left (of "lost", and of t1, still running)
    told = [t for t in s._ot_study.trials if t.params["sparsity.ratio"] == 0.8]
    assert told and all(t.state.name == "COMPLETE" and t.values == [0.625, float(flops)] for t in told)
    doc = json.loads((tmp_path / "skipped.json").read_text())
    assert len(told) == sum(p["duplicate_of"] == "lost" for p in doc["points"])
    assert {p["duplicate_of"] for p in doc["points"]} <= {"lost", "t1"}


# ---------------------------------------------------------------- end to end: a real search, embedded Ray

FMNIST = "/usr/share/datasets/fashion-mnist"


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.skipif(not any(Path(FMNIST).glob("train-images-idx3-ubyte*")), reason="Fashion-MNIST not installed")
def test_search_trains_each_run_once_and_counts_only_trained_trials(tmp_path):
    """A real search over a space with eight points and two runs, asking -n 3: it trains exactly the two runs
    (no two trained trials share a run key or a resolved config once the unread fields are dropped), stops
    saying the space holds no more distinct runs, and spends exactly the two trials' training FLOPs: the
    duplicates trained nothing."""
    from spfde_search.config import Config
    from spfde_search.method.flops import predict
    from spfde_search.method.plan import PLAN_ONLY_FIELDS
    from spfde_search.search import SearchSettings, drive_search

    (tmp_path / "space.yaml").write_text(SPACE)
    base = {"data": {"name": "fashion_mnist", "root": FMNIST, "train_subset": 500, "test_subset": 200, "val_size": 0},
            "model": {"name": "resnet8"}, "train": {"epochs": 2, "batch_size": 128, "update_interval": 1,
                                                     "device": "cpu", "threads": 1},
            "freezing": {"scheme": "periodic", "target_flops_reduction": 0.02}}
    s = SearchSettings(name="dedupe", space=str(tmp_path / "space.yaml"), sampler="random", seed=0, num_samples=3,
                       base_config=base, storage_path=str(tmp_path / "runs"), max_concurrent=2, max_skipped=20,
                       num_cpus=2, cpus_per_trial=1)
    out = drive_search(s)
    table = out.table
    assert len(table) == 2 and set(table["status"]) == {"COMPLETED"}
    cfgs = [Config.parse(json.loads(c)) for c in table["config"]]
    keys = {predict(c).run_key for c in cfgs}
    assert len(keys) == 2
    dropped = [{k: v for k, v in c.to_dict().items() if k != "freezing"} for c in cfgs]
    for d in dropped:
        d["train"].pop("update_interval"), d["sieving"].pop("window")
        d["train"].pop("threads", None)
    assert dropped[0] != dropped[1] and "freezing" in PLAN_ONLY_FIELDS
    skipped = json.loads((Path(out.path) / "skipped.json").read_text())
    assert skipped["duplicates"] >= 20 and set(p["duplicate_of"] for p in skipped["points"]) <= set(table["trial_id"])
    assert "same run" in out.stop_reason and out.status == "finished"  # a stop with its reason, not an interruption
    assert out.cost["duplicates_skipped"] == skipped["duplicates"]
    trained = pd.to_numeric(table["train_flops"]).sum()
    assert out.cost["train_flops"] == pytest.approx(trained)  # two trainings: duplicates cost nothing
    state_dirs = [p for p in (Path(out.path) / "state").iterdir() if p.is_dir()]
    assert len(state_dirs) == 2  # no Ray trial was started for a duplicate
