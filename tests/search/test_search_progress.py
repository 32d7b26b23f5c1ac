"""The search while it runs: the status block (counts, elapsed, ETA, front size, hypervolume), the live per-trial
table fitted to the terminal's width, the named start-up phase, plain lines off a terminal, and a real ``spfde search`` under a pseudo-terminal showing counts and elapsed time mid-run."""

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

from spfde_search.search.progress import TrialLine, _Progress, quiet_library_noise, short_params, trial_table

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


def _lines():
    return [TrialLine("c435e8cc", params="mest ratio=0.93 saving=0.2", rung=1, epoch=3, epochs=8, val=0.8123,
                      ratio=0.31, front=True),
            TrialLine("a1b2c3d4", status="EARLY_STOPPED", params="set ratio=0.8", epoch=2, epochs=8, val=0.7)]


def test_trial_table_lines_at_full_width():
    assert trial_table(_lines(), 100) == [
        "trial     status   rung/ep  params                      val acc   flops  front",
        "c435e8cc  running  r1 3/8   mest ratio=0.93 saving=0.2   0.8123  0.310x  *",
        "a1b2c3d4  stopped  2/8      set ratio=0.8                0.7000       -",
    ]
    assert trial_table([], 80) == []


def test_trial_table_drops_the_widest_columns_first():
    rows = _lines()
    rows[0].params = short_params({"dst.algorithm": "mest", "sparsity.ratio": 0.93, "freezing.saving_fraction": 0.2,
                                   "sieving.keep_fraction": 0.25})
    assert len(rows[0].params) == 24 and rows[0].params.endswith("…")  # capped: never wider than 24 characters
    seen = []
    for width in range(100, 4, -1):
        lines = trial_table(rows, width)
        assert all(len(x) <= width for x in lines), width
        header = lines[0].split("  ")
        seen += [c.strip() for c in ("trial", "status", "rung/ep", "params", "val acc", "flops", "front")
                 if c not in [h.strip() for h in header] and c not in seen]
        if width == 80:  # the usual rows fit a standard terminal whole
            assert lines[0].split() == ["trial", "status", "rung/ep", "params", "val", "acc", "flops", "front"]
    # widest first: params (24), then the 7-wide columns (ties: rung/ep before status before val acc), flops (6)
    assert seen == ["params", "rung/ep", "status", "val acc", "flops", "front"]
    assert trial_table(rows, 5)[1] == "c435e"  # the trial id alone, cut to the width
    wide = [*rows, TrialLine("c435e8cc_00012", status="INFEASIBLE", rung=2, epoch=12, epochs=16)]
    assert trial_table(wide, 80)[0].split() == ["trial", "status", "rung/ep", "val", "acc", "flops", "front"]


def test_short_params_leave_out_unused_branches_and_rung_keys():
    assert short_params({"dst.algorithm": "rigl", "sparsity.ratio": 0.9312, "freezing.start_epoch": None,
                         "fidelity.rung": 1, "fidelity.epochs": 4}) == "rigl ratio=0.931"


def test_start_up_phase_is_named_then_the_table_shows_the_trial():
    out = io.StringIO()
    p = _Progress(Console(file=out, width=80), total=2, verbose=1, live=False)
    assert p.phase() == "starting Ray…"
    p.started(SimpleNamespace(trial_id="a", config={"sparsity.ratio": 0.9, "fidelity.rung": 0,
                                                    "fidelity.epochs": 2}))
    assert p.phase() == "preparing data…"
    Console(file=out, width=80, force_terminal=False).print(p)
    assert "search preparing data… elapsed" in out.getvalue() and "running 0" not in out.getvalue()
    p.epoch(SimpleNamespace(trial_id="a"), {"epoch": 1, "epochs_total": 2, "val_accuracy": 0.5, "flops_ratio": 0.2})
    assert p.phase() == ""
    view = io.StringIO()
    Console(file=view, width=80).print(p)
    lines = view.getvalue().splitlines()
    assert lines[1].split() == ["a", "running", "r0", "1/2", "ratio=0.9", "0.5000", "0.200x"]
    assert " ".join(lines[2:]).startswith("search running 1, pending 1, done 0 of 2")  # the status line wraps
    table = _table([("a", "COMPLETED", 0.8, 0.3)])
    table["param.fidelity.rung"], table["param.fidelity.epochs"] = [0], [2]
    p.finished(table, "a")
    assert p.rows["a"].status == "COMPLETED" and p.rows["a"].front and p.rows["a"].epoch == 2


def test_quiet_library_noise_is_undone_by_verbose():
    import logging

    quiet_library_noise(1)
    assert logging.getLogger("mlflow.store.db.utils").getEffectiveLevel() == logging.ERROR
    quiet_library_noise(2)
    assert logging.getLogger("mlflow.store.db.utils").level == logging.NOTSET


@pytest.mark.ray
@pytest.mark.slow
def test_terminal_output_while_trials_run_shows_counts_and_elapsed(tmp_path):
    """`spfde search` on a pseudo-terminal: the live block names the start-up phase, then while a trial runs shows
    the per-trial table, the counts and the elapsed time; the sampler `auto` chose is named; Ray's and MLflow's set-up chatter is not shown."""
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
    assert "search starting Ray… elapsed" in text, text[:3000]  # the first draw names the phase
    assert re.search(r"trial\s+status\s+rung/ep\s+params\s+val acc\s+flops\s+front", text), text[-3000:]
    for noise in ("Token authentication is", "Creating initial MLflow database tables", "front="):
        assert noise not in text, noise
