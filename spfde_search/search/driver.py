"""``drive_search``: run or resume one search to the end (``search.json``, the Tuner, the final front)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..storage import exists, read_bytes, write_bytes
from .callbacks import _make_storage_guard, _make_table_callback
from .halving import HALVING_JSON, HALVING_MAX_TRIALS, counted_trials, make_halving, resolve_grace
from .lock import search_lock
from .optuna_search import SKIPPED_JSON, _search_cls, make_sampler
from .prepare import Prepared, prepare
from .progress import _Progress
from .rebuild import counted, missing_ray_state, rebuild_from_record
from .results import (
    HV_COMPUTE_CSV,
    front_hypervolume,
    load_trials,
    pareto_front,
    search_cost,
    write_compute_curve,
)
from .runtime import (
    _init_ray,
    _scheduler,
    _set_callbacks,
    _trainable,
    _trial_dirname,
    check_address,
    checkpoint_config,
)
from .settings import (
    MODES,
    SEARCH_JSON,
    TRIALS_PARQUET,
    SearchError,
    SearchSettings,
    experiment_uri,
    finished_meta,
    half_started,
    objectives,
)
from .study import continue_record, extension

if TYPE_CHECKING:  # pragma: no cover
    from ray import tune

log = logging.getLogger(__name__)


def _search_json(prep: Prepared, status: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    import optuna
    import ray
    import torch

    s = prep.settings
    return {
        "name": s.name,
        "space": s.space,
        "space_note": prep.space.note,  # what the space resolved to (budget: the target range after clipping)
        "sampler": s.sampler,
        "seed": s.seed,
        "num_samples": s.num_samples,
        "base_config": prep.base.to_dict(),
        "flops_budget": prep.budget.to_dict() if prep.budget else None,
        "flops_budget_absolute": (prep.budget.value * prep.dense_flops if prep.budget and prep.budget.kind == "ratio"
                                  else (prep.budget.value if prep.budget else None)),
        "dense_train_flops": prep.dense_flops,
        "objectives": dict(zip(objectives(prep.base.data.val_size), MODES, strict=True)),
        "parameters": {k: repr(v) for k, v in prep.space.distributions.items()},
        "initial_points": prep.points,
        "created": _now(),
        "status": status,
        "tracking": s.tracking or {"uri": None, "experiment": None},
        "versions": {"ray": ray.__version__, "optuna": optuna.__version__, "torch": torch.__version__},
        "settings": s.model_dump(mode="json"),
        **(extra or {}),
    }


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class SearchOutcome:
    name: str
    path: str
    table: pd.DataFrame
    front: pd.DataFrame
    hypervolume: float
    wall_seconds: float
    cost: dict[str, Any] = field(default_factory=dict)  # search.json "cost": FLOPs and seconds of all trials
    stop_reason: str = ""  # why the search ended before num_samples trials ('' when it did not)
    status: str = "finished"  # or "interrupted" (Ctrl-C, SIGTERM; see SearchInterrupted)
    already_finished: str = ""  # --resume of a finished search: when it finished (nothing was run or changed)


def _run(prep: Prepared, resume: bool, callbacks: list[Any] | None, on_results: Callable[[pd.DataFrame], None] | None,
         console: Any, verbose: int, extend: bool = False) -> SearchOutcome:
    """``drive_search`` under the search's lock (``extend``: a new Tuner adds trials to a finished search)."""
    t_start = time.perf_counter()
    s = prep.settings
    uri = experiment_uri(s.storage_path, s.name)
    meta_uri = f"{uri}/{SEARCH_JSON}"
    old_meta: dict[str, Any] = json.loads(read_bytes(meta_uri)) if resume and exists(meta_uri) else {}
    meta = _search_json(prep, "running")
    if old_meta:
        meta["created"] = old_meta.get("created", meta["created"])
        meta["resumed"] = [*old_meta.get("resumed", []), _now()]
        if extend:  # --resume NAME -n N on a finished search: when, and from how many trials to how many
            was = int((old_meta.get("settings") or {}).get("num_samples") or 0)
            meta["extended"] = [*old_meta.get("extended", []), {"at": _now(), "from": was, "to": s.num_samples}]

    def record_cost(table: pd.DataFrame) -> None:
        """search.json's cost as trials end, so a killed driver loses at most its running trials' time."""
        meta.update({"cost": search_cost(table, time.perf_counter() - t_start, old_meta.get("cost")),
                     "counts": table["status"].value_counts().to_dict()})
        try:
            write_bytes(meta_uri, json.dumps(meta, indent=2, default=str).encode())
        except Exception as e:  # a storage hiccup: the final write tries again
            log.warning("could not write %s: %s", SEARCH_JSON, e)
        if on_results is not None:
            on_results(table)

    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # experiment snapshots often: little lost on a crash
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Ray's own tables off (verbose=0): we print progress
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import warnings

    warnings.filterwarnings("ignore", message="Define-by-run function passed in the `space` argument took")
    # --initial paper enqueues the exact saving fraction that resolves to the paper's target, off the sampler's
    # grid on purpose (search_spaces.initial_points); Optuna notes each such fixed value
    warnings.filterwarnings("ignore", message="Fixed parameter freezing.saving_fraction with value")
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    owns_ray = _init_ray(s, log_to_driver=verbose >= 3, space=prep.space.distributions)
    _catch_sigterm()  # ray.init replaced ours with sys.exit(15): a SIGTERM now would leave no line and no state
    progress: _Progress | None = None
    try:
        if not resume:  # before tuner.pkl: a folder with Ray's files always has ours (issue 34, item 2)
            write_bytes(meta_uri, json.dumps(meta, indent=2, default=str).encode())
        trainable = _trainable(prep)
        progress = (_Progress(console, s.num_samples, verbose,
                              full_epochs=prep.base.train.epochs if s.fidelity == "schedule" else None)
                    if console is not None else None)
        table_cb = _make_table_callback(prep.base.to_dict(), uri, record_cost, progress)
        cbs = [table_cb, *(callbacks or [])]
        tuner = None
        points = [] if extend else list(prep.points)  # the initial points were the search's first trials
        missing = missing_ray_state(uri) if resume else ""
        if missing and exists(f"{uri}/tuner.pkl"):  # a damaged tuner.pkl is an error, not a start-up kill
            try:
                import pickle

                pickle.loads(read_bytes(f"{uri}/tuner.pkl"))  # noqa: S301 - Ray's own file, as Tuner.restore reads it
            except Exception as e:  # noqa: BLE001
                raise SearchError(f"cannot resume {s.name!r}: Ray's state in {uri} (tuner.pkl) cannot be restored "
                                  f"({type(e).__name__}: {_first_line(e)}); nothing was changed; restore the folder "
                                  "from a copy, or start a new search") from None
        if missing:
            points = [*_rebuild(uri, s, missing, console), *points]
        elif extend:  # a new Tuner in the same folder, as after a rebuild; the finished trials count toward -n
            rebuild_from_record(uri)  # Ray's finished snapshot removed: the new Tuner's is the one --resume finds
        elif resume:
            # errored trials (a worker that died more than MAX_RETRIES times, or with the driver) are retried from
            # their last checkpoint; diverged and infeasible trials are TERMINATED results, never errors
            try:
                tuner = tune.Tuner.restore(uri, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                           restart_errored=False)
            except Exception as e:  # noqa: BLE001 - a truncated tuner.pkl, a damaged experiment state
                raise SearchError(f"cannot resume {s.name!r}: Ray's state in {uri} (tuner.pkl, experiment_state-"
                                  f"*.json) cannot be restored ({type(e).__name__}: {_first_line(e)}); nothing was "
                                  "changed; restore the folder from a copy, or start a new search") from None
        if tuner is None:
            searcher = _search_cls()(
                space=prep.space.fn,
                metric=list(objectives(prep.base.data.val_size)),
                mode=list(MODES),
                sampler=make_sampler(s.sampler, s.seed, prep.space, s.num_samples),
                points_to_evaluate=points or None,
            )
            searcher.configure(prep.base.to_dict(), prep.budget, prep.dense_flops, s.max_skipped,
                               f"{uri}/{SKIPPED_JSON}", s.num_samples, f"{uri}/{TRIALS_PARQUET}")
            continue_record(searcher, prep, uri, continuing=resume)  # the Optuna study on disk, warm start
            search_alg, scheduler, ray_samples = searcher, _scheduler(
                s, prep.base.train.epochs, uri, objectives(prep.base.data.val_size)[0]), s.num_samples
            if s.fidelity == "schedule":  # the rung book decides what runs; Ray only runs it (search/halving.py)
                search_alg = make_halving(searcher, prep.base.to_dict(), prep.base.train.epochs,
                                          resolve_grace(s.grace_period, prep.base.train.epochs), s.reduction_factor,
                                          s.num_samples, f"{uri}/{HALVING_JSON}", prep.max_compute,
                                          list(objectives(prep.base.data.val_size)), list(MODES))
                ray_samples = HALVING_MAX_TRIALS
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=ConcurrencyLimiter(search_alg, max_concurrent=s.max_concurrent),
                    scheduler=scheduler,
                    num_samples=ray_samples,
                    reuse_actors=True,  # one worker process per slot: torch is imported once, not per trial
                    trial_dirname_creator=_trial_dirname,
                ),
                run_config=tune.RunConfig(
                    name=s.name,
                    storage_path=s.resolved_storage(),
                    checkpoint_config=checkpoint_config(),
                    failure_config=tune.FailureConfig(max_failures=MAX_RETRIES, fail_fast=False),
                    verbose=0,
                ),
            )
        guard = _make_storage_guard()
        _set_callbacks(tuner, [guard, *cbs])
        # written once Ray is joined and its state restored: a dead --address or a damaged tuner.pkl changes nothing
        write_bytes(meta_uri, json.dumps(meta, indent=2, default=str).encode())
        with _sigint_seen() as seen, guard.quiet():
            tuner.fit()
            signum = seen()
            interrupted = bool(signum) or table_cb.interrupted or bool(guard.fault)
    finally:
        if progress is not None:
            progress.close()  # the live status block ends before the final table prints
        if owns_ray:
            import ray

            ray.shutdown()
    table = table_cb.table if table_cb.table is not None else load_trials(uri)
    front = pareto_front(table)
    hv = front_hypervolume(front)
    counts = table["status"].value_counts().to_dict()
    cost = search_cost(table, time.perf_counter() - t_start, old_meta.get("cost"))
    skipped = json.loads(read_bytes(f"{uri}/{SKIPPED_JSON}")) if exists(f"{uri}/{SKIPPED_JSON}") else {}
    # Ctrl-C between two trials leaves no trial unfinished: the search is short of num_samples with no reason
    interrupted = interrupted or (counted_trials(counted(table), s) < s.num_samples and not skipped.get("stop_reason"))
    cost["infeasible_skipped"] = int(skipped.get("count", 0))
    cost["duplicates_skipped"] = int(skipped.get("duplicates", 0))  # the same run as a trained trial: untrained
    try:
        write_compute_curve(table, f"{uri}/{HV_COMPUTE_CSV}", title=f"search {s.name}: hypervolume vs compute")
    except Exception as e:  # a storage hiccup must not fail a finished search
        log.warning("could not write %s: %s", HV_COMPUTE_CSV, e)
    meta.update({"status": "interrupted" if interrupted else "finished", "finished": _now(), "counts": counts, "front_size": len(front),
                 "hypervolume": hv, "front_trial_ids": front["trial_id"].tolist(), "cost": cost,
                 "stop_reason": skipped.get("stop_reason", "")})
    try:
        write_bytes(meta_uri, json.dumps(meta, indent=2, default=str).encode())
    except OSError as e:
        if not guard.fault:
            raise
        log.warning("could not write %s: %s", SEARCH_JSON, e)  # the disk is full: the state says running, resume
    if on_results is not None:
        try:
            on_results(table)
        except Exception as e:
            log.warning("on_results hook failed: %s", e)
    if guard.fault:
        raise StorageFull(f"{guard.fault}; the search stopped launching trials and is interrupted: free space, "
                          f"then continue with `spfde search --resume {s.name} --storage-path {s.resolved_storage()}`")
    out = SearchOutcome(s.name, uri, table, front, hv, time.perf_counter() - t_start, cost,
                        str(skipped.get("stop_reason", "")), "interrupted" if interrupted else "finished")
    if interrupted:
        raise SearchInterrupted(out, signum or signal.SIGINT)
    return out


