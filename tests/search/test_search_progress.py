"""The search while it runs: the status block (counts, elapsed, ETA, front size, hypervolume), plain lines off a
terminal, and a real ``spfde search`` under a pseudo-terminal showing counts and elapsed time mid-run."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pandas as pd
import pytest
from holds import Hold
from rich.console import Console

from spfde_search.search.progress import _Progress, quiet_library_noise

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def _table(rows):
    cols = {"trial_id": [], "status": [], "test_accuracy": [], "train_flops": [], "flops_ratio": [],
            "full_budget": [], "epochs_completed": [], "wall_seconds": [], "error": [], "params": []}
    for tid, st, acc, ratio in rows:
        for k, v in zip(cols, (tid, st, acc, ratio * 1e12, ratio, True, 2, 1.0, "boom" if st == "FAILED" else "",
                               '{"sparsity.ratio": 0.9, "freezing.start_epoch": null}'), strict=True):
            cols[k].append(v)
    return pd.DataFrame(cols)


def test_status_text_counts_front_and_eta():
    out = io.StringIO()
    p = _Progress(Console(file=out, width=200), total=4, verbose=1, live=False)
    p.started(SimpleNamespace(trial_id="a", config={}))
    p.started(SimpleNamespace(trial_id="b", config={}))
    assert p.status_text().startswith("running 2, pending 2, done 0 of 4")
    assert "ETA after the first trial" in p.status_text() and "front size 0" in p.status_text()
    table = _table([("a", "COMPLETED", 0.8, 0.3), ("b", "RUNNING", None, 0.0)])
    table.loc[1, ["test_accuracy", "flops_ratio"]] = float("nan")
    p.finished(table, "a")
    s = p.status_text()
    assert s.startswith("running 1, pending 2, done 1 of 4 (completed 1, stopped 0, failed 0, infeasible 0)")
    assert "front size 1, hypervolume 0.5600" in s and re.search(r"ETA ~\d+s", s)
    text = out.getvalue()
    assert "[1/4] a COMPLETED" in text and "300.00 GFLOPs" in text
    assert "freezing.start_epoch" not in text and "front=" not in text
    assert "search: running 1, pending 2, done 1 of 4" in text  # not a terminal: a plain status line


def test_live_block_on_a_terminal():
    out = io.StringIO()
    p = _Progress(Console(file=out, width=200, force_terminal=True), total=2, verbose=1, live=True)
    try:
        p.started(SimpleNamespace(trial_id="a", config={}))
        p.finished(_table([("a", "FAILED", float("nan"), float("nan"))]), "a")
    finally:
        p.close()
    text = ANSI.sub("", out.getvalue())
    assert "[1/2] a FAILED  boom" in text
    assert "running 0, pending 1, done 1 of 2" in text and "elapsed" in text
    assert "  search: " not in text  # on a terminal the status is the live footer, not a plain line


def test_quiet_library_noise_is_undone_by_verbose():
    import logging

    quiet_library_noise(1)
    assert logging.getLogger("mlflow.store.db.utils").getEffectiveLevel() == logging.ERROR
    quiet_library_noise(2)
    assert logging.getLogger("mlflow.store.db.utils").level == logging.NOTSET


@pytest.mark.ray
@pytest.mark.slow
def test_terminal_output_while_trials_run_shows_counts_and_elapsed(tmp_path):
    """`spfde search` on a pseudo-terminal: while a trial runs, the live block shows the counts and the elapsed
    time; the sampler `auto` chose is named; Ray's and MLflow's set-up chatter is not shown."""
    cmd = [sys.executable, "-c", "from spfde_search.cli import main; main()", "search", "--space", "smoke",
           "-s", "data.name=synthetic", "-s", "train.epochs=2", "-s", "train.update_interval=1",
           "--num-samples", "2", "--max-concurrent", "1", "--storage-path", str(tmp_path / "runs"),
           "--name", "pty", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    leader, follower = pty.openpty()
    hold = Hold(tmp_path / "hold")
    hold.at(1)  # the first trial waits after its first epoch until the live block has shown it running
    env = hold.env(COLUMNS="200", LINES="50", TERM="xterm")
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdin=follower, stdout=follower, stderr=follower, env=env,
                            start_new_session=True)
    os.close(follower)
    raw = b""
    seen_live = False
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                raw += chunk
            text = ANSI.sub("", raw.decode(errors="replace"))
            if not seen_live and re.search(r"running 1, pending \d+, done 0 of 2 .*elapsed \d+", text):
                seen_live = True  # mid-run: a trial running, none finished, the clock moving
                hold.release()
            if proc.poll() is not None and not ready:
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        os.close(leader)
    text = ANSI.sub("", raw.decode(errors="replace"))
    assert proc.returncode == 0, text[-3000:]
    assert seen_live, text[-3000:]
    assert re.search(r"sampler auto -> \w+ \(", text), text[:2000]
    assert "[2/2]" in text and "Pareto front of pty" in text
    for noise in ("Token authentication is", "Creating initial MLflow database tables", "front="):
        assert noise not in text, noise
