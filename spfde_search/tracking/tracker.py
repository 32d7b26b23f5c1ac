"""``Tracker``: the one object a driver or ``spfde sync`` holds for a search's MLflow record. It joins the three
pieces that change for different reasons: the ``Store`` (connection, back-off), the ``RunWriter`` (parent and
trial runs) and the ``FrontierPublisher`` (pareto tags, frontier metrics and files). Every public method
swallows tracking errors (returns False)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from .artifacts import FrontierPublisher
from .frontier import frontier_flags
from .records import TrialRecord
from .runs import RunWriter
from .store import Store, TrackingUnavailable


class Tracker:
    """Idempotent MLflow writer for one search.

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
        self.store = Store(tracking_uri, experiment, search, retry_after=retry_after,
                           request_timeout=request_timeout, fail_fast=fail_fast)
        self.runs = RunWriter(self.store, artifacts=artifacts)
        self.frontier = FrontierPublisher(self.store, self.runs, artifacts=artifacts)

    @property
    def uri(self) -> str:
        return self.store.uri

    @property
    def experiment(self) -> str:
        return self.store.experiment

    @property
    def search(self) -> str:
        return self.store.search

    @property
    def experiment_id(self) -> str | None:
        return self.store.experiment_id

    @property
    def parent_run_id(self) -> str | None:
        return self.runs.parent_run_id

    @property
    def failures(self) -> int:
        return self.store.failures

    @property
    def client(self) -> Any:
        return self.store.client

    def available(self) -> bool:
        return self.store.available()

    def start(self, meta: Mapping[str, Any] | None = None) -> bool:
        """Find or create the parent run and log the search's description (idempotent)."""
        return self.runs.start(meta)

    def finish(self, status: str = "FINISHED") -> bool:
        return self.runs.finish(status)

    def upsert_trial(self, rec: TrialRecord) -> bool:
        """Bring the trial's run up to date: create it, params + config artifact, new epochs, final state."""
        return self.runs.upsert_trial(rec)

    def update_frontier(self, records: Sequence[TrialRecord], *, artifacts: bool = True, final: bool = False) -> bool:
        """Re-tag ``pareto`` where it changed, log ``hypervolume`` and the frontier artifacts on the parent."""
        return self.frontier.update(records, artifacts=artifacts, final=final)

    def trials_table(self, records: Sequence[TrialRecord], flags: Mapping[str, bool] | None = None) -> pd.DataFrame:
        return self.frontier.trials_table(records, flags)

    def sync(self, records: Sequence[TrialRecord], meta: Mapping[str, Any] | None, *, close: bool) -> dict[str, Any]:
        """Write every record, then the frontier; raise TrackingUnavailable if anything failed (``spfde sync``
        and the live callback's catch-up both come here; ``sync.py`` only loads a search folder and calls it)."""
        self.store.no_backoff()
        ok: list[bool] = []
        front_ok = False
        if self.start(meta):  # stop at the first failing call: a dead server costs one bounded attempt, not N
            for r in records:
                ok.append(self.upsert_trial(r))
                if not ok[-1]:
                    break
            else:
                front_ok = self.update_frontier(records)
        if self.failures:
            raise TrackingUnavailable(
                f"cannot write to MLflow at {self.uri} ({self.store.last_error or 'call failed'}); nothing was "
                f"lost: start the server (or pass --tracking-uri), then run `spfde sync {self.search}` again")
        if close and all(r.terminal for r in records):
            self.finish("FINISHED")
        return {"trials": len(records), "synced": sum(ok), "frontier": sum(frontier_flags(records).values()),
                "parent_run_id": self.parent_run_id, "experiment_id": self.experiment_id, "ok": front_ok}
