"""The trials table: one row per Ray trial (``trial_row``), its Arrow schema and ``trials.parquet``, and the
Pareto front / hypervolume / rich table computed from it. The table is the search's record of every trial."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import Config, ConfigError, apply_overrides
from ..execution import RESULT_KEY, with_execution
from ..pareto import above_chance, front_indices, hypervolume, knee_point, selected_on
from ..storage import exists, filesystem, write_bytes
from .settings import (
    DEFAULT_STORAGE,
    HV_COMPUTE_CSV,
    HV_COMPUTE_PNG,
    TRIALS_PARQUET,
    SearchError,
    experiment_uri,
)

TRIAL_COLUMNS = [
    "trial_id", "status", "full_budget", "epochs_completed", "val_accuracy", "test_accuracy", "train_flops",
    "predicted_train_flops", "dense_train_flops", "flops_ratio", "saved_sparsity", "saved_freezing",
    "saved_sieving", "freeze_start_epoch", "wall_seconds", "error", "node_ip", "node_id", "params", "config",
    "run_train_flops", "run_flops_ratio", "ray_status", "started_at", "finished_at",
    "spent_train_flops", "spent_seconds", "held_sparsity",
]
__all__ = ["HV_COMPUTE_CSV", "HV_COMPUTE_PNG", "STATUSES", "TRIAL_COLUMNS", "compute_curve", "front_hypervolume", "front_table",
           "load_rows", "load_trials", "pareto_front", "rows_to_arrow", "search_cost", "trial_row", "write_compute_curve",
           "write_parquet"]
# the error of an unfinished trial whose parameters a resumed search trains again as a new trial: the row stays (it
# started, MLflow has its run) but counts toward nothing (search/rebuild.py)
RERUN = "not resumable: rerun as a new trial with the same parameters"
STATUSES = ("COMPLETED", "EARLY_STOPPED", "FAILED", "INFEASIBLE", "INTERRUPTED", "RUNNING", "PENDING")


def _fmt_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt_value(v)}" for k, v in params.items())


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _status(trial: Any, ray_status: str) -> str:
    r = trial.last_result or {}
    if ray_status == "ERROR":
        return "FAILED"
    if ray_status == "INTERRUPTED":  # Ctrl-C stopped it (search/callbacks.py); --resume reruns it
        return "INTERRUPTED"
    if ray_status == "TERMINATED":
        if not r or "epoch" not in r or r.get("diverged"):  # diverged: a terminal result, never retried
            return "FAILED"
        if r.get("infeasible"):
            return "INFEASIBLE"
        total = int(r.get("epochs_total") or 0)
        return "COMPLETED" if total and int(r.get("epoch", 0)) >= total else "EARLY_STOPPED"
    if ray_status == "RUNNING":
        return "RUNNING"
    return "PENDING"


def _trial_exception(trial: Any) -> BaseException | None:
    """The exception that ended (or is retrying) the trial, the cause inside Ray's wrappers; None if not kept."""
    try:
        path = getattr(trial, "pickled_error_file", None)
        if path and os.path.exists(path):
            import ray.cloudpickle as cloudpickle

            with open(path, "rb") as f:
                exc = cloudpickle.load(f)
            seen = 0
            while getattr(exc, "cause", None) is not None and seen < 5:
                exc, seen = exc.cause, seen + 1
            return exc if isinstance(exc, BaseException) else None
    except Exception:  # never let error extraction break the table
        pass
    return None


def storage_fault(trial: Any) -> str:
    """The one-line message when the trial failed because its state could not be written (disk full, read-only
    storage: ``trainables.StorageFull``), else ''. Fatal for the whole search: every trial writes there."""
    from trainables import StorageFull

    exc = _trial_exception(trial)
    return str(exc) if isinstance(exc, StorageFull) else ""


def _trial_error(trial: Any) -> str:
    """One line: the exception that ended the trial (the cause inside Ray's wrappers)."""
    exc = _trial_exception(trial)
    if exc is not None:
        msg = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {msg[-1] if msg else ''}".strip()
    try:
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


