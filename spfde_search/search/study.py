"""The search's Optuna study on disk: a record of what the sampler was told, and the warm start of a new sampler.

The sampler works on an in-memory study that Ray pickles with its experiment snapshot, so ``--resume`` after a
crash continues from exactly that snapshot (search/optuna_search.py). Every trial the sampler is told (a trained
trial's two objective values and constraint, a pruned or failed trial as such, a point skipped untrained, under
``--fidelity schedule`` a config's first rung with its full-length cost) is also copied once, with its parameters
and distributions, into an Optuna study in an RDB storage: ``<search folder>/optuna.db`` (SQLite) for a local
storage path, or ``--study-storage URL`` (any SQLAlchemy URL Optuna takes). The study is named after the search,
so ``optuna.load_study(study_name=NAME, storage=URL)`` and ``optuna-dashboard URL`` open it.

``trials.parquet`` and ``search.json`` stay the search's truth: the record is rebuilt from ``trials.parquet``
when a new Tuner continues a search whose record is lost (``continue_record``), and the sampler of that new Tuner
(``--resume NAME -n N`` extending a finished search, or a rebuild without Ray's snapshot, search/rebuild.py) is
warm-started with every recorded trial, so its suggestions come from all earlier ones. Optuna is imported on use.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

from ..storage import exists, is_uri, read_bytes
from .results import RERUN, load_rows
from .settings import (
    MODES,
    SKIPPED_JSON,
    TRIALS_PARQUET,
    SearchError,
    SearchSettings,
    experiment_uri,
    objectives,
)

__all__ = ["KEY", "RAY_TRIAL_ID", "STUDY_DB", "check_new_study", "check_study_storage", "continue_record", "extension",
           "record_told", "study_url"]

log = logging.getLogger(__name__)

STUDY_DB = "optuna.db"
KEY = "spfde:told"  # system attr: which told trial a record trial copies (when it was asked, its number)
RAY_TRIAL_ID = "trial_id"  # user attr: the Ray trial (the trials.parquet row, the MLflow run) it was
HALVING_JSON = "halving_rungs.json"  # search/halving.py's rung book (read here for the told full-length cost)


def study_url(settings: SearchSettings) -> str | None:
    """Where the record study lives: ``--study-storage``, else SQLite beside the results for a local storage
    path; None for a URI storage path without ``--study-storage`` (SQLite cannot live on object storage)."""
    if settings.study_storage:
        return settings.study_storage
    if is_uri(settings.storage_path):
        return None
    return f"sqlite:///{experiment_uri(settings.storage_path, settings.name)}/{STUDY_DB}"


def check_study_storage(url: str) -> None:
    """``--study-storage``: a database URL SQLAlchemy parses and has a driver for (one ``SearchError`` line)."""
    from sqlalchemy.engine import make_url

    hint = "e.g. sqlite:////abs/path/optuna.db or postgresql://user@host/db"
    try:
        u = make_url(url)
        u.get_dialect()
    except Exception as e:  # noqa: BLE001 - ArgumentError, NoSuchModuleError, a missing DB driver
        raise SearchError(f"--study-storage {url!r}: not a database URL Optuna can open ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); {hint}") from None


def check_new_study(settings: SearchSettings) -> None:
    """A new search with ``--study-storage``: that database must not already hold a study of the search's name,
    whose trials would mix with this search's (one ``SearchError`` line)."""
    url = settings.study_storage
    if url and _study_exists(url, settings.name):
        raise SearchError(f"--study-storage {url}: it already holds an Optuna study named {settings.name!r}; "
                          f"choose another --name, or delete that study (optuna delete-study --study-name "
                          f"{settings.name} --storage {url})")


def _sqlite_file(url: str) -> str | None:
    return url[len("sqlite:///"):] if url.startswith("sqlite:///") else None


def _token(url: str) -> tuple[bool, int]:
    """The SQLite file's identity: a record cached by this process is reopened when its file was removed."""
    path = _sqlite_file(url)
    if path is None:
        return True, 0
    try:
        return True, os.stat(path).st_ino
    except OSError:
        return False, 0


_OPEN: dict[tuple[str, str], tuple[tuple[bool, int], Any, set[str]]] = {}
_WARNED: set[tuple[str, str]] = set()


def _open(url: str, name: str, directions: list[str] | None = None, create: bool = True) -> tuple[Any, set[str]] | None:
    """The record study (opened once per process and file) and the keys of the trials it holds; None when it
    does not exist and ``create`` is False."""
    import optuna

    cached = _OPEN.get((url, name))
    if cached is not None and cached[0] == _token(url) and cached[0][0]:
        return cached[1], cached[2]
    if not create and not _study_exists(url, name):
        return None
    path = _sqlite_file(url)  # its folder is not created: the search folder exists; a moved one is not remade
    kwargs = {"connect_args": {"timeout": 30}} if path is not None else {}  # optuna-dashboard may be reading
    storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    dirs: Any = directions or ["maximize" if m == "max" else "minimize" for m in MODES]
    study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True, directions=dirs)
    keys = {str(t.system_attrs.get(KEY)) for t in study.get_trials(deepcopy=False)}
    _OPEN[(url, name)] = (_token(url), study, keys)
    return study, keys


