"""``run_search``: Ray Tune + Optuna multi-objective search over SpFDE schedules, and ``trials.parquet``.

Objectives: maximise ``test_accuracy``, minimise ``run_train_flops`` (the predicted training FLOPs of the whole
run, known from the config, so an early-stopped trial is told to the sampler with its true cost). The frontier
itself is computed from ``trials.parquet``: COMPLETED trials that trained all epochs, by measured FLOPs.

Layout of ``<storage>/<name>/``: Ray Tune's experiment (``tuner.pkl``, experiment state, one folder per trial
with ``result.json`` and checkpoints), plus ``search.json`` (settings, for ``--resume``) and ``trials.parquet``
(one row per trial, rewritten whenever a trial starts or ends; columns in docs/architecture.md).

Infeasible points (config rejected, impossible freezing target, over the budget) are Ray trials that report
once and return without training; they reach Optuna as COMPLETE with a positive constraint
(``trial.set_constraint``), so constraint-aware samplers (TPE, NSGA-II, GP) learn to avoid them.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from search_spaces import (
    ResolvedSpace,
    SpaceError,
    enumerate_corners,
    initial_points,
    resolve_space,
    sample_random,
)
from search_spaces._base import ProbeTrial, grid_values, run_space
from trainables import Assessment, Budget, BudgetError, TrialSetup, assess

from .config import Config, ConfigError, apply_overrides
from .pareto import front_indices, hypervolume, knee_point

if TYPE_CHECKING:  # pragma: no cover
    from ray import tune

__all__ = [
    "SearchError",
    "SearchSettings",
    "Prepared",
    "SearchOutcome",
    "SAMPLERS",
    "OBJECTIVES",
    "TRIAL_COLUMNS",
    "prepare",
    "run_search",
    "make_sampler",
    "experiment_uri",
    "load_settings",
    "load_trials",
    "pareto_front",
    "write_parquet",
    "front_table",
]

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "runs/search"
SAMPLERS = ("auto", "tpe", "nsga2", "gp", "random")
OBJECTIVES = ("test_accuracy", "run_train_flops")
MODES = ("max", "min")
SEARCH_JSON = "search.json"
TRIALS_PARQUET = "trials.parquet"
TRIAL_COLUMNS = [
    "trial_id", "status", "full_budget", "epochs_completed", "test_accuracy", "train_flops",
    "predicted_train_flops", "dense_train_flops", "flops_ratio", "saved_sparsity", "saved_freezing",
    "saved_sieving", "freeze_start_epoch", "wall_seconds", "error", "node_ip", "node_id", "params", "config",
    "run_train_flops", "run_flops_ratio", "ray_status", "started_at", "finished_at",
]
STATUSES = ("COMPLETED", "EARLY_STOPPED", "FAILED", "INFEASIBLE", "RUNNING", "PENDING")


class SearchError(ValueError):
    """Bad search input, reported before any trial runs (one clear message)."""


# ---------------------------------------------------------------- settings


class SearchSettings(BaseModel):
    """Everything a search needs; stored in ``search.json`` so ``--resume NAME`` needs no arguments."""

    model_config = ConfigDict(extra="forbid")

    name: str
    space: str = "joint"
    space_text: str | None = Field(None, description="YAML of a file space, kept for --resume")
    config_path: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    base_config: dict[str, Any] = Field(default_factory=dict)
    num_samples: int = Field(16, ge=1)
    sampler: Literal["auto", "tpe", "nsga2", "gp", "random"] = "auto"
    seed: int | None = 0
    max_concurrent: int = Field(2, ge=1)
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    flops_budget: str | None = None
    initial: Literal["paper"] | None = None
    early_stopping: Literal["none", "asha"] = "none"
    grace_period: int = Field(1, ge=1)
    reduction_factor: int = Field(2, ge=2)
    address: str | None = None
    storage_path: str = DEFAULT_STORAGE
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the embedded local Ray (default: all)")
    ship_code: bool = Field(False, description="upload this checkout's packages to the cluster (runtime_env py_modules)")
    tracking: dict[str, Any] | None = None

    def resolved_storage(self) -> str:
        return _resolve_storage(self.storage_path)


def _is_uri(path: str) -> bool:
    return "://" in path


def _resolve_storage(path: str) -> str:
    if _is_uri(path):
        return path.rstrip("/")
    return str(Path(path).expanduser().resolve())


def experiment_uri(storage_path: str, name: str) -> str:
    s = _resolve_storage(storage_path)
    return f"{s}/{name}" if _is_uri(s) else str(Path(s) / name)


def _fs(uri: str) -> tuple[pafs.FileSystem, str]:
    if _is_uri(uri):
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path
    return pafs.LocalFileSystem(), uri


def _exists(uri: str) -> bool:
    fs, path = _fs(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def _write_bytes(uri: str, data: bytes) -> None:
    fs, path = _fs(uri)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, path)  # atomic on local disks: readers never see a half-written file


def _read_bytes(uri: str) -> bytes:
    fs, path = _fs(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def load_settings(name: str, storage_path: str = DEFAULT_STORAGE) -> SearchSettings:
    uri = f"{experiment_uri(storage_path, name)}/{SEARCH_JSON}"
    if not _exists(uri):
        raise SearchError(f"no search named {name!r} under {_resolve_storage(storage_path)} (missing {SEARCH_JSON})")
    meta = json.loads(_read_bytes(uri))
    return SearchSettings.model_validate(meta["settings"])


# ---------------------------------------------------------------- preparation (no Ray)


@dataclass
class Prepared:
    settings: SearchSettings
    base: Config
    space: ResolvedSpace
    budget: Budget | None
    dense_flops: float
    cheapest: Assessment | None
    points: list[dict[str, Any]]
    probed: int


def _dense_reference(base: Config) -> float:
    from .flops import predict

    plain = base.with_overrides({"freezing.target_flops_reduction": 0.0, "freezing.start_epoch": None,
                                 "freezing.units": None, "sieving.fraction": 0.0})
    try:
        return float(predict(plain).dense_train_flops)
    except ConfigError as e:
        raise SearchError(f"the base config cannot be costed: {e}") from None


def _fmt_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt_value(v)}" for k, v in params.items())


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _fixed_chooser(fixed: Mapping[str, Any]) -> Callable[[str, Any], Any]:
    """Probe policy: the fixed value where given, else the distribution's low end."""

    def choose(name: str, dist: Any) -> Any:
        return fixed[name] if name in fixed else grid_values(dist, 2)[0]

    return choose


