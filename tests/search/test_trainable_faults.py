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
