"""MLflow adapter: one parent run per search, one nested run per trial, the Pareto frontier as tags and artifacts.

Only the search driver talks to MLflow (a Ray Tune callback, ``make_callback``); trials never open the store.
Every write is idempotent and keyed by stable tags, so the live callback and ``spfde sync`` share one code path:

- parent run: tags ``spfde.search=<name>``, ``spfde.role=parent``;
- trial run:  tags ``spfde.search=<name>``, ``spfde.role=trial``, ``spfde.trial_id=<id>``, ``mlflow.parentRunId``;
- progress:   ``spfde.epochs_logged=<n>`` is written in the same batch as epoch n's metrics, ``spfde.final_logged``
  in the same batch as the final metrics, so a rerun logs only what is missing (no duplicate runs or points);
- frontier:   ``pareto=true`` on the non-dominated completed full-budget trials, ``pareto=false`` on every other
  trial run; ``hypervolume`` (accuracy vs FLOPs ratio, reference (0, 1)) and ``pareto_front.{parquet,csv,png,html}``
  on the parent.

A failing MLflow call (server down) is caught and logged as a warning; the tracker then stays quiet for
``retry_after`` seconds and catches up on the next event. Nothing is lost: the search's own ``trials.parquet`` and
Ray's ``result.json`` files stay the source of truth, and ``sync_search`` replays them.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import logging
import math
import os
import platform
import re
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from spfde_search.config import Config, apply_overrides, config_to_yaml, field_info, flatten

__all__ = [
    "TrialRecord",
    "Tracker",
    "TrackingUnavailable",
    "default_tracking_uri",
    "resolve_tracking_uri",
    "default_experiment_name",
    "make_callback",
    "tracking_settings",
    "callbacks_for",
    "describe_tracking",
    "sync_search",
    "find_parent_run",
    "read_trials",
    "frontier_table",
    "run_url",
    "frontier_flags",
    "FINAL_METRICS",
]

log = logging.getLogger(__name__)

TERMINAL = ("COMPLETED", "EARLY_STOPPED", "FAILED", "INFEASIBLE")
MLFLOW_STATUS = {"COMPLETED": "FINISHED", "EARLY_STOPPED": "FINISHED", "FAILED": "FAILED", "INFEASIBLE": "FAILED"}
FINAL_METRICS = (
    "test_accuracy", "train_flops", "predicted_train_flops", "dense_train_flops", "flops_ratio",
    "saved_sparsity", "saved_freezing", "saved_sieving", "freeze_start_epoch", "epochs_completed", "wall_seconds",
    "run_train_flops", "run_flops_ratio",
)
# trials.parquet column -> MLflow metric name (absolute training FLOPs saved, SPFDE.md §5)
_METRIC_NAME = {"saved_sparsity": "flops_saved_sparsity", "saved_freezing": "flops_saved_freezing",
                "saved_sieving": "flops_saved_sieving"}
# Keys of a reported result that are not per-epoch training metrics: Ray's own, and per-trial constants
# (logged once, with the final metrics).
_NOT_EPOCH = {
    "training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "done", "pid", "hostname", "node_ip",
    "node_id", "iterations_since_restore", "time_since_restore", "timesteps_total", "episodes_total",
    "timesteps_since_restore", "trial_id", "date", "config", "experiment_tag", "should_checkpoint",
    "checkpoint_dir_name", "experiment_id", "warmup_time", "epoch", "infeasible", "error",
    "run_train_flops", "run_flops_ratio", "constraint_violation", "saved_sparsity", "saved_freezing",
    "saved_sieving", "freeze_start_epoch", "epochs_total",
}
ARTIFACT_ROOT_DIRNAME = "mlartifacts"
PARENT_ARTIFACTS = ("pareto_front.parquet", "pareto_front.csv", "pareto_front.png", "pareto_front.html")


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached or holds no such search; the message says which."""


# ---------------------------------------------------------------- where things live


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the SQLite file ``./mlflow.db`` (absolute)."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    return f"sqlite:///{(Path.cwd() / 'mlflow.db').resolve()}"


