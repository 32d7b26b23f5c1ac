"""Trainable pieces: budgets, feasibility from the config alone, and a real Ray run with a diverging trial."""

from __future__ import annotations

import math

import pytest

from spfde_search.config import load_config
from trainables import Budget, BudgetError, assess, infeasible_metrics

BASE = {"data.name": "synthetic", "model.name": "resnet8", "train.epochs": 2, "train.update_interval": 1}


@pytest.fixture(scope="module")
def base():
    return load_config(None, BASE).to_dict()


@pytest.mark.parametrize(
    "text, kind, value",
    [("0.3", "ratio", 0.3), ("0.3x", "ratio", 0.3), ("30%", "ratio", 0.3), ("2.5e12", "absolute", 2.5e12),
     ("800G", "absolute", 8e11), ("1.5T", "absolute", 1.5e12), ("1000", "absolute", 1000.0)],
)
def test_budget_parse(text, kind, value):
    b = Budget.parse(text)
    assert (b.kind, b.value) == (kind, pytest.approx(value))


@pytest.mark.parametrize("text", ["abc", "-1", "0", "1.2.3x"])
def test_budget_parse_errors(text):
    with pytest.raises(BudgetError):
        Budget.parse(text)


def test_assess_feasible_and_budget(base):
    a = assess({"sparsity.ratio": 0.9}, base)
    assert a.feasible and a.runnable and a.violation < 0
    assert a.run_flops_ratio is not None and 0 < a.run_flops_ratio < 1
    over = assess({"sparsity.ratio": 0.5}, base, Budget("ratio", a.run_flops_ratio))
    assert not over.feasible and over.runnable and over.violation > 0
    assert "over the FLOPs budget" in over.reason
    under = assess({"sparsity.ratio": 0.95}, base, Budget("ratio", a.run_flops_ratio))
    assert under.feasible and under.violation <= 0


def test_assess_infeasible_points(base):
    imp = assess({"freezing.target_flops_reduction": 0.9}, base, None, fallback_flops=123.0)
    assert not imp.feasible and not imp.runnable
    assert "impossible" in imp.reason and imp.run_train_flops == 123.0 and imp.violation > 0
    rej = assess({"sparsity.algorithm": "dense", "sparsity.ratio": 0.9}, base)
    assert not rej.feasible and rej.reason.startswith("config rejected") and "\n" not in rej.reason
    m = infeasible_metrics(imp)
    assert m["infeasible"] is True and m["epoch"] == 0 and m["test_accuracy"] == 0.0
    assert math.isnan(m["run_flops_ratio"])


def _diverge_hook() -> None:
    """Test-only fault injection in Ray workers: the real trainer runs, and a run with train.lr == 0.0123
    raises TrainingDiverged after its first epoch (the real loss check needs a NaN we cannot provoke cheaply)."""
    from spfde_search import trainer as tr

    real = tr.Trainer.epochs
    if getattr(real, "_spfde_test_hook", False):
        return

    def epochs(self):
        for m in real(self):
            yield m
            if self.cfg.train.lr == 0.0123:
                raise tr.TrainingDiverged(f"training loss became nan at epoch {m.epoch + 1}, step 1 (lr 0.0123)")

    epochs._spfde_test_hook = True
    tr.Trainer.epochs = epochs


@pytest.mark.ray
@pytest.mark.slow
def test_diverging_trial_fails_with_reason_and_search_goes_on(tmp_path, base):
    import ray

    from spfde_search.search import SearchSettings, drive_search, prepare

    space = tmp_path / "lr.yaml"
    space.write_text("train.lr: {type: categorical, choices: [0.0123, 0.1]}\n")
    settings = SearchSettings(name="div", space=str(space), base_config=base, num_samples=2, sampler="random",
                              max_concurrent=2, storage_path=str(tmp_path))
    prep = prepare(settings)
    prep.points = [{"train.lr": 0.0123}, {"train.lr": 0.1}]
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the test module
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 1024**2,
             runtime_env={"worker_process_setup_hook": _diverge_hook})
    try:
        out = drive_search(settings, prepared=prep)
    finally:
        ray.shutdown()
    t = out.table.set_index("param.train.lr")
    assert t.loc[0.0123, "status"] == "FAILED"
    assert "TrainingDiverged" in t.loc[0.0123, "error"] and "loss became nan" in t.loc[0.0123, "error"]
    assert t.loc[0.0123, "epochs_completed"] == 1
    assert t.loc[0.0123, "ray_status"] == "TERMINATED"  # a terminal result: Ray's worker retries never rerun it
    assert t.loc[0.1, "status"] == "COMPLETED" and bool(t.loc[0.1, "full_budget"])
    assert out.front["trial_id"].tolist() == [t.loc[0.1, "trial_id"]]


def _saved(folder, *epochs):
    from spfde_search import checkpoint

    for e in epochs:
        checkpoint.save({"epoch": e}, folder)
    (folder / "last_report.json").write_text(f'{{"epoch": {epochs[-1]}}}')


def test_trial_state_round_trip_keeps_latest_and_previous(tmp_path):
    from spfde_search import checkpoint
    from trainables._state import TrialState

    work, got = tmp_path / "work", tmp_path / "got"
    got.mkdir()
    store = TrialState(str(tmp_path / "search"), "abc123")
    assert not store.download(got)  # nothing stored yet: the trial starts from epoch 0
    _saved(work, 1, 2)
    store.upload(work)
    assert {p.name for p in (tmp_path / "search" / "state" / "abc123").iterdir()} == {
        "last_report.json", checkpoint.LATEST, checkpoint.PREVIOUS}
    assert store.download(got)
    assert checkpoint.load(got)[0] == {"epoch": 2}
    (got / checkpoint.LATEST).write_bytes(b"truncated")  # a damaged latest: the previous one still loads
    with pytest.warns(checkpoint.CheckpointFallbackWarning):
        assert checkpoint.load(got)[0] == {"epoch": 1}


def test_trial_state_upload_killed_midway_leaves_a_loadable_pair(tmp_path, monkeypatch):
    """Previous is uploaded before latest, each to a temporary name then moved: stopped before the latest's
    move, the store holds (old latest, new previous), both whole, and no temporary file."""
    from spfde_search import checkpoint
    from trainables._state import TrialState

    work, got = tmp_path / "work", tmp_path / "got"
    got.mkdir()
    store = TrialState(str(tmp_path / "search"), "t1")
    _saved(work, 1, 2)
    store.upload(work)
    _saved(work, 3)  # local: latest 3, previous 2

    class KilledAtLatest:  # the store's file system, until the latest's move: there the process stops
        def __init__(self, fs):
            self.fs = fs

        def __getattr__(self, name):
            return getattr(self.fs, name)

        def move(self, src: str, dst: str) -> None:
            if dst.endswith("/" + checkpoint.LATEST):
                raise KeyboardInterrupt
            self.fs.move(src, dst)

    monkeypatch.setattr(store, "fs", KilledAtLatest(store.fs))
    with pytest.raises(KeyboardInterrupt):
        store.upload(work)
    monkeypatch.undo()
    assert store.download(got)
    assert not any(".tmp-" in p.name for p in (tmp_path / "search" / "state" / "t1").iterdir())
    assert checkpoint.load(got)[0] == {"epoch": 2}  # one epoch back, never a torn file
