"""The Ray Tune callback that keeps ``trials.parquet`` current (rebuilt from Ray's trial list on every event)
and drives the console progress."""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd

from trainables import TrialState

from .rebuild import ENDED, moasha_stopped, replaced, replaced_row, replacement, stopped_at_rung
from .results import load_rows, rows_to_arrow, storage_fault, trial_row, write_parquet
from .settings import OWN_FILES, TRIALS_PARQUET

log = logging.getLogger(__name__)


def _callback_base() -> type:
    from ray import tune

    return tune.Callback


LOST = ("its driver died after Ray's last experiment snapshot, which never saw this trial; a --resume continues it "
        "from its saved state as a new trial")
_RAY_KEYS = {"trial_id", "done", "experiment_tag", "should_checkpoint"}


def _own_result(result: dict[str, Any]) -> dict[str, Any]:
    """What the trainable reported, without the keys Ray adds to every result."""
    from ray.tune.result import AUTO_RESULT_KEYS

    return {k: v for k, v in result.items() if k not in AUTO_RESULT_KEYS and k not in _RAY_KEYS}


def _kept_rows(previous: list[dict[str, Any]], ray_ids: set[str], stopped: dict[str, int],
               uri: str = "") -> list[dict[str, Any]]:
    """Rows of the table before a crash whose trials Ray's (older) snapshot does not hold: a trial that ended keeps
    its row as it was; one that was running is EARLY_STOPPED if MOASHA had stopped it at a rung it reached
    (``stopped``: trial id -> rung), else INTERRUPTED: continued by the trial that took its state over
    (search/rebuild.py), or LOST until one does; one never started is dropped."""
    out = []
    for r in previous:
        if r.get("trial_id") in ray_ids or r.get("status") == "PENDING":
            continue
        if r.get("status") not in ENDED and not replaced(r.get("error")):
            if stopped_at_rung(r, stopped):
                r = {**r, "status": "EARLY_STOPPED", "ray_status": "TERMINATED"}
            else:
                by = replacement(uri, str(r.get("trial_id"))) if uri else None
                r = replaced_row(r, by) if by else {**r, "status": "INTERRUPTED", "error": LOST}
        out.append(r)
    return out


def _forget_staged_copies(trials: list[Any]) -> None:
    """Remove our files from Ray's driver staging folder, where ``Tuner.restore`` downloaded them: Ray uploads that
    folder at every snapshot, and the stale copies would overwrite what we wrote since (settings.OWN_FILES)."""
    import os

    for t in trials[:1]:
        try:
            staging = t.storage.experiment_driver_staging_path
        except Exception as e:  # not a Ray version we know: nothing to remove
            log.debug("no driver staging path: %s", e)
            return
        for name in OWN_FILES:
            try:
                os.remove(os.path.join(staging, name))
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("could not remove Ray's stale copy of %s (%s): it may overwrite ours", name, e)


