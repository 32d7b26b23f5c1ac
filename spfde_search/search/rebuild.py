"""``--resume`` when Ray's experiment snapshot is missing: our record is the truth, Ray's snapshot a cache.

Ray restores a search from ``tuner.pkl`` and its newest ``experiment_state-*.json``. A driver killed while starting
(after ``tuner.pkl``, before Ray's first snapshot) or a folder whose Ray files were lost has neither pair; then
``Tuner.restore`` either fails or restores an empty experiment that trains one trial and stops short for ever
(issue 34, items 2-3). The search's own record (``search.json``, ``trials.parquet``, ``state/<id>/``) holds what
matters: which trials ended, and the parameters of those that did not. So the driver starts a new Tuner in the same
folder that keeps the ended trials (they count toward ``--num-samples``; search/callbacks.py keeps their rows and
search/optuna_search.py counts them and dedupes against them) and reruns each unfinished trial's parameters first.
An unfinished trial's old row stays ``INTERRUPTED`` with ``RERUN`` as its error, counted by nothing, so the table
and MLflow still hold each run that started exactly once. Pure: no Ray.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from ..storage import exists, list_names, remove
from .results import RERUN, load_rows, rows_to_arrow, write_parquet
from .settings import TRIALS_PARQUET

log = logging.getLogger(__name__)

TUNER_PKL = "tuner.pkl"
EXPERIMENT_STATE = "experiment_state-"
RAY_SNAPSHOT = (EXPERIMENT_STATE, "searcher-state-", "search_gen_state-")  # Ray's per-snapshot files
ENDED = ("COMPLETED", "EARLY_STOPPED", "FAILED", "INFEASIBLE")  # a trials.parquet row whose trial ended


def missing_ray_state(uri: str) -> str:
    """What of Ray's snapshot is missing in the search folder ``uri`` ('' when ``Tuner.restore`` can use it)."""
    names = list_names(uri)
    missing = [] if TUNER_PKL in names else [TUNER_PKL]
    if not any(n.startswith(EXPERIMENT_STATE) and n.endswith(".json") for n in names):
        missing.append(f"{EXPERIMENT_STATE}*.json")
    return " and ".join(missing)


@dataclass
class Rebuild:
    """The record a new Tuner continues from: ``points`` (the unfinished trials' parameters, rerun first),
    ``ended`` (trials kept as they were), ``rerun`` (the old ids of the unfinished trials)."""

    points: list[dict[str, Any]] = field(default_factory=list)
    ended: int = 0
    rerun: list[str] = field(default_factory=list)


def rebuild_from_record(uri: str) -> Rebuild:
    """Mark the unfinished rows of ``trials.parquet`` as rerun and return their parameters; drop Ray's stale
    snapshot files so the new Tuner's snapshot is the only one ``--resume`` can find."""
    out = Rebuild()
    table = f"{uri}/{TRIALS_PARQUET}"
    rows = load_rows(table) if exists(table) else []
    kept = []
    for r in rows:
        status = str(r.get("status"))
        if status == "PENDING":
            continue  # never started: the new searcher proposes points of its own
        if status in ENDED:
            out.ended += 1
        elif not str(r.get("error") or "").startswith(RERUN):  # RUNNING or INTERRUPTED, not rerun before
            out.points.append(json.loads(str(r.get("params") or "{}")))
            out.rerun.append(str(r.get("trial_id")))
            r = {**r, "status": "INTERRUPTED", "error": f"{RERUN} (Ray's state was missing on --resume)"}
        kept.append(r)
    if rows:
        write_parquet(rows_to_arrow(kept), table)
    for name in list_names(uri):
        if name == TUNER_PKL or name.startswith(RAY_SNAPSHOT):
            remove(f"{uri}/{name}")
    return out


def counted(table: Any) -> Any:
    """The rows of a trials table that count toward ``--num-samples``: all but unfinished trials rerun anew."""
    if "error" not in getattr(table, "columns", ()):
        return table
    return table[~table["error"].fillna("").astype(str).str.startswith(RERUN)]
