"""Issue 34, items 2-3: a kill while the search starts, or Ray's state lost, never wedges a search.

Ray's snapshot (``tuner.pkl``, ``experiment_state-*.json``) is a cache of our record (``search.json``,
``trials.parquet``, ``state/``): with either file missing, ``--resume`` continues from the record (ended trials
kept, unfinished ones rerun with their parameters, ``-n`` counting finished trials), and a SIGTERM while Ray starts
exits 143 with our line. Real Ray, real files; the moments are made with the test hold and a silent TCP server.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from holds import Hold
from test_search_faults import SPFDE, TERMINAL, kill_group, search_cmd, start, table
from waiting import group_alive, pid_alive, wait_until

from spfde_search.search.rebuild import RESUMED


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("lost", ["experiment_state", "tuner.pkl"])
def test_resume_without_rays_state_continues_from_our_record(tmp_path, lost):
    """Killed with one trial ended and one mid-trial; then Ray's file is gone (``experiment_state``: as if killed
    before Ray's first snapshot, issue 34 item 2). Before: Ray's traceback and an rc-130 loop, or a new Tuner that
    left the trial INTERRUPTED and trained other points."""
    name = "lost"
    folder = tmp_path / "runs" / name
    log = tmp_path / "driver.log"
    hold = Hold(tmp_path / "hold")
    hold.at(2 + 1)  # the first trial's 2 epochs, then the second waits after its first
    driver = start(search_cmd(tmp_path, name, samples=3, epochs=2), log, env=hold.env())

    def moment() -> list[pd.DataFrame] | None:
        assert driver.poll() is None, log.read_text()[-3000:]
        df = table(folder / "trials.parquet")
        ok = (df is not None and df["status"].isin(TERMINAL).sum() == 1
              and ((df["status"] == "RUNNING") & (df["epochs_completed"] >= 1)).any())
        return [df] if ok and df is not None else None

    try:
        before = wait_until(moment, 600, "a finished trial and a running one", detail=lambda: log.read_text()[-3000:])[0]
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        kill_group(driver)
    wait_until(lambda: not group_alive(driver.pid), 180, "the killed search's processes to exit")
    for f in folder.iterdir():
        if f.name.startswith(lost):
            f.unlink()
    res = subprocess.run([*SPFDE, "search", "--resume", name, "--storage-path", str(tmp_path / "runs")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=900, start_new_session=True)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "Traceback" not in out
    after = pd.read_parquet(folder / "trials.parquet")
    ended = before[before["status"].isin(TERMINAL)].iloc[0]
    running = before[before["status"] == "RUNNING"].iloc[0]
    kept = after[after["trial_id"] == ended["trial_id"]].iloc[0]
    assert kept["status"] == ended["status"] and kept["params"] == ended["params"]  # not retrained
    old = after[after["trial_id"] == running["trial_id"]].iloc[0]
    assert old["status"] == "INTERRUPTED" and old["error"].startswith(RESUMED)  # continued from its saved epoch
    again = after[(after["params"] == running["params"]) & (after["trial_id"] != running["trial_id"])]
    assert again["status"].tolist() == ["COMPLETED"], after[["trial_id", "status", "params"]]  # same params, rerun
    done = after[after["status"] == "COMPLETED"]
    assert len(done) == 3 and done["params"].is_unique, after[["trial_id", "status", "error"]]  # -n = finished
    assert json.loads((folder / "search.json").read_text())["status"] == "finished"


class SilentServer:
    """A TCP port that accepts connections and never answers: ``ray.init(address=...)`` waits on it, so the driver
    is inside Ray's start-up for as long as the test needs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("0.0.0.0", 0))  # Ray rewrites 127.0.0.1 to the node's own IP
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.accepted.append(self.sock.accept()[0])

    def close(self) -> None:
        for c in [*self.accepted, self.sock]:
            c.close()