def _rebuild(uri: str, s: SearchSettings, missing: str, console: Any) -> list[dict[str, Any]]:
    """Ray's snapshot is incomplete (a kill while starting, or lost files): a new Tuner continues from our record
    (search/rebuild.py), its searcher taking each unfinished trial over from its saved state; returns no points."""
    if s.fidelity == "schedule" and exists(f"{uri}/{TRIALS_PARQUET}"):
        raise SearchError(f"cannot resume {s.name!r}: Ray's state in {uri} is missing ({missing}), and a --fidelity "
                          "schedule search cannot be rebuilt from trials.parquet; start a new search with another "
                          "--name")
    plan = rebuild_from_record(uri)
    if plan.ended or plan.unfinished:
        note = (f"warning: Ray's state of {s.name} is missing ({missing}); continuing from trials.parquet: "
                f"{plan.ended} ended trials kept, {plan.unfinished} unfinished ones continued from their saved state")
        if console is not None:
            console.print(note, highlight=False, soft_wrap=True)
        else:
            log.warning(note)
    return []


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else ""


class StorageFull(SearchError):
    """A trial could not write its state (disk full, read-only storage): the search stopped launching trials, its
    running ones are interrupted and ``--resume`` continues once there is space (``trainables.StorageFull``)."""


MAX_RETRIES = 2  # a trial whose worker process died is rerun from its last checkpoint at most this often


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped the search; Ray saved its state, ``search.json`` says ``interrupted`` and
    ``--resume`` continues it. ``outcome`` holds the table as it was, ``signum`` the signal."""

    def __init__(self, outcome: SearchOutcome, signum: int = signal.SIGINT) -> None:
        super().__init__(f"search {outcome.name} interrupted")
        self.outcome = outcome
        self.signum = int(signum)


class StartInterrupted(KeyboardInterrupt):
    """SIGTERM or Ctrl-C before the search's trials ran (Ray starting, the Tuner being built): ``signum`` is the
    signal; ``resumable`` says whether ``search.json`` was written (``--resume`` continues it) or nothing was."""

    def __init__(self, name: str, signum: int, resumable: bool) -> None:
        super().__init__(f"search {name} interrupted while starting")
        self.signum, self.resumable = int(signum), resumable


_TERM_SEEN: list[int] = []


def _as_sigint(frame: Any) -> None:
    """Run whatever SIGINT handler is current (Ray Tune's, ours, or Python's default): SIGTERM interrupts as Ctrl-C."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        signal.default_int_handler(signal.SIGINT, frame)