def _make_table_callback(
    base: dict[str, Any], uri: str, on_results: Callable[[pd.DataFrame], None] | None, progress: Any
) -> Any:
    Callback = _callback_base()

    class TrialsTableCallback(Callback):  # type: ignore[misc, valid-type]
        """Rebuilds ``trials.parquet`` from Ray's trial list whenever a trial starts or ends (the table is a
        function of Ray's restored state, so a resumed search counts every trial exactly once)."""

        def __init__(self) -> None:
            self.ended: dict[str, str] = {}  # status overrides: Tune updates trial.status after callbacks
            self.times: dict[str, float] = {}
            self.trials: list[Any] = []
            self.table: pd.DataFrame | None = None
            self.started: set[str] = set()  # trials this driver started ...
            self.finished: set[str] = set()  # ... and those Tune ended through on_trial_complete / on_trial_error
            self.interrupted = False  # the experiment ended with trials Tune stopped unfinished (Ctrl-C)
            self.previous: list[dict[str, Any]] = []  # the table as the last driver left it (--resume)
            self.stopped: dict[str, int] = {}  # MOASHA's stops before the crash
            self.staged_cleared = False

        def setup(self, **info: Any) -> None:
            try:  # before the first write replaces it
                self.previous = load_rows(f"{uri}/{TRIALS_PARQUET}")
                self.stopped = moasha_stopped(uri) if self.previous else {}
            except Exception as e:  # a torn table: Ray's snapshot is all there is
                log.warning("could not read %s (%s); the table is rebuilt from Ray's snapshot", TRIALS_PARQUET, e)

        def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
            if not self.staged_cleared and trials:  # before the step's snapshot uploads the staging folder
                _forget_staged_copies(trials)
                self.staged_cleared = True

        def _write(self, trials: list[Any], fresh: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
            """``fresh``: results by trial id that Tune has not stored on the trial yet."""
            self.trials = list(trials)
            fresh = fresh or {}
            rows = [trial_row(t, base, self.ended.get(t.trial_id), self.times, fresh.get(t.trial_id)) for t in trials]
            rows += _kept_rows(self.previous, {t.trial_id for t in trials}, self.stopped, uri)
            table = rows_to_arrow(rows)
            try:
                write_parquet(table, f"{uri}/{TRIALS_PARQUET}")
            except Exception as e:  # storage hiccup: keep searching, try again next time
                log.warning("could not write %s: %s", TRIALS_PARQUET, e)
            self.table = table.to_pandas()
            return self.table

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            # Tune calls this just before it sets the status to RUNNING
            self.times[f"{trial.trial_id}:start"] = time.time()
            self.ended[trial.trial_id] = "RUNNING"
            self.started.add(trial.trial_id)
            self.finished.discard(trial.trial_id)
            self._write(trials)
            if progress is not None:
                progress.started(trial)

        def _ended(self, trials: list, trial: Any, status: str) -> None:
            self.ended[trial.trial_id] = status
            self.finished.add(trial.trial_id)
            self.times[f"{trial.trial_id}:end"] = time.time()
            table = self._write(trials)
            if status == "TERMINATED" and trial.last_result:  # errors stay retryable by --resume (resume_errored)
                try:
                    row = table[table["trial_id"] == trial.trial_id]
                    TrialState(uri, trial.trial_id).mark_ended(str(row["status"].iloc[0]) if len(row) else "",
                                                               _own_result(dict(trial.last_result)))
                except Exception as e:  # a resume from an older snapshot would rerun it from its checkpoint
                    log.warning("could not record the end of trial %s: %s", trial.trial_id, e)
            if progress is not None:
                progress.finished(table, trial.trial_id)
            if on_results is not None:
                try:
                    on_results(table)
                except Exception as e:
                    log.warning("on_results hook failed: %s", e)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._ended(trials, trial, "TERMINATED")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._ended(trials, trial, "ERROR")

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            if self.ended.get(trial.trial_id) == "RUNNING":
                del self.ended[trial.trial_id]  # Tune's own status is RUNNING by now
            # per-epoch progress of running trials (a few KB), with this result: Tune stores it after the callbacks
            self._write(trials, {trial.trial_id: result})
            if progress is not None:
                progress.epoch(trial, result)

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.ended.pop(trial.trial_id, None)  # its worker died: Tune requeues it (PENDING) from its checkpoint
            self._write(trials)

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            # On Ctrl-C Tune saves its state with the running trials still RUNNING (so --resume reruns them),
            # then stops them as TERMINATED without on_trial_complete: those are INTERRUPTED, not early-stopped.
            for t in trials:
                unfinished = str(t.status) not in ("TERMINATED", "ERROR")
                if unfinished or (t.trial_id in self.started and t.trial_id not in self.finished):
                    self.interrupted = True
                    if unfinished and t.trial_id not in self.started:
                        continue  # never started here: stays PENDING
                    self.ended[t.trial_id] = "INTERRUPTED"
            self._write(trials)

    return TrialsTableCallback()


def _make_storage_guard() -> Any:
    """A callback that ends the experiment, as Ctrl-C would, when a trial could not write its state (disk full,
    read-only storage): every other trial writes to the same place, so launching more (or retrying this one,
    ``FailureConfig``) only repeats the failure. Running trials stay resumable; ``fault`` holds the message."""
    Callback = _callback_base()

    from trainables import StorageFull

    class StorageGuard(Callback):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.fault = ""

        def _keep(self, record: logging.LogRecord) -> bool:
            """Drop Ray's traceback of the trial that hit the fault and Tune's interruption notes after it: the
            driver says it in one line (the trial's state is kept, nothing else happened)."""
            exc = record.exc_info[1] if record.exc_info else None
            return not (isinstance(exc, StorageFull) or self.fault)

        @contextlib.contextmanager
        def quiet(self) -> Iterator[None]:
            loggers = [logging.getLogger(n) for n in ("ray.tune.execution.tune_controller", "ray.tune.tune")]
            for lg in loggers:
                lg.addFilter(self._keep)
            try:
                yield
            finally:
                for lg in loggers:
                    lg.removeFilter(self._keep)

        def _check(self, trial: Any) -> None:
            msg = storage_fault(trial)
            if msg and not self.fault:
                self.fault = msg
                # Tune's own interrupt (tune.py ``_setup_signal_catching`` handles SIGUSR1 like SIGINT): the loop
                # ends after this step and the experiment state is saved with the unfinished trials resumable
                signal.raise_signal(signal.SIGUSR1)

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._check(trial)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._check(trial)

    return StorageGuard()
