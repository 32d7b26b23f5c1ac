"""``spfde sync``: replay a search folder (``trials.parquet``, ``search.json``, Ray's ``result.json``) into MLflow;
idempotent, so it repairs whatever a live search could not write."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .frontier import frontier_flags
from .records import TrialRecord, load_search_results
from .store import TrackingUnavailable, default_experiment_name

if TYPE_CHECKING:  # pragma: no cover
    from .tracker import Tracker


def sync_records(tracker: Tracker, records: Sequence[TrialRecord], meta: Mapping[str, Any] | None, *,
                 close: bool) -> dict[str, Any]:
    """Write every record, then the frontier; raise TrackingUnavailable if anything failed."""
    tracker.store.no_backoff()
    ok: list[bool] = []
    front_ok = False
    if tracker.start(meta):  # stop at the first failing call: a dead server costs one bounded attempt, not N
        for r in records:
            ok.append(tracker.upsert_trial(r))
            if not ok[-1]:
                break
        else:
            front_ok = tracker.update_frontier(records)
    if tracker.failures:
        raise TrackingUnavailable(
            f"cannot write to MLflow at {tracker.uri} ({tracker.store.last_error or 'call failed'}); nothing was "
            f"lost: start the server (or pass --tracking-uri), then run `spfde sync {tracker.search}` again")
    if close and all(r.terminal for r in records):
        tracker.finish("FINISHED")
    return {"trials": len(records), "synced": sum(ok), "frontier": sum(frontier_flags(records).values()),
            "parent_run_id": tracker.parent_run_id, "experiment_id": tracker.experiment_id, "ok": front_ok}


def sync_search(search_dir: str | Path, tracking_uri: str | None = None, experiment: str | None = None) -> dict:
    """Write a search's results to MLflow; idempotent (existing runs are found by tags and completed)."""
    meta, records = load_search_results(search_dir)
    name = str(meta.get("name") or Path(search_dir).name)
    meta["name"] = name
    recorded = meta.get("tracking") or {}
    uri = tracking_uri or recorded.get("uri") or meta.get("tracking_uri") or None
    exp = experiment or recorded.get("experiment") or meta.get("experiment") or \
        default_experiment_name(meta.get("base_config") or {})
    from .tracker import Tracker

    tracker = Tracker(uri, exp, name, retry_after=0.0, fail_fast=False)
    out = tracker.sync(records, meta, close=True)
    out["tracking_uri"] = tracker.uri
    out["experiment"] = exp
    return out
