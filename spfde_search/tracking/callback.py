"""The Ray Tune callback that logs a live search to MLflow from the driver, and how a search turns it on
(``tracking_settings`` in ``search.json``, ``callbacks_for``, ``describe_tracking``)."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spfde_search.config import Config

from .artifacts import ARTIFACT_EVERY
from .records import TERMINAL, TrialRecord, _epoch_metrics, load_search_results, trial_config
from .store import default_experiment_name, resolve_tracking_uri
from .tracker import Tracker

log = logging.getLogger("spfde_search.tracking")
SEARCH_DIR_TAG = "spfde.search_dir"  # on the parent run: the search folder, whose lock says if a driver runs it


def tracking_settings(tracking_uri: str | None, experiment: str | None,
                      base_config: Mapping[str, Any] | Config | None) -> dict[str, Any]:
    """The resolved ``{"uri", "experiment"}`` a search records in ``search.json`` (``uri`` None: tracking off)."""
    if tracking_uri is not None and tracking_uri.strip().lower() in ("none", "off", "false", "0", ""):
        return {"uri": None, "experiment": None, "enabled": False}
    return {"uri": resolve_tracking_uri(tracking_uri), "experiment": experiment or default_experiment_name(base_config),
            "enabled": True}


def _read_search_json(search_dir: str) -> dict[str, Any]:
    if "://" in search_dir:
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(search_dir)
        with fs.open_input_stream(f"{path}/search.json") as f:
            return dict(json.loads(f.read()))
    return dict(json.loads((Path(search_dir) / "search.json").read_text()))


@functools.lru_cache(maxsize=1)
def _callback_class() -> type:
    from ray.tune import Callback

    class MLflowFrontierCallback(Callback):
        """Logs every trial to MLflow from the driver and keeps the frontier tags/artifacts current.

        Final trial rows come from ``search.trial_row`` (the same function that writes ``trials.parquet``), so
        MLflow and the search's own table agree on status, metrics and config. The frontier is computed from
        ALL trials of the search, read from ``trials.parquet`` (the record, rewritten by the table callback just
        before this one runs), so a resumed driver tags and measures the whole search, not only what it saw.
        At start and end every ended trial of ``trials.parquet`` is brought to MLflow (runs a killed driver left
        RUNNING are closed), and a trial Ray runs again reopens its own run: one run per trial, always.
        """

        def __init__(self, tracker: Tracker, meta: Mapping[str, Any] | None, search_dir: str | None) -> None:
            self.tracker = tracker
            tracker.frontier.artifact_every = ARTIFACT_EVERY  # the files at most every few trials, and at the end
            self.meta = dict(meta) if meta is not None else None
            self.search_dir = search_dir
            self.records: dict[str, TrialRecord] = {}
            self._dirty: set[str] = set()

        @property
        def base(self) -> dict[str, Any]:
            return dict((self.meta or {}).get("base_config") or {})

        def _record(self, trial: Any) -> TrialRecord:
            tid = str(trial.trial_id)
            rec = self.records.get(tid)
            if rec is None:
                full, sampled = trial_config(trial.config or {}, self.base)
                rec = TrialRecord(trial_id=tid, status="RUNNING", config=full, params=sampled,
                                  start_time=time.time(), rung=TrialRecord.rung_of(trial.config or {}))
                self.records[tid] = rec
            return rec

        def _finalize(self, trial: Any, ray_status: str) -> TrialRecord:
            from spfde_search.search import trial_row

            old = self._record(trial)
            rec = TrialRecord.from_row(trial_row(trial, self.base, ray_status))
            rec.epochs, rec.start_time = old.epochs, old.start_time
            if not rec.config:
                rec.config = old.config
            self.records[rec.trial_id] = rec
            return rec

        def _table_records(self, epochs: bool) -> list[TrialRecord] | None:
            """Every trial of ``trials.parquet`` (with per-epoch metrics from Ray's ``result.json`` if ``epochs``),
            or None when there is none yet (a new search) or it cannot be read."""
            if self.search_dir is None:
                return None
            try:
                if epochs and "://" not in self.search_dir:
                    return load_search_results(self.search_dir)[1]
                from spfde_search.search import load_trials

                return [TrialRecord.from_row(r) for r in load_trials(self.search_dir).to_dict("records")]
            except Exception as e:  # noqa: BLE001 - not written yet, or a storage hiccup: use what we saw
                log.debug("trials.parquet of %s not read: %s", self.search_dir, e)
                return None

        def _all_records(self) -> list[TrialRecord]:
            recs = {r.trial_id: r for r in self._table_records(epochs=False) or []}
            for tid, r in self.records.items():
                recs.setdefault(tid, r)
            return list(recs.values())

        def _reconcile(self) -> None:
            """Bring every ended trial of ``trials.parquet`` to MLflow (idempotent: only what is missing is written)."""
            for rec in self._table_records(epochs=True) or []:
                if not rec.terminal:
                    continue
                seen = self.records.get(rec.trial_id)
                if seen is not None:
                    if len(seen.epochs) > len(rec.epochs):
                        rec.epochs = seen.epochs
                    rec.start_time = rec.start_time or seen.start_time
                    rec.config = rec.config or seen.config
                self.records[rec.trial_id] = rec
                self._dirty.add(rec.trial_id)

        def _flush(self, frontier: bool, final: bool = False) -> None:
            t = self.tracker
            if not t.available():
                return
            for tid in sorted(self._dirty):
                if t.upsert_trial(self.records[tid]):
                    self._dirty.discard(tid)
                else:
                    return
            if frontier:
                t.update_frontier(self._all_records(), final=final)

        # -- Ray hooks (driver only)

        def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
                  **info: Any) -> None:
            if self.meta is None and self.search_dir is not None:
                try:
                    self.meta = _read_search_json(self.search_dir)
                except (OSError, ValueError) as e:
                    log.warning("could not read search.json from %s (%s); the parent run lacks the search's "
                                "description until `spfde sync`", self.search_dir, e)
                    self.meta = {"name": self.tracker.search}
            if self.tracker.start(self.meta):
                self.tracker.runs.reopen_parent()
                if self.search_dir is not None:  # `spfde pareto` asks the folder's lock whether a driver still runs
                    self.tracker.runs.tag_parent(SEARCH_DIR_TAG, self.search_dir)
            self._reconcile()  # --resume: trials the killed driver ended but did not finish writing
            self._flush(frontier=True)

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            tid = str(trial.trial_id)
            old = self.records.get(tid)
            full, sampled = trial_config(trial.config or {}, self.base)
            rec = TrialRecord(trial_id=tid, status="RUNNING", config=full, params=sampled,
                              start_time=old.start_time if old is not None and old.start_time else time.time(),
                              rung=TrialRecord.rung_of(trial.config or {}))
            self.records[tid] = rec  # a rerun starts afresh; its run keeps the epochs already logged
            if self.tracker.available():
                self.tracker.runs.reopen_trial(rec)
            self._dirty.add(tid)
            self._flush(frontier=False)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            rec = self._record(trial)
            ep = _epoch_metrics(result)
            if ep and all(e["epoch"] != ep["epoch"] for e in rec.epochs):
                rec.epochs.append(ep)
                self._dirty.add(rec.trial_id)
                self._flush(frontier=False)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._dirty.add(self._finalize(trial, "TERMINATED").trial_id)
            self._flush(frontier=True)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._dirty.add(self._finalize(trial, "ERROR").trial_id)
            self._flush(frontier=True)

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            t = self.tracker
            t.store.retry_now()  # one last attempt, whatever the back-off
            self._reconcile()  # interrupted trials (Ctrl-C) are in trials.parquet only
            self._flush(frontier=True, final=True)  # the frontier files, whatever the upload cadence
            # trials of Ray's list left unfinished; a row kept from before a crash that Ray never saw (INTERRUPTED
            # for good, search/callbacks.py) does not keep the search open
            ray_ids = {str(t.trial_id) for t in trials}
            unfinished = any(r.status not in TERMINAL or (r.status == "INTERRUPTED" and r.trial_id in ray_ids)
                             for r in self._all_records())
            if not self._dirty and t.available():
                t.finish("KILLED" if unfinished else "FINISHED")
            if self._dirty or t.failures:
                log.warning("MLflow tracking missed part of search %r (%d trial(s) not fully written); nothing "
                            "is lost: run `spfde sync %s` once %s is reachable", t.search, len(self._dirty),
                            t.search, t.uri)

    return MLflowFrontierCallback


def make_callback(tracking_uri: str | None, experiment: str | None, name: str, *,
                  search_dir: str | None = None, search_meta: Mapping[str, Any] | None = None,
                  base_config: Mapping[str, Any] | None = None) -> Any:
    """A ``ray.tune.Callback`` that logs the search ``name`` to MLflow from the driver, or None if tracking is off
    (``tracking_uri`` ``"none"``/``"off"``).

    The search's description (parent run params) is ``search_meta`` if given, else ``search.json`` read from
    ``search_dir`` when the search starts. ``experiment`` defaults to ``spfde-<model>-<data set>`` of the base config.
    """
    ts = tracking_settings(tracking_uri, experiment, base_config or (search_meta or {}).get("base_config"))
    if not ts["enabled"]:
        return None
    return _callback_class()(Tracker(ts["uri"], ts["experiment"], name), search_meta, search_dir)


def callbacks_for(settings: Any) -> list[Any]:
    """``[callback]`` for a ``search.SearchSettings`` whose ``tracking`` is enabled, else ``[]``.

    ``settings.tracking`` is what ``tracking_settings`` returned when the search was created (kept in
    ``search.json``, so ``--resume`` logs to the same place); None means tracking is off.
    """
    tr = getattr(settings, "tracking", None) or {}
    if not tr.get("uri") or tr.get("enabled") is False:
        return []
    from spfde_search.search import experiment_uri

    cb = make_callback(tr["uri"], tr.get("experiment"), settings.name,
                       search_dir=experiment_uri(settings.storage_path, settings.name),
                       base_config=settings.base_config)
    return [] if cb is None else [cb]


def describe_tracking(settings: Any) -> str:
    """One line for the console: where the search is tracked."""
    tr = getattr(settings, "tracking", None) or {}
    if not tr.get("uri") or tr.get("enabled") is False:
        return "MLflow tracking off"
    return f"MLflow: {tr['uri']} (experiment {tr.get('experiment')}); browse with `spfde ui {settings.name}`"
