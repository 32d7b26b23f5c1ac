"""Execution settings recorded with a trial's config (issue 24 item 9): pure rules, the trainer's record, the
export, and ``spfde train``'s notice when this machine resolves a setting differently."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import test_tracking_support as support
import torch
import yaml

from spfde_search.config import Config
from spfde_search.execution import PATHS, differences, parse, with_execution

RESOLVED = {"train.device": "cpu", "train.precision": "bf16", "train.channels_last": "on", "train.threads": 1}


def test_with_execution_writes_the_resolved_values_into_train():
    cfg = support.make_config()
    assert cfg["train"]["threads"] is None and cfg["train"]["precision"] == "auto"
    out = with_execution(cfg, json.dumps(RESOLVED))
    assert {k: out["train"][k] for k in ("device", "precision", "channels_last", "threads")} == \
        {"device": "cpu", "precision": "bf16", "channels_last": "on", "threads": 1}
    assert out["train"]["epochs"] == cfg["train"]["epochs"] and cfg["train"]["threads"] is None  # a copy
    Config.parse(out)  # still a valid config
    assert with_execution(cfg, None) == cfg and with_execution(cfg, "not json") == cfg
    assert parse({"train.threads": 4, "other": 1}) == {"train.threads": 4}


def test_differences_one_line_per_setting_fixed_to_another_value():
    here = {"train.device": "cpu", "train.precision": "fp32", "train.channels_last": "off", "train.threads": 2}
    lines = differences(RESOLVED, here)
    assert len(lines) == 3
    assert [p for p in PATHS if any(line.startswith(f"note: {p} = ") for line in lines)] == \
        ["train.precision", "train.channels_last", "train.threads"]
    assert "\n" not in "".join(lines)
    assert differences({"train.precision": "auto", "train.threads": None}, here) == []  # auto never differs
    assert differences(here, here) == []


def test_trainer_records_what_it_resolved():
    from spfde_search.device import machine_execution
    from spfde_search.trainer import Trainer

    here = machine_execution()
    cfg = Config().with_overrides({"data.name": "synthetic", "model.name": "resnet8", "train.epochs": 1,
                                   "train.threads": 1, "train.precision": "fp32", "train.channels_last": "off"})
    try:
        t = Trainer(cfg)
        assert t.execution == {"train.device": "cpu", "train.precision": "fp32", "train.channels_last": "off",
                               "train.threads": 1}
    finally:
        torch.set_num_threads(here["train.threads"])


def _trial(tid: str, params: dict, result: dict) -> SimpleNamespace:
    return SimpleNamespace(trial_id=tid, status="TERMINATED", last_result=result, config=params)


@pytest.mark.mlflow
def test_export_holds_the_execution_the_trial_resolved(tmp_path):
    """A trial recorded by the search (``trial_row`` from its last result), logged to MLflow first while
    running (config with ``auto`` / None) then finished: the exported YAML holds concrete settings."""
    from spfde_search.export import export_search
    from spfde_search.search import trial_row
    from spfde_search.tracking import Tracker, TrialRecord

    base = support.make_config()
    params = {"sparsity.ratio": 0.9}
    result = {"epoch": 2, "epochs_total": 2, "test_accuracy": 0.8, "train_flops": 3e11, "flops_ratio": 0.3,
              "dense_train_flops": 1e12, "predicted_train_flops": 3e11, "execution": json.dumps(RESOLVED)}
    row = trial_row(_trial("t0", params, result), base, "TERMINATED")
    assert json.loads(row["config"])["train"]["threads"] == 1
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "exp", "s9")
    tracker.start({"name": "s9", "base_config": base})
    running = TrialRecord("t0", "RUNNING", json.loads(trial_row(_trial("t0", params, {}), base, "RUNNING")["config"]),
                          params)
    assert running.config["train"]["threads"] is None
    tracker.upsert_trial(running)
    epochs = [{"epoch": e, "timestamp": 1_700_000_000 + e, "test_accuracy": 0.8, "train_flops": 1.5e11 * e}
              for e in (1, 2)]
    done = TrialRecord.from_row(row, epochs)
    tracker.upsert_trial(done)
    tracker.update_frontier([done], final=True)
    tracker.finish()
    [w] = export_search("s9", "knee", tmp_path / "out", tracking_uri=uri)
    train = yaml.safe_load(w.path.read_text())["train"]
    assert {f"train.{k}": train[k] for k in ("device", "precision", "channels_last", "threads")} == RESOLVED
    assert "execution as the trial resolved it" in w.path.read_text()


def test_train_says_which_settings_this_machine_resolves_differently(tmp_path):
    from typer.testing import CliRunner

    from spfde_search.cli import app
    from spfde_search.device import machine_execution

    here = machine_execution()
    other = here["train.threads"] + 1
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"name": "synthetic"}, "model": {"name": "resnet8"},
                                   "train": {"epochs": 1, "threads": other}}))
    try:
        r = CliRunner().invoke(app, ["train", "--config", str(cfg)])
    finally:
        torch.set_num_threads(here["train.threads"])
    notes = [line for line in r.output.splitlines() if line.startswith("note: train.")]
    assert r.exit_code == 0, r.output
    assert len(notes) == 1 and notes[0].startswith(f"note: train.threads = {other} ")
    assert f"would resolve {here['train.threads']}" in notes[0]
