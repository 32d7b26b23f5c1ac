"""`spfde search`: bad input fails before any trial, an end-to-end run on real Fashion-MNIST, seeded runs repeat."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from spfde_search.search import TRIAL_COLUMNS, SearchSettings, drive_search, pareto_front

SYNTH = ["--set", "data.name=synthetic", "--set", "train.epochs=2", "--set", "train.update_interval=1"]
FMNIST = ["--set", "data.name=fashion_mnist", "--set", "data.train_subset=1000", "--set", "data.test_subset=500",
          "--set", "model.name=resnet8", "--set", "train.epochs=2", "--set", "train.batch_size=128",
          "--set", "train.update_interval=1"]


def _cli(args, tmp_path):
    from spfde_search.cli import app

    return CliRunner().invoke(app, ["search", *args, "--storage-path", str(tmp_path), "--name", "bad"])


def _one_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize(
    "extra, space_text, match",
    [
        (["--space", "nope"], None, "unknown search space 'nope'"),
        (["--space", "{space}"], "sparsity.ratioo: {type: float, low: 0.5, high: 0.9}", "unknown parameter path 'sparsity.ratioo'"),
        (["--space", "{space}"], "sparsity.ratio: {type: float, low: 0.5, high: 1.5}", "high=1.5 is outside the config's range"),
        (["--space", "smoke", "--flops-budget", "0.001"], None, "below the cheapest config of the space 'smoke'"),
        (["--space", "smoke", "--flops-budget", "lots"], None, "--flops-budget 'lots' is not understood"),
        (["--sampler", "foo"], None, "--sampler"),
        (["--set", "sparsity.ratioo=0.5"], None, "unknown config path 'sparsity.ratioo'"),
        (["--space", "smoke", "--initial", "paperz"], None, "--initial"),
    ],
)
def test_bad_input_exits_before_any_trial(tmp_path, extra, space_text, match):
    if space_text is not None:
        (tmp_path / "s.yaml").write_text(space_text + "\n")
        extra = [a.replace("{space}", str(tmp_path / "s.yaml")) for a in extra]
    line = _one_error(_cli([*extra, *SYNTH], tmp_path))
    assert match in line
    assert not (tmp_path / "bad").exists()  # nothing written, no trial started


def test_existing_name_and_resume_mismatch(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "search.json").write_text(json.dumps({"settings": SearchSettings(
        name="bad", space="smoke", base_config={}, storage_path=str(tmp_path)).model_dump(mode="json")}))
    assert "already exists" in _one_error(_cli(["--space", "smoke", *SYNTH], tmp_path))
    from spfde_search.cli import app

    res = CliRunner().invoke(app, ["search", "--resume", "bad", "--storage-path", str(tmp_path), "--num-samples", "99"])
    # -n extends only a finished search (issue 33: 3); an unfinished one is resumed first, with its own -n
    assert "-n 99: search 'bad' has not finished (-n 16); resume it first" in _one_error(res)
    res = CliRunner().invoke(app, ["search", "--resume", "bad", "--storage-path", str(tmp_path), "--seed", "7"])
    assert "--seed 7 differs from the original search" in _one_error(res)
    res = CliRunner().invoke(app, ["search", "--resume", "missing", "--storage-path", str(tmp_path)])
    assert "no search named 'missing'" in _one_error(res)


def test_front_excludes_early_stopped_and_partial():
    rows = [
        {"trial_id": "a", "status": "COMPLETED", "full_budget": True, "test_accuracy": 0.8, "train_flops": 10.0, "flops_ratio": 0.5},
        {"trial_id": "b", "status": "EARLY_STOPPED", "full_budget": False, "test_accuracy": 0.9, "train_flops": 2.0, "flops_ratio": 0.1},
        {"trial_id": "c", "status": "COMPLETED", "full_budget": True, "test_accuracy": 0.7, "train_flops": 5.0, "flops_ratio": 0.25},
        {"trial_id": "d", "status": "INFEASIBLE", "full_budget": False, "test_accuracy": float("nan"), "train_flops": float("nan"), "flops_ratio": 0.1},
        {"trial_id": "e", "status": "FAILED", "full_budget": False, "test_accuracy": 0.95, "train_flops": 1.0, "flops_ratio": 0.05},
        {"trial_id": "f", "status": "COMPLETED", "full_budget": True, "test_accuracy": 0.6, "train_flops": 6.0, "flops_ratio": 0.3},
    ]
    front = pareto_front(pd.DataFrame(rows))
    assert front["trial_id"].tolist() == ["c", "a"]


def test_a_chance_level_trial_is_reported_but_never_on_the_front_nor_in_the_hypervolume():
    """Issue 23 item 12: a trial that finished at chance (10 classes: 0.10) is the cheapest point; it must not
    sit on the front or add hypervolume, in the driver's table and in the MLflow frontier alike."""
    from test_tracking_support import make_config, make_records

    from spfde_search.search import front_hypervolume
    from spfde_search.search.results import compute_curve
    from spfde_search.tracking import compute_frontier

    cfg = json.dumps(make_config())  # fashion_mnist: 10 classes
    row = {"status": "COMPLETED", "full_budget": True, "config": cfg, "spent_train_flops": 1.0,
           "spent_seconds": 1.0, "finished_at": 0.0}
    rows = [{**row, "trial_id": "chance", "test_accuracy": 0.10, "train_flops": 1.0, "flops_ratio": 0.01},
            {**row, "trial_id": "near", "test_accuracy": 0.104, "train_flops": 2.0, "flops_ratio": 0.02},
            {**row, "trial_id": "good", "test_accuracy": 0.8, "train_flops": 50.0, "flops_ratio": 0.5}]
    table = pd.DataFrame(rows)
    front = pareto_front(table)
    assert front["trial_id"].tolist() == ["good"]
    assert front_hypervolume(front) == pytest.approx(0.8 * 0.5)
    assert compute_curve(table)["hypervolume"].max() == pytest.approx(0.8 * 0.5)

    recs = make_records()
    cheap = recs[1]  # a completed frontier trial of the hand-made set, made chance-level and cheapest
    cheap.final = {**cheap.final, "test_accuracy": 0.10, "train_flops": 1.0, "flops_ratio": 0.001}
    f = compute_frontier(recs)
    assert not f.flags["t1"] and f.flags["t0"]
    assert f.hypervolume == pytest.approx(compute_frontier([r for r in recs if r.trial_id != "t1"]).hypervolume)


