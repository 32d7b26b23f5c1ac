"""Publishing the frontier: ``pareto`` tags on the trial runs, frontier metrics on the parent run and the
``pareto_front.{parquet,csv,png,html}`` files, all from ``frontier.compute_frontier`` of every trial."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .frontier import Frontier, compute_frontier, frontier_flags, search_cost_of
from .records import TrialRecord
from .runs import RunWriter
from .store import Store

PARENT_ARTIFACTS = ("pareto_front.parquet", "pareto_front.csv", "pareto_front.png", "pareto_front.html")
ARTIFACT_EVERY = 4
"""A live search re-uploads the frontier files after this many more ended trials (and once at its end)."""


class FrontierPublisher:
    """Keeps the frontier of one search current in MLflow (re-tags only what changed)."""

    def __init__(self, store: Store, runs: RunWriter, *, artifacts: bool = True) -> None:
        self.store = store
        self.runs = runs
        self.artifacts = artifacts
        self._logged: tuple[int, int, dict[str, float]] | None = None  # (step, ms, values) last on the parent
        self._cost_steps: set[int] = set()
        self.artifact_every = 1  # the live callback sets ARTIFACT_EVERY; `spfde sync` uploads every time
        self._artifacts_at: int | None = None  # ended trials when the files were last uploaded

    def update(self, records: Sequence[TrialRecord], *, artifacts: bool = True, final: bool = False) -> bool:
        """Re-tag ``pareto`` where it changed, log ``hypervolume`` and the frontier artifacts on the parent (the
        files only every ``artifact_every`` ended trials, and when ``final``).

        ``records`` must be ALL trials of the search (the frontier is ``compute_frontier`` of them)."""
        return bool(self.store.guard("updating the Pareto frontier", self._update, records, artifacts, final))

    def _due(self, records: Sequence[TrialRecord], final: bool) -> bool:
        """Upload now? At the first ended trial, then after ``artifact_every`` more, and always when ``final``."""
        ended = sum(r.terminal for r in records)
        last = self._artifacts_at
        if final or (ended > 0 and (last is None or ended - last >= self.artifact_every)):
            self._artifacts_at = ended
            return True
        return False

    def _figure_context(self) -> dict[str, Any]:
        """FLOPs budget (ratio of dense) and chance accuracy for the pictures, from the search's description."""
        from spfde_search.plots import chance_accuracy

        meta = getattr(self.runs, "_parent_meta", None) or {}
        budget, dense = meta.get("flops_budget_absolute"), meta.get("dense_train_flops")
        ratio = float(budget) / float(dense) if budget and dense else None
        data = (meta.get("base_config") or {}).get("data") or {}
        return {"flops_budget": ratio, "chance": chance_accuracy(data.get("name")),
                "base": meta.get("base_config") or None}

    def _update(self, records: Sequence[TrialRecord], artifacts: bool, final: bool = False) -> bool:
        from mlflow.entities import Metric

        c = self.store.client
        self.runs.ensure_parent()
        assert self.runs.parent_run_id is not None
        self.runs.load_existing()  # runs of trials this driver has not seen (a resumed search's finished ones)
        front = compute_frontier(records)
        flags = front.flags
        for rec in records:
            if rec.trial_id not in self.runs.run_ids:
                continue  # not in MLflow yet (server was down): tagged when it is upserted
            want = flags.get(rec.trial_id, False)
            if self.runs.pareto_tags.get(rec.trial_id) != want:
                c.set_tag(self.runs.run_ids[rec.trial_id], "pareto", "true" if want else "false")
                self.runs.pareto_tags[rec.trial_id] = want
        self._log_frontier_metrics(front)
        cost = search_cost_of(records)  # the search's own cost, against the number of ended trials
        cost_step = int(cost["trials_ended"])
        if cost_step and cost_step not in self._cost_steps:
            ts = int(time.time() * 1000)
            c.log_batch(self.runs.parent_run_id, metrics=[Metric(k, v, ts, cost_step) for k, v in cost.items()])
            self._cost_steps.add(cost_step)
        if artifacts and self.artifacts and self._due(records, final):
            table = self.trials_table(records, flags)
            with tempfile.TemporaryDirectory() as td:
                write_frontier_artifacts(table, Path(td), title=f"search {self.store.search}",
                                         **self._figure_context())
                for name in PARENT_ARTIFACTS:
                    c.log_artifact(self.runs.parent_run_id, str(Path(td) / name))
        return True

    def _log_frontier_metrics(self, front: Frontier) -> None:
        """Log the frontier metrics whenever they change, at step = completed trials, never below a step already
        logged (MLflow's latest value is the one at the highest step, then the latest time), so the parent's
        current metrics are always ``compute_frontier`` of all trials, also after ``--resume`` or a rerun."""
        from mlflow.entities import Metric

        c = self.store.client
        parent = self.runs.parent_run_id
        assert parent is not None
        if self._logged is None:
            hist = c.get_metric_history(parent, "trials_completed")
            last = max(hist, key=lambda m: (m.step, m.timestamp)) if hist else None
            self._logged = (last.step, last.timestamp, dict(c.get_run(parent).data.metrics)) if last else (0, 0, {})
        step0, ts0, before = self._logged
        values = front.metrics()
        if not front.trials_completed and not front.trials_failed:
            return  # no trial has ended yet
        if front.trials_completed <= step0 and all(before.get(k) == v for k, v in values.items()):
            return  # unchanged
        step = max(step0, front.trials_completed)
        ts = max(int(time.time() * 1000), ts0 + 1)
        c.log_batch(parent, metrics=[Metric(k, v, ts, step) for k, v in values.items()])
        self._logged = (step, ts, {**before, **values})

    def trials_table(self, records: Sequence[TrialRecord], flags: Mapping[str, bool] | None = None) -> pd.DataFrame:
        flags = frontier_flags(records) if flags is None else flags
        rows = []
        for r in records:
            row = r.row()
            row["pareto"] = bool(flags.get(r.trial_id, False))
            row["run_id"] = self.runs.run_ids.get(r.trial_id, "")
            rows.append(row)
        return pd.DataFrame(rows)


def write_frontier_artifacts(table: pd.DataFrame, out: Path, title: str | None = None, *,
                             flops_budget: float | None = None, chance: float | None = None,
                             base: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """``pareto_front.parquet/.csv`` (frontier rows) and ``.png/.html`` (all trials, frontier and knee marked,
    the FLOPs budget as a ratio of dense, a warning when the best accuracy is near ``chance``)."""
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
    frontier_png(table, paths["png"], title=title, flops_budget=flops_budget, chance=chance)
    frontier_html(table, paths["html"], title=title, flops_budget=flops_budget, chance=chance, base=base)
    return paths
