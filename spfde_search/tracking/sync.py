"""``spfde sync``: replay a search folder (``trials.parquet``, ``search.json``, Ray's ``result.json``) into MLflow;
idempotent, so it repairs whatever a live search could not write."""

from __future__ import annotations

from pathlib import Path

from .records import load_search_results
from .store import default_experiment_name
from .tracker import Tracker


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