def test_front_selects_on_validation_never_on_test():
    """Trials whose test accuracy would put them on the front but whose validation accuracy does not stay off;
    a table without validation (data.val_size 0, or from before it existed) selects on test."""
    from spfde_search.search import front_hypervolume, selected_on

    rows = [
        {"trial_id": "a", "status": "COMPLETED", "full_budget": True, "val_accuracy": 0.80, "test_accuracy": 0.70,
         "train_flops": 10.0, "flops_ratio": 0.5},
        {"trial_id": "b", "status": "COMPLETED", "full_budget": True, "val_accuracy": 0.75, "test_accuracy": 0.95,
         "train_flops": 10.0, "flops_ratio": 0.5},  # best on test, dominated on validation by a
        {"trial_id": "c", "status": "COMPLETED", "full_budget": True, "val_accuracy": 0.60, "test_accuracy": 0.65,
         "train_flops": 4.0, "flops_ratio": 0.2},
    ]
    df = pd.DataFrame(rows)
    front = pareto_front(df)
    assert selected_on(df) == "val_accuracy" and front["trial_id"].tolist() == ["c", "a"]
    assert front_hypervolume(front) == pytest.approx(0.6 * 0.3 + 0.8 * 0.5)  # area under validation accuracy
    old = df.drop(columns=["val_accuracy"])
    assert selected_on(old) == "test_accuracy" and pareto_front(old)["trial_id"].tolist() == ["c", "b"]


