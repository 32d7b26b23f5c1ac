"""SIGKILL the search driver mid-search, then `spfde search --resume NAME`: every trial counted exactly once."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from holds import Hold
from waiting import group_alive, wait_until

from spfde_search.search.callbacks import LOST

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
    assert len(after) == 3 and after["trial_id"].is_unique
    assert set(after["status"]) <= TERMINAL | {"INTERRUPTED"}
    done_before = before[before["status"].isin(TERMINAL)]
    for _, r in done_before.iterrows():  # finished trials are kept as they were, not rerun
        row = after[after["trial_id"] == r["trial_id"]].iloc[0]
        assert row["status"] == r["status"] and row["params"] == r["params"]
    killed = before[before["status"] == "RUNNING"]["trial_id"].tolist()
    for tid in killed:  # resumed from its checkpoint, or kept INTERRUPTED with its compute when Ray's last
        # experiment snapshot never saw it (issue 23, item 0): either way exactly once, never retrained from scratch
        row = after[after["trial_id"] == tid].iloc[0]
        assert (row["status"] == "COMPLETED" and row["epochs_completed"] == EPOCHS) or (
            row["status"] == "INTERRUPTED" and row["error"] == LOST and row["epochs_completed"] >= 1), row.to_dict()
    others = after[~after["trial_id"].isin(killed)]
    assert (others["status"] == "COMPLETED").all(), others[["trial_id", "status", "error"]]
