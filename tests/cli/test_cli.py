"""One command line: the same short options, ``--json`` meaning, defaults in ``--help``, optional search names,
one-line errors, and ``spfde ui`` on a non-loopback host warning and restricting Host headers."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import test_tracking_support as support
from typer.testing import CliRunner

from spfde_search.cli import app
from spfde_search.cli.app import compat_argv

synced_store = support.synced_store  # shared fixture: search 's1' synced from make_records()
COMMANDS = ("train", "flops", "search", "pareto", "ui", "export", "sync")


def _run(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_no_bool_metavars(command):
    res = _run(command, "--help")
    assert res.exit_code == 0, res.output
    assert "<bool>" not in res.output and "--help" in res.output


def test_search_help_shows_defaults_and_the_train_short_options():
    out = _run("search", "--help").output
    for s in ("-c", "-s", "(default: 16)", "(default: auto)", "(default: joint)", "(default: runs/search)",
              "(default: 2)"):
        assert s in out, s
    train = _run("train", "--help").output
    assert re.search(r"--config\s+-c", train) and re.search(r"--set\s+-s", train)
    assert re.search(r"--config\s+-c", out) and re.search(r"--set\s+-s", out)


def test_search_takes_c_and_s(tmp_path):
    """-c FILE -s path=value reach the config (a bad value is refused by its field; a good one, `off` for a
    string field included, passes and the command goes on to the next check: the unknown --resume name)."""
    cfg = support.REPO / "configs" / "demo_search.yaml"
    res = _run("search", "-c", str(cfg), "-s", "train.epochs=0", "--storage-path", str(tmp_path))
    assert res.exit_code == 2 and "train.epochs" in res.output and "Traceback" not in res.output
    res = _run("search", "-c", str(cfg), "-s", "train.epochs=2", "-s", "train.channels_last=off",
               "--resume", "nope", "--storage-path", str(tmp_path))
    assert res.exit_code == 2, res.output
    assert "train." not in res.output and "nope" in res.output  # the config passed; the resume name did not


def test_bare_json_is_stdout_for_pareto_only():
    assert compat_argv(["pareto", "s1", "--json"]) == ["pareto", "s1", "--json", "-"]
    assert compat_argv(["pareto", "s1", "--json", "--all"]) == ["pareto", "s1", "--json", "-", "--all"]
    assert compat_argv(["pareto", "--json", "-", "s1"]) == ["pareto", "--json", "-", "s1"]
    assert compat_argv(["pareto", "s1", "--json", "out.json"]) == ["pareto", "s1", "--json", "out.json"]
    assert compat_argv(["train", "--json"]) == ["train", "--json"]


def test_flops_json_dash_is_stdout_and_path_is_a_file(tmp_path):
    res = _run("flops", "--json", "-")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["train_flops"] > 0  # stdout is only the JSON; the table went to stderr
    p = tmp_path / "f.json"
    res = _run("flops", "--json", str(p))
    assert res.exit_code == 0 and json.loads(p.read_text())["train_flops"] > 0
    assert "predicted training FLOPs" in res.stdout


@pytest.mark.mlflow
def test_pareto_json_knee_hypervolume_and_latest_search(synced_store, tmp_path):
    from spfde_search.pareto import hypervolume

    uri = synced_store["uri"]
    for args in (["pareto", "s1", "--json"], ["pareto", "--json", "-"], ["pareto", "s1", "--json", "-"]):
        res = _run(*args, "--tracking-uri", uri)
        assert res.exit_code == 0, res.output
        doc = json.loads(res.stdout)
        assert doc["search"] == "s1"  # no NAME: the latest search
        assert doc["knee"]["trial_id"] == "t0" and doc["knee"]["knee"] is True
        assert sum(r["knee"] for r in doc["frontier"]) == 1
        want = hypervolume([r["test_accuracy"] for r in doc["frontier"]], [r["flops_ratio"] for r in doc["frontier"]])
        assert doc["hypervolume"] == pytest.approx(want) and doc["hypervolume"] > 0
        assert doc["warning"] is None and doc["chance_accuracy"] == pytest.approx(0.1)
        # these trials have no validation accuracy (a search without a split, or from before it): test selected,
        # and the answer says so
        assert doc["selected_on"] == "test_accuracy" and "selected on TEST" in doc["selection_warning"]
    out = tmp_path / "p.json"
    res = _run("pareto", "s1", "--json", str(out), "--tracking-uri", uri)
    assert res.exit_code == 0 and json.loads(out.read_text())["knee"]["trial_id"] == "t0"
    assert "knee" in res.stdout  # a path keeps the table on the terminal


@pytest.mark.mlflow
def test_pareto_table_marks_the_knee_with_a_word_and_one_flops_format(synced_store):
    uri = synced_store["uri"]
    res = _run("pareto", "s1", "--tracking-uri", uri)
    assert res.exit_code == 0, res.output
    assert "*" not in res.stdout
    knee_rows = [ln for ln in res.stdout.splitlines() if re.search(r"\bknee\b", ln) and "t0" in ln]
    assert len(knee_rows) == 1 and "300.00 GFLOPs" in knee_rows[0]
    assert "freezing.start_epoch" not in res.stdout and "None" not in res.stdout
    res = _run("pareto", "s1", "--all", "--tracking-uri", uri)
    assert res.exit_code == 0, res.output
    # 200 columns are too few for reason + parameters + run id side by side: each goes on a line under its row
    lines = res.stdout.splitlines()
    for status, why in (("INFEASIBLE", "reason: ConfigError: freezing target 0.9 impossible"),
                        ("FAILED", "reason: RuntimeError: boom")):
        rows = [i for i, ln in enumerate(lines) if status in ln]
        assert len(rows) == 1 and any(why in ln for ln in lines[rows[0] + 1:rows[0] + 5]), res.stdout


@pytest.mark.mlflow
def test_export_onto_a_file_is_one_error_line(synced_store, tmp_path):
    f = tmp_path / "taken"
    f.write_text("x")
    for out in (f, f / "sub"):
        res = _run("export", "s1", "--out", str(out), "--tracking-uri", synced_store["uri"])
        assert res.exit_code == 2, res.output
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and "is a file" in lines[0], res.output
    assert f.read_text() == "x"


@pytest.mark.mlflow
def test_export_defaults_to_a_git_ignored_folder(synced_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = _run("export", "s1", "--tracking-uri", synced_store["uri"])
    assert res.exit_code == 0, res.output
    assert list((tmp_path / "exported" / "s1").glob("s1-knee-t0.yaml"))
    (tmp_path / "runs" / "search" / "s1").mkdir(parents=True)
    res = _run("export", "s1", "--pick", "min-flops", "--tracking-uri", synced_store["uri"])
    assert res.exit_code == 0 and list((tmp_path / "runs" / "search" / "s1" / "exported").glob("*.yaml"))
    ignored = subprocess.run(["git", "check-ignore", "-q", "exported/s1/x.yaml"], cwd=support.REPO)
    assert ignored.returncode == 0  # the fallback folder is git-ignored in the checkout


@pytest.mark.mlflow
def test_export_of_a_search_whose_driver_is_gone_warns_as_pareto_does(tmp_path):
    """Issue 34 item 4: MLflow shows the search running, but no driver holds its folder's lock (a SIGKILL leaves
    exactly this: the kernel drops the flock with the process). `spfde pareto` warned; `spfde export` wrote the
    partial frontier without a word."""
    from mlflow import MlflowClient

    from spfde_search.tracking import SEARCH_DIR_TAG, Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recs = support.make_records()
    t = Tracker(uri, "exp", "k1")
    t.sync(recs, {"name": "k1", "space": "spfde", "sampler": "tpe", "seed": 0, "num_samples": len(recs),
                  "base_config": recs[0].config}, close=True)
    folder = tmp_path / "runs" / "k1"
    folder.mkdir(parents=True)
    (folder / ".lock").write_text("")  # the lock file a killed driver leaves, held by nobody
    c = MlflowClient(tracking_uri=uri)
    c.set_tag(t.parent_run_id, SEARCH_DIR_TAG, str(folder))
    c.update_run(t.parent_run_id, status="RUNNING")
    for cmd in (["pareto", "k1"], ["export", "k1", "--out", str(tmp_path / "out")]):
        res = _run(*cmd, "--tracking-uri", uri)
        assert res.exit_code == 0, res.output
        said = " ".join(res.output.split())
        assert "warning: the driver of search k1 is gone (killed?)" in said and "--resume k1" in said, (cmd, said)
    assert list((tmp_path / "out").glob("k1-knee-*.yaml"))


def test_loopback_detection():
    from spfde_search.cli.tracking import _is_loopback, _listen_addresses

    assert _is_loopback("127.0.0.1") and _is_loopback("localhost") and _is_loopback("::1")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("::") and not _is_loopback("10.1.2.3")
    assert _listen_addresses("10.1.2.3") == ["10.1.2.3"]
    assert all(not a.startswith("127.") for a in _listen_addresses("0.0.0.0"))


def _get(url: str, host: str) -> int:
    req = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


@pytest.mark.mlflow
@pytest.mark.slow
def test_ui_on_all_interfaces_warns_and_restricts_host_headers(synced_store, tmp_path):
    port = support.free_port()
    proc = subprocess.Popen([*support.SPFDE, "ui", "--tracking-uri", synced_store["uri"], "--host", "0.0.0.0",
                             "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        lines, deadline = [], time.monotonic() + 150
        while time.monotonic() < deadline and not any("/runs/" in ln for ln in lines):
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line and proc.poll() is not None:
                break
            lines.append(line)
        assert any(f"http://127.0.0.1:{port}/#/experiments/" in ln for ln in lines), lines
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=5"
        assert _get(api, f"localhost:{port}") == 200
        assert _get(api, f"attacker.example:{port}") == 403  # DNS rebinding: refused
    finally:
        support.stop_group(proc)
    err = proc.stderr.read()  # type: ignore[union-attr]
    assert "WITHOUT authentication" in err and "--allowed-hosts" in err


@pytest.mark.mlflow
@pytest.mark.slow
def test_ui_is_quiet_no_access_lines_nor_server_start_up_notes(synced_store, tmp_path):
    """Issue 33 item 10: `spfde ui` prints its links; requests leave no uvicorn access line, and MLflow's
    start-up notes and Starlette's deprecation warning are not passed on."""
    port = support.free_port()
    proc = subprocess.Popen([*support.SPFDE, "ui", "--tracking-uri", synced_store["uri"], "--port", str(port)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        lines, deadline = [], time.monotonic() + 150
        while time.monotonic() < deadline and not any("/runs/" in ln for ln in lines):
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line and proc.poll() is not None:
                break
            lines.append(line)
        assert any(f"http://127.0.0.1:{port}/#/experiments/" in ln for ln in lines), lines
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=5"
        for _ in range(3):
            assert _get(api, f"localhost:{port}") == 200
        time.sleep(1.0)  # an access line, were there one, is written as the request ends
    finally:
        support.stop_group(proc)
    out = "".join(lines) + proc.stdout.read() + proc.stderr.read()  # type: ignore[union-attr]
    assert "starting the MLflow UI" in out  # spfde's own line stays
    for noise in ("GET /api", "HTTP/1.1", "StarletteDeprecationWarning", "Security middleware", "Registry store URI",
                  "Started server process", "Uvicorn running"):
        assert noise not in out, (noise, out)


def test_rays_restore_hint_is_dropped_and_auth_notes_wait_for_vv(caplog):
    """Issue 33 item 10: after SIGTERM / Ctrl-C Ray Tune logs "Resume experiment with: Tuner.restore(...)"; we print
    our own `--resume` line, so that one goes at every verbosity, while other Tune warnings stay. Ray's
    auth-token notes show only from -vv (worker logs), not under -v."""
    import logging

    from spfde_search.search.progress import quiet_library_noise

    auth = logging.getLogger("ray._private.authentication.authentication_token_setup")
    try:
        for verbose in (1, 2, 3):
            quiet_library_noise(verbose)
            assert (auth.getEffectiveLevel() <= logging.WARNING) == (verbose >= 3), verbose
        tune = logging.getLogger("ray.tune.tune")
        with caplog.at_level(logging.WARNING, logger="ray.tune.tune"):
            tune.warning('Experiment has been interrupted, but the most recent state was saved.\n'
                         'Resume experiment with: Tuner.restore(path="/x", trainable=...)')
            tune.warning("a trial failed")
        assert [r.getMessage() for r in caplog.records if r.name == "ray.tune.tune"] == ["a trial failed"]
        assert len(tune.filters) == 1  # called three times, filtered once
    finally:
        auth.setLevel(logging.NOTSET)