def resolve_tracking_uri(uri: str | None) -> str:
    if not uri:
        return default_tracking_uri()
    if uri.startswith("file:") or ("://" not in uri and not uri.startswith("databricks")):
        p = Path(uri.removeprefix("file:").removeprefix("//"))
        if p.suffix == ".db" or not p.exists() or p.is_file():
            return f"sqlite:///{p.resolve()}"
        raise ValueError(
            f"tracking uri {uri!r}: MLflow >= 3.13 no longer supports file stores; use sqlite:///path/mlflow.db "
            "or http://host:port of an `mlflow server`"
        )
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` URI, else None."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):].split("?", 1)[0])
    return None


def default_experiment_name(base_config: Mapping[str, Any] | Config | None) -> str:
    """``spfde-<model>-<data set>``, e.g. ``spfde-resnet8-fashion_mnist``."""
    cfg = base_config.to_dict() if isinstance(base_config, Config) else dict(base_config or {})
    model = (cfg.get("model") or {}).get("name", "model")
    data = (cfg.get("data") or {}).get("name", "data")
    width = (cfg.get("model") or {}).get("width", 1)
    return f"spfde-{model}{'' if width in (1, None) else f'x{width}'}-{data}"


def run_url(base: str, experiment_id: str, run_id: str | None = None) -> str:
    base = base.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")


# ---------------------------------------------------------------- records


@dataclass
class TrialRecord:
    """One trial, as in a ``trials.parquet`` row (docs/architecture.md), plus its per-epoch metrics."""

    trial_id: str
    status: str = "PENDING"
    config: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    full_budget: bool = False
    error: str = ""
    start_time: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def on_frontier_candidate(self) -> bool:
        return (self.status == "COMPLETED" and self.full_budget and _finite(self.final.get("test_accuracy"))
                and _finite(self.final.get("train_flops")))

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {"trial_id": self.trial_id, "status": self.status, "full_budget": self.full_budget}
        out.update({k: self.final.get(k) for k in FINAL_METRICS})
        out["error"] = self.error
        out["params"] = json.dumps(self.params, sort_keys=True, default=str)
        out["config"] = json.dumps(self.config, sort_keys=True, default=str)
        return out

    @classmethod
    def from_row(cls, row: Mapping[str, Any], epochs: Sequence[Mapping[str, Any]] = ()) -> TrialRecord:
        """From a ``trials.parquet`` row (and the trial's ``result.json`` lines for per-epoch metrics)."""
        config = _json(row.get("config"))
        params = _json(row.get("params"))
        final = {k: float(row[k]) for k in FINAL_METRICS if k in row and _finite(row[k])}
        return cls(
            trial_id=str(row["trial_id"]), status=str(row.get("status") or "PENDING"), config=config,
            params=params, epochs=[_epoch_metrics(e) for e in epochs if _epoch_metrics(e)],
            final=final, full_budget=bool(row.get("full_budget") or False), error=str(row.get("error") or ""),
        )


def _json(v: Any) -> dict[str, Any]:
    if isinstance(v, Mapping):
        return dict(v)
    if isinstance(v, str) and v.strip():
        try:
            out = json.loads(v)
            return out if isinstance(out, dict) else {}
        except ValueError:
            return {}
    return {}


def _finite(x: Any) -> bool:
    try:
        return x is not None and not isinstance(x, bool) and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _epoch_metrics(result: Mapping[str, Any]) -> dict[str, Any]:
    """Numeric training metrics of one reported epoch, with ``epoch`` (step) and ``timestamp`` (seconds)."""
    epoch = result.get("epoch", result.get("training_iteration"))
    if not _finite(epoch) or int(epoch) < 1 or result.get("infeasible") is True:
        return {}  # an infeasible point's single report trains nothing
    out: dict[str, Any] = {"epoch": int(epoch)}
    if _finite(result.get("timestamp")):
        out["timestamp"] = float(result["timestamp"])
    for k, v in result.items():
        if k in _NOT_EPOCH or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(float(v)):
            out[k] = float(v)
    return out


def frontier_flags(records: Sequence[TrialRecord]) -> dict[str, bool]:
    """trial_id -> on the frontier: non-dominated (``pareto.non_dominated``: max accuracy, min training FLOPs)
    among the completed full-budget trials; every other trial is False."""
    from spfde_search.pareto import non_dominated

    flags = {r.trial_id: False for r in records}
    cands = [r for r in records if r.on_frontier_candidate]
    if cands:
        mask = non_dominated([float(r.final["test_accuracy"]) for r in cands],
                             [float(r.final["train_flops"]) for r in cands])
        for r, on in zip(cands, mask, strict=True):
            flags[r.trial_id] = bool(on)
    return flags


def hypervolume_of(records: Sequence[TrialRecord]) -> float:
    """Area dominated by the completed full-budget trials, accuracy (up) vs FLOPs ratio (down), reference (0, 1)."""
    from spfde_search.pareto import hypervolume

    pts = [(float(r.final["test_accuracy"]), float(r.final["flops_ratio"])) for r in records
           if r.on_frontier_candidate and _finite(r.final.get("flops_ratio"))]
    if not pts:
        return 0.0
    return float(hypervolume([p[0] for p in pts], [p[1] for p in pts], ref=(0.0, 1.0)))


# ---------------------------------------------------------------- tracker


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("spfde-search", "torch", "torchvision", "ray", "optuna", "mlflow", "numpy", "pydantic"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _git_sha() -> str:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _param_str(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, (list, tuple, dict)) else ("None" if v is None else str(v))
    return s[:6000]


def _chunks(seq: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


class Tracker:
    """Idempotent MLflow writer for one search. Every public method swallows tracking errors (returns False).

    Args:
        tracking_uri: ``sqlite:///…/mlflow.db`` or ``http://host:port`` (None: ``default_tracking_uri()``).
        experiment: MLflow experiment name (created if missing).
        search: the search's name (``spfde.search`` tag).
        retry_after: after a failed call, seconds during which further calls are skipped (not retried); doubles
            with each consecutive failure, up to 300 s, and resets on success.
        request_timeout: HTTP timeout of one request to a tracking server, seconds.
        fail_fast: for a live search: switch MLflow's HTTP retries off (unless ``MLFLOW_HTTP_REQUEST_*`` are set)
            so a dead server costs one refused connection, not minutes of back-off. ``sync`` keeps MLflow's retries.
    """

    def __init__(self, tracking_uri: str | None, experiment: str, search: str, *, retry_after: float = 20.0,
                 request_timeout: float = 10.0, artifacts: bool = True, fail_fast: bool = True) -> None:
        self.uri = resolve_tracking_uri(tracking_uri)
        self.experiment = experiment
        self.search = search
        self.retry_after = retry_after
        self.artifacts = artifacts
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run" line per call
        if fail_fast and self.uri.startswith(("http://", "https://")):
            # MLflow's defaults (7 retries, exponential backoff, 120 s timeout) would stall the search for
            # minutes per call while the server is down; fail fast instead and catch up later.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(request_timeout)))
        self._client: Any = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._parent_meta: dict[str, Any] | None = None
        self._parent_logged = False
        self._runs: dict[str, str] = {}  # trial_id -> run_id
        self._epochs_logged: dict[str, int] = {}
        self._params_logged: set[str] = set()
        self._final_logged: set[str] = set()
        self._pareto: dict[str, bool] = {}
        self._hv_steps: set[int] | None = None
        self._existing_loaded = False
        self._down_until = 0.0
        self._backoff = retry_after
        self.failures = 0

    # ---- plumbing

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run fn; on any error warn once per outage, back off, and return None."""
        if not self.available():
            return None
        try:
            out = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - tracking must never stop the search
            self.failures += 1
            wait = self._backoff
            self._down_until = time.monotonic() + wait
            # a server that hangs (rather than refuses) costs a request timeout per attempt: back off further
            self._backoff = min(wait * 2, 300.0)
            log.warning("MLflow tracking at %s failed while %s (%s: %s); the search goes on and its own results "
                        "keep everything; next try in %.0f s (or run `spfde sync %s` later)",
                        self.uri, what, type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "",
                        wait, self.search)
            return None
        self._backoff = self.retry_after
        return out

    def _ensure_experiment(self) -> str:
        if self.experiment_id is not None:
            return self.experiment_id
        c = self.client
        exp = c.get_experiment_by_name(self.experiment)
        if exp is None:
            location = None
            db = sqlite_path(self.uri)
            if db is not None:
                slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.experiment)
                location = str((db.parent / ARTIFACT_ROOT_DIRNAME / slug).resolve())
            try:
                self.experiment_id = c.create_experiment(self.experiment, artifact_location=location)
            except Exception:
                exp = c.get_experiment_by_name(self.experiment)  # created concurrently
                if exp is None:
                    raise
                self.experiment_id = exp.experiment_id
        else:
            if exp.lifecycle_stage == "deleted":
                c.restore_experiment(exp.experiment_id)
            self.experiment_id = exp.experiment_id
        return self.experiment_id

    def _find_runs(self, role: str, trial_id: str | None = None) -> list[Any]:
        flt = f"tags.`spfde.search` = '{_q(self.search)}' and tags.`spfde.role` = '{role}'"
        if trial_id is not None:
            flt += f" and tags.`spfde.trial_id` = '{_q(trial_id)}'"
        runs = _search_all(self.client, [self._ensure_experiment()], flt)
        return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))

    # ---- parent

    def start(self, meta: Mapping[str, Any] | None = None) -> bool:
        """Find or create the parent run and log the search's description (idempotent)."""
        if meta is not None:
            self._parent_meta = dict(meta)
        return bool(self._guard("creating the parent run", self._start))

    def _start(self) -> bool:
        c = self.client
        if self.parent_run_id is None:
            eid = self._ensure_experiment()
            runs = self._find_runs("parent")
            if runs:
                self.parent_run_id = runs[0].info.run_id
                for dup in runs[1:]:
                    c.delete_run(dup.info.run_id)
            else:
                run = c.create_run(eid, run_name=self.search,
                                   tags={"spfde.search": self.search, "spfde.role": "parent"})
                self.parent_run_id = run.info.run_id
        if not self._parent_logged and self._parent_meta is not None:
            self._log_parent_meta(self._parent_meta)
            self._parent_logged = True
        return True

    def _log_parent_meta(self, meta: Mapping[str, Any]) -> None:
        from mlflow.entities import Param, RunTag

        c = self.client
        assert self.parent_run_id is not None
        existing = c.get_run(self.parent_run_id).data.params
        params: dict[str, str] = {}
        for key in ("space", "sampler", "seed", "num_samples", "flops_budget", "flops_budget_absolute",
                    "dense_train_flops", "objectives", "initial_points", "created"):
            if key in meta:
                params[f"search.{key}"] = _param_str(meta[key])
        for k, v in (meta.get("parameters") or {}).items():  # the search space: one param per dimension
            params[f"space.{k}"] = _param_str(v)
        settings = meta.get("settings") or {}
        for key in ("max_concurrent", "cpus_per_trial", "gpus_per_trial", "early_stopping", "address"):
            if key in settings:
                params[f"search.{key}"] = _param_str(settings[key])
        base = meta.get("base_config") or meta.get("base") or {}
        for k, v in flatten(base).items():
            params[f"base.{k}"] = _param_str(v)
        for pkg, ver in _versions().items():
            params[f"version.{pkg}"] = ver
        sha = _git_sha()
        params["git_sha"] = sha
        params = {k: v for k, v in params.items() if k not in existing}
        tags = [RunTag("mlflow.source.git.commit", sha), RunTag("spfde.tracking", "driver-callback"),
                RunTag("mlflow.note.content", _parent_note(self.search, meta))]
        items = [Param(k, v) for k, v in params.items()]
        for i, chunk in enumerate(_chunks(items, 100)):
            c.log_batch(self.parent_run_id, params=list(chunk), tags=tags if i == 0 else [])
        if not items:
            c.log_batch(self.parent_run_id, tags=tags)
        if self.artifacts:
            with tempfile.TemporaryDirectory() as td:
                p = Path(td) / "search.json"
                p.write_text(json.dumps(dict(meta), indent=2, default=str))
                c.log_artifact(self.parent_run_id, str(p))
                if isinstance(meta.get("base_config"), Mapping):
                    with contextlib.suppress(Exception):
                        y = Path(td) / "base_config.yaml"
                        y.write_text(config_to_yaml(Config.parse(meta["base_config"])))
                        c.log_artifact(self.parent_run_id, str(y))

    def finish(self, status: str = "FINISHED") -> bool:
        def _f() -> bool:
            self._start()
            assert self.parent_run_id is not None
            self.client.set_terminated(self.parent_run_id, status=status)
            return True

        return bool(self._guard("closing the parent run", _f))

    # ---- trials

    def upsert_trial(self, rec: TrialRecord) -> bool:
        """Bring the trial's run up to date: create it, params + config artifact, new epochs, final state."""
        return bool(self._guard(f"logging trial {rec.trial_id}", self._upsert, rec))

    def _trial_run(self, rec: TrialRecord) -> str:
        c = self.client
        tid = rec.trial_id
        if tid in self._runs:
            return self._runs[tid]
        self._start()
        if not self._existing_loaded:
            self._load_existing()
            if tid in self._runs:
                return self._runs[tid]
        runs = self._find_runs("trial", tid)  # created since (by another writer)
        if runs:
            run = runs[0]
            self._adopt(run)
        else:
            assert self.parent_run_id is not None
            start_ms = int(rec.start_time * 1000) if rec.start_time else None
            run = c.create_run(self._ensure_experiment(), run_name=tid, start_time=start_ms, tags={
                "mlflow.parentRunId": self.parent_run_id, "spfde.search": self.search, "spfde.role": "trial",
                "spfde.trial_id": tid, "spfde.status": rec.status,
            })
        self._runs[tid] = run.info.run_id
        return run.info.run_id

    def _load_existing(self) -> None:
        """One query for every trial run of this search already in the store (a resumed driver, or sync)."""
        by_tid: dict[str, list[Any]] = {}
        for run in self._find_runs("trial"):
            by_tid.setdefault(run.data.tags.get("spfde.trial_id", ""), []).append(run)
        for runs in by_tid.values():
            self._adopt(runs[0])
            for dup in runs[1:]:  # a create whose reply was lost, then retried: keep the oldest
                self.client.delete_run(dup.info.run_id)
        self._existing_loaded = True

    def _adopt(self, run: Any) -> None:
        tid = run.data.tags["spfde.trial_id"]
        tags = run.data.tags
        self._runs[tid] = run.info.run_id
        self._epochs_logged[tid] = int(tags.get("spfde.epochs_logged", 0))
        if tags.get("spfde.params_logged") == "true":
            self._params_logged.add(tid)
        if tags.get("spfde.final_logged") == "true":
            self._final_logged.add(tid)
        if "pareto" in tags:
            self._pareto[tid] = tags["pareto"] == "true"

    def _upsert(self, rec: TrialRecord) -> bool:
        from mlflow.entities import Metric, Param, RunTag

        c = self.client
        tid = rec.trial_id
        run_id = self._trial_run(rec)
        if tid not in self._params_logged and rec.config:
            flat = flatten(rec.config)
            params = [Param(k, _param_str(v)) for k, v in sorted(flat.items())]
            existing = c.get_run(run_id).data.params
            params = [p for p in params if p.key not in existing]
            if self.artifacts:
                with tempfile.TemporaryDirectory() as td:
                    p = Path(td) / "config.yaml"
                    p.write_text(_config_yaml(rec))
                    c.log_artifact(run_id, str(p))
            chunks = list(_chunks(params, 100)) or [[]]
            sampled = json.dumps(rec.params, sort_keys=True, default=str)[:5000]
            for i, chunk in enumerate(chunks):
                is_last = i == len(chunks) - 1
                tags = [RunTag("spfde.params_logged", "true"), RunTag("spfde.sampled", sampled)] if is_last else []
                c.log_batch(run_id, params=list(chunk), tags=tags)
            self._params_logged.add(tid)
        done = self._epochs_logged.get(tid, 0)
        for ep in sorted(rec.epochs, key=lambda e: e["epoch"]):
            step = int(ep["epoch"])
            if step <= done:
                continue
            ts = int(ep.get("timestamp", time.time()) * 1000)
            metrics = [Metric(k, float(v), ts, step) for k, v in ep.items() if k not in ("epoch", "timestamp")]
            chunks = list(_chunks(metrics, 900)) or [[]]
            for i, chunk in enumerate(chunks):
                # the progress tag rides in the same request as the epoch's (last) metrics; metric timestamps
                # are the result's own, so a replay after a lost reply adds no duplicate points
                tags = [RunTag("spfde.epochs_logged", str(step))] if i == len(chunks) - 1 else []
                c.log_batch(run_id, metrics=list(chunk), tags=tags)
            done = step
            self._epochs_logged[tid] = step
        if rec.terminal and tid not in self._final_logged:
            last: dict[str, Any] = max(rec.epochs, key=lambda e: e["epoch"]) if rec.epochs else {}
            step = int(last.get("epoch", rec.final.get("epochs_completed", 0) or 0))
            ts = int(last.get("timestamp", time.time()) * 1000)
            final = {k: float(v) for k, v in rec.final.items() if _finite(v)}
            metrics = []
            for k in FINAL_METRICS:
                if k not in final or (k in last and float(last[k]) == final[k]):  # already at this step
                    continue
                metrics.append(Metric(_METRIC_NAME.get(k, k), final[k], ts, step))
            dense = final.get("dense_train_flops", 0.0)
            for part in ("sparsity", "freezing", "sieving"):
                if f"saved_{part}" in final and dense > 0:
                    metrics.append(Metric(f"flops_saved_{part}_fraction", final[f"saved_{part}"] / dense, ts, step))
            tags = [RunTag("spfde.status", rec.status), RunTag("spfde.full_budget", str(rec.full_budget).lower()),
                    RunTag("spfde.final_logged", "true")]
            if rec.error:
                tags.append(RunTag("spfde.error", rec.error[:5000]))
            c.log_batch(run_id, metrics=metrics, tags=tags)
            c.set_terminated(run_id, status=MLFLOW_STATUS.get(rec.status, "FINISHED"))
            self._final_logged.add(tid)
        elif not rec.terminal:
            c.set_tag(run_id, "spfde.status", rec.status)
        return True

    # ---- frontier

    def update_frontier(self, records: Sequence[TrialRecord], *, artifacts: bool = True) -> bool:
        """Re-tag ``pareto`` where it changed, log ``hypervolume`` and the frontier artifacts on the parent."""
        return bool(self._guard("updating the Pareto frontier", self._update_frontier, records, artifacts))

    def _update_frontier(self, records: Sequence[TrialRecord], artifacts: bool) -> bool:
        from mlflow.entities import Metric

        c = self.client
        self._start()
        assert self.parent_run_id is not None
        flags = frontier_flags(records)
        for rec in records:
            if rec.trial_id not in self._runs:
                continue  # not in MLflow yet (server was down): tagged when it is upserted
            want = flags.get(rec.trial_id, False)
            if self._pareto.get(rec.trial_id) != want:
                c.set_tag(self._runs[rec.trial_id], "pareto", "true" if want else "false")
                self._pareto[rec.trial_id] = want
        done = [r for r in records if r.on_frontier_candidate]
        if self._hv_steps is None:
            self._hv_steps = {m.step for m in c.get_metric_history(self.parent_run_id, "hypervolume")}
        step = len(done)
        if step and step not in self._hv_steps:
            ts = int(time.time() * 1000)
            n_failed = sum(r.status in ("FAILED", "INFEASIBLE") for r in records)
            c.log_batch(self.parent_run_id, metrics=[
                Metric("hypervolume", hypervolume_of(records), ts, step),
                Metric("frontier_size", float(sum(flags.values())), ts, step),
                Metric("trials_completed", float(step), ts, step),
                Metric("trials_failed", float(n_failed), ts, step),
                Metric("best_test_accuracy", max(float(r.final["test_accuracy"]) for r in done), ts, step),
            ])
            self._hv_steps.add(step)
        if artifacts and self.artifacts:
            table = self.trials_table(records, flags)
            with tempfile.TemporaryDirectory() as td:
                write_frontier_artifacts(table, Path(td), title=f"search {self.search}")
                for name in PARENT_ARTIFACTS:
                    c.log_artifact(self.parent_run_id, str(Path(td) / name))
        return True

    def trials_table(self, records: Sequence[TrialRecord], flags: Mapping[str, bool] | None = None) -> pd.DataFrame:
        flags = frontier_flags(records) if flags is None else flags
        rows = []
        for r in records:
            row = r.row()
            row["pareto"] = bool(flags.get(r.trial_id, False))
            row["run_id"] = self._runs.get(r.trial_id, "")
            rows.append(row)
        return pd.DataFrame(rows)

    def sync(self, records: Sequence[TrialRecord], meta: Mapping[str, Any] | None, *, close: bool) -> dict[str, Any]:
        """Write every record, then the frontier; raise TrackingUnavailable if anything failed."""
        self.retry_after = self._backoff = 0.0
        self.start(meta)
        ok = [self.upsert_trial(r) for r in records]
        front_ok = self.update_frontier(records)
        if close and all(r.terminal for r in records):
            self.finish("FINISHED")
        if self.failures:
            raise TrackingUnavailable(f"{self.failures} MLflow call(s) to {self.uri} failed; nothing was lost, "
                                      f"run `spfde sync {self.search}` again when the store is reachable")
        return {"trials": len(records), "synced": sum(ok), "frontier": sum(frontier_flags(records).values()),
                "parent_run_id": self.parent_run_id, "experiment_id": self.experiment_id, "ok": front_ok}


def _search_all(client: Any, experiment_ids: list[str], flt: str) -> list[Any]:
    """Every run matching the filter (follows page tokens)."""
    out: list[Any] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string=flt, max_results=1000, page_token=token)
        out.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return out


def _q(s: str) -> str:
    return s.replace("'", "\\'")


def _parent_note(name: str, meta: Mapping[str, Any]) -> str:
    return (f"SpFDE search **{name}**: space `{meta.get('space', '?')}`, sampler `{meta.get('sampler', '?')}`, "
            f"{meta.get('num_samples', '?')} trials, seed {meta.get('seed', '?')}. Child runs are trials; "
            "filter `tags.pareto = 'true'` for the Pareto frontier (accuracy vs training FLOPs).")


def _config_yaml(rec: TrialRecord) -> str:
    header = f"SpFDE trial {rec.trial_id} (status {rec.status}); sampled: {json.dumps(rec.params, default=str)}"
    try:
        return config_to_yaml(Config.parse(rec.config), header=header)
    except Exception:  # noqa: BLE001 - an invalid config (INFEASIBLE) is still recorded as given
        import yaml

        return "".join(f"# {line}\n" for line in header.splitlines()) + yaml.safe_dump(rec.config, sort_keys=False)


def write_frontier_artifacts(table: pd.DataFrame, out: Path, title: str | None = None) -> dict[str, Path]:
    """``pareto_front.parquet/.csv`` (frontier rows) and ``.png/.html`` (all trials, frontier highlighted)."""
    from spfde_search.plots import frontier_html, frontier_png, paper_point_label

    out.mkdir(parents=True, exist_ok=True)
    front = table[table["pareto"]].copy() if len(table) else table.copy()
    if len(front):
        front = front.sort_values("train_flops").reset_index(drop=True)
        front["paper_point"] = [paper_point_label(c) for c in front["config"]]
    paths = {
        "parquet": out / "pareto_front.parquet", "csv": out / "pareto_front.csv",
        "png": out / "pareto_front.png", "html": out / "pareto_front.html",
    }
    front.to_parquet(paths["parquet"], index=False)
    front.to_csv(paths["csv"], index=False)
    frontier_png(table, paths["png"], title=title)
    frontier_html(table, paths["html"], title=title)
    return paths


# ---------------------------------------------------------------- Ray Tune callback


def trial_config(trial_config_dict: Mapping[str, Any], base_config: Mapping[str, Any]) -> tuple[dict, dict]:
    """(full resolved config, sampled dotted params) from a Ray trial's config and the search's base config.

    The trial config holds the sampled parameters by dotted config path (``{"sparsity.ratio": 0.9}``); ``/``-joined
    or nested keys are accepted too, and keys that are not config paths are ignored.
    """
    sampled: dict[str, Any] = {}
    for k, v in flatten({k.replace("/", "."): v for k, v in trial_config_dict.items()}).items():
        try:
            field_info(k)
        except KeyError:
            continue
        sampled[k] = v
    full = apply_overrides(dict(base_config), sampled)
    with contextlib.suppress(Exception):
        full = Config.parse(full).to_dict()
    return full, sampled


def tracking_settings(tracking_uri: str | None, experiment: str | None,
                      base_config: Mapping[str, Any] | Config | None) -> dict[str, Any]:
    """The resolved ``{"uri", "experiment"}`` a search records in ``search.json`` (``uri`` None: tracking off)."""
    if tracking_uri is not None and tracking_uri.strip().lower() in ("none", "off", "false", "0", ""):
        return {"uri": None, "experiment": None, "enabled": False}
    return {"uri": resolve_tracking_uri(tracking_uri), "experiment": experiment or default_experiment_name(base_config),
            "enabled": True}


def _read_search_json(search_dir: str) -> dict[str, Any]:
    if "://" in search_dir:
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(search_dir)
        with fs.open_input_stream(f"{path}/search.json") as f:
            return dict(json.loads(f.read()))
    return dict(json.loads((Path(search_dir) / "search.json").read_text()))


@functools.lru_cache(maxsize=1)
def _callback_class() -> type:
    from ray.tune import Callback

    class MLflowFrontierCallback(Callback):
        """Logs every trial to MLflow from the driver and keeps the frontier tags/artifacts current.

        Final trial rows come from ``search.trial_row`` (the same function that writes ``trials.parquet``), so
        MLflow and the search's own table agree on status, metrics and config.
        """

        def __init__(self, tracker: Tracker, meta: Mapping[str, Any] | None, search_dir: str | None) -> None:
            self.tracker = tracker
            self.meta = dict(meta) if meta is not None else None
            self.search_dir = search_dir
            self.records: dict[str, TrialRecord] = {}
            self._dirty: set[str] = set()

        @property
        def base(self) -> dict[str, Any]:
            return dict((self.meta or {}).get("base_config") or {})

        def _record(self, trial: Any) -> TrialRecord:
            tid = str(trial.trial_id)
            rec = self.records.get(tid)
            if rec is None:
                full, sampled = trial_config(trial.config or {}, self.base)
                rec = TrialRecord(trial_id=tid, status="RUNNING", config=full, params=sampled,
                                  start_time=time.time())
                self.records[tid] = rec
            return rec

        def _finalize(self, trial: Any, ray_status: str) -> TrialRecord:
            from spfde_search.search import trial_row

            old = self._record(trial)
            rec = TrialRecord.from_row(trial_row(trial, self.base, ray_status))
            rec.epochs, rec.start_time = old.epochs, old.start_time
            if not rec.config:
                rec.config = old.config
            self.records[rec.trial_id] = rec
            return rec

        def _flush(self, frontier: bool) -> None:
            t = self.tracker
            if not t.available():
                return
            for tid in sorted(self._dirty):
                if t.upsert_trial(self.records[tid]):
                    self._dirty.discard(tid)
                else:
                    return
            if frontier:
                t.update_frontier(list(self.records.values()))

        # -- Ray hooks (driver only)

        def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
                  **info: Any) -> None:
            if self.meta is None and self.search_dir is not None:
                try:
                    self.meta = _read_search_json(self.search_dir)
                except (OSError, ValueError) as e:
                    log.warning("could not read search.json from %s (%s); the parent run lacks the search's "
                                "description until `spfde sync`", self.search_dir, e)
                    self.meta = {"name": self.tracker.search}
            self.tracker.start(self.meta)

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._record(trial).status = "RUNNING"
            self._dirty.add(str(trial.trial_id))
            self._flush(frontier=False)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            rec = self._record(trial)
            ep = _epoch_metrics(result)
            if ep and all(e["epoch"] != ep["epoch"] for e in rec.epochs):
                rec.epochs.append(ep)
                self._dirty.add(rec.trial_id)
                self._flush(frontier=False)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._dirty.add(self._finalize(trial, "TERMINATED").trial_id)
            self._flush(frontier=True)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._dirty.add(self._finalize(trial, "ERROR").trial_id)
            self._flush(frontier=True)

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            t = self.tracker
            t._down_until = 0.0  # one last attempt, whatever the back-off
            self._flush(frontier=True)
            if not self._dirty and t.available():
                t.finish("FINISHED")
            if self._dirty or t.failures:
                log.warning("MLflow tracking missed part of search %r (%d trial(s) not fully written); nothing "
                            "is lost: run `spfde sync %s` once %s is reachable", t.search, len(self._dirty),
                            t.search, t.uri)

    return MLflowFrontierCallback


def make_callback(tracking_uri: str | None, experiment: str | None, name: str, *,
                  search_dir: str | None = None, search_meta: Mapping[str, Any] | None = None,
                  base_config: Mapping[str, Any] | None = None) -> Any:
    """A ``ray.tune.Callback`` that logs the search ``name`` to MLflow from the driver, or None if tracking is off
    (``tracking_uri`` ``"none"``/``"off"``).

    The search's description (parent run params) is ``search_meta`` if given, else ``search.json`` read from
    ``search_dir`` when the search starts. ``experiment`` defaults to ``spfde-<model>-<data set>`` of the base config.
    """
    ts = tracking_settings(tracking_uri, experiment, base_config or (search_meta or {}).get("base_config"))
    if not ts["enabled"]:
        return None
    return _callback_class()(Tracker(ts["uri"], ts["experiment"], name), search_meta, search_dir)


def callbacks_for(settings: Any) -> list[Any]:
    """``[callback]`` for a ``search.SearchSettings`` whose ``tracking`` is enabled, else ``[]``.

    ``settings.tracking`` is what ``tracking_settings`` returned when the search was created (kept in
    ``search.json``, so ``--resume`` logs to the same place); None means tracking is off.
    """
    tr = getattr(settings, "tracking", None) or {}
    if not tr.get("uri") or tr.get("enabled") is False:
        return []
    from spfde_search.search import experiment_uri

    cb = make_callback(tr["uri"], tr.get("experiment"), settings.name,
                       search_dir=experiment_uri(settings.storage_path, settings.name),
                       base_config=settings.base_config)
    return [] if cb is None else [cb]


def describe_tracking(settings: Any) -> str:
    """One line for the console: where the search is tracked."""
    tr = getattr(settings, "tracking", None) or {}
    if not tr.get("uri") or tr.get("enabled") is False:
        return "MLflow tracking off"
    return f"MLflow: {tr['uri']} (experiment {tr.get('experiment')}); browse with `spfde ui {settings.name}`"


# ---------------------------------------------------------------- sync and read-back


def load_search_results(search_dir: str | Path) -> tuple[dict[str, Any], list[TrialRecord]]:
    """``search.json`` and one TrialRecord per ``trials.parquet`` row, with per-epoch metrics from Ray's
    ``result.json`` files under the search directory."""
    d = Path(search_dir)
    meta_path, trials_path = d / "search.json", d / "trials.parquet"
    if not trials_path.is_file():
        raise FileNotFoundError(f"{trials_path} does not exist: is {d} a search directory (spfde search --name)?")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"name": d.name}
    df = pd.read_parquet(trials_path)
    epochs: dict[str, list[dict[str, Any]]] = {}
    for rj in d.rglob("result.json"):
        with contextlib.suppress(OSError):
            for line in rj.read_text().splitlines():
                try:
                    r = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                if isinstance(r, dict) and r.get("trial_id") is not None:
                    epochs.setdefault(str(r["trial_id"]), []).append(r)
    records = []
    for row in df.to_dict("records"):
        tid = str(row["trial_id"])
        seen: dict[int, dict[str, Any]] = {}
        for e in epochs.get(tid, []):
            m = _epoch_metrics(e)
            if m:
                seen[m["epoch"]] = e
        records.append(TrialRecord.from_row(row, [seen[k] for k in sorted(seen)]))
    return meta, records


def sync_search(search_dir: str | Path, tracking_uri: str | None = None, experiment: str | None = None) -> dict:
    """Write a search's results to MLflow; idempotent (existing runs are found by tags and completed)."""
    meta, records = load_search_results(search_dir)
    name = str(meta.get("name") or Path(search_dir).name)
    meta["name"] = name
    recorded = meta.get("tracking") or {}
    uri = tracking_uri or recorded.get("uri") or meta.get("tracking_uri") or None
    exp = experiment or recorded.get("experiment") or meta.get("experiment") or \
        default_experiment_name(meta.get("base_config") or {})
    tracker = Tracker(uri, exp, name, retry_after=0.0, fail_fast=False)
    out = tracker.sync(records, meta, close=True)
    out["tracking_uri"] = tracker.uri
    out["experiment"] = exp
    return out


def find_parent_run(tracking_uri: str | None, search: str, experiment: str | None = None) -> tuple[Any, Any]:
    """(MlflowClient, parent Run) of a search, looked up by the ``spfde.search`` tag."""
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise TrackingUnavailable(f"no MLflow store at {db} (run a search first, or pass --tracking-uri)")
    c = MlflowClient(tracking_uri=uri)
    try:
        if experiment:
            exp = c.get_experiment_by_name(experiment)
            if exp is None:
                raise TrackingUnavailable(f"no MLflow experiment {experiment!r} at {uri}")
            ids = [exp.experiment_id]
        else:
            ids = [e.experiment_id for e in c.search_experiments(max_results=50000)]
        runs = c.search_runs(ids, filter_string=f"tags.`spfde.search` = '{_q(search)}' and "
                                                "tags.`spfde.role` = 'parent'",
                             order_by=["attributes.start_time DESC"]) if ids else []
    except TrackingUnavailable:
        raise
    except Exception as e:  # noqa: BLE001
        raise TrackingUnavailable(f"cannot read MLflow at {uri}: {type(e).__name__}: {e}") from None
    if not runs:
        raise TrackingUnavailable(f"no search named {search!r} in MLflow at {uri}"
                                  + (f" (experiment {experiment!r})" if experiment else ""))
    return c, runs[0]


def read_trials(tracking_uri: str | None, search: str, experiment: str | None = None) -> tuple[Any, pd.DataFrame]:
    """(parent run, one row per trial run read back from MLflow: ids, status, pareto tag, final metrics,
    sampled params)."""
    c, parent = find_parent_run(tracking_uri, search, experiment)
    runs = _search_all(c, [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    rows = []
    for r in runs:
        t, m = r.data.tags, r.data.metrics
        row: dict[str, Any] = {
            "trial_id": t.get("spfde.trial_id", r.info.run_name), "run_id": r.info.run_id,
            "status": t.get("spfde.status", ""), "full_budget": t.get("spfde.full_budget") == "true",
            "pareto": t.get("pareto") == "true",
        }
        for k in FINAL_METRICS:
            row[k] = m.get(_METRIC_NAME.get(k, k), float("nan"))
        row["params"] = t.get("spfde.sampled", "{}")
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values("train_flops").reset_index(drop=True)
    return parent, df


def frontier_table(df: pd.DataFrame) -> pd.DataFrame:
    """Frontier rows of a read-back table, by ascending training FLOPs."""
    if not len(df):
        return df
    return df[df["pareto"]].sort_values(["train_flops", "test_accuracy"]).reset_index(drop=True)


def download_config(client: Any, run_id: str) -> dict[str, Any]:
    """The trial's full config, from its ``config.yaml`` artifact (falls back to the run's params)."""
    import yaml

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file: no progress bar
    with tempfile.TemporaryDirectory() as td:
        try:
            p = client.download_artifacts(run_id, "config.yaml", td)
            data = yaml.safe_load(Path(p).read_text())
            if isinstance(data, dict):
                return data
        except Exception as e:  # noqa: BLE001
            log.warning("run %s has no readable config.yaml artifact (%s); rebuilding it from params", run_id, e)
    import yaml as _yaml

    params = client.get_run(run_id).data.params
    flat: dict[str, Any] = {}
    for k, v in params.items():
        try:
            field_info(k)
        except KeyError:
            continue
        flat[k] = _yaml.safe_load(v) if v != "None" else None
    from spfde_search.config import unflatten

    return unflatten(flat)

