"""SIGKILL the search driver mid-search, then `spfde search --resume NAME`: every trial counted exactly once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from holds import Hold
from test_search_faults import assert_each_trial_completed_once
from waiting import group_alive, pid_alive, wait_until

from spfde_search.search.rebuild import RESUMED
from spfde_search.search.sessions import end_dead_session

TERMINAL = {"COMPLETED", "EARLY_STOPPED", "FAILED", "INFEASIBLE"}
EPOCHS = 3


def _table(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_parquet(path)
    except Exception:
        return None


@pytest.mark.ray
@pytest.mark.slow
def test_sigkill_then_resume_accounts_for_every_trial_once(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("sparsity.ratio: {type: float, low: 0.5, high: 0.95}\n"
                     "sieving.fraction: {type: float, low: 0.0, high: 0.3, step: 0.1}\n")
    args = ["--space", str(space), "--set", "data.name=synthetic", "--set", "data.synthetic_train=1536",
            "--set", f"train.epochs={EPOCHS}", "--set", "train.update_interval=1", "--num-samples", "3",
            "--max-concurrent", "1", "--cpus-per-trial", "2", "--sampler", "random", "--seed", "5",
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    base_cmd = [sys.executable, "-m", "spfde_search.cli", "search", "--storage-path", str(tmp_path)]
    parquet = tmp_path / "r1" / "trials.parquet"
    log = open(tmp_path / "driver.log", "w")  # noqa: SIM115 - closed in the finally below
    hold = Hold(tmp_path / "hold")
    hold.at(EPOCHS + 1)  # the second trial waits after its first epoch: the kill lands mid-trial, however quick
    driver = subprocess.Popen([*base_cmd, *args, "--name", "r1"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True, env=hold.env())  # own process group: Ray's die with it below
    def killable() -> pd.DataFrame | None:
        df = _table(parquet)
        # kill once a trial has finished and the running one has reported (and checkpointed) an epoch
        if (df is not None and df["status"].isin(TERMINAL).sum() >= 1
                and ((df["status"] == "RUNNING") & (df["epochs_completed"] >= 1)).any()):
            return df
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        return None

    try:
        before = wait_until(lambda: (df := killable()) is not None and [df], 360,
                            "a finished trial and a running one past epoch 1",
                            detail=lambda: (tmp_path / "driver.log").read_text()[-3000:])[0]
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)  # leftovers of the embedded Ray we started (same group)
        log.close()
    # the resumed search starts a fresh embedded Ray only once every process of the killed one has exited
    wait_until(lambda: not group_alive(driver.pid), 120, "the killed search's processes to exit")
    res = subprocess.run([*base_cmd, "--resume", "r1"], cwd=tmp_path, capture_output=True, text=True, timeout=360,
                         start_new_session=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Pareto front of r1" in res.stdout
    after = pd.read_parquet(parquet)
    assert_each_trial_completed_once(after, 3)  # the killed trial resumed by Ray, or continued by a new trial
    done_before = before[before["status"].isin(TERMINAL)]
    for _, r in done_before.iterrows():  # finished trials are kept as they were, not rerun
        row = after[after["trial_id"] == r["trial_id"]].iloc[0]
        assert row["status"] == r["status"] and row["params"] == r["params"]


def _completed_params(df: pd.DataFrame) -> list[str]:
    return sorted(df.loc[df["status"] == "COMPLETED", "params"])


@pytest.mark.ray
@pytest.mark.slow
def test_sigkill_between_snapshots_resumes_the_running_trial_from_its_state(tmp_path):
    """Issue 34 item 1: Ray snapshots only at its first step (``TUNE_GLOBAL_CHECKPOINT_S``), the driver is killed
    after two trials ended with the third two epochs into its state folder. Before: that trial stayed INTERRUPTED
    for good, counted toward ``-n``, and the search ended ``finished`` one trial short with another front."""
    from test_search_faults import search_cmd, start

    name, samples, epochs = "snap", 4, 3
    folder = tmp_path / "runs" / name
    log = tmp_path / "driver.log"
    hold = Hold(tmp_path / "hold")
    env = hold.env(TUNE_GLOBAL_CHECKPOINT_S="3600")  # Ray's snapshot predates every trial below
    hold.at(2 * epochs + 2)  # two trials end, the third waits after its second epoch (saved in state/<id>/)
    driver = start(search_cmd(tmp_path, name, samples=samples, epochs=epochs), log, env=env)

    def moment() -> list[pd.DataFrame] | None:
        assert driver.poll() is None, log.read_text()[-3000:]
        df = _table(folder / "trials.parquet")
        ok = (df is not None and df["status"].isin(TERMINAL).sum() == 2
              and ((df["status"] == "RUNNING") & (df["epochs_completed"] >= 2)).any())
        return [df] if ok and df is not None else None

    try:
        before = wait_until(moment, 900, "two ended trials and one two epochs in",
                            detail=lambda: log.read_text()[-3000:])[0]
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    wait_until(lambda: not group_alive(driver.pid), 180, "the killed search's processes to exit")
    running = before[before["status"] == "RUNNING"].iloc[0]
    # the held trial's Ray worker outlives the SIGKILLed driver (it notices the dead raylet late): end the dead
    # session as the resume does at its start, before the hold lets that worker go on to save epoch 3 itself
    pids = end_dead_session(str(folder))
    wait_until(lambda: not any(pid_alive(p) for p in pids), 120, "the dead session's processes to exit")
    n_reports = len(hold.reports())
    hold.release()
    res = subprocess.run([sys.executable, "-m", "spfde_search.cli", "search", "--resume", name,
                          "--storage-path", str(tmp_path / "runs")], cwd=tmp_path, capture_output=True, text=True,
                         timeout=900, env=env, start_new_session=True)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    after = pd.read_parquet(folder / "trials.parquet")
    meta = json.loads((folder / "search.json").read_text())
    assert meta["status"] == "finished", meta.get("status")
    done = after[after["status"] == "COMPLETED"]
    assert len(done) == samples and done["params"].is_unique, after[["trial_id", "status", "error", "params"]]
    # the killed trial's parameters finished once, continued from its saved epoch 2: after the resume only epoch
    # 3 was trained for them, never epochs 1-2 again
    again = done[done["params"] == running["params"]]
    assert len(again) == 1, after[["trial_id", "status", "error", "params"]]
    later = [e for t, e in hold.reports()[n_reports:] if t == again["trial_id"].iloc[0]]
    assert later == [epochs], (later, hold.reports())
    old = after[after["trial_id"] == running["trial_id"]].iloc[0]  # its row: replaced, counted by nothing
    assert old["status"] == "INTERRUPTED" and old["error"].startswith(RESUMED), old.to_dict()
    assert again["train_flops"].iloc[0] > old["train_flops"] and old["spent_train_flops"] == 0
    # the same configs as the same search uninterrupted (random sampler, fixed seed)
    base = subprocess.run(search_cmd(tmp_path, "base", samples=samples, epochs=epochs), cwd=tmp_path,
                          capture_output=True, text=True, timeout=900, start_new_session=True)
    assert base.returncode == 0, (base.stdout + base.stderr)[-3000:]
    assert _completed_params(after) == _completed_params(pd.read_parquet(tmp_path / "runs" / "base" / "trials.parquet"))


def test_orphans_are_the_unfinished_rows_no_trial_continues(tmp_path):
    """search/rebuild.py on hand-made rows: which rows a new trial continues, which count, and the hand-over."""
    from spfde_search.search.rebuild import (
        RERUN,
        lost_ended,
        orphans,
        replaced_row,
        replacement,
        take_over,
    )
    from trainables import TrialState

    rows = [
        {"trial_id": "done", "status": "COMPLETED", "params": '{"a": 1}', "error": ""},
        {"trial_id": "held", "status": "RUNNING", "params": '{"a": 2}', "error": ""},  # Ray's snapshot holds it
        {"trial_id": "lost", "status": "RUNNING", "params": '{"a": 3}', "error": "", "epochs_completed": 2},
        {"trial_id": "cut", "status": "RUNNING", "params": '{"a": 4}', "error": "", "epochs_completed": 1},
        {"trial_id": "old", "status": "INTERRUPTED", "params": '{"a": 5}', "error": f"{RERUN} (x)"},
        {"trial_id": "wait", "status": "PENDING", "params": '{"a": 6}', "error": ""},
    ]
    assert orphans(rows, {"held"}, {"cut": 1}) == [{"trial_id": "lost", "params": {"a": 3}}]
    assert lost_ended(rows, {"held"}, {"cut": 1}) == 2  # done, and cut (MOASHA stopped it at rung 1)
    uri = str(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    (work / "trainer.pt").write_bytes(b"state")
    (work / "last_report.json").write_text(json.dumps({"epoch": 2}))
    TrialState(uri, "lost").upload(work)
    assert take_over(uri, "lost", "new") == 2
    assert (tmp_path / "state" / "new" / "trainer.pt").read_bytes() == b"state"
    by = replacement(uri, "lost")
    assert by == {"by": "new", "epoch": 2}
    row = replaced_row({**rows[2], "spent_train_flops": 5.0}, by)
    assert row["status"] == "INTERRUPTED" and row["spent_train_flops"] == 0 and "new" in row["error"]
    assert orphans([row], set(), {}) == []  # continued: never again an orphan
    assert take_over(uri, "nothing-saved", "fresh") == 0  # a trial with no state trains anew
    assert replaced_row(rows[3], replacement(uri, "nothing-saved"))["error"].startswith(RERUN)
