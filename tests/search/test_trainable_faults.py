"""The trainable's own faults, without a cluster: Ray's session functions are replaced by a recorder, the real
Trainer trains a tiny synthetic model, and the trial's state lives under a temporary search folder."""

from __future__ import annotations

import errno
from pathlib import Path
from types import SimpleNamespace

import pytest

from spfde_search import checkpoint
from spfde_search.config import load_config

TINY = {"data.name": "synthetic", "data.synthetic_train": 64, "data.synthetic_test": 32, "data.synthetic_size": 8,
        "model.name": "resnet8", "train.epochs": 2, "train.batch_size": 32, "train.update_interval": 1,
        "train.device": "cpu", "train.threads": 1}


@pytest.fixture
def session(monkeypatch):
    """``ray.tune``'s session calls recorded: trial id ``t1``, no Ray checkpoint, every report kept."""
    from ray import tune

    import trainables._trainable as tr

    reports: list[dict] = []
    monkeypatch.setattr(tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "t1"))
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: reports.append(dict(metrics)))
    monkeypatch.setattr(tr, "node_identity", lambda: {"node_id": "n", "node_ip": "127.0.0.1"})
    return reports


def _setup(tmp_path: Path):
    from trainables import TrialSetup

    return TrialSetup(base=load_config(None, TINY).to_dict(), experiment_uri=str(tmp_path / "search"))


def test_an_unloadable_trial_state_fails_the_trial_once_naming_the_state_folder(tmp_path, session):
    """Issue 23 items 7-8: both saved epochs damaged is terminal (a FAILED result, never retried by Ray) and the
    message names the state folder under the search's storage, not the temporary copy it was loaded from."""
    from trainables import spfde_trainable

    state = tmp_path / "search" / "state" / "t1"
    state.mkdir(parents=True)
    for name in (checkpoint.LATEST, checkpoint.PREVIOUS):
        (state / name).write_bytes(b"PK\x03\x04 not a checkpoint")
    spfde_trainable({}, _setup(tmp_path))  # returns: a terminal result, not an exception Ray would retry
    assert len(session) == 1 and session[0]["diverged"] is True
    err = session[0]["error"]
    assert err.startswith("CheckpointError:") and str(state / checkpoint.LATEST) in err
    assert f"Delete {state} to start over" in err and "spfde-restore-" not in err


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_state_write_on_a_full_or_read_only_disk_raises_storage_full(tmp_path, session, monkeypatch, code):
    """Issue 23 item 7: ENOSPC / EROFS writing the state is ``StorageFull`` (the driver stops the search), with
    the state folder and the space one trial needs in its message; other OSErrors stay what they were."""
    from trainables import StorageFull, spfde_trainable
    from trainables._state import TrialState

    def full(self, local):
        raise OSError(code, "simulated", f"{self.path}/.trainer.pt.tmp-1")

    monkeypatch.setattr(TrialState, "upload", full)
    with pytest.raises(StorageFull) as e:
        spfde_trainable({}, _setup(tmp_path))
    msg = str(e.value)
    state = tmp_path / "search" / "state" / "t1"
    assert str(state) in msg and "MB per trial" in msg
    assert ("no space left" if code == errno.ENOSPC else "read-only") in msg
    assert session == []  # nothing reported for the epoch whose state was not saved

    monkeypatch.setattr(TrialState, "upload", lambda self, local: (_ for _ in ()).throw(OSError(errno.EIO, "io")))
    with pytest.raises(OSError) as other:
        spfde_trainable({}, _setup(tmp_path))
    assert not isinstance(other.value, StorageFull)


RAISES = "def net(num_classes):\n    import spfde_test_not_installed_pkg  # noqa: F401\n"


@pytest.mark.parametrize("model", ["spfde_test_absent_nets:net", "spfde_test_raising_nets:net"])
def test_a_model_the_worker_cannot_import_fails_the_trial_not_infeasible(tmp_path, session, monkeypatch, model):
    """A module the worker lacks (no --ship-user-code, not installed there) or a callable whose own import fails
    is the run's failure, not the point's: one terminal result, FAILED in trials.parquet with the error kept, told
    to Optuna as FAIL; over the budget stays INFEASIBLE. It was INFEASIBLE, as if over the FLOPs budget."""
    import optuna

    from spfde_search.search.results import trial_row
    from trainables import Budget, TrialSetup, spfde_trainable

    (tmp_path / "spfde_test_raising_nets.py").write_text(RAISES)
    monkeypatch.syspath_prepend(str(tmp_path))
    base = load_config(None, {**TINY, "model.name": model}).to_dict()  # the driver checked it; this worker fails
    spfde_trainable({"sparsity.ratio": 0.8}, TrialSetup(base=base, experiment_uri=str(tmp_path / "search")))
    assert len(session) == 1
    report = session[0]
    assert report["diverged"] is True and report["infeasible"] is False and report["epoch"] == 0
    assert report["error"].startswith("UserCodeError: model.name: ") and "127.0.0.1" in report["error"]
    assert ("cannot import 'spfde_test_absent_nets'" if "absent" in model
            else "net() raised ModuleNotFoundError") in report["error"]
    row = trial_row(SimpleNamespace(trial_id="t1", status="TERMINATED", last_result=report,
                                    config={"sparsity.ratio": 0.8}), base, "TERMINATED")
    assert row["status"] == "FAILED" and row["error"] == report["error"]

    s = _searcher()
    s.suggest("t1")
    s.on_trial_complete("t1", report)
    assert [t.state for t in s._ot_study.trials] == [optuna.trial.TrialState.FAIL]

    session.clear()  # a genuine infeasibility on the worker: still INFEASIBLE
    over = TrialSetup(base=load_config(None, TINY).to_dict(), budget=Budget("absolute", 1.0),
                      experiment_uri=str(tmp_path / "search2"))
    spfde_trainable({"sparsity.ratio": 0.8}, over)
    assert session[0]["infeasible"] is True and not session[0].get("diverged")
    row = trial_row(SimpleNamespace(trial_id="t2", status="TERMINATED", last_result=session[0],
                                    config={"sparsity.ratio": 0.8}), over.base, "TERMINATED")
    assert row["status"] == "INFEASIBLE" and "over the FLOPs budget" in row["error"]


def _searcher():
    """The search's Optuna searcher over the smoke space of the tiny config (the driver can build its model)."""
    from search_spaces import resolve_space
    from spfde_search.search.optuna_search import _search_cls, make_sampler

    base = load_config(None, TINY)
    space = resolve_space("smoke", base)
    s = _search_cls()(space=space.fn, metric=["test_accuracy", "run_train_flops"], mode=["max", "min"],
                      sampler=make_sampler("random", 0, space, 8))
    s.configure(base.to_dict(), None, 1.0, 50, None)
    return s
