"""Faults that must end in one ``error:`` line naming the right thing (issue 23 items 5, 6, 9-11): a dead
``--address``, a busy ``spfde ui`` port, damaged or read-only search files, bad counts. None runs a trial."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import test_tracking_support as support
import typer
from typer.testing import CliRunner

from spfde_search.search import SearchSettings

synced_store = support.synced_store  # shared fixture: a store synced from make_records()

CLI = [sys.executable, "-m", "spfde_search.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
SYNTH = ["--set", "data.name=synthetic", "--set", "train.epochs=2", "--set", "train.update_interval=1"]


def _invoke(*args: str):
    from spfde_search.cli import app

    return CliRunner().invoke(app, list(args))


def _one_error(r, code: int = 2) -> str:
    """``code``, no traceback and exactly one ``error:`` line (a CliRunner result or a finished process)."""
    out = r.output if hasattr(r, "output") else r.stdout + r.stderr
    rc = r.exit_code if hasattr(r, "exit_code") else r.returncode
    assert rc == code, out
    if hasattr(r, "exception"):
        assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in out and "Usage:" not in out, out
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, out
    return errors[0]


def _stored_search(root: Path, name: str = "x", **meta: object) -> Path:
    """A search folder as ``spfde search`` leaves it (search.json), without running one."""
    folder = root / name
    folder.mkdir(parents=True)
    settings = SearchSettings(name=name, space="smoke", base_config={}, storage_path=str(root))
    (folder / "search.json").write_text(json.dumps({"name": name, "status": "interrupted",
                                                    "settings": settings.model_dump(mode="json"), **meta}))
    return folder


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on return: nothing listens there


# ---------------------------------------------------------------- item 5: a dead --address


def test_an_address_with_no_cluster_fails_at_once_and_writes_nothing(tmp_path):
    port = _closed_port()
    r = subprocess.run([*CLI, "search", "--space", "smoke", *SYNTH, "--address", f"127.0.0.1:{port}",
                        "--connect-timeout", "5", "--storage-path", str(tmp_path), "--name", "dead",
                        "--tracking-uri", "none"], capture_output=True, text=True, env=ENV, timeout=240)
    line = _one_error(r)
    assert f"--address 127.0.0.1:{port}" in line and f"ray status --address 127.0.0.1:{port}" in line
    assert not (tmp_path / "dead").exists()  # no search.json 'running' that would block the name


def _dead_address_run(tmp_path: Path, port: int, timeout: str) -> tuple[str, list[str]]:
    r = _invoke("search", "--space", "smoke", *SYNTH, "--address", f"127.0.0.1:{port}", "--connect-timeout", timeout,
                "--storage-path", str(tmp_path), "--name", "dead", "--tracking-uri", "none")
    line = _one_error(r)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines[0] == line, r.output  # before the banner that says we are joining the cluster
    assert re.findall(r"\d+\.\d+\.\d+\.\d+:\d+", line) == [f"127.0.0.1:{port}"] * 2, line  # not Ray's node IP
    assert not (tmp_path / "dead").exists()
    return line, lines


def test_a_refused_address_is_named_as_given_with_the_real_wait(tmp_path):
    """Issue 34 item 4. Before: the banner first, then Ray's rewrite of 127.0.0.1 (the node's IP) and 'within 30 s'
    for a refusal that came at once."""
    line, _ = _dead_address_run(tmp_path, _closed_port(), "30")
    assert "connection refused after" in line and "within" not in line, line


def test_an_address_that_never_answers_names_the_timeout_given(tmp_path):
    with socket.socket() as full:  # listen(0) with one connection queued: Linux drops further SYNs, connect hangs
        full.bind(("0.0.0.0", 0))  # Ray checks 127.0.0.1 at the node's own IP
        full.listen(0)
        port = full.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            line, _ = _dead_address_run(tmp_path, port, "1")
    assert "no answer within 1 s, --connect-timeout" in line, line


# ---------------------------------------------------------------- item 6: spfde ui on a busy port


def test_ui_on_a_port_in_use_says_so_and_exits_non_zero(tmp_path):
    (tmp_path / "mlflow.db").write_bytes(b"")
    with socket.socket() as other:  # another server on the port
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        r = subprocess.run([*CLI, "ui", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--port", str(port)],
                           capture_output=True, text=True, env=ENV, timeout=240)
    line = _one_error(r, code=1)
    assert f"127.0.0.1:{port} is already in use" in line and "--port 0" in line
    assert "MLflow UI:" not in r.stdout  # no URL pointing at the other server


# ---------------------------------------------------------------- items 9-10: damaged search files


def test_a_truncated_tuner_pkl_is_one_line_and_search_json_is_left_alone(tmp_path):
    folder = _stored_search(tmp_path)
    (folder / "tuner.pkl").write_bytes(b"\x80\x05\x95\x10\x00\x00")  # a pickle cut short
    before = (folder / "search.json").read_bytes()
    r = subprocess.run([*CLI, "search", "--resume", "x", "--storage-path", str(tmp_path), "--tracking-uri", "none"],
                       capture_output=True, text=True, env=ENV, timeout=300)
    line = _one_error(r)
    assert "cannot resume 'x'" in line and "tuner.pkl" in line and str(folder) in line
    assert (folder / "search.json").read_bytes() == before


def test_a_garbled_search_json_is_named(tmp_path):
    folder = _stored_search(tmp_path)
    (folder / "search.json").write_text('{"name": "x", "settings": {')
    line = _one_error(_invoke("search", "--resume", "x", "--storage-path", str(tmp_path)))
    assert str(folder / "search.json") in line and "cannot be read" in line


def test_a_wrong_field_in_search_json_is_blamed_on_the_file_not_an_option(tmp_path):
    folder = _stored_search(tmp_path)
    meta = json.loads((folder / "search.json").read_text())
    meta["settings"]["num_samples"] = -4
    (folder / "search.json").write_text(json.dumps(meta))
    line = _one_error(_invoke("search", "--resume", "x", "--storage-path", str(tmp_path)))
    assert f"{folder / 'search.json'}: settings.num_samples:" in line and "(got -4)" in line
    assert "--num-samples" not in line


# ---------------------------------------------------------------- item 11: one line, not a traceback


@pytest.mark.parametrize("n", ["0", "-3"])
def test_a_trial_count_below_one_is_an_error_line(tmp_path, n):
    line = _one_error(_invoke("search", "--space", "smoke", *SYNTH, "-n", n, "--storage-path", str(tmp_path)))
    assert "--num-samples" in line and f"(got {n})" in line


def test_a_flops_budget_ratio_of_one_or_more_warns_that_it_constrains_nothing(tmp_path):
    port = _closed_port()  # the search then stops at the dead address: the warning comes before any trial
    r = _invoke("search", "--space", "smoke", *SYNTH, "--flops-budget", "2", "--address", f"127.0.0.1:{port}",
                "--storage-path", str(tmp_path), "--tracking-uri", "none", "-q")
    warnings = [ln for ln in r.output.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "--flops-budget 2" in warnings[0] and "constrains nothing" in warnings[0]
    r = _invoke("search", "--space", "smoke", *SYNTH, "--flops-budget", "0.5", "--address", f"127.0.0.1:{port}",
                "--storage-path", str(tmp_path), "--tracking-uri", "none", "-q")
    assert "warning:" not in r.output


def test_resume_in_a_read_only_search_folder_is_one_line(tmp_path, read_only):
    folder = read_only(_stored_search(tmp_path))
    line = _one_error(_invoke("search", "--resume", "x", "--storage-path", str(tmp_path), "--tracking-uri", "none"))
    assert f"cannot take the lock {folder / '.lock'}" in line and "writable" in line


def test_sync_with_a_truncated_trials_table_names_it(tmp_path):
    folder = _stored_search(tmp_path)
    import pandas as pd

    pd.DataFrame({"trial_id": ["a", "b"], "status": ["COMPLETED", "FAILED"]}).to_parquet(folder / "trials.parquet")
    data = (folder / "trials.parquet").read_bytes()
    (folder / "trials.parquet").write_bytes(data[: len(data) // 2])
    line = _one_error(_invoke("sync", "x", "--storage-path", str(tmp_path),
                              "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"))
    assert f"{folder / 'trials.parquet'} cannot be read" in line


def test_json_to_a_read_only_folder_is_one_line(tmp_path, read_only, capsys):
    from spfde_search.cli.tracking import write_json_doc

    (tmp_path / "ro").mkdir()
    ro = read_only(tmp_path / "ro")
    with pytest.raises(typer.Exit) as e:
        write_json_doc(str(ro / "front.json"), {"a": 1})
    assert e.value.exit_code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --json {ro / 'front.json'}: cannot write") and "'-'" in err[0]


@pytest.mark.mlflow
def test_export_into_a_read_only_default_folder_names_the_folder(synced_store, tmp_path, read_only, monkeypatch):
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(read_only(tmp_path / "here"))  # the default --out is ./exported/<search> here
    line = _one_error(_invoke("export", "s1", "--tracking-uri", synced_store["uri"]), code=1)
    assert "cannot write the configs to exported/s1" in line and "None" not in line
