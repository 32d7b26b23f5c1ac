"""``spfde pareto | ui | export | sync``: the search's MLflow record, read back, browsed, exported, reconciled.

MLflow (and the modules that import it) load lazily inside each command, so ``spfde --help`` stays fast.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import typer

from .cli_app import app

UriOpt = typer.Option(None, "--tracking-uri", help="MLflow store: sqlite:///path/mlflow.db or http://host:port of an "
                      "`mlflow server` (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
ExpOpt = typer.Option(None, "--experiment", help="MLflow experiment (default: any experiment holding the search)")


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _fmt_flops(n: float) -> str:
    if not isinstance(n, (int, float)) or not math.isfinite(n):
        return "-"
    for unit, div in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if abs(n) >= div:
            return f"{n / div:.3f} {unit}"
    return f"{n:.0f}"


@app.command()
def pareto(
    name: str = typer.Argument(..., help="search name (spfde search --name)"),
    tracking_uri: str | None = UriOpt,
    experiment: str | None = ExpOpt,
    json_out: bool = typer.Option(False, "--json", help="print the frontier as JSON instead of a table"),
    all_trials: bool = typer.Option(False, "--all", help="list every trial, frontier marked"),
) -> None:
    """Show the search's Pareto frontier (accuracy vs training FLOPs), read back from MLflow."""
    from .tracking import TrackingUnavailable, frontier_table, read_trials

    try:
        parent, df = read_trials(tracking_uri, name, experiment)
    except TrackingUnavailable as e:
        _fail(str(e))
    rows = df if all_trials else frontier_table(df)
    if json_out:
        def _records(table: Any) -> list[dict[str, Any]]:
            out = []
            for r in table.to_dict("records"):
                r["params"] = json.loads(r.get("params") or "{}")
                out.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()})
            return out

        doc: dict[str, Any] = {"search": name, "parent_run_id": parent.info.run_id,
                               "experiment_id": parent.info.experiment_id, "trials": len(df),
                               "frontier": _records(frontier_table(df))}
        if all_trials:
            doc["all_trials"] = _records(df)
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    n_done = int((df["status"] == "COMPLETED").sum()) if len(df) else 0
    title = (f"search {name}: {'all trials' if all_trials else 'Pareto frontier'} "
             f"({int(df['pareto'].sum()) if len(df) else 0} on the frontier; {n_done} completed of {len(df)} trials)")
    t = Table(title=title)
    for col, just in (("trial", "left"), ("status", "left"), ("pareto", "center"), ("test acc", "right"),
                      ("train FLOPs", "right"), ("ratio", "right"), ("sampled params", "left"),
                      ("run id", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in rows.to_dict("records"):
        params = json.loads(r.get("params") or "{}")
        acc = r.get("test_accuracy")
        t.add_row(str(r["trial_id"]), str(r["status"]), "*" if r["pareto"] else "",
                  f"{acc:.4f}" if isinstance(acc, float) and math.isfinite(acc) else "-",
                  _fmt_flops(r.get("train_flops")),
                  f"{r['flops_ratio']:.4f}" if math.isfinite(r.get("flops_ratio", math.nan)) else "-",
                  " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()),
                  str(r["run_id"]))
    Console(width=200).print(t)
    if not len(rows):
        typer.echo("no completed full-budget trial yet" + (" (was the tracking server down? run `spfde sync "
                   f"{name}`)" if len(df) else ""), err=True)
    typer.echo(f"parent run {parent.info.run_id} in experiment {parent.info.experiment_id}", err=True)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host if host not in ("0.0.0.0", "::") else "127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(host: str, port: int, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.3)
    return False


@app.command()
def ui(
    name: str | None = typer.Argument(None, help="search whose parent run URL to print (default: the latest)"),
    tracking_uri: str | None = UriOpt,
    experiment: str | None = ExpOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="interface to bind (default: local only)"),
    port: int = typer.Option(5000, "--port", help="port (0 = a free one)"),
    workers: int = typer.Option(1, "--workers", help="server worker processes"),
) -> None:
    """Start the MLflow UI on the project's store and print the URL of the search's parent run."""
    from .tracking import (
        ARTIFACT_ROOT_DIRNAME,
        TrackingUnavailable,
        resolve_tracking_uri,
        run_url,
        sqlite_path,
    )

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        # Already a server: nothing to start, just point at the run.
        try:
            _, parent = _parent_or_latest(uri, name, experiment)
            typer.echo(run_url(uri, parent.info.experiment_id, parent.info.run_id))
        except TrackingUnavailable as e:
            _fail(str(e))
        return
    db = sqlite_path(uri)
    if db is None:
        _fail(f"spfde ui serves a SQLite store (sqlite:///…/mlflow.db) or points at a server (http://…); got {uri}")
    if not db.exists():
        _fail(f"no MLflow store at {db}: run `spfde search` first (or pass --tracking-uri)")
    if port == 0:
        port = _free_port(host)
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = f"http://{local}:{port}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
           "--default-artifact-root", str(db.parent / ARTIFACT_ROOT_DIRNAME), "--host", host, "--port", str(port),
           "--workers", str(workers)]
    if mlflow_exe := shutil.which("mlflow"):
        cmd[:3] = [mlflow_exe]
    typer.echo(f"starting the MLflow UI on {uri} ({' '.join(cmd)})", err=True)
    proc = subprocess.Popen(cmd, start_new_session=True)

    def _stop(*_: Any) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def _on_term(*_: Any) -> None:
        _stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, _on_term)
    try:
        if not _wait_port(local, port, proc, timeout=90):
            _stop()
            _fail(f"the MLflow UI did not start on {host}:{port} (port in use? try --port 0)", code=1)
        try:
            _, parent = _parent_or_latest(uri, name, experiment)
            typer.echo(f"MLflow UI: {base}")
            typer.echo(f"search {parent.data.tags.get('spfde.search')}: "
                       + run_url(base, parent.info.experiment_id, parent.info.run_id))
        except TrackingUnavailable as e:
            typer.echo(f"MLflow UI: {base}  ({e})")
        sys.stdout.flush()
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        _stop()


