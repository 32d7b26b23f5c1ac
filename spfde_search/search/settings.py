"""Search settings and where a search lives: ``SearchSettings`` (kept in ``search.json`` for ``--resume``),
the search's folder under the storage path (``spfde_search.storage``: a local folder or any pyarrow URI),
``load_settings``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..choices import SAMPLERS as SAMPLERS  # re-exported: spfde_search.search.SAMPLERS
from ..pareto import TEST_ACCURACY, VAL_ACCURACY
from ..storage import exists, is_uri, join, read_bytes, resolve_storage, write_bytes

DEFAULT_STORAGE = "runs/search"
OBJECTIVES = (VAL_ACCURACY, "run_train_flops")  # with data.val_size 0: ("test_accuracy", ...), see `objectives`
MODES = ("max", "min")
SEARCH_JSON = "search.json"
TRIALS_PARQUET = "trials.parquet"
SKIPPED_JSON = "skipped.json"  # points the searcher told Optuna about without a Ray trial (infeasible, duplicates)
RUNGS_JSON = "moasha_rungs.json"  # MOASHA's rung book (search/scheduler.py)
# Our files beside Ray's in the search folder. Tuner.restore downloads the folder's top-level .json/.pkl files into
# Ray's driver staging folder and Ray uploads that folder back at every snapshot, so a copy left there would
# overwrite what we write after the resume (search/callbacks.py removes them from the staging folder).
HV_COMPUTE_CSV = "hypervolume_vs_compute.csv"
HV_COMPUTE_PNG = "hypervolume_vs_compute.png"  # the same curve as a picture, written beside it
RAY_SESSION_JSON = "ray_session.json"  # the embedded Ray session of the last driver (search/sessions.py)
OWN_FILES = (SEARCH_JSON, TRIALS_PARQUET, SKIPPED_JSON, RUNGS_JSON, HV_COMPUTE_CSV, HV_COMPUTE_PNG, RAY_SESSION_JSON)


def objectives(val_size: int | None) -> tuple[str, str]:
    """What the sampler and the rungs optimise: validation accuracy (max) and predicted training FLOPs (min);
    test accuracy only when the base config has no validation split (``data.val_size`` 0 or unset, as in a
    search from before validation existed), which every output then says."""
    return (VAL_ACCURACY if (val_size or 0) > 0 else TEST_ACCURACY, "run_train_flops")


class SearchError(ValueError):
    """Bad search input, reported before any trial runs (one clear message)."""


class SearchSettings(BaseModel):
    """Everything a search needs; stored in ``search.json`` so ``--resume NAME`` needs no arguments."""

    model_config = ConfigDict(extra="forbid")

    name: str
    space: str = "joint"
    budget_range: tuple[float, float] | None = Field(
        None, description="--space budget: target training-FLOPs ratios LOW HIGH (default 0.025 0.45, clipped to "
        "what the base config reaches)")
    space_text: str | None = Field(None, description="YAML of a file space, kept for --resume")
    config_path: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    base_config: dict[str, Any] = Field(default_factory=dict)
    num_samples: int = Field(16, ge=1)
    sampler: Literal["auto", "tpe", "nsga2", "gp", "random"] = "auto"
    seed: int | None = 0
    max_concurrent: int = Field(2, ge=1)
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    flops_budget: str | None = None
    initial: Literal["paper"] | None = None
    early_stopping: Literal["none", "asha", "moasha"] = "none"
    fidelity: Literal["none", "schedule"] = Field(
        "none", description="schedule: successive halving over complete schedules of growing length (rungs)")
    grace_period: int | None = Field(None, ge=1, description="first rung in epochs (default: 1 for ASHA/MOASHA; "
                                     "with --fidelity schedule, GRACE_FRACTION of train.epochs)")
    reduction_factor: int = Field(2, ge=2)
    max_compute: str | None = Field(None, description="stop proposing trials past this many training FLOPs of all "
                                    "trials: '16x' (times one full-length dense trial), 2.5e14 or 250T")
    max_skipped: int = Field(
        50, ge=1, description="predicted-infeasible points (over the FLOPs budget, config rejected) the sampler may "
        "propose in a row, untrained and not counted in num_samples, before the search stops",
    )
    address: str | None = None
    connect_timeout: float = Field(30.0, gt=0, description="seconds --address may take to answer before the search "
                                   "gives up (nothing is written before it answers)")
    storage_path: str = DEFAULT_STORAGE
    study_storage: str | None = Field(None, description="database URL of the search's Optuna study (default: "
                                      "sqlite <search folder>/optuna.db for a local storage path, none for a URI)")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the embedded local Ray (default: all)")
    ship_code: bool = Field(False, description="upload this checkout's packages to the cluster (runtime_env py_modules)")
    ship_user_code: bool = Field(True, description="upload the modules behind model.name / data.name import paths "
                                 "to every Ray worker, unless installed (runtime_env py_modules)")
    tracking: dict[str, Any] | None = None

    def resolved_storage(self) -> str:
        return resolve_storage(self.storage_path)


_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def check_name(name: str) -> str:
    """A search name is one folder under the storage path: letters, digits, ``-``, ``_`` and ``.`` only, never
    ``.`` or ``..`` (``../x``, ``/abs`` or ``a/b`` would write outside the storage path or nest)."""
    if not _NAME.fullmatch(name or "") or ".." in name or name == ".":
        raise SearchError(f"--name {name!r}: use letters, digits, '-', '_' and '.' only (no '..', no '/'), "
                          "e.g. --name fmnist-run1")
    return name


def check_storage(path: str) -> None:
    """A local ``--storage-path`` must be a folder or creatable as one: not a file, nor under a file."""
    if is_uri(path):
        return
    p = Path(path).expanduser().absolute()
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                what = "is a file" if q == p else f"is under the file {q}"
                raise SearchError(f"--storage-path {path}: {what}; give a folder (it is created if missing)")
            if not os.access(q, os.W_OK | os.X_OK):
                raise SearchError(f"--storage-path {path}: {q} is not writable; give a folder you can write to")
            return


# A search started before ``spfde_search.storage`` existed pickled this name in its searcher (tuner.pkl, a class
# built in a closure, so pickled by value with its free names): kept so ``--resume`` of such a search still loads.
_write_bytes = write_bytes


def experiment_uri(storage_path: str, name: str) -> str:
    """The search's folder: ``<storage path>/<name>`` (a URI or an absolute local path)."""
    return join(storage_path, name)


