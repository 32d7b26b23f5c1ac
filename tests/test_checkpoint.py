"""Checkpoints: a crafted file is refused without running its code, the previous checkpoint stands in for a
damaged latest one (in ``Trainer`` and in the Ray trainable's resume), and the state is plain enough for
weights-only loading."""

from __future__ import annotations

import pathlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from spfde_search import checkpoint
from spfde_search.checkpoint import CheckpointError, CheckpointFallbackWarning
from spfde_search.config import Config
from spfde_search.trainer import Trainer


class _Touch:
    """Unpickling this runs ``Path.touch(target)``: the shape of a malicious checkpoint."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.target),))


def craft_checkpoint(directory: Path, target: Path, name: str = checkpoint.LATEST) -> Path:
    """A trainer.pt whose full unpickling would create ``target``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    torch.save({"version": 1, "epoch": 1, "payload": _Touch(target)}, path)
    return path


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_crafted_checkpoint_is_refused_without_running_it(tmp_path: Path, trainer_cfg: Callable[..., Config]) -> None:
    target = tmp_path / "pwned"
    craft_checkpoint(tmp_path / "ck", target)
    tr = Trainer(trainer_cfg())
    with pytest.raises(CheckpointError, match="refused") as e:
        tr.load_checkpoint(tmp_path / "ck")
    assert not target.exists()
    assert "\n" not in str(e.value) and "trainer.pt" in str(e.value)


def test_truncated_latest_falls_back_to_previous(tmp_path: Path, trainer_cfg: Callable[..., Config]) -> None:
    cfg = trainer_cfg()
    first = Trainer(cfg)
    it = first.epochs()
    next(it)
    first.save_checkpoint(tmp_path)
    next(it)
    first.save_checkpoint(tmp_path)
    assert (tmp_path / checkpoint.PREVIOUS).is_file()
    truncate(tmp_path / checkpoint.LATEST)
    resumed = Trainer(cfg)
    with pytest.warns(CheckpointFallbackWarning, match="previous"):
        used = resumed.load_checkpoint(tmp_path)
    assert used == tmp_path / checkpoint.PREVIOUS
    assert resumed.epoch == 1 and len(resumed.history) == 1


