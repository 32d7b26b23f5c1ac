"""Our record is the truth, Ray's snapshot a cache: trials that Ray's snapshot does not hold continue from it.

Ray restores a search from ``tuner.pkl`` and its newest ``experiment_state-*.json``, written every
``TUNE_GLOBAL_CHECKPOINT_S`` seconds. A driver killed between two snapshots leaves trials the snapshot never saw:
those that ended keep their rows (search/callbacks.py) and count toward ``--num-samples``; one that was running
(an *orphan*) has its trainer state in ``state/<id>/``, and Ray will never run it again (issue 34, item 1). So the
restored searcher (search/optuna_search.py) asks for each orphan's parameters first and starts them as a new
trial that ``take_over`` gives the orphan's state: it continues from the saved epoch, or from epoch 0 with the same
parameters when nothing was saved. The orphan's row stays ``INTERRUPTED``, its error ``RESUMED`` or ``RERUN``
naming the new trial, counted by nothing (its compute moves with its state into the new trial's row), so the table
and MLflow still hold each run that started exactly once, and a resumed search trains the configs an
uninterrupted one would.

A driver killed while starting (after ``tuner.pkl``, before Ray's first snapshot) or a folder whose Ray files were
lost has no snapshot at all; then ``Tuner.restore`` either fails or restores an empty experiment that trains one
trial and stops short for ever (issue 34, items 2-3). There the driver starts a new Tuner in the same folder
(``rebuild_from_record`` removes Ray's stale files) whose fresh searcher holds no trial: every ended trial of
``trials.parquet`` is kept and counted, and every unfinished one is an orphan, continued the same way. No Ray here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables import LAST_REPORT, STATE_DIR, TrialState

from ..storage import exists, list_names, read_bytes, remove, write_bytes
from .results import RERUN, load_rows
from .settings import RUNGS_JSON, TRIALS_PARQUET

log = logging.getLogger(__name__)

TUNER_PKL = "tuner.pkl"
EXPERIMENT_STATE = "experiment_state-"
RAY_SNAPSHOT = (EXPERIMENT_STATE, "searcher-state-", "search_gen_state-")  # Ray's per-snapshot files
ENDED = ("COMPLETED", "EARLY_STOPPED", "FAILED", "INFEASIBLE")  # a trials.parquet row whose trial ended
RESUMED = "resumed from its saved state as a new trial"  # the error of an orphan's row once a trial took it over
REPLACED = (RERUN, RESUMED)  # error prefixes of rows another trial continues: counted by nothing
REPLACED_JSON = "replaced.json"  # state/<orphan id>/: the trial that took it over, and from which epoch
CONTINUES_JSON = "continues.json"  # state/<new id>/: the orphan it took over (MOASHA's book follows it)


def missing_ray_state(uri: str) -> str:
    """What of Ray's snapshot is missing in the search folder ``uri`` ('' when ``Tuner.restore`` can use it)."""
    names = list_names(uri)
    missing = [] if TUNER_PKL in names else [TUNER_PKL]
    if not any(n.startswith(EXPERIMENT_STATE) and n.endswith(".json") for n in names):
        missing.append(f"{EXPERIMENT_STATE}*.json")
    return " and ".join(missing)


@dataclass
class Rebuild:
    """What a new Tuner continues from: ``ended`` trials kept as they were, ``unfinished`` ones (their ids) that
    its searcher continues from their state."""

    ended: int = 0
    unfinished: int = 0


def rebuild_from_record(uri: str) -> Rebuild:
    """Count what ``trials.parquet`` holds and drop Ray's stale snapshot files, so the new Tuner's snapshot is the
    only one ``--resume`` can find; the new searcher takes the unfinished trials over (``orphans``)."""
    table = f"{uri}/{TRIALS_PARQUET}"
    rows = load_rows(table) if exists(table) else []
    out = Rebuild(ended=sum(str(r.get("status")) in ENDED for r in rows),
                  unfinished=len(orphans(rows, (), {})))
    for name in list_names(uri):
        if name == TUNER_PKL or name.startswith(RAY_SNAPSHOT):
            remove(f"{uri}/{name}")
    return out


def replaced(error: Any) -> bool:
    """Whether a row's error says another trial continues it (``RESUMED``, ``RERUN``)."""
    return str(error or "").startswith(REPLACED)


def counted(table: Any) -> Any:
    """The rows of a trials table that count toward ``--num-samples``: all but those another trial continues."""
    if "error" not in getattr(table, "columns", ()):
        return table
    return table[~table["error"].fillna("").astype(str).str.startswith(REPLACED)]