@pytest.mark.ray
def test_a_sigterm_while_ray_starts_exits_143_with_our_line_and_leaves_the_name_free(tmp_path):
    """Before: Ray's own SIGTERM handler (set by ``ray.init``) exited 15 with nothing printed."""
    server = SilentServer()
    log = tmp_path / "driver.log"
    cmd = [*search_cmd(tmp_path, "st", samples=1, epochs=1), "--address", f"127.0.0.1:{server.port}"]
    driver = start(cmd, log)
    try:
        # the address check connects (a socket, then one GCS request); ray.init's connection comes after: a
        # SIGTERM in any of them is our line and 143, with nothing written
        wait_until(lambda: len(server.accepted) >= 2 or (driver.poll() is not None and "exited"), 300,
                   "the driver to connect", detail=lambda: log.read_text()[-3000:])
        assert driver.poll() is None, log.read_text()[-3000:]
        os.kill(driver.pid, signal.SIGTERM)
        rc = driver.wait(timeout=120)
    finally:
        kill_group(driver)
        server.close()
    out = log.read_text()
    assert rc == 143, out[-3000:]
    assert "Traceback" not in out
    last = [ln for ln in out.splitlines() if ln.strip()][-1]
    assert last.startswith("terminated (SIGTERM)") and "run the same command again" in last, out[-3000:]
    folder = tmp_path / "runs" / "st"
    assert not (folder / "search.json").exists() and not (folder / "tuner.pkl").exists()


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except OSError:
        return ""


@pytest.mark.ray
@pytest.mark.slow
def test_resume_ends_the_dead_drivers_ray_agents(tmp_path):
    """Issue 34 item 4: ``ray::DashboardAgent`` / ``ray::RuntimeEnvAgent`` outlive a SIGKILLed driver by about a
    minute. Here they are frozen (SIGSTOP) right after the kill, so only the ``--resume`` can end them: before the
    fix they stayed for good. Only processes of that driver's own session are touched (search/sessions.py)."""
    from spfde_search.search.sessions import session_pids

    name = "ag"
    folder = tmp_path / "runs" / name
    log = tmp_path / "driver.log"
    hold = Hold(tmp_path / "hold")
    hold.at(1)  # the trial waits after its first epoch: the driver is killed mid-search
    driver = start(search_cmd(tmp_path, name, samples=1, epochs=2), log, env=hold.env())
    frozen: list[int] = []
    try:
        wait_until(lambda: len(hold.reports()) >= 1 and (folder / "ray_session.json").exists(), 600,
                   "the trial's first epoch", detail=lambda: log.read_text()[-3000:])
        session = json.loads((folder / "ray_session.json").read_text())["session_dir"]
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone, as the OOM killer would
        driver.wait(timeout=60)
        frozen = session_pids(session)
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)  # they cannot notice the dead raylet and leave on their own
        names = {_cmd(p).split("\0")[0].strip() for p in frozen if pid_alive(p)}
        assert {"ray::DashboardAgent", "ray::RuntimeEnvAgent"} & names, names
        hold.release()
        res = subprocess.run([*SPFDE, "search", "--resume", name, "--storage-path", str(tmp_path / "runs")],
                             cwd=tmp_path, capture_output=True, text=True, timeout=900, start_new_session=True)
        assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
        left = [p for p in frozen if pid_alive(p)]
        assert not left, [(p, _cmd(p)[:80]) for p in left]
        assert json.loads((folder / "ray_session.json").read_text())["session_dir"] != session
    finally:
        for pid in frozen:  # what the test froze, whatever happened
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        kill_group(driver)


def test_a_dead_session_ends_only_rays_processes_of_that_session(tmp_path):
    """search/sessions.py with real processes and no Ray: a program of Ray's (``.../ray/...``) holding a file in the
    recorded session folder is ended; a shell with a log of that session open, and Ray's program of another
    session, are not."""
    from spfde_search.search.sessions import end_dead_session, record_session

    prog = tmp_path / "ray" / "agent.py"
    prog.parent.mkdir()
    prog.write_text("import sys, time\nf = open(sys.argv[1], 'a')\nprint('up', flush=True)\ntime.sleep(600)\n")
    mine, other = tmp_path / "session_mine", tmp_path / "session_other"
    procs = []
    try:
        for s in (mine, other):
            (s / "logs").mkdir(parents=True)
            p = subprocess.Popen([sys.executable, str(prog), str(s / "logs" / "agent.log")], stdout=subprocess.PIPE,
                                 text=True)
            assert p.stdout is not None and p.stdout.readline() == "up\n"
            procs.append(p)
        with open(mine / "logs" / "agent.log") as held:  # noqa: F841 - this process holds a log of the session
            shell = subprocess.Popen(["sleep", "600"], stdin=held)
            procs.append(shell)
            record_session(str(tmp_path), str(mine))
            ended = end_dead_session(str(tmp_path))
        assert ended == [procs[0].pid], ended
        assert procs[0].wait(timeout=60) == -signal.SIGKILL
        assert procs[1].poll() is None and shell.poll() is None
    finally:
        for p in procs:
            p.kill()
            p.wait()
