"""A real two-node Ray cluster on loopback; `spfde search --address` places trials on both nodes, with models
whose modules exist only in the driver's folder (the test's tmp dir), one named by the base config and one only
by the search space's ``model.name`` choices: Ray's runtime_env ships both (issue 32)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    def seen() -> bool:
        if path.exists() and text in path.read_text():
            return True
        assert proc.poll() is None, path.read_text()[-3000:]
        return False

    wait_until(seen, timeout, f"{text!r} in {path.name}", detail=lambda: path.read_text()[-3000:])


def _alive_nodes(address: str, env: dict[str, str]) -> int:
    """Nodes the head's GCS counts as alive (a fresh driver process asks it)."""
    probe = (f"import ray; ray.init(address={address!r}, logging_level='ERROR', log_to_driver=False); "
             "print('ALIVE', sum(1 for n in ray.nodes() if n['Alive']))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, env=env)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("ALIVE ")]
    return int(line[-1].split()[1]) if line else 0


def _stop(proc: subprocess.Popen) -> None:
    """End a `ray start --block` we launched, and everything in its process group."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=20)
            time.sleep(1)
        except subprocess.TimeoutExpired:
            continue


DRIVER_ONLY_NET = """
from torch import nn

def tiny_net(num_classes, in_channels, width=8):
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(width, num_classes))
"""


@pytest.mark.ray
@pytest.mark.slow
def test_two_node_cluster_search(tmp_path):
    # The modules live in a project folder on the driver's PYTHONPATH only. Not in its working directory: Ray puts
    # the driver's working directory on every worker's sys.path, and the two loopback nodes share a disk, so a
    # module there would import on the workers without being shipped.
    project = tmp_path / "project"
    project.mkdir()
    (project / "driver_only_nets.py").write_text(DRIVER_ONLY_NET)  # on neither node's path: shipped by Ray
    (project / "space_only_nets.py").write_text(DRIVER_ONLY_NET)  # named by the space alone: shipped too
    space = tmp_path / "nets.yaml"
    space.write_text('model.name: {type: categorical, choices: ["driver_only_nets:tiny_net", '
                     '"space_only_nets:tiny_net"]}\nsparsity.ratio: {type: float, low: 0.5, high: 0.9}\n')
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
           "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus", "1", "--object-store-memory", str(100 * 1024**2), "--node-ip-address", "127.0.0.1",
              "--block", "--disable-usage-stats"]
    head_log, worker_log = tmp_path / "head.log", tmp_path / "worker.log"
    ray_tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    logs = [open(head_log, "w"), open(worker_log, "w")]  # noqa: SIM115 - closed in the finally below
    head = subprocess.Popen(
        [RAY, "start", "--head", "--port", str(port), "--include-dashboard", "false",
         "--temp-dir", ray_tmp, *common],
        stdout=logs[0], stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    worker = None
    try:
        _wait_for(head_log, "Ray runtime started", head)
        worker = subprocess.Popen([RAY, "start", "--address", address, *common], stdout=logs[1],
                                  stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _wait_for(worker_log, "Ray runtime started", worker)
        # the worker's log line can precede the head's view of it: wait until the GCS counts both nodes alive
        wait_until(lambda: _alive_nodes(address, env) == 2, 300, "both Ray nodes alive in the head's GCS")
        cmd = [sys.executable, "-m", "spfde_search.cli", "search", "--address", address, "--space", str(space),
               "--set", "data.name=synthetic", "--set", "data.synthetic_train=1024", "--set", "train.epochs=2",
               "--set", "train.update_interval=1", "--set", "model.name=driver_only_nets:tiny_net",
               "--set", "model.kwargs={width: 6}", "--num-samples", "4", "--max-concurrent", "2",
               "--cpus-per-trial", "1", "--sampler", "random", "--seed", "2",
               "--storage-path", str(tmp_path / "results"), "--name", "cluster",
               "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
        res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                             env={**env, "PYTHONPATH": f"{ROOT}{os.pathsep}{project}"})
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert "Pareto front of cluster" in res.stdout
    finally:
        if worker is not None:
            _stop(worker)
        _stop(head)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        for f in logs:
            f.close()
    df = pd.read_parquet(tmp_path / "results" / "cluster" / "trials.parquet")
    assert len(df) == 4 and df["trial_id"].is_unique
    # every trial trains: a worker without the module would fail the trial ("UserCodeError: ... cannot import")
    assert (df["status"] == "COMPLETED").all(), df[["status", "error"]]
    assert df["node_ip"].str.len().gt(0).all() and df["node_ip"].nunique() == 1  # one machine: one IP
    assert df["node_id"].str.len().gt(0).all()
    assert df["node_id"].nunique() == 2, df[["trial_id", "status", "node_id"]]  # trials ran on both nodes
    meta = json.loads((tmp_path / "results" / "cluster" / "search.json").read_text())
    assert meta["settings"]["address"] == address and meta["status"] == "finished"
    assert meta["settings"]["ship_user_code"] is True
    assert {json.loads(c)["model"]["name"] for c in df["config"]} == {"driver_only_nets:tiny_net",
                                                                       "space_only_nets:tiny_net"}


TOKEN = "0123456789abcdef0123456789abcdef"  # a head's token (Ray's own are 32 hex digits too)


@pytest.mark.ray
@pytest.mark.slow
def test_address_of_a_token_auth_cluster_without_the_token_is_one_error_line(tmp_path):
    """Issue 33 item 11: a head started with ``RAY_AUTH_MODE=token``; `spfde search --address` from a driver that
    has no token is one ``error:`` line saying how to pass it (no traceback, no ``InvalidAuthToken`` lines), and
    nothing is left under the storage path. The same check passes with the token, so it is the token it judges."""
    # each process its own HOME: neither finds a ~/.ray/auth_token of this machine's user
    head_home, driver_home = tmp_path / "head-home", tmp_path / "driver-home"
    head_home.mkdir()
    driver_home.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    base.update({"RAY_DISABLE_DOCKER_CPU_WARNING": "1", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)})
    head_env = {**base, "HOME": str(head_home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}
    driver_env = {**base, "HOME": str(driver_home)}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head_log = tmp_path / "head.log"
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    with open(head_log, "w") as log:
        head = subprocess.Popen(
            [RAY, "start", "--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", ray_tmp,
             "--num-cpus", "1", "--object-store-memory", str(100 * 1024**2), "--node-ip-address", "127.0.0.1",
             "--block", "--disable-usage-stats"],
            stdout=log, stderr=subprocess.STDOUT, env=head_env, start_new_session=True)
        try:
            _wait_for(head_log, "Ray runtime started", head)
            results = tmp_path / "results"
            cmd = [sys.executable, "-m", "spfde_search.cli", "search", "--address", address, "--space", "smoke",
                   "--set", "data.name=synthetic", "--num-samples", "2", "--storage-path", str(results),
                   "--name", "tokenless", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
            res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=driver_env)
            out = res.stdout + res.stderr
            assert res.returncode != 0, out
            errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
            assert len(errors) == 1 and "RAY_AUTH_MODE=token" in errors[0] and "RAY_AUTH_TOKEN" in errors[0], out
            assert f"--address {address}" in errors[0], out
            assert "Traceback" not in out and "InvalidAuthToken" not in out, out
            assert not results.exists() or not any(results.rglob("*")), sorted(results.rglob("*"))  # no lock, no folder
            # with the token the same check lets the driver through (it returns the address Ray connects to)
            probe = ("from spfde_search.search.runtime import check_address; "
                     f"print('JOINABLE', check_address({address!r}, 60))")
            ok = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                                env={**driver_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN})
            assert ok.returncode == 0 and "JOINABLE" in ok.stdout, ok.stdout + ok.stderr
        finally:
            _stop(head)
            shutil.rmtree(ray_tmp, ignore_errors=True)
