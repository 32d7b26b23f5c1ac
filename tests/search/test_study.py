"""Issue 33 item 3: the search's Optuna study on disk (a record of what the sampler was told, opened by
``optuna.load_study``), rebuilt from trials.parquet when lost, and ``spfde search --resume NAME -n N`` extending a
finished search with a sampler warm-started from every earlier trial."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

SPACE = ("sparsity.ratio: {type: float, low: 0.5, high: 0.95}\n"
         "sieving.fraction: {type: float, low: 0.0, high: 0.3, step: 0.1}\n")


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "spfde_search.cli", "search", "--storage-path", str(tmp_path / "runs"), *args]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, start_new_session=True)


def _record(tmp_path: Path, name: str) -> list:
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'runs' / name / 'optuna.db'}")
    return study.get_trials()


def _runs(tmp_path: Path, name: str) -> list[str]:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    ids = [e.experiment_id for e in c.search_experiments()]
    runs = c.search_runs(ids, f"tags.`spfde.search` = '{name}' and tags.`spfde.role` = 'trial'", max_results=200)
    return [r.data.tags["spfde.trial_id"] for r in runs]


@pytest.mark.ray
@pytest.mark.slow
def test_a_finished_search_extends_with_a_warm_sampler_and_its_study_survives_loss(tmp_path):
    """4 trials, then --resume -n 8: 8 rows, each earlier trial once in the study and in MLflow, the new trials
    asked of a sampler that already held the 4 (their numbers in its study start at 4); -n below what is done is
    one error line; with optuna.db removed, --resume -n 10 rebuilds it from trials.parquet."""
    (tmp_path / "space.yaml").write_text(SPACE)
    args = ["--space", str(tmp_path / "space.yaml"), "--set", "data.name=synthetic", "--set",
            "data.synthetic_train=512", "--set", "train.epochs=1", "--set", "train.update_interval=1",
            "--max-concurrent", "2", "--cpus-per-trial", "1", "--num-cpus", "2", "--sampler", "tpe", "--seed", "3",
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "-q"]
    res = _cli(tmp_path, *args, "-n", "4", "--name", "s1")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    folder = tmp_path / "runs" / "s1"
    first = pd.read_parquet(folder / "trials.parquet")
    assert len(first) == 4
    told = _record(tmp_path, "s1")
    assert sorted(t.user_attrs["trial_id"] for t in told) == sorted(first["trial_id"])
    for t in told:  # what the sampler was told: both objectives of each completed trial, its sampled params
        row = first[first["trial_id"] == t.user_attrs["trial_id"]].iloc[0]
        assert row["status"] == "COMPLETED" and t.state.name == "COMPLETE"
        assert t.values == pytest.approx([row["val_accuracy"], row["run_train_flops"]])
        assert t.params["sparsity.ratio"] == pytest.approx(json.loads(row["params"])["sparsity.ratio"])

    small = _cli(tmp_path, "--resume", "s1", "-n", "3")
    assert small.returncode == 2 and small.stderr.strip().splitlines() == [
        "error: -n 3: search 's1' has already run 4 trials; give -n 5 or more to extend it"]

    res = _cli(tmp_path, "--resume", "s1", "-n", "8")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    said = " ".join(res.stdout.split())  # the banner, however the console wrapped it
    assert "extending s1:" in said and "8 trials (4 done, the sampler warm-started with them)" in said
    table = pd.read_parquet(folder / "trials.parquet")
    assert len(table) == 8 and table["trial_id"].is_unique and set(table["status"]) == {"COMPLETED"}
    for _, r in first.iterrows():  # the earlier trials kept as they were, not rerun
        assert table[table["trial_id"] == r["trial_id"]].iloc[0]["params"] == r["params"]
    told = _record(tmp_path, "s1")
    ids = [t.user_attrs.get("trial_id") for t in told]
    assert sorted(ids) == sorted(table["trial_id"])  # each of the 8 exactly once (the earlier 4 not copied again)
    new = [t for t in told if t.user_attrs["trial_id"] not in set(first["trial_id"])]
    # the extension's sampler held the 4 earlier trials when it was asked: its trials are numbered from 4
    assert sorted(int(t.system_attrs["spfde:told"].rsplit("#", 1)[1]) for t in new) == [4, 5, 6, 7]
    assert sorted(_runs(tmp_path, "s1")) == sorted(table["trial_id"])  # MLflow: one run per trial of that search
    meta = json.loads((folder / "search.json").read_text())
    assert meta["status"] == "finished" and meta["settings"]["num_samples"] == 8
    assert [(e["from"], e["to"]) for e in meta["extended"]] == [(4, 8)]

    (folder / "optuna.db").unlink()  # lost: the next continuation rebuilds it from trials.parquet
    res = _cli(tmp_path, "--resume", "s1", "-n", "10")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    table10 = pd.read_parquet(folder / "trials.parquet")
    told = _record(tmp_path, "s1")
    assert len(table10) == 10 and sorted(t.user_attrs["trial_id"] for t in told) == sorted(table10["trial_id"])
    rebuilt = [t for t in told if t.system_attrs["spfde:told"].startswith("table#")]
    assert sorted(t.user_attrs["trial_id"] for t in rebuilt) == sorted(table["trial_id"])
    for t in rebuilt:
        row = table[table["trial_id"] == t.user_attrs["trial_id"]].iloc[0]
        assert t.values == pytest.approx([row["val_accuracy"], row["run_train_flops"]])


def test_n_on_an_unfinished_search_says_to_resume_first(tmp_path):
    """-n differing from an unfinished search's: one error line (Ray restores that search with its own -n)."""
    from spfde_search.search import SearchSettings

    folder = tmp_path / "runs" / "half"
    folder.mkdir(parents=True)
    s = SearchSettings(name="half", num_samples=4, storage_path=str(tmp_path / "runs"))
    (folder / "search.json").write_text(json.dumps({"status": "running", "settings": s.model_dump(mode="json")}))
    res = _cli(tmp_path, "--resume", "half", "-n", "8")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "error: -n 8: search 'half' has not finished (-n 4); resume it first with --resume half and no -n, then "
        "extend it with --resume half -n 8"]