@pytest.mark.ray
@pytest.mark.slow
def test_end_to_end_fashion_mnist(tmp_path, fresh_mlflow_store):
    """The real CLI in a subprocess, embedded Ray, real Fashion-MNIST, ASHA, a budget and the paper's points."""
    cmd = [sys.executable, "-m", "spfde_search.cli", "search", "--space", "smoke", *FMNIST, "--num-samples", "4",
           "--max-concurrent", "2", "--sampler", "tpe", "--seed", "3", "--initial", "paper", "--flops-budget", "0.5",
           "--early-stopping", "asha", "--storage-path", str(tmp_path), "--name", "e2e",
           "--tracking-uri", fresh_mlflow_store]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Pareto front of e2e" in res.stdout and "test acc" in res.stdout and "ratio to dense" in res.stdout
    assert "val acc" in res.stdout and "selecting on validation accuracy (500 images" in res.stdout
    df = pd.read_parquet(tmp_path / "e2e" / "trials.parquet")
    assert len(df) == 4 and df["trial_id"].is_unique
    assert set(TRIAL_COLUMNS) <= set(df.columns)
    assert {"param.sparsity.ratio", "param.sieving.fraction"} <= set(df.columns)
    assert set(df["status"]) <= {"COMPLETED", "EARLY_STOPPED", "INFEASIBLE"}
    done = df[df["status"] == "COMPLETED"]
    assert len(done) >= 1 and done["full_budget"].all() and (done["epochs_completed"] == 2).all()
    assert (done["flops_ratio"] <= 0.5 + 1e-9).all()
    assert (done["train_flops"] == done["predicted_train_flops"]).all()  # measured == predicted
    # every trained trial selects on validation; the completed ones also report test, measured at their end
    assert done["val_accuracy"].notna().all() and done["test_accuracy"].notna().all()
    assert df.loc[df["status"] == "EARLY_STOPPED", "val_accuracy"].notna().all()
    for _, r in df.iterrows():  # the config is the base config plus the sampled params, nothing else
        cfg, params = json.loads(r["config"]), json.loads(r["params"])
        assert cfg["data"]["name"] == "fashion_mnist" and cfg["data"]["train_subset"] == 1000
        assert cfg["data"]["val_size"] == 500  # the search's default, min(5000, the 500-image test set)
        for k, v in params.items():
            sec, key = k.split(".")
            assert cfg[sec][key] == v
    meta = json.loads((tmp_path / "e2e" / "search.json").read_text())
    assert meta["status"] == "finished" and meta["initial_points"][0]["sparsity.ratio"] == 0.9
    front_ids = set(meta["front_trial_ids"])
    assert front_ids and front_ids <= set(done["trial_id"])
    assert not front_ids & set(df.loc[df["status"] == "EARLY_STOPPED", "trial_id"])
    # --max-concurrent 2: the first two suggestions start together, so their start times race; the paper's
    # headline point must be one of them.
    firsts = df.sort_values("started_at").head(2)
    assert 0.9 in [json.loads(p)["sparsity.ratio"] for p in firsts["params"]]


@pytest.mark.ray
@pytest.mark.slow
def test_seeded_searches_suggest_the_same_configs(tmp_path):
    """Two searches with one seed suggest the same configs in the same order. Both run on one embedded Ray,
    started here (a search joins a running Ray and leaves it up): the seed, not a fresh Ray, must repeat them."""
    import logging

    import ray

    from spfde_search.config import load_config

    base = load_config(None, {"data.name": "synthetic", "train.epochs": 1, "train.update_interval": 1}).to_dict()
    params = []
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=150 * 1024**2,
             logging_level=logging.WARNING, log_to_driver=False)
    try:
        for run in ("s1", "s2"):
            s = SearchSettings(name=run, space="joint", base_config=base, num_samples=3, sampler="tpe", seed=11,
                               max_concurrent=1, storage_path=str(tmp_path), num_cpus=2, cpus_per_trial=2)
            out = drive_search(s)
            assert ray.is_initialized()  # the search joined this Ray: the second one runs on it too
            t = out.table.sort_values("started_at")
            params.append(t["params"].tolist())
    finally:
        ray.shutdown()
    assert params[0] == params[1]
    assert len(set(params[0])) == 3


def test_the_compute_curve_is_written_as_csv_and_as_a_picture_beside_it(tmp_path):
    """Issue 33 item 2: hypervolume vs compute spent, beside the search's other files."""
    from test_tracking_support import make_config

    from spfde_search.search.results import HV_COMPUTE_CSV, HV_COMPUTE_PNG, write_compute_curve

    cfg = json.dumps(make_config())
    rows = [{"trial_id": t, "status": "COMPLETED", "full_budget": True, "config": cfg, "test_accuracy": acc,
             "train_flops": f, "flops_ratio": f / 100, "spent_train_flops": f, "spent_seconds": 1.0,
             "finished_at": float(i)} for i, (t, acc, f) in enumerate([("a", 0.5, 10.0), ("b", 0.8, 50.0)])]
    write_compute_curve(pd.DataFrame(rows), str(tmp_path / HV_COMPUTE_CSV), title="t")
    curve = pd.read_csv(tmp_path / HV_COMPUTE_CSV)
    assert curve["spent_train_flops"].tolist() == [10.0, 60.0]
    assert curve["hypervolume"].tolist() == pytest.approx([0.5 * 0.9, 0.5 * 0.9 + (0.8 - 0.5) * (1 - 0.5)])
    assert (tmp_path / HV_COMPUTE_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