def _study_exists(url: str, name: str) -> bool:
    import optuna

    path = _sqlite_file(url)
    if path is not None and not os.path.exists(path):
        return False
    try:
        names = {s.study_name for s in optuna.get_all_study_summaries(storage=url, include_best_trial=False)}
    except Exception as e:  # noqa: BLE001 - an unreachable database: the record is skipped, the search goes on
        log.warning("cannot open the Optuna study storage %s: %s", url, e)
        return False
    return name in names


def _copy(t: Any, key: str, extra_user: Mapping[str, Any] | None = None) -> Any:
    import optuna

    return optuna.trial.FrozenTrial(
        number=0, trial_id=0, state=t.state, value=None, values=t.values, datetime_start=t.datetime_start,
        datetime_complete=t.datetime_complete, params=dict(t.params), distributions=dict(t.distributions),
        user_attrs={**t.user_attrs, **(extra_user or {})}, system_attrs={**t.system_attrs, KEY: key},
        intermediate_values=dict(t.intermediate_values))


def record_told(url: str, name: str, study: Any, ray_ids: Mapping[int, str]) -> int:
    """Copy every finished trial of the sampler's in-memory ``study`` that the record lacks (``ray_ids``: trial
    number -> Ray trial id). Returns how many were added; a database error is a warning, never a failed search."""
    import optuna

    try:
        opened = _open(url, name, [d.name.lower() for d in study.directions])
        assert opened is not None
        record, keys = opened
        new = []
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                           optuna.trial.TrialState.PRUNED,
                                                           optuna.trial.TrialState.FAIL)):
            key = str(t.system_attrs.get(KEY) or f"{t.datetime_start.isoformat() if t.datetime_start else ''}#{t.number}")
            if key in keys:
                continue
            new.append(_copy(t, key, {RAY_TRIAL_ID: ray_ids[t.number]} if t.number in ray_ids else None))
        if new:
            record.add_trials(new)
            keys.update(str(t.system_attrs[KEY]) for t in new)
        return len(new)
    except Exception as e:  # noqa: BLE001 - the record is a copy: trials.parquet still holds every trial
        if (url, name) not in _WARNED:  # once per process: a database that is down would warn at every tell
            _WARNED.add((url, name))
            log.warning("could not write the Optuna study %s to %s: %s (the search goes on; trials.parquet has "
                        "every trial, and the study is rebuilt from it when lost)", name, url, e)
        _OPEN.pop((url, name), None)
        return 0


def _contained(dist: Any, value: Any) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except Exception:  # noqa: BLE001 - a value of another type than the distribution's
        return False