def half_started(uri: str, name: str) -> str:
    """The error for a folder holding Ray's ``tuner.pkl`` but not ``search.json``: a driver from before issue 34
    killed while starting. Nothing was trained and its settings were never written, so it cannot be resumed."""
    if exists(f"{uri}/{SEARCH_JSON}") or not exists(f"{uri}/tuner.pkl"):
        return ""
    return (f"the search {name!r} was stopped while starting, before it wrote {SEARCH_JSON}: nothing was trained "
            f"and it cannot be resumed; remove the folder {uri} and start it again")


def load_settings(name: str, storage_path: str = DEFAULT_STORAGE) -> SearchSettings:
    check_name(name)
    check_storage(storage_path)
    uri = f"{experiment_uri(storage_path, name)}/{SEARCH_JSON}"
    if not exists(uri):
        raise SearchError(half_started(experiment_uri(storage_path, name), name)
                          or f"no search named {name!r} under {resolve_storage(storage_path)} (missing {SEARCH_JSON})")
    try:
        meta = json.loads(read_bytes(uri))
    except (ValueError, OSError) as e:
        raise SearchError(f"{uri} cannot be read ({type(e).__name__}: {e}); restore it from a copy, or start a new "
                          "search with another --name") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("settings"), dict):
        raise SearchError(f"{uri} has no 'settings' object; restore it from a copy, or start a new search with "
                          "another --name")
    try:
        return SearchSettings.model_validate(meta["settings"])
    except ValueError as e:  # pydantic: the file's field is wrong, not a command-line option
        raise SearchError(f"{uri}: {_field_errors(e, 'settings.')}; fix the file, or start a new search with "
                          "another --name") from None


def _field_errors(e: ValueError, prefix: str = "") -> str:
    """A pydantic error as ``field: message (got value)``, fields by their dotted name."""
    from pydantic import ValidationError

    if not isinstance(e, ValidationError):
        return str(e)
    return "; ".join(f"{prefix}{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                     + (f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else "")
                     for err in e.errors())


def finished_meta(uri: str) -> dict[str, Any] | None:
    """``search.json`` of the search folder ``uri`` if that search finished (a ``--resume`` has nothing to do), else
    None (running, interrupted, killed, or no such file)."""
    path = f"{uri}/{SEARCH_JSON}"
    if not exists(path):
        return None
    try:
        meta = json.loads(read_bytes(path))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("status") == "finished" else None
