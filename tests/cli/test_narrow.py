"""80-column terminals and log files (issue 24 item 4): help and answer tables fit 80 columns with every option
and parameter name whole; a log written to a file is never hard-wrapped."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
import test_tracking_support as support
from rich.console import Console
from typer.main import get_command
from typer.testing import CliRunner

from spfde_search.cli import app
from spfde_search.plots import answer_table

synced_store = support.synced_store
COMMANDS = ("train", "flops", "search", "pareto", "ui", "export", "sync")
LONG = {"sparsity.ratio": 0.93, "sparsity.algorithm": "rigl", "train.update_interval": 5,
        "freezing.saving_fraction": 0.51234, "freezing.target_flops_reduction": 0.2021, "freezing.scheme": "spfde",
        "freezing.lr_schedule": "per_unit_cosine", "sieving.fraction": 0.3, "data.root": "/very/" + "long/" * 30}


def _fits(text: str, width: int = 80) -> list[str]:
    lines = text.splitlines()
    assert lines
    assert max(len(ln) for ln in lines) <= width, "\n".join(ln for ln in lines if len(ln) > width)
    return lines


@pytest.mark.parametrize("command", (None, *COMMANDS))
def test_help_fits_80_columns_with_every_option_name_whole(command):
    args = [command, "--help"] if command else ["--help"]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    _fits(res.output)
    cmd = get_command(app)
    names = list(cmd.commands) if command is None else [o for p in cmd.commands[command].params  # type: ignore[attr-defined]
                                                       for o in (*p.opts, *p.secondary_opts)]
    words = set(re.findall(r"[-\w]+", res.output))
    assert names and all(n in words for n in names), [n for n in names if n not in words]


def _rows() -> pd.DataFrame:
    return pd.DataFrame([
        {"trial_id": "a1b2c_00003", "status": "COMPLETED", "pareto": True, "test_accuracy": 0.6985,
         "train_flops": 3.9e10, "flops_ratio": 0.0962, "params": json.dumps(LONG), "error": "",
         "run_id": "0123456789abcdef0123456789abcdef"},
        {"trial_id": "a1b2c_00007", "status": "FAILED", "pareto": False, "test_accuracy": float("nan"),
         "train_flops": float("nan"), "flops_ratio": 0.2, "params": json.dumps({"sieving.fraction": 0.1}),
         "error": "RuntimeError: " + "boom " * 60, "run_id": "ffff"},
    ])


@pytest.mark.parametrize("all_trials", [False, True])
def test_answer_table_fits_80_columns_names_whole_values_abbreviated(all_trials):
    console = Console(width=80, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(answer_table(_rows(), "search s: all trials (1 on the frontier; 1 completed of 2 trials; "
                               "hypervolume 0.1234)", knee="a1b2c_00003", width=80, status=all_trials,
                               frontier=all_trials, reason=all_trials, run_id=all_trials))
    text = console.export_text()
    _fits(text)
    for name in LONG:
        assert f"{name}=" in text, name
    assert re.search(r"sieving\.fraction=0\.3\s", text) and "freezing.lr_schedule=per_unit_cosine" in text
    assert "data.root=/very/long/" in text and "…" in text  # the one value too long for a line: abbreviated
    if all_trials:
        assert "run: 0123456789abcdef0123456789abcdef" in text and "reason: RuntimeError: boom" in text
    wide = Console(width=1000, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    wide.print(answer_table(_rows(), "t", knee="a1b2c_00003"))  # no width: the one-row-per-trial table
    assert "freezing.target_flops_reduction=0.2021, freezing.scheme=spfde" in wide.export_text()


@pytest.mark.mlflow
def test_pareto_fits_80_columns(synced_store):
    for extra in ([], ["--all"]):
        res = CliRunner().invoke(app, ["pareto", "s1", "--tracking-uri", synced_store["uri"], *extra],
                                 env={"COLUMNS": "80"})
        assert res.exit_code == 0, res.output
        lines = _fits(res.stdout)
        assert any("sparsity.ratio=0.95" in ln for ln in lines)  # the only parameter unlike the base's


def test_train_log_to_a_file_is_never_hard_wrapped(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["OMP_NUM_THREADS"] = "1"
    log = tmp_path / "train.log"
    with open(log, "w") as f:
        r = subprocess.run([sys.executable, "-m", "spfde_search.cli", "train", "-s", "data.name=synthetic",
                            "-s", "data.synthetic_train=64", "-s", "data.synthetic_test=32", "-s", "model.name=resnet8",
                            "-s", "train.epochs=2", "-s", "train.batch_size=32", "-s", "train.threads=1"],
                           stdout=subprocess.DEVNULL, stderr=f, env=env, cwd=tmp_path, timeout=300)
    text = log.read_text()
    assert r.returncode == 0, text
    lines = text.splitlines()
    epochs = [ln for ln in lines if ln.startswith("epoch ")]
    assert len(epochs) == 2 and all(re.search(r"partial \d+ +[\d.]+s$", ln) for ln in epochs), text
    assert max(len(ln) for ln in epochs) > 80  # long enough that an 80-column wrap would have split them
    notes = [ln for ln in lines if ln.startswith(("using the built-in", "note:"))]
    assert all(len(ln) > 80 for ln in notes) and len(notes) >= 1  # whole, one line each