def _on_sigterm(sig: int, frame: Any) -> None:
    """SIGTERM outside Ray Tune's loop: the interruption Ctrl-C would be, remembered as SIGTERM (exit 143)."""
    _TERM_SEEN.append(sig)
    _as_sigint(frame)


def _catch_sigterm() -> Any:
    """Install ``_on_sigterm`` (main thread only); returns the handler it replaced."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _on_sigterm)


@contextlib.contextmanager
def starting(name: str, recorded: Callable[[], bool]) -> Iterator[None]:
    """Before Ray Tune's loop takes the signals (the ``--address`` check, Ray starting, the Tuner being built): a
    SIGTERM or Ctrl-C is ``StartInterrupted`` (exit 143/130 with our line; ``recorded()``: whether ``search.json``
    exists to resume), not Python's default death by signal with no word (issue 34, item 2)."""
    _TERM_SEEN.clear()
    previous = _catch_sigterm()
    try:
        yield
    except SearchInterrupted:
        raise
    except KeyboardInterrupt:
        raise StartInterrupted(name, _TERM_SEEN[0] if _TERM_SEEN else signal.SIGINT, recorded()) from None
    except SystemExit as e:  # ray.init's own SIGTERM handler while it starts Ray: sys.exit(15)
        if e.code != signal.SIGTERM:
            raise
        raise StartInterrupted(name, signal.SIGTERM, recorded()) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _sigint_seen() -> Iterator[Callable[[], int]]:
    """Which signal interrupted the block (0: none). Ray Tune replaces the SIGINT handler it finds (ours) and puts
    it back on the first Ctrl-C only, so ours being current again afterwards means Ctrl-C was pressed. SIGTERM
    (systemd, docker, Kubernetes) goes to whatever SIGINT handler is current: the same clean interruption."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: 0
        return
    previous = signal.getsignal(signal.SIGINT)
    previous_term = signal.getsignal(signal.SIGTERM)
    got: list[int] = []

    def ours(sig: int, frame: Any) -> None:  # a second Ctrl-C: what Python does by default
        signal.default_int_handler(sig, frame)

    def term(sig: int, frame: Any) -> None:
        got.append(sig)
        _as_sigint(frame)

    signal.signal(signal.SIGINT, ours)
    signal.signal(signal.SIGTERM, term)
    try:
        yield lambda: (got[0] if got else signal.SIGINT) if signal.getsignal(signal.SIGINT) is ours else 0
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)


def drive_search(
    settings: SearchSettings,
    *,
    resume: bool = False,
    callbacks: list[tune.Callback] | None = None,
    on_results: Callable[[pd.DataFrame], None] | None = None,
    console: Any = None,
    verbose: int = 1,
    prepared: Prepared | None = None,
) -> SearchOutcome:
    """Run (or resume) a search to completion and return its table and Pareto front.

    ``callbacks``: extra Ray Tune callbacks (e.g. MLflow logging, on the driver). ``on_results(table)`` is
    called with the trials table after every trial ends. Bad input raises SearchError before Ray starts; a
    second driver of the same search (running now, or already created without ``resume``) raises SearchError;
    Ctrl-C raises ``SearchInterrupted``.
    """
    prep = prepared or prepare(settings, resume=resume)
    s = prep.settings
    uri = experiment_uri(s.storage_path, s.name)
    with starting(s.name, lambda: exists(f"{uri}/{SEARCH_JSON}")):
        if s.address and not prep.address_checked:  # before the lock: nothing is written under the search's name
            check_address(s.address, s.connect_timeout)  # until the cluster answers
        return _locked(prep, resume, callbacks, on_results, console, verbose)


def _locked(prep: Prepared, resume: bool, callbacks: list[Any] | None,
            on_results: Callable[[pd.DataFrame], None] | None, console: Any, verbose: int) -> SearchOutcome:
    """``run_search`` past its checks: under the search's lock."""
    s = prep.settings
    uri = experiment_uri(s.storage_path, s.name)
    with search_lock(uri, s.name):
        if not resume and (exists(f"{uri}/tuner.pkl") or exists(f"{uri}/{SEARCH_JSON}")):
            raise SearchError(half_started(uri, s.name) or f"a search named {s.name!r} already exists at {uri}; "
                              f"continue it with --resume {s.name} or choose another --name")
        done = finished_meta(uri) if resume else None
        table = load_trials(f"{uri}/{TRIALS_PARQUET}") if done is not None else None
        if done is not None and table is not None and extension(done, s, counted_trials(counted(table), s)):
            return _run(prep, resume, callbacks, on_results, console, verbose, extend=True)
        if done is not None and table is not None:  # nothing to resume: start nothing, change nothing
            front = pareto_front(table)
            return SearchOutcome(s.name, uri, table, front, front_hypervolume(front), 0.0, dict(done.get("cost") or {}),
                                 str(done.get("stop_reason") or ""), "finished", str(done.get("finished") or "?"))
        return _run(prep, resume, callbacks, on_results, console, verbose)