def _told_params(params: Mapping[str, Any], prep: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sampled parameters of a trials.parquet row as the sampler saw them, with their distributions: the
    row's values the space's distributions contain, and ``freezing.saving_fraction`` (auxiliary, not in the row)
    solved back from the row's freezing target where the space samples it."""
    from search_spaces import config_params, saving_fraction_for

    dists = prep.space.distributions
    out = {k: v for k, v in params.items() if k in dists and _contained(dists[k], v)}
    aux = dists.get("freezing.saving_fraction")
    if aux is not None and "freezing.saving_fraction" not in out and "freezing.target_flops_reduction" in params:
        try:
            f = saving_fraction_for(prep.base, config_params(params), step=getattr(aux, "step", None))
        except Exception:  # noqa: BLE001 - a schedule this base config no longer resolves: left out
            f = None
        if f is not None and _contained(aux, f):
            out["freezing.saving_fraction"] = f
    return out, {k: dists[k] for k in out}


def trials_from_table(uri: str, prep: Any) -> list[Any]:
    """The told trials of ``trials.parquet`` as Optuna trials: a COMPLETED full-budget row with both objectives
    (and the constraint its assessment gives), an EARLY_STOPPED row as PRUNED, a FAILED or INFEASIBLE row as
    FAIL; rows never told (running, interrupted, rerun) are left out. Under ``--fidelity schedule`` only a
    config's first rung was told, with the config's full-length predicted cost (``halving_rungs.json``)."""
    import optuna

    from search_spaces import config_params
    from trainables import assess

    table = f"{uri}/{TRIALS_PARQUET}"
    rows = load_rows(table) if exists(table) else []
    metric = objectives(prep.base.data.val_size)[0]
    book = json.loads(read_bytes(f"{uri}/{HALVING_JSON}")) if exists(f"{uri}/{HALVING_JSON}") else {}
    full_flops = {i: c.get("full_flops") for i, c in enumerate(book.get("configs") or [])}
    out = []
    for r in rows:
        status, err = str(r.get("status")), str(r.get("error") or "")
        if status not in ("COMPLETED", "EARLY_STOPPED", "FAILED", "INFEASIBLE") or err.startswith(RERUN):
            continue
        params = json.loads(str(r.get("params") or "{}"))
        rung = params.get("fidelity.rung")
        if rung is not None and int(rung) != 0:
            continue
        told, dists = _told_params(params, prep)
        acc, flops = r.get(metric), r.get("run_train_flops")
        if rung is not None:
            flops = full_flops.get(int(params.get("fidelity.config", -1)), flops)
        ok = (status == "COMPLETED" and (bool(r.get("full_budget")) or rung is not None)
              and all(isinstance(v, (int, float)) and math.isfinite(float(v)) for v in (acc, flops)))
        state = "COMPLETE" if ok else "PRUNED" if status == "EARLY_STOPPED" else "FAIL"
        t = optuna.trial.create_trial(
            state=optuna.trial.TrialState[state], values=[float(acc), float(flops)] if ok else None,  # type: ignore[arg-type]
            params=told, distributions=dists,
            user_attrs={RAY_TRIAL_ID: str(r.get("trial_id"))},
            system_attrs={KEY: f"table#{r.get('trial_id')}"})
        if ok:
            try:
                a = assess(config_params(params), prep.base.to_dict(), prep.budget, prep.dense_flops)
                t.set_constraint("spfde", float(a.violation))
            except Exception as e:  # noqa: BLE001 - told without its constraint
                log.debug("no constraint for trial %s: %s", r.get("trial_id"), e)
        out.append(t)
    return out


def continue_record(searcher: Any, prep: Any, uri: str, continuing: bool) -> int:
    """Attach the record study to a new searcher (every tell is copied there, ``record_told``). When the new
    Tuner is ``continuing`` an existing search: rebuild the record from trials.parquet if it is lost, keep the
    points ``skipped.json`` lists, and warm-start the sampler with every recorded trial (from trials.parquet when
    there is no record). Returns the number of trials the sampler was warm-started with. ``prep`` is the search's
    ``prepare.Prepared`` (untyped: prepare imports this module)."""
    s = prep.settings
    url = study_url(s)
    searcher.study_url, searcher.study_name = url, s.name
    if not continuing:
        return 0
    if exists(f"{uri}/{SKIPPED_JSON}"):  # the new searcher rewrites skipped.json: it keeps the earlier points
        try:
            searcher.skipped = list(json.loads(read_bytes(f"{uri}/{SKIPPED_JSON}")).get("points") or [])
        except (OSError, ValueError) as e:
            log.warning("could not read %s: %s", SKIPPED_JSON, e)
    trials: list[Any] = []
    if url is not None:
        try:
            opened = _open(url, s.name, create=False)
            if opened is None:  # lost (or a search from before the record): rebuilt from trials.parquet
                opened = _open(url, s.name)
                assert opened is not None
                rebuilt = trials_from_table(uri, prep)
                opened[0].add_trials(rebuilt)
                opened[1].update(str(t.system_attrs[KEY]) for t in rebuilt)
                if rebuilt:
                    log.warning("the Optuna study %s was missing from %s: rebuilt from %s (%d trials)", s.name,
                                url, TRIALS_PARQUET, len(rebuilt))
            trials = [t for t in opened[0].get_trials(deepcopy=False) if t.state.is_finished()]
        except Exception as e:  # noqa: BLE001 - no database: warm-started from trials.parquet
            log.warning("cannot read the Optuna study %s in %s (%s); warm-starting from %s", s.name, url, e,
                        TRIALS_PARQUET)
    if not trials:
        trials = trials_from_table(uri, prep)
    searcher._ot_study.add_trials([_copy(t, str(t.system_attrs.get(KEY))) for t in trials])
    return len(trials)


def extension(done: Mapping[str, Any], settings: SearchSettings, done_trials: int) -> bool:
    """Whether ``--resume NAME -n N`` extends the finished search whose ``search.json`` is ``done`` and which
    counts ``done_trials`` trials: True when N asks for more; False when N is the search's own (nothing to do);
    SearchError when N is below what is done or the search runs its own rungs."""
    old = int((done.get("settings") or {}).get("num_samples") or 0)
    n = settings.num_samples
    if n in (old, done_trials):
        return False
    if n < done_trials:
        raise SearchError(f"-n {n}: search {settings.name!r} has already run {done_trials} trials; give -n "
                          f"{done_trials + 1} or more to extend it")
    if settings.fidelity == "schedule":
        raise SearchError(f"-n {n}: a --fidelity schedule search cannot be extended (its rung book ends with it); "
                          "start a new search with another --name")
    return True
