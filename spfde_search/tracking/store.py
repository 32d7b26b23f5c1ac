"""Where the MLflow store is and how to talk to it: tracking URIs, experiment names and run URLs, and ``Store``,
the client of one search's experiment with the error guard (a failing call backs off, never stops a search)."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from typing import Any

from spfde_search.config import Config
from spfde_search.plots import brief
from spfde_search.store_uri import (  # where the store is: no MLflow needed (cli/precheck.py uses it too)
    TRACKING_SCHEMES,
    TrackingUnavailable,
    TrackingUriError,
    default_tracking_uri,
    resolve_tracking_uri,
    sqlite_path,
)

log = logging.getLogger("spfde_search.tracking")

__all__ = ["ARTIFACT_ROOT_DIRNAME", "TRACKING_SCHEMES", "Store", "TrackingUnavailable", "TrackingUriError",
           "default_experiment_name", "default_tracking_uri", "resolve_tracking_uri", "run_url", "sqlite_path"]

ARTIFACT_ROOT_DIRNAME = "mlartifacts"


def default_experiment_name(base_config: Mapping[str, Any] | Config | None) -> str:
    """``spfde-<model>-<data set>``, e.g. ``spfde-resnet8-fashion_mnist``."""
    cfg = base_config.to_dict() if isinstance(base_config, Config) else dict(base_config or {})
    model = (cfg.get("model") or {}).get("name", "model")
    data = (cfg.get("data") or {}).get("name", "data")
    width = (cfg.get("model") or {}).get("width", 1)
    return f"spfde-{model}{'' if width in (1, None) else f'x{width}'}-{data}"


EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
"""MLflow 3's experiment kind: the UI shows training runs (runs table, charts), not the GenAI overview."""


def run_url(base: str, experiment_id: str, run_id: str | None = None, *, view: str | None = None,
            artifact: str | None = None) -> str:
    """The UI page of an experiment (its runs table; ``view``: a shared view's key, ``tracking/views.py``), of one
    run, or of one of its artifacts, in MLflow 3's model-training view (``workflowType=machine_learning``; without
    it MLflow 3.17 opens the GenAI overview)."""
    base = base.rstrip("/")
    page = f"{base}/#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "/runs")
    if run_id and artifact:
        page += f"/artifactPath/{artifact}"
    return page + (f"?viewStateShareKey={view}&" if view and not run_id else "?") + "workflowType=machine_learning"



def _search_all(client: Any, experiment_ids: list[str], flt: str) -> list[Any]:
    """Every run matching the filter (follows page tokens)."""
    out: list[Any] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string=flt, max_results=1000, page_token=token)
        out.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return out


def _q(s: str) -> str:
    return s.replace("'", "\\'")



def _no_sqlalchemy_traceback(record: logging.LogRecord) -> bool:
    """MLflow's SQL store logs the full traceback of a failed write (a full disk, a read-only or locked file)
    before raising; ``Store.guard`` reports the same failure in one line, so the traceback is dropped."""
    return not str(record.msg).startswith("SQLAlchemy database error")


class Store:
    """The MLflow client of one search (``search``) in one experiment, with the shared failure guard.

    ``guard`` runs a call; on any error it warns once, stays quiet for ``retry_after`` seconds (doubling per
    consecutive failure, up to 300 s, reset on success) and returns None.
    """

    def __init__(self, tracking_uri: str | None, experiment: str, search: str, *, retry_after: float = 20.0,
                 request_timeout: float = 10.0, fail_fast: bool = True) -> None:
        self.uri = resolve_tracking_uri(tracking_uri)
        self.experiment = experiment
        self.search = search
        self.retry_after = retry_after
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run" line per call
        logging.getLogger("mlflow.store.db.utils").addFilter(_no_sqlalchemy_traceback)  # once: a set, no duplicates
        if fail_fast and self.uri.startswith(("http://", "https://")):
            # MLflow's defaults (7 retries, exponential backoff, 120 s timeout) would stall the search for
            # minutes per call while the server is down; fail fast instead and catch up later.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(request_timeout)))
        elif self.uri.startswith(("http://", "https://")):
            # `spfde sync`: a few retries for a flaky network, bounded (about 20 s per call at most), not
            # MLflow's minutes of back-off; the sync then stops at the first call that still fails
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(request_timeout)))
        self._client: Any = None
        self.last_error = ""
        self.quiet = False  # `spfde sync` reports a failure itself, as one error line
        self.experiment_id: str | None = None
        self._down_until = 0.0
        self._backoff = retry_after
        self.failures = 0

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run fn; on any error warn once per outage, back off, and return None."""
        if not self.available():
            return None
        try:
            out = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - tracking must never stop the search
            self.failures += 1
            self.last_error = f"{type(e).__name__}: {brief(e)}"
            wait = self._backoff
            if self.quiet:
                return None
            self._down_until = time.monotonic() + wait
            # a server that hangs (rather than refuses) costs a request timeout per attempt: back off further
            self._backoff = min(wait * 2, 300.0)
            log.warning("MLflow tracking at %s failed while %s (%s: %s); the search goes on and its own results "
                        "keep everything; next try in %.0f s (or run `spfde sync %s` later)",
                        self.uri, what, type(e).__name__, brief(e),
                        wait, self.search)
            return None
        self._backoff = self.retry_after
        return out

    def ensure_experiment(self) -> str:
        if self.experiment_id is not None:
            return self.experiment_id
        c = self.client
        exp = c.get_experiment_by_name(self.experiment)
        if exp is None:
            location = None
            db = sqlite_path(self.uri)
            if db is not None:
                slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.experiment)
                location = str((db.parent / ARTIFACT_ROOT_DIRNAME / slug).resolve())
            try:
                self.experiment_id = c.create_experiment(self.experiment, artifact_location=location,
                                                         tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            except Exception:
                exp = c.get_experiment_by_name(self.experiment)  # created concurrently
                if exp is None:
                    raise
                self.experiment_id = exp.experiment_id
        else:
            if exp.lifecycle_stage == "deleted":
                c.restore_experiment(exp.experiment_id)
            self.experiment_id = exp.experiment_id
            if EXPERIMENT_KIND_TAG not in exp.tags:  # an experiment made before the tag (or by hand)
                c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return self.experiment_id

    def find_runs(self, role: str, trial_id: str | None = None) -> list[Any]:
        flt = f"tags.`spfde.search` = '{_q(self.search)}' and tags.`spfde.role` = '{role}'"
        if trial_id is not None:
            flt += f" and tags.`spfde.trial_id` = '{_q(trial_id)}'"
        runs = _search_all(self.client, [self.ensure_experiment()], flt)
        return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))

    # ---- parent


    def retry_now(self) -> None:
        """Forget the back-off: the next call is attempted whatever the last failure was."""
        self._down_until = 0.0

    def no_backoff(self) -> None:
        """``spfde sync``: every call is attempted (MLflow's own HTTP retries bound each one)."""
        self.retry_after = self._backoff = 0.0
        self.quiet = True