def test_study_storage_must_be_a_database_url_without_a_study_of_that_name(tmp_path):
    """--study-storage: a URL Optuna can open, and for a new search no study of its name already (a shared
    database would mix two searches' trials)."""
    import optuna

    from spfde_search.search import SearchError, SearchSettings
    from spfde_search.search.study import check_new_study, check_study_storage

    url = f"sqlite:///{tmp_path / 'o.db'}"
    check_study_storage(url)
    with pytest.raises(SearchError, match=r"--study-storage 'not a url': not a database URL"):
        check_study_storage("not a url")
    s = SearchSettings(name="taken", study_storage=url, storage_path=str(tmp_path / "runs"))
    check_new_study(s)  # no such study yet
    optuna.create_study(study_name="taken", storage=url)
    with pytest.raises(SearchError, match=r"already holds an Optuna study named 'taken'; choose another --name"):
        check_new_study(s)


def test_halving_records_each_config_once_with_its_full_length_cost(tmp_path):
    """--fidelity schedule: the record holds what the Optuna searcher was told: each config's first rung, with the
    config's full-length predicted cost, never a higher rung (those inform the rung book only)."""
    from search_spaces import resolve_space
    from spfde_search.config import load_config
    from spfde_search.search.halving import HALVING_JSON, make_halving
    from spfde_search.search.optuna_search import _search_cls, make_sampler

    base = load_config(None, {"data.name": "synthetic", "model.name": "resnet8", "train.epochs": 4,
                              "train.update_interval": 1})
    space = resolve_space("smoke", base)
    inner = _search_cls()(space=space.fn, metric=["val_accuracy", "run_train_flops"], mode=["max", "min"],
                          sampler=make_sampler("random", 0, space, 2))
    inner.configure(base.to_dict(), None, 1.0, 50, str(tmp_path / "skipped.json"), 2, None)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    inner.study_url, inner.study_name = url, "sh"
    s = make_halving(inner, base.to_dict(), 4, 1, 2, 2, str(tmp_path / HALVING_JSON), None,
                     ["val_accuracy", "run_train_flops"], ["max", "min"])

    def end(epochs: int, acc: float) -> dict:
        return {"val_accuracy": acc, "run_train_flops": 1e9, "epoch": epochs, "epochs_total": epochs}

    for t in ("a", "b"):
        assert s.suggest(t)["fidelity.rung"] == 0
    s.on_trial_complete("a", end(1, 0.6))
    s.on_trial_complete("b", end(1, 0.4))
    up = s.suggest("c")
    assert up["fidelity.rung"] == 1
    s.on_trial_complete("c", end(2, 0.7))  # a higher rung: not told to the sampler, so not in the study
    import optuna

    told = optuna.load_study(study_name="sh", storage=url).get_trials()
    assert sorted(t.user_attrs["trial_id"] for t in told) == ["a", "b"]
    full = {s.book.configs[i]["source"]: s.book.configs[i]["full_flops"] for i in range(len(s.book.configs))}
    for t in told:
        assert t.state.name == "COMPLETE"
        assert t.values == pytest.approx([{"a": 0.6, "b": 0.4}[t.user_attrs["trial_id"]], full[t.user_attrs["trial_id"]]])
        assert set(t.params) == set(t.distributions) and t.params


def test_extend_search_refuses_an_unfinished_search_or_fewer_trials(tmp_path):
    """The notebook API's extension: an unfinished search, or fewer trials than it has run, is one SearchError."""
    import spfde_search
    from spfde_search.search import SearchError, SearchSettings, write_parquet
    from spfde_search.search.results import rows_to_arrow

    folder = tmp_path / "runs" / "nb"
    folder.mkdir(parents=True)
    s = SearchSettings(name="nb", space="smoke", num_samples=2, storage_path=str(tmp_path / "runs"),
                       base_config={"data": {"name": "synthetic"}, "model": {"name": "resnet8"}})
    meta = {"status": "running", "settings": s.model_dump(mode="json")}
    (folder / "search.json").write_text(json.dumps(meta))
    with pytest.raises(SearchError, match="search 'nb' has not finished; resume it first"):
        spfde_search.extend_search("nb", 4, storage_path=str(tmp_path / "runs"), progress=False)
    (folder / "search.json").write_text(json.dumps({**meta, "status": "finished"}))
    rows = [{"trial_id": t, "status": "COMPLETED", "params": "{}", "error": ""} for t in ("t1", "t2")]
    write_parquet(rows_to_arrow(rows), str(folder / "trials.parquet"))
    with pytest.raises(SearchError, match=r"-n 1: search 'nb' has already run 2 trials; give -n 3 or more"):
        spfde_search.extend_search("nb", 1, storage_path=str(tmp_path / "runs"), progress=False)
    assert json.loads((folder / "search.json").read_text())["status"] == "finished"  # nothing changed
