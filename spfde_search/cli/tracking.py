"""``spfde pareto | ui | export | sync``: the search's MLflow record, read back, browsed, exported, reconciled.

MLflow (and the modules that import it) load lazily inside each command, after the checks that need no MLflow
(``precheck.py``: the store exists and holds the search), so ``spfde --help`` and a typo answer fast.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import typer

from .app import app, make_console, table_width

UriOpt = typer.Option(None, "--tracking-uri", help="MLflow store: sqlite:///path/mlflow.db or http://host:port of an "
                      "`mlflow server` (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
ExpOpt = typer.Option(None, "--experiment", help="MLflow experiment (default: any experiment holding the search)")


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _precheck(tracking_uri: str | None, name: str | None) -> None:
    """A missing store or an unknown search name, answered before MLflow is imported (cli/precheck.py)."""
    from .precheck import PrecheckError, check_recorded_search

    try:
        check_recorded_search(tracking_uri, name)
    except PrecheckError as e:
        _fail(str(e))


JsonOpt = typer.Option(None, "--json", metavar="PATH",  # a bare --json: see cli.compat_argv
                       help="write the answer as JSON to PATH; '-' (or --json alone) prints it instead of the table")


def _base_config(parent: Any) -> dict[str, Any]:
    """The search's base config, flat, from the parent run's ``base.*`` params (MLflow keeps strings)."""
    from ..config import parse_value

    out: dict[str, Any] = {}
    for k, v in parent.data.params.items():
        if k.startswith("base."):  # parse_value: on/off stay strings for string fields; bad YAML stays text
            out[k[5:]] = None if v == "None" else parse_value(k[5:], v)
    return out


def _finite_or_none(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _records(table: Any) -> list[dict[str, Any]]:
    out = []
    for r in table.to_dict("records"):
        r["params"] = json.loads(r.get("params") or "{}")
        out.append({k: _finite_or_none(v) for k, v in r.items()})
    return out


def write_json_doc(target: str, doc: Mapping[str, Any]) -> None:
    """``--json`` everywhere: '-' prints the document on stdout, anything else is a file path."""
    text = json.dumps(doc, indent=2, default=str)
    if target == "-":
        typer.echo(text)
        return
    path = Path(target)
    if path.is_dir():
        _fail(f"--json {target}: is a directory; give a file path (or '-' for stdout)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    except OSError as e:  # read-only folder or file system, a parent that is a file, a full disk
        _fail(f"--json {target}: cannot write {e.filename or path} ({e.strerror or e}); give a writable path, or "
              "'-' for stdout", code=1)


@app.command()
def pareto(
    name: str | None = typer.Argument(None, help="search name (spfde search --name) (default: the latest search)"),
    tracking_uri: str | None = UriOpt,
    experiment: str | None = ExpOpt,
    json_out: str | None = JsonOpt,
    all_trials: bool = typer.Option(False, "--all", help="list every trial, with why a trial failed or was refused"),
    max_flops: float | None = typer.Option(
        None, "--max-flops", metavar="R",
        help="the answer at a budget: the best schedule (by validation accuracy) with training FLOPs <= R "
             "(R <= 1: ratio of dense training), as in `spfde export --max-flops`"),
) -> None:
    """Show the search's answer read back from MLflow: the Pareto frontier (validation accuracy vs training FLOPs,
    test accuracy beside it) and its knee, the hypervolume, and a warning when the best accuracy is near chance;
    with --max-flops, the best schedule within that budget."""
    if max_flops is not None and not (max_flops > 0 and math.isfinite(max_flops)):  # bad input before anything
        from ..export import check_max_flops

        try:
            check_max_flops(max_flops)
        except ValueError as e:
            _fail(str(e))
    _precheck(tracking_uri, name)
    from ..export import choose
    from ..pareto import hypervolume, selected_on
    from ..plots import (
        answer_table,
        chance_accuracy,
        chance_warning,
        display_params,
        format_accuracy,
        knee_trial,
        selection_note,
    )
    from ..tracking import TrackingUnavailable, frontier_table, read_trials, resolve_tracking_uri

    try:
        if name is None:
            _, latest = _parent_or_latest(resolve_tracking_uri(tracking_uri), None, experiment)
            name = str(latest.data.tags.get("spfde.search"))
        parent, df = read_trials(tracking_uri, name, experiment)
    except TrackingUnavailable as e:
        _fail(str(e))
    gone = _driver_gone(parent, df, name)
    if gone and len(df):
        df.loc[df["status"].isin(["RUNNING", "PENDING"]), "status"] = "INTERRUPTED"
    front = frontier_table(df)
    knee = knee_trial(front)
    metric = selected_on(df) if len(df) else "val_accuracy"
    hv = float(hypervolume(front[metric].to_numpy(float), front["flops_ratio"].to_numpy(float))) \
        if len(front) else 0.0
    base = _base_config(parent)
    chance = chance_accuracy(base.get("data.name"))
    done = df[df["status"] == "COMPLETED"] if len(df) else df
    warn = chance_warning(done[metric].max() if len(done) else None, chance)
    note = selection_note(df) if len(df) else ""
    best = choose(front, "max-accuracy", max_flops=max_flops) if max_flops is not None and len(front) else None
    if max_flops is not None and (best is None or not len(best)):
        cheapest = (f"; the cheapest frontier schedule costs {front['flops_ratio'].min():.4g}x dense "
                    f"({front['train_flops'].min():.4g} training FLOPs)") if len(front) else " (no frontier yet)"
        _fail(f"no completed schedule of {name!r} within --max-flops {max_flops:g}{cheapest}", code=1)
    if json_out is not None:
        frontier = _records(front)
        for r in frontier:
            r["knee"] = r["trial_id"] == knee
            r["sampled"] = display_params(r["params"], base)
        doc: dict[str, Any] = {
            "search": name, "parent_run_id": parent.info.run_id, "experiment_id": parent.info.experiment_id,
            "selected_on": metric, "trials": len(df), "hypervolume": hv,
            "hypervolume_reference": {metric: 0.0, "flops_ratio": 1.0},
            "knee": next((r for r in frontier if r["knee"]), None), "chance_accuracy": chance,
            "warning": warn or None, "selection_warning": note or None, "frontier": frontier,
        }
        if best is not None and max_flops is not None:
            answer = _records(best.drop(columns=["pick"]))[0]
            answer["sampled"] = display_params(answer["params"], base)
            doc["at_budget"] = {"max_flops": max_flops, "bound": "flops_ratio" if max_flops <= 1 else "train_flops",
                                "best": answer}
        if all_trials:
            doc["all_trials"] = _records(df)
        write_json_doc(json_out, doc)
        if json_out == "-":
            return

    n_done = len(done)
    console = make_console()
    if best is not None and max_flops is not None:
        bound = f"{max_flops:g}x dense" if max_flops <= 1 else f"{max_flops:.4g} training FLOPs"
        r = best.iloc[0]
        title = (f"search {name}: the best schedule within {bound} (by {metric}; {len(front)} on the frontier, "
                 f"{n_done} completed of {len(df)} trials)")
        console.print(answer_table(best, title, knee=knee, base=base, status=True, run_id=True,
                                   width=table_width(console)))
        params = display_params(r["params"], base)
        typer.echo(f"best within {bound}: trial {r['trial_id']}  validation accuracy "
                   f"{format_accuracy(r.get('val_accuracy'))}  test accuracy {format_accuracy(r.get('test_accuracy'))}  training FLOPs "
                   f"{float(r['train_flops']):.4g} ({float(r['flops_ratio']):.4f}x dense)  "
                   + "  ".join(f"{k}={v}" for k, v in params.items()))
    else:
        title = (f"search {name}: {'all trials' if all_trials else 'Pareto frontier'} ({len(front)} on the "
                 f"frontier; {n_done} completed of {len(df)} trials; hypervolume {hv:.4f})")
        rows = df if all_trials else front
        console.print(answer_table(rows, title, knee=knee, base=base, status=True, frontier=all_trials,
                                   reason=all_trials, run_id=True, width=table_width(console)))
    if warn:
        typer.echo(f"warning: {warn}", err=True)
    if gone:
        typer.echo(f"warning: {gone}", err=True)
    if note:
        typer.echo(f"warning: {note}", err=True)
    if not len(front):
        typer.echo("no completed full-budget trial yet" + (" (was the tracking server down? run `spfde sync "
                   f"{name}`)" if len(df) else ""), err=True)
    typer.echo(f"parent run {parent.info.run_id} in experiment {parent.info.experiment_id}", err=True)


def _driver_gone(parent: Any, df: Any, name: str) -> str:
    """A line when MLflow shows the search running but no driver holds its folder's lock (killed: SIGKILL, OOM, a
    lost machine), else ''. Trials it shows RUNNING are then shown INTERRUPTED."""
    from ..search import driver_alive
    from ..tracking import SEARCH_DIR_TAG

    folder = parent.data.tags.get(SEARCH_DIR_TAG)
    running = parent.info.status == "RUNNING" or (len(df) and df["status"].isin(["RUNNING", "PENDING"]).any())
    if not folder or not running or driver_alive(folder) is not False:
        return ""
    storage = folder.rstrip("/").rsplit("/", 1)[0]
    return (f"the driver of search {name} is gone (killed?): nothing runs it, although MLflow still shows it "
            f"running; continue with `spfde search --resume {name} --storage-path {storage}`")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host if host not in ("0.0.0.0", "::") else "127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_in_use(host: str, port: int) -> str:
    """'' if ``host:port`` can be bound now, else why not: a server that is already there would answer our
    readiness check and the URLs printed would point at it."""
    with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: a closing one's TIME_WAIT is free
        try:
            s.bind((host.strip("[]"), port))
        except OSError as e:
            return e.strerror or str(e)
    return ""


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


# Lines of `mlflow server` a user of `spfde ui` cannot act on: MLflow's start-up notes (spfde ui prints its own
# warnings for an exposed --host) and Starlette's deprecation of a module MLflow imports, with its source line.
_SERVER_NOISE = re.compile(r"Registry store URI not provided|\[MLflow\] Security middleware enabled|"
                           r"StarletteDeprecationWarning|^\s+from starlette\.|INFO mlflow\.server\.jobs")


def _quiet_server_env() -> dict[str, str]:
    """The server's environment: MLflow's own loggers at WARNING."""
    return {**os.environ, "MLFLOW_LOGGING_LEVEL": os.environ.get("MLFLOW_LOGGING_LEVEL", "WARNING")}


def _relay_server_output(stream: Any) -> None:
    """Pass the server's output on to stderr, less ``_SERVER_NOISE``: what is left is worth reading."""
    for line in iter(stream.readline, ""):
        if not _SERVER_NOISE.search(line):
            sys.stderr.write(line)
            sys.stderr.flush()


