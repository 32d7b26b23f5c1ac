"""MLflow adapter: one parent run per search, one nested run per trial, the Pareto frontier as tags and artifacts.

Only the search driver talks to MLflow (a Ray Tune callback, ``make_callback``); trials never open the store.
Every write is idempotent and keyed by stable tags, so the live callback and ``spfde sync`` share one code path:

- parent run: tags ``spfde.search=<name>``, ``spfde.role=parent``;
- trial run:  tags ``spfde.search=<name>``, ``spfde.role=trial``, ``spfde.trial_id=<id>``, ``mlflow.parentRunId``;
- progress:   ``spfde.epochs_logged=<n>`` is written in the same batch as epoch n's metrics, ``spfde.final_logged``
  in the same batch as the final metrics, so a rerun logs only what is missing (no duplicate runs or points);
- frontier:   ``pareto=true`` on the non-dominated completed full-budget trials, ``pareto=false`` on every other
  trial run; ``hypervolume`` (accuracy vs FLOPs ratio, reference (0, 1)) and ``pareto_front.{parquet,csv,png,html}``
  on the parent.

A failing MLflow call (server down) is caught and logged as a warning; the tracker then stays quiet for
``retry_after`` seconds and catches up on the next event. Nothing is lost: the search's own ``trials.parquet`` and
Ray's ``result.json`` files stay the source of truth, and ``sync_search`` replays them.

Modules: ``store`` (URIs, client, back-off), ``records`` (``TrialRecord``), ``frontier`` (pure frontier of all
trials), ``runs`` (writing runs), ``artifacts`` (publishing the frontier), ``tracker`` (``Tracker``), ``sync``,
``readback`` (reading a search back), ``callback`` (the Ray Tune callback), ``views`` (the saved runs-table view
``spfde ui`` links to). Other packages import only the names
below (tests/test_layering.py); everything logs under ``spfde_search.tracking``.
"""

from __future__ import annotations

from .artifacts import PARENT_ARTIFACTS, write_frontier_artifacts
from .callback import SEARCH_DIR_TAG, callbacks_for, describe_tracking, make_callback, tracking_settings
from .frontier import Frontier, compute_frontier, frontier_flags, hypervolume_of
from .readback import download_config, find_parent_run, frontier_table, read_trials
from .records import (
    FINAL_METRICS,
    MLFLOW_STATUS,
    TERMINAL,
    SearchFileError,
    TrialRecord,
    load_search_results,
    trial_config,
)
from .store import (
    ARTIFACT_ROOT_DIRNAME,
    TrackingUnavailable,
    TrackingUriError,
    default_experiment_name,
    default_tracking_uri,
    resolve_tracking_uri,
    run_url,
    sqlite_path,
)
from .sync import sync_search
from .tracker import Tracker
from .views import ensure_runs_view, ensure_search_view

__all__ = [
    "ARTIFACT_ROOT_DIRNAME",
    "FINAL_METRICS",
    "MLFLOW_STATUS",
    "PARENT_ARTIFACTS",
    "SEARCH_DIR_TAG",
    "TERMINAL",
    "TrialRecord",
    "SearchFileError",
    "Tracker",
    "TrackingUnavailable",
    "TrackingUriError",
    "Frontier",
    "callbacks_for",
    "compute_frontier",
    "default_experiment_name",
    "default_tracking_uri",
    "describe_tracking",
    "ensure_runs_view",
    "ensure_search_view",
    "download_config",
    "find_parent_run",
    "frontier_flags",
    "frontier_table",
    "hypervolume_of",
    "load_search_results",
    "make_callback",
    "read_trials",
    "resolve_tracking_uri",
    "run_url",
    "sqlite_path",
    "sync_search",
    "tracking_settings",
    "trial_config",
    "write_frontier_artifacts",
]