def _probe_cheapest(
    space: ResolvedSpace, base: dict[str, Any], budget: Budget | None, fallback: float, seed: int, extra: list[dict[str, Any]]
) -> tuple[Assessment | None, Assessment | None, int]:
    """(cheapest runnable point, first unrunnable point, points probed): space corners, random points and the
    initial points, then (with a budget none of them meets) coordinate descent from the cheapest one."""
    cache: dict[str, Assessment] = {}

    def run(params: dict[str, Any]) -> Assessment:
        key = json.dumps(params, sort_keys=True, default=str)
        if key not in cache:
            cache[key] = assess(params, base, budget, fallback)
        return cache[key]

    cands = [t.params for t in enumerate_corners(space.fn, limit=48)]
    cands += [t.params for t in sample_random(space.fn, 48, seed)]
    for p in extra:
        t = ProbeTrial(_fixed_chooser(p))
        cands.append(run_space(space.fn, t))
    results = [run(p) for p in cands]
    runnable = [a for a in results if a.runnable]
    bad = next((a for a in results if not a.runnable), None)
    if not runnable:
        return None, bad, len(cache)
    best = min(runnable, key=lambda a: a.run_train_flops)
    if budget is not None and not best.feasible:
        for _ in range(2):  # coordinate descent over each parameter's 5-point grid
            improved = False
            cur = best.params
            t0 = ProbeTrial(_fixed_chooser(cur))
            run_space(space.fn, t0)
            for name, dist in t0.distributions.items():
                for v in grid_values(dist, 5):
                    fixed = {**best.params, name: v}
                    t = ProbeTrial(_fixed_chooser(fixed))
                    a = run(run_space(space.fn, t))
                    if a.runnable and a.run_train_flops < best.run_train_flops:
                        best, improved = a, True
            if not improved or best.feasible:
                break
    return best, bad, len(cache)