def trial_row(trial: Any, base: Mapping[str, Any], ray_status: str | None = None, times: Mapping[str, float] | None = None,
              result: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One row of ``trials.parquet``. ``result``: the trial's newest result where Tune has not stored it yet (it
    calls ``on_trial_result`` before ``trial.update_last_result``)."""
    ray_status = ray_status or str(trial.status)
    r = dict(result if result is not None else trial.last_result or {})
    from search_spaces import config_params  # optuna: loaded on the driver anyway

    params = dict(trial.config or {})
    fields = config_params(params)  # a budget-space target stays in params, never in the config
    status = _status(trial, ray_status)
    try:
        config = Config.parse(apply_overrides(dict(base), fields)).to_dict()
    except ConfigError:
        try:
            config = apply_overrides(dict(base), fields)
        except ConfigError:  # not config paths: the row keeps the base config and its params column
            config = dict(base)
    config = with_execution(config, r.get(RESULT_KEY))  # what the trial resolved (threads, precision, ...)
    epochs = int(r.get("epoch", 0) or 0)
    total = int(r.get("epochs_total", 0) or 0)
    error = ""
    if status == "FAILED":
        error = (_trial_error(trial) if ray_status == "ERROR" else str(r["error"]) if r.get("diverged") and r.get("error")
                 else "the trial ended without reporting a result")
    elif status == "INFEASIBLE":
        error = str(r.get("error", ""))
    fse = r.get("freeze_start_epoch")
    trained = status not in ("INFEASIBLE", "PENDING")
    row = {
        "trial_id": trial.trial_id,
        "status": status,
        # a short rung of --fidelity schedule trains all of its own epochs but is not a full-length trial
        "full_budget": bool(status == "COMPLETED" and total > 0 and epochs >= total and not _short_rung(params, base)),
        "epochs_completed": epochs,
        "val_accuracy": _num(r, "val_accuracy") if trained and epochs > 0 else float("nan"),
        "test_accuracy": _num(r, "test_accuracy") if trained and epochs > 0 else float("nan"),
        "train_flops": _num(r, "train_flops") if trained and epochs > 0 else float("nan"),
        "predicted_train_flops": _num(r, "predicted_train_flops") if trained and epochs > 0 else _num(r, "run_train_flops"),
        "dense_train_flops": _num(r, "dense_train_flops"),
        "flops_ratio": _num(r, "flops_ratio") if trained and epochs > 0 else float("nan"),
        "saved_sparsity": _num(r, "saved_sparsity"),
        "saved_freezing": _num(r, "saved_freezing"),
        "saved_sieving": _num(r, "saved_sieving"),
        # what the sparse layers held at the last epoch (1 - density; above the target while a soft bound holds)
        "held_sparsity": 1.0 - _num(r, "density") if trained and epochs > 0 else float("nan"),
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
    # what the trial cost the search, whatever became of it (stopped and failed trials included; 0 if untrained)
    row["spent_train_flops"] = row["train_flops"] if math.isfinite(row["train_flops"]) else 0.0
    row["spent_seconds"] = row["wall_seconds"] if math.isfinite(row["wall_seconds"]) else 0.0
    for k, v in params.items():
        row[f"param.{k}"] = v
    return row


def _short_rung(params: Mapping[str, Any], base: Mapping[str, Any]) -> bool:
    """A trial of a successive-halving rung shorter than the search's schedule (``search/halving.py``)."""
    e = params.get("fidelity.epochs")
    full = (base.get("train") or {}).get("epochs")
    return e is not None and full is not None and int(e) < int(full)


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
    write_bytes(uri, sink.getvalue().to_pybytes())


def load_trials(name_or_path: str, storage_path: str = DEFAULT_STORAGE) -> pd.DataFrame:
    """``trials.parquet`` of a search (by name under the storage path, or a folder/URI/file path)."""
    cands = [name_or_path, f"{name_or_path}/{TRIALS_PARQUET}", f"{experiment_uri(storage_path, name_or_path)}/{TRIALS_PARQUET}"]
    for c in cands:
        if c.endswith(".parquet") and exists(c):
            fs, path = filesystem(c)
            return pq.read_table(path, filesystem=fs).to_pandas()
    raise SearchError(f"no {TRIALS_PARQUET} found for {name_or_path!r}")


def front_candidates(df: pd.DataFrame) -> pd.Series:
    """Which rows may enter the front and the hypervolume: COMPLETED, full budget, finite selection accuracy
    (``selected_on``: validation) and FLOPs, and above chance on it (``pareto.above_chance``, chance from each
    row's own config)."""
    if df.empty:
        return pd.Series(dtype=bool, index=df.index)
    from ..plots import chance_of_config

    acc = df[selected_on(df)].astype(float)
    chance = [chance_of_config(c) for c in df["config"]] if "config" in df else None
    return ((df["status"] == "COMPLETED") & df["full_budget"].astype(bool) & np.isfinite(acc)
            & np.isfinite(df["train_flops"].astype(float))
            & above_chance(acc.to_numpy(), None if chance is None else np.array(chance, dtype=float)))


def load_rows(uri: str) -> list[dict[str, Any]]:
    """The rows of a ``trials.parquet`` as plain Python values ([] when there is none yet)."""
    if not exists(uri):
        return []
    fs, path = filesystem(uri)
    return list(pq.read_table(path, filesystem=fs).to_pylist())