def test_both_damaged_is_one_clear_error(tmp_path: Path, trainer_cfg: Callable[..., Config]) -> None:
    tr = Trainer(trainer_cfg())
    tr.save_checkpoint(tmp_path)
    tr.save_checkpoint(tmp_path)
    truncate(tmp_path / checkpoint.LATEST)
    (tmp_path / checkpoint.PREVIOUS).write_bytes(b"")
    with pytest.raises(CheckpointError) as e:
        Trainer(trainer_cfg()).load_checkpoint(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and checkpoint.LATEST in msg and checkpoint.PREVIOUS in msg and "truncated" in msg


def test_save_keeps_two_and_no_temporaries(tmp_path: Path) -> None:
    for epoch in (1, 2, 3):
        checkpoint.save({"epoch": epoch, "w": torch.ones(3) * epoch}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([checkpoint.LATEST, checkpoint.PREVIOUS])
    assert checkpoint.load(tmp_path)[0]["epoch"] == 3
    (tmp_path / checkpoint.LATEST).unlink()  # a crash between the two renames leaves only the previous one
    assert checkpoint.exists(tmp_path) and checkpoint.load(tmp_path)[0]["epoch"] == 2


def test_save_refuses_what_weights_only_cannot_load(tmp_path: Path) -> None:
    for bad, where in (({"rng": np.int64(3)}, "rng"),
                       ({"a": [1, np.float64(2.0)]}, "a"), ({"a": {"b": np.zeros(2)}}, "b")):
        with pytest.raises(TypeError, match=where):
            checkpoint.save(bad, tmp_path)
    assert not checkpoint.exists(tmp_path)


def test_trainer_state_is_weights_only_loadable(tmp_path: Path, trainer_cfg: Callable[..., Config]) -> None:
    """The whole state (sieving on, so its tensors are in it) passes the plain-types check and round-trips."""
    tr = Trainer(trainer_cfg({"sieving.fraction": 0.2, "train.epochs": 2}))
    next(tr.epochs())
    checkpoint.check_plain(tr.state_dict())
    path = tr.save_checkpoint(tmp_path)
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 1


# ---------------------------------------------------------------- the Ray trainable's resume


class _FakeTune:
    """Ray's side of a function trainable: ``report`` persists the checkpoint folder (a copy, as Ray's
    storage does) and ``get_checkpoint`` hands back the one given; no cluster."""

    def __init__(self, store: Path, resume_from: Path | None = None) -> None:
        self.store, self.resume_from, self.reports = store, resume_from, []  # type: ignore[var-annotated]

    def get_checkpoint(self) -> Any:
        from ray.tune import Checkpoint

        return Checkpoint.from_directory(str(self.resume_from)) if self.resume_from else None

    def report(self, metrics: dict[str, Any], checkpoint: Any = None) -> None:
        saved = None
        if checkpoint is not None:
            saved = self.store / f"checkpoint_{len(self.reports):06d}"
            shutil.copytree(checkpoint.path, saved)
        self.reports.append((metrics, saved))


def _run_trainable(monkeypatch: pytest.MonkeyPatch, fake: _FakeTune, base: dict[str, Any],
                   experiment_uri: str = "") -> None:
    from types import SimpleNamespace

    from ray import tune

    import trainables._trainable as tt

    monkeypatch.setattr(tune, "get_checkpoint", fake.get_checkpoint)
    monkeypatch.setattr(tune, "report", fake.report)
    monkeypatch.setattr(tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "trial0"))
    monkeypatch.setattr(tt, "node_identity", lambda: {"node_id": "n", "node_ip": "127.0.0.1"})
    tt.spfde_trainable({}, tt.TrialSetup(base=base, experiment_uri=experiment_uri))


def test_trainable_keeps_its_state_in_the_search_folder_and_resumes_from_the_newest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trainer_cfg: Callable[..., Config]
) -> None:
    """With a search folder, Ray's checkpoint is only the epoch's report; the state is ``state/<trial_id>`` and a
    rerun resumes from it even when Ray hands back an older checkpoint (a snapshot that lagged behind)."""
    base = trainer_cfg({"train.epochs": 3}).to_dict()
    search = tmp_path / "search"
    first = _FakeTune(tmp_path / "run1")
    (tmp_path / "run1").mkdir()
    _run_trainable(monkeypatch, first, base, str(search))
    assert [m["epoch"] for m, _ in first.reports] == [1, 2, 3]
    assert all({f.name for f in ck.iterdir()} == {"last_report.json"} for _, ck in first.reports if ck)
    state = search / "state" / "trial0"
    assert torch.load(state / checkpoint.LATEST, weights_only=True)["epoch"] == 3
    truncate(state / checkpoint.LATEST)  # damaged on storage: the previous one (epoch 2) is used
    again = _FakeTune(tmp_path / "run2", resume_from=first.reports[0][1])  # Ray's snapshot still says epoch 1
    (tmp_path / "run2").mkdir()
    with pytest.warns(CheckpointFallbackWarning):
        _run_trainable(monkeypatch, again, base, str(search))
    assert [m["epoch"] for m, _ in again.reports] == [3]  # from the newest state, not Ray's epoch 1
    assert again.reports[-1][0]["test_accuracy"] == first.reports[-1][0]["test_accuracy"]  # exact resume


def test_trainable_resume_falls_back_from_a_corrupt_latest_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trainer_cfg: Callable[..., Config]
) -> None:
    base = trainer_cfg({"train.epochs": 3}).to_dict()
    first = _FakeTune(tmp_path / "run1")
    (tmp_path / "run1").mkdir()
    _run_trainable(monkeypatch, first, base)
    assert [m["epoch"] for m, _ in first.reports] == [1, 2, 3]
    # the trial was "interrupted" after epoch 2; its latest Ray checkpoint holds epoch 2 and, beside it, epoch 1
    ck = first.reports[1][1]
    assert ck is not None and (ck / checkpoint.PREVIOUS).is_file()
    truncate(ck / checkpoint.LATEST)
    again = _FakeTune(tmp_path / "run2", resume_from=ck)
    (tmp_path / "run2").mkdir()
    with pytest.warns(CheckpointFallbackWarning):
        _run_trainable(monkeypatch, again, base)
    assert [m["epoch"] for m, _ in again.reports] == [2, 3]  # resumed after epoch 1, not from scratch
    assert again.reports[-1][0]["test_accuracy"] == first.reports[-1][0]["test_accuracy"]  # exact resume
    # the resumed run's first checkpoint keeps the epoch it resumed from as its previous one
    first_new = again.reports[0][1]
    assert first_new is not None
    assert torch.load(first_new / checkpoint.PREVIOUS, weights_only=True)["epoch"] == 1
