"""The search: Ray Tune + Optuna multi-objective search over SpFDE schedules, recorded in ``trials.parquet``.

Objectives: maximise ``val_accuracy`` (the validation split, ``data.val_size``; ``test_accuracy`` only when a
search has none, and then every output says so), minimise ``run_train_flops`` (the predicted training FLOPs of
the whole run, known from the config, so an early-stopped trial is told to the sampler with its true cost). The
frontier itself is computed from ``trials.parquet``: COMPLETED trials that trained all epochs, by measured FLOPs.
Test accuracy is measured once at the end of each trial and only reported.

Layout of ``<storage>/<name>/``: Ray Tune's experiment (``tuner.pkl``, experiment state, one folder per trial
with ``result.json`` and checkpoints), plus ``search.json`` (settings, for ``--resume``) and ``trials.parquet``
(one row per trial, rewritten whenever a trial starts or ends; columns in docs/architecture.md).

Infeasible points (config rejected, impossible freezing target, over the budget) are Ray trials that report
once and return without training; they reach Optuna as COMPLETE with a positive constraint
(``trial.set_constraint``), so constraint-aware samplers (TPE, NSGA-II, GP) learn to avoid them.

Modules: ``settings`` (settings, storage), ``prepare`` (validation before Ray), ``results`` (the trials table and
its front), ``optuna_search`` (samplers), ``callbacks`` and ``progress`` (live table and console), ``runtime``
(Ray start-up and Tuner pieces), ``driver`` (``drive_search``). This package talks to MLflow only through the
``spfde_search.tracking`` package's public names (tests/test_layering.py).
"""

from __future__ import annotations

from .driver import SearchOutcome, StorageFull, drive_search
from .lock import driver_alive
from .optuna_search import make_sampler
from .prepare import Prepared, prepare
from .results import (
    STATUSES,
    TRIAL_COLUMNS,
    front_hypervolume,
    front_table,
    load_trials,
    pareto_front,
    rows_to_arrow,
    selected_on,
    trial_row,
    write_parquet,
)
from .settings import (
    DEFAULT_STORAGE,
    MODES,
    OBJECTIVES,
    SAMPLERS,
    SEARCH_JSON,
    TRIALS_PARQUET,
    SearchError,
    SearchSettings,
    experiment_uri,
    finished_meta,
    load_settings,
    objectives,
)

__all__ = [
    "SearchError",
    "SearchSettings",
    "Prepared",
    "SearchOutcome",
    "StorageFull",
    "SAMPLERS",
    "OBJECTIVES",
    "MODES",
    "STATUSES",
    "TRIAL_COLUMNS",
    "DEFAULT_STORAGE",
    "SEARCH_JSON",
    "TRIALS_PARQUET",
    "prepare",
    "drive_search",
    "make_sampler",
    "experiment_uri",
    "finished_meta",
    "driver_alive",
    "load_settings",
    "objectives",
    "load_trials",
    "pareto_front",
    "front_hypervolume",
    "write_parquet",
    "rows_to_arrow",
    "trial_row",
    "front_table",
    "selected_on",
]