def _parent_or_latest(uri: str, name: str | None, experiment: str | None) -> tuple[Any, Any]:
    from .tracking import TrackingUnavailable, find_parent_run

    if name:
        return find_parent_run(uri, name, experiment)
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in c.search_experiments(max_results=50000)]
    runs = c.search_runs(ids, filter_string="tags.`spfde.role` = 'parent'", order_by=["attributes.start_time DESC"],
                         max_results=1) if ids else []
    if not runs:
        raise TrackingUnavailable("no search recorded yet")
    return c, runs[0]


@app.command()
def export(
    name: str = typer.Argument(..., help="search name"),
    pick: str = typer.Option("knee", "--pick", help="knee | max-accuracy | min-flops | all (frontier schedules)"),
    out: Path = typer.Option(..., "--out", help="directory for the YAML configs"),
    max_flops: float | None = typer.Option(None, "--max-flops",
                                           help="only schedules with training FLOPs <= F (F <= 1: FLOPs ratio)"),
    min_accuracy: float | None = typer.Option(None, "--min-accuracy",
                                              help="only schedules with test accuracy >= A (fraction, or percent)"),
    tracking_uri: str | None = UriOpt,
    experiment: str | None = ExpOpt,
) -> None:
    """Write frontier schedules as complete, runnable configs (`spfde train --config FILE` reruns them)."""
    from .config import ConfigError
    from .export import PICKS, export_search
    from .tracking import TrackingUnavailable

    if pick not in PICKS:
        _fail(f"--pick must be one of {', '.join(PICKS)}, got {pick!r}")
    try:
        written = export_search(name, pick, out, tracking_uri=tracking_uri, experiment=experiment,
                                max_flops=max_flops, min_accuracy=min_accuracy)
    except (TrackingUnavailable, LookupError, ConfigError, ValueError) as e:
        _fail(str(e))
    for w in written:
        typer.echo(f"{w.path}  trial {w.trial_id}  run {w.run_id}  acc {w.test_accuracy:.4f}  "
                   f"training FLOPs {w.train_flops:.0f}  ratio {w.flops_ratio:.4f}")


@app.command()
def sync(
    name: str = typer.Argument(..., help="search name, or the search's directory"),
    storage_path: str | None = typer.Option(None, "--storage-path",
                                            help="results root of `spfde search` [default: runs/search]"),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri",
                                            help="MLflow store (default: the one the search used, from search.json)"),
    experiment: str | None = typer.Option(None, "--experiment", help="MLflow experiment (default: the search's)"),
) -> None:
    """Write a search's results (trials.parquet + per-epoch results) to MLflow; safe to repeat (no duplicates)."""
    from .search import DEFAULT_STORAGE, experiment_uri
    from .tracking import TrackingUnavailable, sync_search

    given = Path(name)
    d = given if (given / "trials.parquet").is_file() else Path(experiment_uri(storage_path or DEFAULT_STORAGE, name))
    try:
        out = sync_search(d, tracking_uri, experiment)
    except FileNotFoundError as e:
        _fail(str(e))
    except TrackingUnavailable as e:
        _fail(str(e), code=1)
    typer.echo(f"synced {out['synced']}/{out['trials']} trials of {d.name} to {out['tracking_uri']} "
               f"(experiment {out['experiment']}, parent run {out['parent_run_id']}); frontier: {out['frontier']}")