def prepare(settings: SearchSettings, *, resume: bool = False) -> Prepared:
    """Validate everything before Ray starts: base config, space, sampler, budget, name. SearchError if bad."""
    try:
        base = Config.parse(settings.base_config)
    except ConfigError as e:
        raise SearchError(f"base config: {e}") from None
    try:
        space = resolve_space(settings.space, base, settings.space_text)
    except SpaceError as e:
        raise SearchError(str(e)) from None
    if space.text is not None and settings.space_text is None:
        settings.space_text = space.text
    budget = None
    if settings.flops_budget is not None:
        try:
            budget = Budget.parse(settings.flops_budget)
        except BudgetError as e:
            raise SearchError(str(e)) from None
    dense = _dense_reference(base)
    points: list[dict[str, Any]] = []
    if settings.initial:
        try:
            points = initial_points(settings.initial, space, base, limit=max(1, math.ceil(settings.num_samples / 2)))
        except SpaceError as e:
            raise SearchError(str(e)) from None
        if not points:
            raise SearchError(f"--initial {settings.initial}: the space {settings.space!r} cannot express any of those points")
    cheapest, bad, probed = _probe_cheapest(space, base.to_dict(), budget, dense, settings.seed or 0, points)
    if cheapest is None:
        reason = bad.reason if bad is not None else "no point could be sampled"
        raise SearchError(f"no config in the space {settings.space!r} can run with this base config; e.g. {reason}")
    if budget is not None and not cheapest.feasible:
        raise SearchError(
            f"--flops-budget {budget.text} ({budget.describe()}) is below the cheapest config of the space "
            f"{settings.space!r}: {cheapest.run_train_flops:.4g} training FLOPs "
            f"({(cheapest.run_flops_ratio or float('nan')):.4f} of dense) at {_fmt_params(cheapest.params)}"
        )
    if settings.sampler == "gp" and space.grid is not None:
        pass  # any sampler can run a grid space; auto picks the grid sampler
    uri = experiment_uri(settings.storage_path, settings.name)
    if not resume and (_exists(f"{uri}/tuner.pkl") or _exists(f"{uri}/{SEARCH_JSON}")):
        raise SearchError(
            f"a search named {settings.name!r} already exists at {uri}; continue it with --resume {settings.name} "
            "or choose another --name"
        )
    return Prepared(settings, base, space, budget, dense, cheapest, points, probed)