def moasha_stopped(uri: str) -> dict[str, int]:
    """MOASHA's stopped trials (trial id -> rung) from the search's rung book; {} without one."""
    path = f"{uri}/{RUNGS_JSON}"
    if not exists(path):
        return {}
    try:
        return {str(k): int(v) for k, v in json.loads(read_bytes(path)).get("stopped", {}).items()}
    except (OSError, ValueError, AttributeError) as e:
        log.warning("could not read %s: %s", path, e)
        return {}


def stopped_at_rung(row: Mapping[str, Any], stopped: Mapping[str, int]) -> bool:
    """A row left RUNNING whose trial MOASHA had stopped at a rung it reached: it ended (EARLY_STOPPED)."""
    rung = stopped.get(str(row.get("trial_id")))
    return rung is not None and int(row.get("epochs_completed") or 0) >= rung


def orphans(rows: Iterable[Mapping[str, Any]], known: Iterable[str], stopped: Mapping[str, int]) -> list[dict[str, Any]]:
    """Rows of trials that started, did not end and that no trial continues, outside ``known`` (the trials the
    searcher holds, which Ray resumes itself): (trial id, params) dicts, oldest first."""
    held = set(known)
    out = []
    for r in rows:
        tid = str(r.get("trial_id"))
        if (tid in held or str(r.get("status")) in ENDED or r.get("status") == "PENDING" or replaced(r.get("error"))
                or stopped_at_rung(r, stopped)):
            continue
        out.append({"trial_id": tid, "params": json.loads(str(r.get("params") or "{}"))})
    return out


def lost_ended(rows: Iterable[Mapping[str, Any]], known: Iterable[str], stopped: Mapping[str, int]) -> int:
    """Trials that ended after the snapshot the searcher was restored from (outside ``known``): they count."""
    held = set(known)
    return sum(1 for r in rows if str(r.get("trial_id")) not in held and not replaced(r.get("error"))
               and (str(r.get("status")) in ENDED or stopped_at_rung(r, stopped)))


def take_over(uri: str, orphan: str, trial_id: str) -> int:
    """Give trial ``trial_id`` the trainer state of ``orphan`` (its ``state/`` folder's files) and record it both
    ways, ``state/<orphan>/replaced.json`` and ``state/<trial_id>/continues.json``; returns the saved epoch it
    continues from (0: none, it trains anew)."""
    epoch = 0
    with tempfile.TemporaryDirectory(prefix="spfde-takeover-") as tmp:
        if TrialState(uri, orphan).download(tmp):
            with contextlib.suppress(OSError, ValueError):
                epoch = int(json.loads((Path(tmp) / LAST_REPORT).read_text()).get("epoch") or 0)
            TrialState(uri, trial_id).upload(tmp)
    write_bytes(f"{uri}/{STATE_DIR}/{orphan}/{REPLACED_JSON}", json.dumps({"by": trial_id, "epoch": epoch}).encode())
    write_bytes(f"{uri}/{STATE_DIR}/{trial_id}/{CONTINUES_JSON}", json.dumps({"from": orphan, "epoch": epoch}).encode())
    return epoch


def _take_over_record(path: str, key: str) -> dict[str, Any] | None:
    """A file ``take_over`` wrote, if it names ``key``; None if absent or unreadable."""
    try:
        doc = json.loads(read_bytes(path)) if exists(path) else None
    except (OSError, ValueError) as e:
        log.warning("could not read %s: %s", path, e)
        return None
    return doc if isinstance(doc, dict) and doc.get(key) else None


def replacement(uri: str, orphan: str) -> dict[str, Any] | None:
    """What ``take_over`` recorded for ``orphan`` ({"by": trial id, "epoch": n}), or None."""
    return _take_over_record(f"{uri}/{STATE_DIR}/{orphan}/{REPLACED_JSON}", "by")


def continued_from(uri: str, trial_id: str) -> str | None:
    """The orphan whose run trial ``trial_id`` continues (``take_over``), or None: one file read, not a scan."""
    doc = _take_over_record(f"{uri}/{STATE_DIR}/{trial_id}/{CONTINUES_JSON}", "from")
    return str(doc["from"]) if doc else None


def replaced_row(row: Mapping[str, Any], by: Mapping[str, Any]) -> dict[str, Any]:
    """An orphan's row once trial ``by["by"]`` took it over: INTERRUPTED, counted by nothing; a resumed one's
    compute moves with its state into the new trial's (cumulative) row."""
    if int(by.get("epoch") or 0) > 0:
        return {**row, "status": "INTERRUPTED", "spent_train_flops": 0.0, "spent_seconds": 0.0,
                "error": f"{RESUMED} ({by['by']}, from epoch {int(by['epoch'])})"}
    return {**row, "status": "INTERRUPTED", "error": f"{RERUN} ({by['by']})"}

