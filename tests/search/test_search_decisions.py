"""Issue 23, items 0-4: a resume keeps every decision taken before the crash.

One MOASHA search (real Ray, real MLflow on SQLite) with Ray's experiment snapshots made rare
(``TUNE_GLOBAL_CHECKPOINT_S``), so every kill lands between two snapshots: SIGKILL right after MOASHA's first stop,
``--resume``, SIGKILL again, ``--resume``, SIGTERM, ``--resume`` to the end, then ``--resume`` of the finished search.
After each stop the table, ``moasha_rungs.json``, ``search.json`` and MLflow are checked against what the search had
decided before it; waits are on conditions, never on durations.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from holds import Hold
from test_search_faults import (
    SPFDE,
    TERMINAL,
    check_mlflow_matches_table,
    kill_group,
    mlflow_trials,
    table,
)
from test_search_faults import search_cmd as _search_cmd
from test_search_faults import start as _start
from waiting import group_alive, wait_until

from spfde_search.search.rebuild import RESUMED, counted
from spfde_search.search.results import RERUN

ENDED = TERMINAL | {"INTERRUPTED"}
KEPT = ["status", "epochs_completed", "test_accuracy", "train_flops", "params"]


def _stop_at(driver: subprocess.Popen, parquet: Path, log: Path, hold: Hold, done_before: set[str],
             need_stop: bool) -> pd.DataFrame:
    """Hold the search at one trial start or epoch report at a time until a trial this driver saw end is new since
    ``done_before`` (and, with ``need_stop``, MOASHA has stopped one) while another trial is RUNNING; return the
    table at that moment. At each step the search waits, so the moment is made, never raced: the table is read
    once it shows the held start or report (or the held trial ended)."""

    def settled(k: int) -> list[pd.DataFrame] | None:
        assert driver.poll() is None, log.read_text()[-3000:]
        reports = hold.reports()
        df = table(parquet)
        if len(reports) < k or df is None:
            return None
        tid, epoch = reports[-1]
        row = df[df["trial_id"] == tid]
        if row.empty or (row["status"].iloc[0] in ("RUNNING", "PENDING")
                         and row["epochs_completed"].fillna(0).iloc[0] < epoch):
            return None
        return [df]

    k = len(hold.reports())
    while True:
        k += 1
        hold.at(k)
        df = wait_until(lambda k=k: settled(k), 900, f"the table to show the search's report {k}",
                        detail=lambda: log.read_text()[-3000:])[0]
        ended = set(df.loc[df["status"].isin(TERMINAL), "trial_id"])
        running = (df["status"] == "RUNNING") & ~df["trial_id"].isin(done_before)
        if ended - done_before and running.any() and (not need_stop or (df["status"] == "EARLY_STOPPED").any()):
            return df


def _resume(tmp: Path, name: str, log: Path, env: dict[str, str]) -> subprocess.Popen:
    return _start([*SPFDE, "search", "--resume", name, "--storage-path", str(tmp / "runs")], log, env=env)


def _kept(before: pd.DataFrame, after: pd.DataFrame) -> None:
    """Every trial that had ended before the stop is in ``after`` as it was: same status, epochs and result."""
    done = before[before["status"].isin(TERMINAL)]
    for r in done.itertuples():
        row = after[after["trial_id"] == r.trial_id]
        assert len(row) == 1, (r.trial_id, after[["trial_id", "status"]].to_dict("records"))
        for k in KEPT:
            got, want = row[k].iloc[0], getattr(r, k)
            assert got == want or (pd.isna(got) and pd.isna(want)), (r.trial_id, k, got, want)


def _epochs_run(folder: Path, tid: str) -> int:
    """The highest epoch any run of the trial reported to Ray that reached storage (its result.json: Ray uploads it
    with its snapshots, so a killed run's may be missing)."""
    out = 0
    for rj in folder.glob(f"trial_{tid}*/result.json"):
        for ln in rj.read_text().splitlines():
            if ln.strip().endswith("}"):
                out = max(out, int(json.loads(ln).get("epoch", 0)))
    return out


def _rungs_agree(folder: Path, df: pd.DataFrame) -> None:
    """``moasha_rungs.json`` holds every decision the table shows: each trial that trained an epoch is recorded at
    rung 1, and the stopped ones are exactly the EARLY_STOPPED trials (a stale copy Ray synced back would lack
    the decisions of the last run)."""
    book = json.loads((folder / "moasha_rungs.json").read_text())
    # a trial continued by another (issue 34 item 1) hands its rungs to that trial at its first result
    # (RungBook.rename): its own row is left out, whether it was judged before the crash or only its successor was
    handed = {r.trial_id for r in df.itertuples() if str(r.error).startswith((RESUMED, RERUN))}
    trained = set(df.loc[df["epochs_completed"] >= 1, "trial_id"]) - handed
    assert trained <= set(book["records"]["1"]), (sorted(trained), sorted(book["records"]["1"]))
    assert set(book["stopped"]) == set(df.loc[df["status"] == "EARLY_STOPPED", "trial_id"]), book["stopped"]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.mlflow
def test_crash_resume_crash_resume_between_snapshots_keeps_every_decision(tmp_path):
    name = "dec"
    folder = tmp_path / "runs" / name
    parquet = folder / "trials.parquet"
    db = tmp_path / "mlflow.db"
    # Ray snapshots its experiment at the first step and on a clean stop only: every SIGKILL below comes after
    # trials Ray's snapshot never saw ended
    hold = Hold(tmp_path / "hold", starts=True)  # each stop below is made with it, one trial start or report at a time
    env = hold.env(TUNE_GLOBAL_CHECKPOINT_S="3600")
    hold.at(1)  # the first report already waits: the search cannot run ahead of the first stop
    cmd = [*_search_cmd(tmp_path, name, samples=12, epochs=3), "--early-stopping", "moasha", "--reduction-factor", "4"]
    logs = [tmp_path / f"driver{i}.log" for i in range(4)]

    # 1. SIGKILL right after MOASHA's first stop, with a trial running
    driver = _start(cmd, logs[0], env=env)
    try:
        a = _stop_at(driver, parquet, logs[0], hold, set(), need_stop=True)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=120)
    finally:
        kill_group(driver)
    wait_until(lambda: not group_alive(driver.pid), 180, "the killed search's processes to exit")
    # spfde pareto says the driver is gone instead of showing the search as running
    r = subprocess.run([*SPFDE, "pareto", name, "--all", "--tracking-uri", f"sqlite:///{db}"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "is gone" in r.stderr and f"--resume {name}" in r.stderr, r.stderr
    assert "RUNNING" not in r.stdout, r.stdout

    # 2. --resume, SIGKILL again once it has ended a trial of its own and runs another
    driver = _resume(tmp_path, name, logs[1], env)
    try:
        b = _stop_at(driver, parquet, logs[1], hold, set(a.loc[a["status"].isin(TERMINAL), "trial_id"]), need_stop=False)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=120)
    finally:
        kill_group(driver)
    wait_until(lambda: not group_alive(driver.pid), 180, "the killed search's processes to exit")
    _kept(a, b)
    meta = json.loads((folder / "search.json").read_text())  # the cost is recorded as trials end, not only at the end
    ended_b = b[b["status"].isin(TERMINAL)]
    assert meta["cost"]["train_flops"] >= ended_b["spent_train_flops"].sum() > 0, meta.get("cost")
    assert meta["cost"]["wall_seconds"] > 0

    # 3. --resume, then SIGTERM (what systemd, docker and Kubernetes send): a clean interruption
    driver = _resume(tmp_path, name, logs[2], env)
    try:
        c = _stop_at(driver, parquet, logs[2], hold, set(b.loc[b["status"].isin(TERMINAL), "trial_id"]), need_stop=False)
        os.kill(driver.pid, signal.SIGTERM)
        rc = driver.wait(timeout=600)
    finally:
        kill_group(driver)
    out = logs[2].read_text()
    assert rc == 143, out[-3000:]
    assert f"spfde search --resume {name}" in out and "Traceback" not in out, out[-3000:]
    meta = json.loads((folder / "search.json").read_text())
    assert meta["status"] == "interrupted" and meta["cost"]["wall_seconds"] > 0
    after_c = pd.read_parquet(parquet)
    _kept(c, after_c)
    assert "RUNNING" not in set(after_c["status"]) and "INTERRUPTED" in set(after_c["status"])
    _rungs_agree(folder, after_c)
    parent, runs = mlflow_trials(db, name)
    assert parent.info.status == "KILLED" and all(r.info.status != "RUNNING" for r in runs), \
        [(r.data.tags.get("spfde.trial_id"), r.info.status) for r in runs]
    wait_until(lambda: not group_alive(driver.pid), 180, "the stopped search's processes to exit")

    # 4. --resume to the end
    hold.release()
    res = subprocess.run([*SPFDE, "search", "--resume", name, "--storage-path", str(tmp_path / "runs")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=1500, env=env, start_new_session=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    final = pd.read_parquet(parquet)
    assert len(counted(final)) == 12 and final["trial_id"].is_unique, final[["trial_id", "status"]]
    assert set(final["status"]) <= ENDED, final[["trial_id", "status"]]
    for before in (a, b, c, after_c):
        _kept(before, final)
    for r in pd.concat([a, b, c]).drop_duplicates("trial_id").itertuples():
        if r.status in TERMINAL:  # an ended trial is never trained again, past where it ended
            assert _epochs_run(folder, r.trial_id) <= r.epochs_completed, (r.trial_id, r.status)
    for before in (a, b):  # a trial running at a SIGKILL that Ray's snapshot never saw is continued from its state
        for r in before[before["status"] == "RUNNING"].itertuples():  # by a new trial, which carries its compute
            row = final[final["trial_id"] == r.trial_id]
            if len(row) and row["status"].iloc[0] == "INTERRUPTED":
                err = str(row["error"].iloc[0])
                by = final[final["trial_id"] == err.rsplit("(", 1)[1].split(",")[0].rstrip(")")]
                assert len(by) == 1 and by["params"].iloc[0] == r.params, (r.trial_id, err)
                if err.startswith(RESUMED):  # its saved epochs are in the continuing trial's cumulative FLOPs
                    assert by["train_flops"].iloc[0] >= r.spent_train_flops, (r.trial_id, by.to_dict("records"))
                else:  # nothing saved (held at its start): rerun anew, its own row keeps what it spent
                    assert err.startswith(RERUN) and row["spent_train_flops"].iloc[0] >= r.spent_train_flops, err
    _rungs_agree(folder, final)
    meta = json.loads((folder / "search.json").read_text())
    assert meta["status"] == "finished" and len(meta["resumed"]) == 3
    assert meta["cost"]["train_flops"] == pytest.approx(final["spent_train_flops"].sum(), rel=1e-12)
    check_mlflow_matches_table(db, name, final)

    # 5. --resume of the finished search: says so, starts nothing, changes nothing, exits 0
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}
    res = subprocess.run([*SPFDE, "search", "--resume", name, "--storage-path", str(tmp_path / "runs")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "already finished" in res.stdout and "nothing to resume" in res.stdout, res.stdout
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"} == files
