"""``TrialRecord``: one trial as the tracker sees it (a ``trials.parquet`` row plus its per-epoch metrics), built
from a Ray trial's config, a table row, or a search folder on disk (``load_search_results``)."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from spfde_search.config import Config, apply_overrides, field_info, flatten
from spfde_search.pareto import is_finite
from spfde_search.plots import json_object

TERMINAL = ("COMPLETED", "EARLY_STOPPED", "FAILED", "INFEASIBLE", "INTERRUPTED")  # for this driver: a resume reopens
MLFLOW_STATUS = {"COMPLETED": "FINISHED", "EARLY_STOPPED": "FINISHED", "FAILED": "FAILED", "INFEASIBLE": "FAILED",
                 "INTERRUPTED": "KILLED"}
FINAL_METRICS = (
    "val_accuracy", "test_accuracy", "train_flops", "predicted_train_flops", "dense_train_flops", "flops_ratio",
    "saved_sparsity", "saved_freezing", "saved_sieving", "freeze_start_epoch", "epochs_completed", "wall_seconds",
    "run_train_flops", "run_flops_ratio", "held_sparsity",
)
# trials.parquet column -> MLflow metric name (absolute training FLOPs saved, docs/method.md §5)
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
    "saved_sieving", "freeze_start_epoch", "epochs_total", "dense_train_flops", "execution",
}


class SearchFileError(ValueError):
    """A search folder's own file (``search.json``, ``trials.parquet``) exists but cannot be read."""


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
    rung: dict[str, Any] = field(default_factory=dict)  # --fidelity schedule: fidelity.rung / epochs / config

    @staticmethod
    def rung_of(params: Mapping[str, Any]) -> dict[str, Any]:
        """The ``fidelity.*`` keys a successive-halving trial carries beside its config (search/halving.py)."""
        return {k: v for k, v in params.items() if str(k).startswith("fidelity.")}

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def on_frontier_candidate(self) -> bool:
        """Completed, full budget, measured; which accuracy then selects is decided over all trials
        (``frontier.selected_on``: validation, or test for a search without a validation split)."""
        return (self.status == "COMPLETED" and self.full_budget and is_finite(self.final.get("train_flops"))
                and (is_finite(self.final.get("val_accuracy")) or is_finite(self.final.get("test_accuracy"))))

    def front_eligible(self, metric: str) -> bool:
        """A frontier candidate whose selection accuracy ``metric`` (``frontier.selected_on``) is finite and beats
        chance (``pareto.above_chance``): may enter the front and the hypervolume. A chance-level trial is still
        reported and counted as completed."""
        from spfde_search.pareto import above_chance
        from spfde_search.plots import chance_of_config

        return self.on_frontier_candidate and is_finite(self.final.get(metric)) and bool(
            above_chance([float(self.final[metric])], chance_of_config(self.config))[0])

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {"trial_id": self.trial_id, "status": self.status, "full_budget": self.full_budget}
        out.update({k: self.final.get(k) for k in FINAL_METRICS})
        if out.get("held_sparsity") is None and self.epochs and is_finite(self.epochs[-1].get("density")):
            out["held_sparsity"] = 1.0 - float(self.epochs[-1]["density"])  # a record from before the column
        out["error"] = self.error
        out["params"] = json.dumps(self.params, sort_keys=True, default=str)
        out["config"] = json.dumps(self.config, sort_keys=True, default=str)
        return out

    @classmethod
    def from_row(cls, row: Mapping[str, Any], epochs: Sequence[Mapping[str, Any]] = ()) -> TrialRecord:
        """From a ``trials.parquet`` row (and the trial's ``result.json`` lines for per-epoch metrics)."""
        config = json_object(row.get("config"))
        params = json_object(row.get("params"))
        final = {k: float(row[k]) for k in FINAL_METRICS if k in row and is_finite(row[k])}
        return cls(
            trial_id=str(row["trial_id"]), status=str(row.get("status") or "PENDING"), config=config,
            params=params, epochs=[_epoch_metrics(e) for e in epochs if _epoch_metrics(e)],
            final=final, full_budget=bool(row.get("full_budget") or False), error=str(row.get("error") or ""),
            rung=cls.rung_of(params),
        )


def _epoch_metrics(result: Mapping[str, Any]) -> dict[str, Any]:
    """Numeric training metrics of one reported epoch, with ``epoch`` (step) and ``timestamp`` (seconds)."""
    epoch = result.get("epoch", result.get("training_iteration"))
    if not is_finite(epoch) or int(epoch) < 1 or result.get("infeasible") is True:
        return {}  # an infeasible point's single report trains nothing
    out: dict[str, Any] = {"epoch": int(epoch)}
    if is_finite(result.get("timestamp")):
        out["timestamp"] = float(result["timestamp"])
    for k, v in result.items():
        if k in _NOT_EPOCH or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(float(v)):
            out[k] = float(v)
    return out


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


def load_search_results(search_dir: str | Path) -> tuple[dict[str, Any], list[TrialRecord]]:
    """``search.json`` and one TrialRecord per ``trials.parquet`` row, with per-epoch metrics from Ray's
    ``result.json`` files under the search directory."""
    d = Path(search_dir)
    meta_path, trials_path = d / "search.json", d / "trials.parquet"
    if not trials_path.is_file():
        raise FileNotFoundError(f"{trials_path} does not exist: is {d} a search directory (spfde search --name)?")
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"name": d.name}
        df = pd.read_parquet(trials_path)
    except (OSError, ValueError) as err:  # truncated parquet (ArrowInvalid), garbled JSON: one line naming the file
        bad = meta_path if isinstance(err, json.JSONDecodeError) else trials_path
        why = (str(err).strip().splitlines() or [""])[0][:160]
        raise SearchFileError(f"{bad} cannot be read ({type(err).__name__}: {why}); "
                              "restore it from a copy (a running or resumed search rewrites trials.parquet)") from None
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
