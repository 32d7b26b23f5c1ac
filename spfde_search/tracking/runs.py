"""Writing runs: the search's parent run (its description) and one nested run per trial (params, config artifact,
per-epoch metrics, final state), each write idempotent and keyed by tags so a rerun adds nothing twice."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import math
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from spfde_search.config import Config, flatten
from spfde_search.config_export import config_to_yaml
from spfde_search.pareto import is_finite
from spfde_search.wording import run_name

from .records import _METRIC_NAME, FINAL_METRICS, MLFLOW_STATUS, TrialRecord
from .store import Store
from .views import LOG_FLOPS_METRIC


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



class RunWriter:
    """Parent and trial runs of one search in a ``Store``; ``run_ids`` maps trial id -> MLflow run id."""

    def __init__(self, store: Store, *, artifacts: bool = True) -> None:
        self.store = store
        self.artifacts = artifacts
        self.parent_run_id: str | None = None
        self._parent_meta: dict[str, Any] | None = None
        self._parent_logged = False
        self.run_ids: dict[str, str] = {}  # trial_id -> run_id
        self.pareto_tags: dict[str, bool] = {}  # trial_id -> the ``pareto`` tag its run carries
        self._epochs_logged: dict[str, int] = {}
        self._params_logged: set[str] = set()
        self._final_logged: set[str] = set()
        self._existing_loaded = False

    # ---- parent

    def start(self, meta: Mapping[str, Any] | None = None) -> bool:
        """Find or create the parent run and log the search's description (idempotent)."""
        if meta is not None:
            self._parent_meta = dict(meta)
        return bool(self.store.guard("creating the parent run", self.ensure_parent))

    def ensure_parent(self) -> bool:
        c = self.store.client
        if self.parent_run_id is None:
            eid = self.store.ensure_experiment()
            runs = self.store.find_runs("parent")
            if runs:
                self.parent_run_id = runs[0].info.run_id
                for dup in runs[1:]:
                    c.delete_run(dup.info.run_id)
            else:
                run = c.create_run(eid, run_name=self.store.search,
                                   tags={"spfde.search": self.store.search, "spfde.role": "parent"})
                self.parent_run_id = run.info.run_id
        if not self._parent_logged and self._parent_meta is not None:
            self._log_parent_meta(self._parent_meta)
            self._parent_logged = True
        return True

    def _log_parent_meta(self, meta: Mapping[str, Any]) -> None:
        from mlflow.entities import Param, RunTag

        c = self.store.client
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
                RunTag("mlflow.note.content", _parent_note(self.store.search, meta))]
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
            self.ensure_parent()
            assert self.parent_run_id is not None
            self.store.client.set_terminated(self.parent_run_id, status=status)
            return True

        return bool(self.store.guard("closing the parent run", _f))

    # ---- trials

    def upsert_trial(self, rec: TrialRecord) -> bool:
        """Bring the trial's run up to date: create it, params + config artifact, new epochs, final state."""
        return bool(self.store.guard(f"logging trial {rec.trial_id}", self._upsert, rec))

    def _trial_run(self, rec: TrialRecord) -> str:
        c = self.store.client
        tid = rec.trial_id
        if tid in self.run_ids:
            return self.run_ids[tid]
        self.ensure_parent()
        if not self._existing_loaded:
            self._load_existing()
            if tid in self.run_ids:
                return self.run_ids[tid]
        runs = self.store.find_runs("trial", tid)  # created since (by another writer)
        if runs:
            run = runs[0]
            self._adopt(run)
        else:
            assert self.parent_run_id is not None
            start_ms = int(rec.start_time * 1000) if rec.start_time else None
            rung = {f"spfde.{k.replace('fidelity.', 'rung_').replace('rung_rung', 'rung')}": str(v)
                    for k, v in rec.rung.items()}  # --fidelity schedule's rung
            name = run_name(tid, rec.config)
            if "spfde.rung" in rung:
                name = f"r{rung['spfde.rung']} {rung.get('spfde.rung_epochs', '?')}ep {name}"
            run = c.create_run(self.store.ensure_experiment(), run_name=name, start_time=start_ms, tags={
                "mlflow.parentRunId": self.parent_run_id, "spfde.search": self.store.search, "spfde.role": "trial",
                "spfde.trial_id": tid, "spfde.status": rec.status, **rung,
            })
        self.run_ids[tid] = run.info.run_id
        return run.info.run_id

    def load_existing(self) -> None:
        """Know every trial run already in the store (once; later runs are found as they are created)."""
        if not self._existing_loaded:
            self.ensure_parent()
            self._load_existing()

    def reopen_trial(self, rec: TrialRecord) -> bool:
        """Ray runs ``rec`` again (a retry, or ``--resume`` of a trial that ended after Ray's last snapshot or was
        interrupted): its closed run is reopened, so the rerun's result replaces the old one in the same run."""
        return bool(self.store.guard(f"reopening trial {rec.trial_id}", self._reopen_trial, rec))

    def _reopen_trial(self, rec: TrialRecord) -> bool:
        run_id = self._trial_run(rec)
        if rec.trial_id in self._final_logged:
            from mlflow.entities import RunTag

            self.store.client.log_batch(run_id, tags=[RunTag("spfde.final_logged", "false"),
                                                      RunTag("spfde.status", "RUNNING")])
            self.store.client.update_run(run_id, status="RUNNING")
            self._final_logged.discard(rec.trial_id)
        return True

    def tag_parent(self, key: str, value: str) -> bool:
        """One tag on the parent run (e.g. where the search folder is, for ``spfde pareto``'s liveness check)."""
        def _t() -> bool:
            self.ensure_parent()
            assert self.parent_run_id is not None
            self.store.client.set_tag(self.parent_run_id, key, value)
            return True

        return bool(self.store.guard("tagging the parent run", _t))

    def reopen_parent(self) -> bool:
        """A live driver (a new search or ``--resume``) marks the parent RUNNING until it finishes."""
        def _r() -> bool:
            self.ensure_parent()
            assert self.parent_run_id is not None
            if self.store.client.get_run(self.parent_run_id).info.status != "RUNNING":
                self.store.client.update_run(self.parent_run_id, status="RUNNING")
            return True

        return bool(self.store.guard("reopening the parent run", _r))

    def _load_existing(self) -> None:
        """One query for every trial run of this search already in the store (a resumed driver, or sync)."""
        by_tid: dict[str, list[Any]] = {}
        for run in self.store.find_runs("trial"):
            by_tid.setdefault(run.data.tags.get("spfde.trial_id", ""), []).append(run)
        for runs in by_tid.values():
            self._adopt(runs[0])
            for dup in runs[1:]:  # a create whose reply was lost, then retried: keep the oldest
                self.store.client.delete_run(dup.info.run_id)
        self._existing_loaded = True

    def _adopt(self, run: Any) -> None:
        tid = run.data.tags["spfde.trial_id"]
        tags = run.data.tags
        self.run_ids[tid] = run.info.run_id
        self._epochs_logged[tid] = int(tags.get("spfde.epochs_logged", 0))
        if tags.get("spfde.params_logged") == "true":
            self._params_logged.add(tid)
        if tags.get("spfde.final_logged") == "true":
            self._final_logged.add(tid)
        if "pareto" in tags:
            self.pareto_tags[tid] = tags["pareto"] == "true"

    def _upsert(self, rec: TrialRecord) -> bool:
        from mlflow.entities import Metric, Param, RunTag

        c = self.store.client
        tid = rec.trial_id
        run_id = self._trial_run(rec)
        if tid not in self._params_logged and rec.config:
            flat = flatten(rec.config)
            params = [Param(k, _param_str(v)) for k, v in sorted(flat.items())]
            existing = c.get_run(run_id).data.params
            params = [p for p in params if p.key not in existing]
            if self.artifacts:
                self._log_config(run_id, rec)
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
            step, here = self._final_step(rec)
            ts = int(here.get("timestamp", time.time()) * 1000)
            final = {k: float(v) for k, v in rec.final.items() if is_finite(v)}
            metrics = [Metric(_METRIC_NAME.get(k, k), final[k], ts, step) for k in FINAL_METRICS if k in final]
            if final.get("train_flops", 0.0) > 0:  # the x axis of the UI's scatters (views.py: no log axis there)
                metrics.append(Metric(LOG_FLOPS_METRIC, math.log10(final["train_flops"]), ts, step))
            dense = final.get("dense_train_flops", 0.0)
            for part in ("sparsity", "freezing", "sieving"):
                if f"saved_{part}" in final and dense > 0:
                    metrics.append(Metric(f"flops_saved_{part}_fraction", final[f"saved_{part}"] / dense, ts, step))
            metrics = self._new_at_step(run_id, metrics, step, here, done)
            tags = [RunTag("spfde.status", rec.status), RunTag("spfde.full_budget", str(rec.full_budget).lower()),
                    RunTag("spfde.final_logged", "true")]
            if rec.error:
                tags.append(RunTag("spfde.error", rec.error[:5000]))
            c.log_batch(run_id, metrics=metrics, tags=tags)
            if self.artifacts and rec.config and rec.epochs:
                # the config.yaml logged at the start holds `auto` / None where the trial resolved concrete
                # execution settings (threads, precision, ...); the final one records them (execution.py)
                self._log_config(run_id, rec)
            c.set_terminated(run_id, status=MLFLOW_STATUS.get(rec.status, "FINISHED"))
            self._final_logged.add(tid)
        elif not rec.terminal:
            c.set_tag(run_id, "spfde.status", rec.status)
        return True

    @staticmethod
    def _final_step(rec: TrialRecord) -> tuple[int, dict[str, Any]]:
        """The step of the final metrics, the trial's last epoch, and that epoch's own metrics if the record holds
        it. A record rebuilt from Ray's ``result.json`` on ``--resume`` can lag the epochs a killed driver had
        logged; ``epochs_completed`` (from the table) is then the later and truer step."""
        last: dict[str, Any] = max(rec.epochs, key=lambda e: e["epoch"]) if rec.epochs else {}
        step = int(last.get("epoch", 0))
        completed = rec.final.get("epochs_completed")
        if completed is not None and is_finite(completed):
            step = max(step, int(completed))
        return step, next((e for e in rec.epochs if int(e["epoch"]) == step), {})

    def _new_at_step(self, run_id: str, metrics: list[Any], step: int, here: Mapping[str, Any],
                     done: int) -> list[Any]:
        """At most one value per metric and step: a metric the epoch at ``step`` carries is already logged there
        (by the epoch loop; a differing final value would be a second point at the same step, issue 34 item 4).
        When an earlier writer logged that epoch and this record lacks it, the store says what is there."""
        metrics = [m for m in metrics if m.key not in here]
        if step > done or here or not metrics:
            return metrics
        present = self.store.client.get_run(run_id).data.metrics
        return [m for m in metrics if m.key not in present or all(
            p.step != step for p in self.store.client.get_metric_history(run_id, m.key))]

    def _log_config(self, run_id: str, rec: TrialRecord) -> None:
        with tempfile.TemporaryDirectory() as td:
            p = Path(td) / "config.yaml"
            p.write_text(_config_yaml(rec))
            self.store.client.log_artifact(run_id, str(p))

    # ---- frontier