@app.command()
def ui(
    name: str | None = typer.Argument(None, help="search whose parent run URL to print (default: the latest)"),
    tracking_uri: str | None = UriOpt,
    experiment: str | None = ExpOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="interface to bind (default: 127.0.0.1, this machine "
                             "only); any other host exposes the store WITHOUT authentication"),
    port: int = typer.Option(5000, "--port", help="port (0 = a free one)"),
    workers: int = typer.Option(1, "--workers", help="server worker processes"),
    allowed_hosts: str | None = typer.Option(
        None, "--allowed-hosts", metavar="HOSTS",
        help="Host headers the server answers (MLflow's --allowed-hosts, comma-separated, * wildcards) (default: "
             "localhost and, for a non-loopback --host, the addresses it listens on)"),
) -> None:
    """Start the MLflow UI on the project's store; print the URLs of the search's trial runs, their accuracy vs
    training FLOPs charts, its parent run and its frontier plot."""
    if name is not None:
        _precheck(tracking_uri, name)
    from ..tracking import ARTIFACT_ROOT_DIRNAME, TrackingUnavailable, resolve_tracking_uri, sqlite_path

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        # Already a server: nothing to start, just point at the run.
        try:
            for line in _ui_links(uri, *_parent_or_latest(uri, name, experiment)):
                typer.echo(line)
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
    elif busy := _port_in_use(host, port):
        _fail(f"--port {port}: {host}:{port} is already in use ({busy}); another server (an earlier `spfde ui`?) "
              "answers there: stop it, or use --port 0 for a free port", code=1)
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = f"http://{local}:{port}"
    # quiet: no access line per request, no uvicorn start-up lines (warnings and errors still show)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
           "--default-artifact-root", str(db.parent / ARTIFACT_ROOT_DIRNAME), "--host", host, "--port", str(port),
           "--workers", str(workers), "--uvicorn-opts", "--no-access-log --log-level warning"]
    exposed = not _is_loopback(host)
    addresses = _listen_addresses(host) if exposed else []
    if allowed_hosts is None and exposed:
        allowed_hosts = ",".join(["localhost:*", "127.0.0.1:*", *(f"{a}:{port}" for a in addresses)])
    if allowed_hosts is not None:
        cmd += ["--allowed-hosts", allowed_hosts]
    if exposed:
        reach = ", ".join(f"http://{a}:{port}" for a in addresses) or f"http://<this machine>:{port}"
        for line in (f"WARNING: --host {host} serves the MLflow store to the network WITHOUT authentication: anyone "
                     f"who can reach {reach} can read and change every run and artifact.",
                     f"WARNING: requests are answered for the Host headers {allowed_hosts} (--allowed-hosts); use "
                     "--host 127.0.0.1 with an SSH tunnel, or an authenticating proxy, unless this network is "
                     "trusted."):
            typer.secho(line, err=True, fg="red", bold=True)
    if mlflow_exe := shutil.which("mlflow"):
        cmd[:3] = [mlflow_exe]
    typer.echo(f"starting the MLflow UI on {uri} ({shlex.join(cmd)})", err=True)
    proc = subprocess.Popen(cmd, start_new_session=True, env=_quiet_server_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    threading.Thread(target=_relay_server_output, args=(proc.stdout,), daemon=True).start()

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
        if not _wait_port(local, port, proc, timeout=90) or proc.poll() is not None:  # alive: ours answers
            _stop()
            _fail(f"the MLflow UI did not start on {host}:{port} (exit status {proc.returncode}; port in use? try "
                  "--port 0)", code=1)
        try:
            links = _ui_links(base, *_parent_or_latest(uri, name, experiment))
            typer.echo(f"MLflow UI: {base}" + "".join(f"  (on the network: http://{a}:{port})" for a in addresses))
            for line in links:
                typer.echo(line)
        except TrackingUnavailable as e:
            typer.echo(f"MLflow UI: {base}  ({e})")
        sys.stdout.flush()
        rc = proc.wait()
    except KeyboardInterrupt:
        rc = 0
    finally:
        _stop()
    if rc:  # the server ended by itself with an error: say so and pass its status on
        _fail(f"the MLflow UI server exited with status {rc}", code=rc if 0 < rc < 256 else 1)


def _ui_links(base: str, client: Any, parent: Any) -> list[str]:
    """The lines ``spfde ui`` prints: the search's trial runs (a saved view: the sampled parameters, accuracies,
    training FLOPs and ``pareto`` as columns; ``tracking/views.py``), the same view's charts (accuracy vs log10
    training FLOPs), its parent run, and the parent's frontier plot."""
    from ..tracking import ensure_search_view, run_url

    search = str(parent.data.tags.get("spfde.search"))
    exp, run = parent.info.experiment_id, parent.info.run_id
    runs = run_url(base, exp, view=ensure_search_view(client, parent))
    return [f"trial runs of search {search}: {runs}",
            f"accuracy vs training FLOPs of search {search}: {runs}&compareRunsMode=CHART",
            f"search {search}: {run_url(base, exp, run)}",
            f"frontier plot of search {search}: {run_url(base, exp, run, artifact='pareto_front.html')}"]


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except OSError:
            return False


def _listen_addresses(host: str) -> list[str]:
    """The addresses a server bound to ``host`` is reached at (a wildcard host: this machine's own)."""
    if host not in ("0.0.0.0", "::", ""):
        return [host]
    found: list[str] = []
    with contextlib.suppress(OSError):
        found += [str(a[4][0]) for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only asks the kernel for the outgoing address
        found.append(s.getsockname()[0])
    return [a for a in dict.fromkeys(found) if not a.startswith("127.")]


def _parent_or_latest(uri: str, name: str | None, experiment: str | None) -> tuple[Any, Any]:
    from ..tracking import TrackingUnavailable, find_parent_run

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
    out: Path | None = typer.Option(None, "--out", metavar="DIR", help="directory for the YAML configs (default: "
                                    "<storage path>/<search>/exported, else ./exported/<search>; both git-ignored)"),
    max_flops: float | None = typer.Option(None, "--max-flops",
                                           help="only schedules with training FLOPs <= F (F <= 1: FLOPs ratio)"),
    min_accuracy: float | None = typer.Option(None, "--min-accuracy",
                                              help="only schedules with validation accuracy >= A (fraction, or "
                                                   "percent)"),
    tracking_uri: str | None = UriOpt,
    experiment: str | None = ExpOpt,
) -> None:
    """Write frontier schedules as complete, runnable configs (`spfde train --config FILE` reruns them)."""
    from ..config import ConfigError
    from ..export import PICKS, check_out_dir, default_out_dir, export_search
    from ..plots import format_accuracy, format_flops
    from ..tracking import TrackingUnavailable, read_trials

    if pick not in PICKS:
        _fail(f"--pick must be one of {', '.join(PICKS)}, got {pick!r}")
    _precheck(tracking_uri, name)
    target = out if out is not None else default_out_dir(name)
    try:
        target = check_out_dir(target)
        parent, df = read_trials(tracking_uri, name, experiment)
        gone = _driver_gone(parent, df, name)  # as `spfde pareto` says: the frontier of a killed search is partial
        if gone:
            typer.echo(f"warning: {gone}", err=True)
        written = export_search(name, pick, target, tracking_uri=tracking_uri, experiment=experiment,
                                max_flops=max_flops, min_accuracy=min_accuracy)
    except (TrackingUnavailable, LookupError, ConfigError, ValueError) as e:
        _fail(str(e))
    except OSError as e:  # an unwritable folder: name it, whether given (--out) or the default
        at = f" at {e.filename}" if e.filename and str(e.filename) != str(target) else ""
        _fail(f"cannot write the configs to {target} ({e.strerror or e}{at}); give a writable --out DIR", code=1)
    for w in written:
        typer.echo(f"{w.path}  trial {w.trial_id}  run {w.run_id}  val {format_accuracy(w.val_accuracy)}  "
                   f"test {w.test_accuracy:.4f}  "
                   f"training FLOPs {format_flops(w.train_flops)}  ratio {w.flops_ratio:.4f}")


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
    from ..search import DEFAULT_STORAGE, experiment_uri
    from ..tracking import SearchFileError, TrackingUnavailable, TrackingUriError, sync_search

    given = Path(name)
    d = given if (given / "trials.parquet").is_file() else Path(experiment_uri(storage_path or DEFAULT_STORAGE, name))
    try:
        out = sync_search(d, tracking_uri, experiment)
    except (FileNotFoundError, TrackingUriError, SearchFileError) as e:  # bad input, a damaged file: exit 2
        _fail(str(e))
    except TrackingUnavailable as e:
        _fail(str(e), code=1)
    typer.echo(f"synced {out['synced']}/{out['trials']} trials of {d.name} to {out['tracking_uri']} "
               f"(experiment {out['experiment']}, parent run {out['parent_run_id']}); frontier: {out['frontier']}")