def make_sampler(name: str, seed: int | None, space: ResolvedSpace, num_samples: int) -> Any:
    """An Optuna sampler by name; 'auto': the grid sampler for a grid space, GP for a small flat numeric
    space, otherwise multivariate TPE (grouped for conditional spaces)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    startup = min(10, max(2, num_samples // 3))
    if name == "auto":
        if space.grid is not None:
            return optuna.samplers.GridSampler(space.grid, seed=seed)
        numeric = not any(isinstance(d, optuna.distributions.CategoricalDistribution) for d in space.distributions.values())
        name = "gp" if (numeric and not space.conditional and num_samples <= 100) else "tpe"
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=space.conditional, constant_liar=True,
            n_startup_trials=startup,
        )
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, num_samples // 3)))
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise SearchError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")


# ---------------------------------------------------------------- the trials table


def _status(trial: Any, ray_status: str) -> str:
    r = trial.last_result or {}
    if ray_status == "ERROR":
        return "FAILED"
    if ray_status == "TERMINATED":
        if not r or "epoch" not in r:
            return "FAILED"
        if r.get("infeasible"):
            return "INFEASIBLE"
        total = int(r.get("epochs_total") or 0)
        return "COMPLETED" if total and int(r.get("epoch", 0)) >= total else "EARLY_STOPPED"
    if ray_status == "RUNNING":
        return "RUNNING"
    return "PENDING"


def _trial_error(trial: Any) -> str:
    """One line: the exception that ended the trial (the cause inside Ray's wrappers)."""
    try:
        path = getattr(trial, "pickled_error_file", None)
        if path and os.path.exists(path):
            import ray.cloudpickle as cloudpickle

            with open(path, "rb") as f:
                exc = cloudpickle.load(f)
            seen = 0
            while getattr(exc, "cause", None) is not None and seen < 5:
                exc, seen = exc.cause, seen + 1
            msg = str(exc).strip().splitlines()
            return f"{type(exc).__name__}: {msg[-1] if msg else ''}".strip()
        path = getattr(trial, "error_file", None)
        if path and os.path.exists(path):
            lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
            return lines[-1].strip() if lines else "trial errored"
    except Exception:  # never let error extraction break the table
        pass
    return "trial errored (see Ray's error.txt in the trial folder)"


def _num(r: Mapping[str, Any], key: str) -> float:
    v = r.get(key)
    try:
        return float(v) if v is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def trial_row(trial: Any, base: Mapping[str, Any], ray_status: str | None = None, times: Mapping[str, float] | None = None) -> dict[str, Any]:
    ray_status = ray_status or str(trial.status)
    r = dict(trial.last_result or {})
    params = dict(trial.config or {})
    status = _status(trial, ray_status)
    try:
        config = Config.parse(apply_overrides(dict(base), params)).to_dict()
    except ConfigError:
        config = apply_overrides(dict(base), params)
    epochs = int(r.get("epoch", 0) or 0)
    total = int(r.get("epochs_total", 0) or 0)
    error = ""
    if status == "FAILED":
        error = _trial_error(trial) if ray_status == "ERROR" else "the trial ended without reporting a result"
    elif status == "INFEASIBLE":
        error = str(r.get("error", ""))
    fse = r.get("freeze_start_epoch")
    trained = status not in ("INFEASIBLE", "PENDING")
    row = {
        "trial_id": trial.trial_id,
        "status": status,
        "full_budget": bool(status == "COMPLETED" and total > 0 and epochs >= total),
        "epochs_completed": epochs,
        "test_accuracy": _num(r, "test_accuracy") if trained and epochs > 0 else float("nan"),
        "train_flops": _num(r, "train_flops") if trained and epochs > 0 else float("nan"),
        "predicted_train_flops": _num(r, "predicted_train_flops") if trained and epochs > 0 else _num(r, "run_train_flops"),
        "dense_train_flops": _num(r, "dense_train_flops"),
        "flops_ratio": _num(r, "flops_ratio") if trained and epochs > 0 else float("nan"),
        "saved_sparsity": _num(r, "saved_sparsity"),
        "saved_freezing": _num(r, "saved_freezing"),
        "saved_sieving": _num(r, "saved_sieving"),
        "freeze_start_epoch": None if fse is None or fse == -1 or (isinstance(fse, float) and math.isnan(fse)) else int(fse),
        "wall_seconds": _num(r, "wall_seconds") if r else float("nan"),
        "error": error,
        "node_ip": str(r.get("node_ip", "") or ""),
        "node_id": str(r.get("node_id", "") or ""),
        "params": json.dumps(params, sort_keys=True, default=str),
        "config": json.dumps(config, sort_keys=True, default=str),
        "run_train_flops": _num(r, "run_train_flops"),
        "run_flops_ratio": _num(r, "run_flops_ratio"),
        "ray_status": ray_status,
        "started_at": (times or {}).get(f"{trial.trial_id}:start", float("nan")),
        "finished_at": (times or {}).get(f"{trial.trial_id}:end", float("nan")),
    }
    for k, v in params.items():
        row[f"param.{k}"] = v
    return row


def _column(values: list[Any]) -> pa.Array:
    vals = [None if (isinstance(v, float) and math.isnan(v)) else v for v in values]
    present = [v for v in vals if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.array(vals, pa.bool_())
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.array(vals, pa.int64())
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.array([None if v is None else float(v) for v in vals], pa.float64())
    if all(isinstance(v, str) for v in present):
        return pa.array(vals, pa.string())
    return pa.array([None if v is None else json.dumps(v, default=str) for v in vals], pa.string())


_FIXED_TYPES = {
    "trial_id": pa.string(), "status": pa.string(), "full_budget": pa.bool_(), "epochs_completed": pa.int64(),
    "freeze_start_epoch": pa.int64(), "error": pa.string(), "node_ip": pa.string(), "node_id": pa.string(),
    "params": pa.string(), "config": pa.string(), "ray_status": pa.string(),
}


def rows_to_arrow(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    params = sorted({k for r in rows for k in r if k.startswith("param.")})
    arrays, names = [], []
    for col in TRIAL_COLUMNS + params:
        vals = [r.get(col) for r in rows]
        if col in _FIXED_TYPES:
            arrays.append(pa.array(vals, _FIXED_TYPES[col]))
        elif col.startswith("param."):
            arrays.append(_column(vals))
        else:
            arrays.append(pa.array([float("nan") if v is None else float(v) for v in vals], pa.float64()))
        names.append(col)
    return pa.Table.from_arrays(arrays, names=names)


def write_parquet(table: pa.Table, uri: str) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    _write_bytes(uri, sink.getvalue().to_pybytes())


def load_trials(name_or_path: str, storage_path: str = DEFAULT_STORAGE) -> pd.DataFrame:
    """``trials.parquet`` of a search (by name under the storage path, or a folder/URI/file path)."""
    cands = [name_or_path, f"{name_or_path}/{TRIALS_PARQUET}", f"{experiment_uri(storage_path, name_or_path)}/{TRIALS_PARQUET}"]
    for c in cands:
        if c.endswith(".parquet") and _exists(c):
            fs, path = _fs(c)
            return pq.read_table(path, filesystem=fs).to_pandas()
    raise SearchError(f"no {TRIALS_PARQUET} found for {name_or_path!r}")


def pareto_front(df: pd.DataFrame) -> pd.DataFrame:
    """COMPLETED full-budget trials on the frontier of test accuracy (max) vs training FLOPs (min), cheapest
    first, with ``knee`` marking the knee point. Early-stopped, failed and infeasible trials never enter."""
    ok = df[(df["status"] == "COMPLETED") & df["full_budget"].astype(bool)]
    ok = ok[np.isfinite(ok["test_accuracy"].astype(float)) & np.isfinite(ok["train_flops"].astype(float))]
    if ok.empty:
        return ok.assign(knee=pd.Series(dtype=bool))
    acc = ok["test_accuracy"].to_numpy(float)
    flops = ok["train_flops"].to_numpy(float)
    idx = front_indices(acc, flops)
    knee = knee_point(acc, flops)
    front = ok.iloc[idx].copy()
    front["knee"] = [int(i) == knee for i in idx]
    return front


def front_hypervolume(front: pd.DataFrame) -> float:
    if front.empty:
        return 0.0
    return hypervolume(front["test_accuracy"].to_numpy(float), front["flops_ratio"].to_numpy(float))


# ---------------------------------------------------------------- Ray pieces (imported lazily)


def _optuna_search_class() -> type:
    from ray.tune.search.optuna import OptunaSearch

    class SpfdeOptunaSearch(OptunaSearch):
        """OptunaSearch that passes each trial's constraint violation to Optuna (``set_constraint``) before
        telling it the result, so infeasible points are known to be infeasible, not merely bad."""

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            ot_trial = self._ot_trials.get(trial_id)
            if ot_trial is not None and result and not error and trial_id not in self._completed_trials:
                v = result.get("constraint_violation")
                if v is not None and not (isinstance(v, float) and math.isnan(v)):
                    try:
                        ot_trial.set_constraint("spfde", float(v))
                    except Exception as e:  # a repeated completion: the constraint is already set
                        log.debug("constraint not set for %s: %s", trial_id, e)
            super().on_trial_complete(trial_id, result=result, error=error)

    return SpfdeOptunaSearch


_SEARCH_CLS: type | None = None


def _search_cls() -> type:
    global _SEARCH_CLS
    if _SEARCH_CLS is None:
        _SEARCH_CLS = _optuna_search_class()
    return _SEARCH_CLS


def _callback_base() -> type:
    from ray import tune

    return tune.Callback


def _make_table_callback(
    base: dict[str, Any], uri: str, on_results: Callable[[pd.DataFrame], None] | None, progress: Any
) -> Any:
    Callback = _callback_base()

    class TrialsTableCallback(Callback):  # type: ignore[misc, valid-type]
        """Rebuilds ``trials.parquet`` from Ray's trial list whenever a trial starts or ends (the table is a
        function of Ray's restored state, so a resumed search counts every trial exactly once)."""

        def __init__(self) -> None:
            self.ended: dict[str, str] = {}  # status overrides: Tune updates trial.status after callbacks
            self.times: dict[str, float] = {}
            self.trials: list[Any] = []
            self.table: pd.DataFrame | None = None

        def _write(self, trials: list[Any]) -> pd.DataFrame:
            self.trials = list(trials)
            rows = [trial_row(t, base, self.ended.get(t.trial_id), self.times) for t in trials]
            table = rows_to_arrow(rows)
            try:
                write_parquet(table, f"{uri}/{TRIALS_PARQUET}")
            except Exception as e:  # storage hiccup: keep searching, try again next time
                log.warning("could not write %s: %s", TRIALS_PARQUET, e)
            self.table = table.to_pandas()
            return self.table

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            # Tune calls this just before it sets the status to RUNNING
            self.times[f"{trial.trial_id}:start"] = time.time()
            self.ended[trial.trial_id] = "RUNNING"
            self._write(trials)
            if progress is not None:
                progress.started(trial)

        def _ended(self, trials: list, trial: Any, status: str) -> None:
            self.ended[trial.trial_id] = status
            self.times[f"{trial.trial_id}:end"] = time.time()
            table = self._write(trials)
            if progress is not None:
                progress.finished(table, trial.trial_id)
            if on_results is not None:
                try:
                    on_results(table)
                except Exception as e:
                    log.warning("on_results hook failed: %s", e)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._ended(trials, trial, "TERMINATED")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._ended(trials, trial, "ERROR")

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            if self.ended.get(trial.trial_id) == "RUNNING":
                del self.ended[trial.trial_id]  # Tune's own status is RUNNING by now
            self._write(trials)  # per-epoch progress of running trials (a few KB)
            if progress is not None:
                progress.epoch(trial, result)

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            self._write(trials)

    return TrialsTableCallback()


class _Progress:
    """Console lines as trials start, train and end (Ray's own tables are switched off)."""

    def __init__(self, console: Any, total: int, verbose: int) -> None:
        self.console = console
        self.total = total
        self.verbose = verbose

    def _print(self, msg: str) -> None:
        if self.console is not None and self.verbose > 0:
            self.console.print(msg, highlight=False, soft_wrap=True)

    def started(self, trial: Any) -> None:
        if self.verbose >= 2:
            self._print(f"[dim]start[/dim] {trial.trial_id}  {_fmt_params(trial.config or {})}")

    def epoch(self, trial: Any, r: Mapping[str, Any]) -> None:
        if self.verbose >= 2 and not r.get("infeasible"):
            self._print(
                f"[dim]  {trial.trial_id} epoch {r.get('epoch')}/{r.get('epochs_total')} "
                f"acc {_num(r, 'test_accuracy'):.4f} loss {_num(r, 'loss'):.4f}[/dim]"
            )

    def finished(self, table: pd.DataFrame, trial_id: str) -> None:
        done = int(table["status"].isin(["COMPLETED", "EARLY_STOPPED", "FAILED", "INFEASIBLE"]).sum())
        row = table[table["trial_id"] == trial_id].iloc[0]
        st = row["status"]
        color = {"COMPLETED": "green", "EARLY_STOPPED": "yellow", "FAILED": "red", "INFEASIBLE": "magenta"}.get(st, "white")
        front = pareto_front(table)
        if st in ("COMPLETED", "EARLY_STOPPED"):
            detail = (
                f"acc {row['test_accuracy']:.4f}  FLOPs {row['train_flops']:.3g} ({row['flops_ratio']:.3f}x dense)  "
                f"{row['epochs_completed']} ep  {row['wall_seconds']:.1f}s"
            )
        else:
            detail = str(row["error"])[:240]
        params = json.loads(row["params"])
        self._print(
            f"[{done}/{self.total}] {trial_id} [{color}]{st}[/{color}]  {detail}  front={len(front)}\n"
            f"      {_fmt_params(params)}"
        )


def _init_ray(settings: SearchSettings, log_to_driver: bool = False) -> bool:
    """Join ``settings.address`` or start a small embedded Ray. Returns True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": log_to_driver}
    if settings.ship_code:
        root = Path(__file__).resolve().parent.parent
        import search_spaces
        import trainables

        mods = [str(Path(__file__).resolve().parent), str(Path(search_spaces.__file__).parent), str(Path(trainables.__file__).parent)]
        kwargs["runtime_env"] = {"py_modules": mods, "env_vars": {"SPFDE_CODE_ROOT": str(root)}}
    if settings.address:
        ray.init(address=settings.address, **kwargs)
    else:
        ray.init(
            num_cpus=settings.num_cpus or os.cpu_count() or 1,
            object_store_memory=200 * 1024**2,
            **kwargs,
        )
    return True


def _trainable(prep: Prepared) -> Any:
    from ray import tune

    from trainables import spfde_trainable

    setup = TrialSetup(base=prep.base.to_dict(), budget=prep.budget, fallback_flops=prep.dense_flops)
    fn = tune.with_parameters(spfde_trainable, setup=setup)
    res: dict[str, float] = {"cpu": prep.settings.cpus_per_trial}
    if prep.settings.gpus_per_trial > 0:
        res["gpu"] = prep.settings.gpus_per_trial
    return tune.with_resources(fn, res)


def _scheduler(s: SearchSettings, epochs: int) -> Any:
    if s.early_stopping != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        metric="test_accuracy", mode="max", time_attr="training_iteration", max_t=max(epochs, 1),
        grace_period=min(s.grace_period, max(epochs, 1)), reduction_factor=s.reduction_factor,
    )


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def _set_callbacks(tuner: Any, callbacks: list[Any]) -> None:
    """Callbacks are attached after the Tuner pickled its state: they need not be picklable and a resumed
    search gets the caller's fresh ones (MLflow, progress) instead of stale copies."""
    local = getattr(tuner, "_local_tuner", None)
    if local is None:
        raise SearchError("Ray client mode (ray://) is not supported; run the search on a cluster node")
    local.get_run_config().callbacks = callbacks


def _search_json(prep: Prepared, status: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    import optuna
    import ray
    import torch

    s = prep.settings
    return {
        "name": s.name,
        "space": s.space,
        "sampler": s.sampler,
        "seed": s.seed,
        "num_samples": s.num_samples,
        "base_config": prep.base.to_dict(),
        "flops_budget": prep.budget.to_dict() if prep.budget else None,
        "flops_budget_absolute": (prep.budget.value * prep.dense_flops if prep.budget and prep.budget.kind == "ratio"
                                  else (prep.budget.value if prep.budget else None)),
        "dense_train_flops": prep.dense_flops,
        "objectives": {"test_accuracy": "max", "run_train_flops": "min"},
        "parameters": {k: repr(v) for k, v in prep.space.distributions.items()},
        "initial_points": prep.points,
        "created": _now(),
        "status": status,
        "tracking": s.tracking or {"uri": None, "experiment": None},
        "versions": {"ray": ray.__version__, "optuna": optuna.__version__, "torch": torch.__version__},
        "settings": s.model_dump(mode="json"),
        **(extra or {}),
    }


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class SearchOutcome:
    name: str
    path: str
    table: pd.DataFrame
    front: pd.DataFrame
    hypervolume: float
    wall_seconds: float


def run_search(
    settings: SearchSettings,
    *,
    resume: bool = False,
    callbacks: list[tune.Callback] | None = None,
    on_results: Callable[[pd.DataFrame], None] | None = None,
    console: Any = None,
    verbose: int = 1,
    prepared: Prepared | None = None,
) -> SearchOutcome:
    """Run (or resume) a search to completion and return its table and Pareto front.

    ``callbacks``: extra Ray Tune callbacks (e.g. MLflow logging, on the driver). ``on_results(table)`` is
    called with the trials table after every trial ends. Bad input raises SearchError before Ray starts.
    """
    t_start = time.perf_counter()
    prep = prepared or prepare(settings, resume=resume)
    s = prep.settings
    uri = experiment_uri(s.storage_path, s.name)
    meta_uri = f"{uri}/{SEARCH_JSON}"
    old_meta: dict[str, Any] = json.loads(_read_bytes(meta_uri)) if resume and _exists(meta_uri) else {}
    meta = _search_json(prep, "running")
    if old_meta:
        meta["created"] = old_meta.get("created", meta["created"])
        meta["resumed"] = [*old_meta.get("resumed", []), _now()]
    _write_bytes(meta_uri, json.dumps(meta, indent=2, default=str).encode())

    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # experiment snapshots often: little lost on a crash
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Ray's own tables off (verbose=0): we print progress
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import warnings

    warnings.filterwarnings("ignore", message="Define-by-run function passed in the `space` argument took")
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    owns_ray = _init_ray(s, log_to_driver=verbose >= 3)
    try:
        trainable = _trainable(prep)
        progress = _Progress(console, s.num_samples, verbose) if console is not None else None
        table_cb = _make_table_callback(prep.base.to_dict(), uri, on_results, progress)
        cbs = [table_cb, *(callbacks or [])]
        tuner = None
        if resume and tune.Tuner.can_restore(uri):
            tuner = tune.Tuner.restore(uri, trainable=trainable, resume_unfinished=True, resume_errored=False,
                                       restart_errored=False)
        if tuner is None:
            searcher = _search_cls()(
                space=prep.space.fn,
                metric=list(OBJECTIVES),
                mode=list(MODES),
                sampler=make_sampler(s.sampler, s.seed, prep.space, s.num_samples),
                points_to_evaluate=prep.points or None,
            )
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=ConcurrencyLimiter(searcher, max_concurrent=s.max_concurrent),
                    scheduler=_scheduler(s, prep.base.train.epochs),
                    num_samples=s.num_samples,
                    reuse_actors=True,  # one worker process per slot: torch is imported once, not per trial
                    trial_dirname_creator=_trial_dirname,
                ),
                run_config=tune.RunConfig(
                    name=s.name,
                    storage_path=s.resolved_storage(),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                    verbose=0,
                ),
            )
        _set_callbacks(tuner, cbs)
        tuner.fit()
    finally:
        if owns_ray:
            import ray

            ray.shutdown()
    table = table_cb.table if table_cb.table is not None else load_trials(uri)
    front = pareto_front(table)
    hv = front_hypervolume(front)
    counts = table["status"].value_counts().to_dict()
    meta.update({"status": "finished", "finished": _now(), "counts": counts, "front_size": len(front),
                 "hypervolume": hv, "front_trial_ids": front["trial_id"].tolist()})
    _write_bytes(meta_uri, json.dumps(meta, indent=2, default=str).encode())
    if on_results is not None:
        try:
            on_results(table)
        except Exception as e:
            log.warning("on_results hook failed: %s", e)
    return SearchOutcome(s.name, uri, table, front, hv, time.perf_counter() - t_start)


# ---------------------------------------------------------------- printing


def front_table(front: pd.DataFrame, title: str = "Pareto front") -> Any:
    """A rich Table: test accuracy, training FLOPs, ratio to dense and the parameters of each point."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col, just in (("#", "right"), ("trial", "left"), ("test acc", "right"), ("train FLOPs", "right"),
                      ("ratio to dense", "right"), ("parameters", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for i, (_, r) in enumerate(front.iterrows(), start=1):
        params = json.loads(r["params"])
        t.add_row(
            f"{i}{'*' if r.get('knee') else ''}",
            str(r["trial_id"]),
            f"{r['test_accuracy']:.4f}",
            f"{r['train_flops']:.4g}",
            f"{r['flops_ratio']:.4f}",
            _fmt_params(params),
        )
    return t
