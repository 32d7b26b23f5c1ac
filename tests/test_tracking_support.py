"""Shared helpers for the tracking tests (no tests here): hand-made trial records, an independent Pareto check,
a real ``mlflow server`` on a free 127.0.0.1 port, the ``spfde`` command line, headless Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from spfde_search.config import Config

REPO = Path(__file__).resolve().parents[1]
# screenshots to look at: outside the checkout (tests leave it alone), kept after the run
ARTIFACTS = Path(os.environ.get("SPFDE_TEST_ARTIFACTS") or Path(tempfile.gettempdir()) / "spfde-test-artifacts")
SPFDE = [sys.executable, "-c", "from spfde_search.cli import main; main()"]


def make_config(**overrides: object) -> dict:
    base = {"data.name": "fashion_mnist", "data.train_subset": 1000, "data.test_subset": 500,
            "model.name": "resnet8", "train.epochs": 2, "train.update_interval": 1}
    base.update(overrides)
    return Config().with_overrides(base).to_dict()


def make_records():
    """Nine trials: a frontier of 4 (incl. the paper's MEST 90% point and two tied duplicates), dominated ones,
    an early-stopped one (better than everything, but not full budget), a failed and an infeasible one."""
    from spfde_search.tracking import TrialRecord

    dense = 1.0e12

    def rec(tid, status, acc, ratio, sparsity=0.9, freeze=0.0, sieve=0.0, full=True, epochs=2, error=""):
        params = {"sparsity.ratio": sparsity, "freezing.target_flops_reduction": freeze, "sieving.fraction": sieve}
        cfg = make_config(**params)
        eps = []
        if acc is not None:
            for e in range(1, epochs + 1):
                eps.append({"epoch": e, "timestamp": 1_700_000_000 + 10 * e, "loss": 2.0 / e,
                            "test_accuracy": acc - 0.05 * (epochs - e), "train_flops": ratio * dense * e / epochs,
                            "flops_ratio": ratio * e / epochs, "density": 1 - sparsity})
        final = {}
        if acc is not None:
            final = {"test_accuracy": acc, "train_flops": ratio * dense, "predicted_train_flops": ratio * dense,
                     "dense_train_flops": dense, "flops_ratio": ratio, "saved_sparsity": 0.5 * dense,
                     "saved_freezing": freeze * 0.1 * dense, "saved_sieving": sieve * 0.1 * dense,
                     "epochs_completed": float(epochs), "wall_seconds": 3.0}
        return TrialRecord(tid, status, cfg, params, eps, final, full, error)

    return [
        rec("t0", "COMPLETED", 0.80, 0.30),               # frontier (paper point MEST 90%)
        rec("t1", "COMPLETED", 0.78, 0.20, 0.95),         # frontier
        rec("t2", "COMPLETED", 0.70, 0.25, 0.95, 0.1),    # dominated by t1
        rec("t3", "COMPLETED", 0.85, 0.50, 0.5),          # frontier
        rec("t4", "COMPLETED", 0.85, 0.50, 0.5, 0.0, 0.0),  # identical to t3: both on the frontier
        rec("t5", "EARLY_STOPPED", 0.99, 0.10, 0.8, full=False, epochs=1),  # not full budget: never on it
        rec("t6", "FAILED", None, None, 0.8, error="RuntimeError: boom"),
        rec("t7", "INFEASIBLE", None, None, 0.8, 0.9, error="ConfigError: freezing target 0.9 impossible"),
        rec("t8", "COMPLETED", 0.60, 0.60, 0.3),          # dominated
    ]


def independent_front(points: dict[str, tuple[float, float]]) -> set[str]:
    """Brute force: ids whose (accuracy, flops) no other point dominates (>= acc, <= flops, one strict)."""
    out = set()
    for i, (a, f) in points.items():
        if not any((a2 >= a and f2 <= f and (a2 > a or f2 < f)) for j, (a2, f2) in points.items() if j != i):
            out.add(i)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 300.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop_group(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Stop a process started with start_new_session=True, and everything it spawned."""
    if proc.poll() is None:
        with _suppress():
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with _suppress():
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    with _suppress():  # stragglers (mlflow's job consumers) left in the group
        os.killpg(proc.pid, signal.SIGKILL)


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], (ProcessLookupError, PermissionError))


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 with a SQLite backend; stop() and start() keep the same port/store."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.db = root / "server.db"
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = root / "server.log"

    def start(self) -> MlflowServer:
        exe = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
        cmd = [exe, "server", "--backend-store-uri", f"sqlite:///{self.db}", "--artifacts-destination",
               str(self.root / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.root, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_http(self.url + "/health", proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def mlflow_server(tmp_path):
    with MlflowServer(tmp_path) as s:
        yield s


@pytest.fixture(scope="module")
def synced_store(tmp_path_factory):
    """A SQLite store holding search 's1' (experiment 'exp') synced from ``make_records()``; read-only users."""
    from spfde_search.tracking import Tracker

    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    recs = make_records()
    t = Tracker(uri, "exp", "s1")
    t.sync(recs, {"name": "s1", "space": "spfde", "sampler": "tpe", "seed": 0, "num_samples": len(recs),
                  "base_config": recs[0].config}, close=True)
    return {"uri": uri, "root": root, "records": recs, "experiment_id": t.experiment_id,
            "parent_run_id": t.parent_run_id}


def chromium(url: str, screenshot: Path | None = None, budget_ms: int = 15000, size: str = "1500,1100") -> str:
    """DOM of ``url`` after ``budget_ms`` of virtual time in headless Chromium (and a screenshot if asked)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed")
    common = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", f"--virtual-time-budget={budget_ms}", f"--window-size={size}"]
    with tempfile.TemporaryDirectory() as prof:
        dom = subprocess.run([exe, *common, f"--user-data-dir={prof}", "--dump-dom", url],
                             capture_output=True, text=True, timeout=240).stdout
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as prof:
            subprocess.run([exe, *common, f"--user-data-dir={prof}", f"--screenshot={screenshot}", url],
                           capture_output=True, timeout=240)
    return dom


def write_search_dir(root: Path, name: str, records, tracking_uri: str | None = None) -> Path:
    """A search directory as ``drive_search`` leaves it (search.json, trials.parquet, Ray-style result.json files),
    built from records: what ``spfde sync`` reads."""
    import json

    import pandas as pd

    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    meta = {"name": name, "space": "spfde", "sampler": "tpe", "seed": 0, "num_samples": len(records),
            "base_config": records[0].config, "tracking": {"uri": tracking_uri, "experiment": "exp"}}
    (d / "search.json").write_text(json.dumps(meta))
    rows = []
    for r in records:
        row = r.row()
        row.update({f"param.{k}": v for k, v in r.params.items()})
        rows.append(row)
        tdir = d / f"trainable_{r.trial_id}_00000"
        tdir.mkdir(exist_ok=True)
        with open(tdir / "result.json", "w") as f:
            for e in r.epochs:
                f.write(json.dumps({**{k: v for k, v in e.items() if k != "epoch"}, "epoch": e["epoch"],
                                    "training_iteration": e["epoch"], "trial_id": r.trial_id, "done": False,
                                    "config": r.params}) + "\n")
    pd.DataFrame(rows).to_parquet(d / "trials.parquet", index=False)
    return d