def pareto_front(df: pd.DataFrame) -> pd.DataFrame:
    """COMPLETED full-budget trials on the frontier of validation accuracy (max; ``selected_on``) vs training
    FLOPs (min), cheapest first, with ``knee`` marking the knee point. Early-stopped, failed, infeasible and
    chance-level trials never enter (``front_candidates``); test accuracy never selects."""
    metric = selected_on(df)
    ok = df[front_candidates(df)]
    if ok.empty:
        return ok.assign(knee=pd.Series(dtype=bool))
    acc = ok[metric].to_numpy(float)
    flops = ok["train_flops"].to_numpy(float)
    idx = front_indices(acc, flops)
    knee = knee_point(acc, flops)
    front = ok.iloc[idx].copy()
    front["knee"] = [int(i) == knee for i in idx]
    return front


def front_hypervolume(front: pd.DataFrame) -> float:
    if front.empty:
        return 0.0
    return hypervolume(front[selected_on(front)].to_numpy(float), front["flops_ratio"].to_numpy(float))


def search_cost(table: pd.DataFrame, wall_seconds: float, before: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What the search spent: measured training FLOPs and trial-seconds summed over ALL trials (per status too),
    and wall seconds of the driver, added over resumes (``before``: the previous ``search.json`` cost)."""
    flops = table["spent_train_flops"].astype(float).fillna(0.0) if "spent_train_flops" in table else pd.Series(dtype=float)
    secs = table["spent_seconds"].astype(float).fillna(0.0) if "spent_seconds" in table else pd.Series(dtype=float)
    by = {str(k): float(v) for k, v in flops.groupby(table["status"]).sum().items()} if len(table) else {}
    rung: dict[str, Any] = {}
    if len(table) and "param.fidelity.epochs" in table:  # --fidelity schedule: what each rung length cost
        e = table["param.fidelity.epochs"].astype(float)
        rung = {"train_flops_by_rung_epochs": {str(int(k)): float(v) for k, v in flops.groupby(e).sum().items()},
                "trials_by_rung_epochs": {str(int(k)): int(v) for k, v in e.value_counts().sort_index().items()}}
    return {
        "train_flops": float(flops.sum()),
        "train_flops_by_status": by,
        **rung,
        "trial_seconds": float(secs.sum()),
        "wall_seconds": float(wall_seconds) + float((before or {}).get("wall_seconds", 0.0) or 0.0),
        "trials": int(len(table)),
    }


def compute_curve(table: pd.DataFrame) -> pd.DataFrame:
    """Hypervolume against spent compute: trials in the order they ended, the training FLOPs and trial-seconds
    spent so far by all trials, and the hypervolume of the COMPLETED full-budget ones so far."""
    from ..pareto import hypervolume_curve

    d = table.sort_values(["finished_at", "trial_id"], na_position="last").reset_index(drop=True)
    ok = front_candidates(d)
    spent, hv = hypervolume_curve(d[selected_on(d)], d["flops_ratio"], d["spent_train_flops"], ok.to_numpy())
    return pd.DataFrame({
        "trial_id": d["trial_id"], "status": d["status"], "finished_at": d["finished_at"],
        "spent_train_flops": spent, "spent_seconds": d["spent_seconds"].astype(float).fillna(0.0).cumsum(),
        "hypervolume": hv,
    })


def write_compute_curve(table: pd.DataFrame, uri: str, title: str | None = None) -> None:
    """``compute_curve`` as CSV at ``uri`` and as a picture beside it (``HV_COMPUTE_PNG``, ``plots.hypervolume_png``):
    whether more trials still bought front is read at a glance from the flat or rising tail."""
    from ..plots import hypervolume_png

    curve = compute_curve(table)
    write_bytes(uri, curve.to_csv(index=False).encode())
    write_bytes(f"{uri.rsplit('/', 1)[0]}/{HV_COMPUTE_PNG}", hypervolume_png(curve, title=title))


def front_table(front: pd.DataFrame, title: str = "Pareto front", base: Mapping[str, Any] | None = None,
                width: int | None = None) -> Any:
    """The front as ``plots.answer_table`` (shared with ``spfde pareto``): the knee named in its own column,
    FLOPs as ``39.49 GFLOPs``, only the parameters that differ from ``base``; fitted to ``width`` if given."""
    from ..plots import answer_table

    knees = front.loc[front["knee"].astype(bool), "trial_id"].tolist() if "knee" in front.columns else []
    return answer_table(front, title, knee=str(knees[0]) if knees else None, base=base, width=width)
