"""``--fidelity schedule``: successive halving over schedule length, as a Ray Tune searcher around the Optuna one.

Every rung is a real trial: the config's complete schedule of that rung's length (``rungs.shrink``), with its own
row in ``trials.parquet`` (``param.fidelity.rung``, ``param.fidelity.epochs``, ``param.fidelity.config``) and its own
MLflow run. Only the last rung is the full schedule; only those trials are ``full_budget`` and so only they reach the
front, the hypervolume, ``pareto``, ``export`` and ``pareto --max-flops``.

- New configs come from the Optuna searcher (any sampler, any space), at the first rung; it is told each first-rung
  result with the config's FULL-length predicted training FLOPs as the cost (exact before training), never the
  short run's. Higher rungs do not inform it (BOHB and DEHB fit their models per budget; one Optuna study cannot
  hold two fidelities of one trial without mixing them).
- Promotion is asynchronous (ASHA): whenever a slot frees, the best not-yet-promoted config in the top ⌊n/η⌋ of
  the highest rung that has one goes up (``rungs.promotable``: fronts, then ε-net, on validation accuracy and
  full-length FLOPs); else a new config starts at the first rung.
- ``num_samples`` counts full-length trials (running or finished); ``max_compute`` (training FLOPs of all trials)
  stops proposing when the next trial's predicted FLOPs would pass it.
- The book (``rungs.HalvingBook``) is written to ``halving_rungs.json`` after every change and pickled with Ray's
  searcher snapshot. On ``--resume`` the file is the truth: a trial it holds as running that the snapshot never
  saw was lost with the driver, and its (config, rung) runs again; finished ones are kept, never rerun.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
from collections.abc import Mapping
from typing import Any

from ..storage import exists, read_bytes, write_bytes
from .rungs import HalvingBook, shrink

__all__ = ["GRACE_FRACTION", "HALVING_JSON", "HALVING_MAX_TRIALS", "RUNG_KEYS", "counted_trials", "make_halving",
           "resolve_grace", "rung_params"]

log = logging.getLogger(__name__)

HALVING_JSON = "halving_rungs.json"
RUNG_KEYS = ("fidelity.rung", "fidelity.epochs", "fidelity.config")
HALVING_MAX_TRIALS = 100_000  # Ray's num_samples under halving: the book ends the search (num_samples = full-length)
# The first rung as a fraction of the schedule, from the within-budget fidelity measurement (benchmarks/RESULTS.md,
# "Within-budget fidelity"; docs/search.md): E/4.
GRACE_FRACTION = 0.25


def resolve_grace(grace_period: int | None, epochs: int) -> int:
    """The first rung's length: ``--grace-period`` if given (at most the schedule), else GRACE_FRACTION of it."""
    from .rungs import grace_from_fraction

    return min(grace_period, epochs) if grace_period else grace_from_fraction(epochs, GRACE_FRACTION)


def counted_trials(table: Any, settings: Any) -> int:
    """Trials that count toward ``num_samples``: every row, or under halving the full-length ones only."""
    if getattr(settings, "fidelity", "none") != "schedule" or "param.fidelity.epochs" not in getattr(table, "columns", ()):
        return len(table)
    full = int((settings.base_config.get("train") or {}).get("epochs") or 0)
    e = table["param.fidelity.epochs"]
    return int(((e.isna()) | (e.astype(float) >= full)).sum())


def rung_params(book: HalvingBook, base: Mapping[str, Any], config: int, rung: int) -> tuple[dict[str, Any], float]:
    """A Ray trial's parameters for (config, rung) (the config's sampled parameters, the fields the shrink rule
    changed: ``train.epochs``, Δτ, a capped freezing target, ...; and the rung keys) and its predicted training
    FLOPs."""
    from search_spaces import config_params

    from ..config import apply_overrides, flatten

    params = dict(book.configs[config]["params"])
    full = apply_overrides(dict(base), config_params(params))
    short = shrink(full, book.lengths[rung])
    flat_full, flat_short = flatten(full), flatten(short.config)
    diff = {k: v for k, v in flat_short.items() if flat_full.get(k) != v}
    keys = {"fidelity.rung": rung, "fidelity.epochs": book.lengths[rung], "fidelity.config": config}
    return {**params, **diff, **keys}, short.train_flops


def _halving_class() -> type:
    from ray.tune.search import Searcher

    from search_spaces import config_params
    from trainables import assess

    class HalvingSearch(Searcher):
        """The Optuna searcher (``inner``) behind the rung book; see the module docstring."""

        def __init__(self, inner: Any, book: HalvingBook, base: dict[str, Any], num_samples: int,
                     book_uri: str | None, max_compute: float | None, metric: Any, mode: Any) -> None:
            super().__init__(metric=metric, mode=mode)
            self.inner, self.book, self.base = inner, book, base
            self.num_samples, self.book_uri, self.max_compute = num_samples, book_uri, max_compute
            self.spent = 0.0  # predicted training FLOPs of every trial started

        def set_search_properties(self, metric: Any, mode: Any, config: dict, **spec: Any) -> bool:
            return bool(self.inner.set_search_properties(metric, mode, config, **spec))

        def set_max_concurrency(self, max_concurrent: int) -> bool:
            return bool(self.inner.set_max_concurrency(max_concurrent))

        def _save_book(self) -> None:
            if self.book_uri:
                try:
                    doc = {**self.book.to_json(), "spent_predicted_flops": self.spent}
                    write_bytes(self.book_uri, json.dumps(doc, default=str).encode())
                except Exception as e:  # noqa: BLE001 - a storage hiccup: the next change writes it again
                    log.warning("could not write %s: %s", self.book_uri, e)

        def _stop(self, reason: str) -> str:
            if reason and not getattr(self.inner, "stop_reason", ""):
                self.inner.stop_reason = reason
                self.inner._save_skips()
            return Searcher.FINISHED

        def _fits(self, flops: float) -> bool:
            return self.max_compute is None or self.spent + flops <= self.max_compute

        def _wait_or_stop(self, reason: str) -> str | None:
            """Past --max-compute no new config starts; running trials may still yield a promotion that fits,
            so wait for them (None: Tune asks again when one ends), and stop once none is running."""
            self.no_new = True
            if any(t["state"] == "running" for t in self.book.trials.values()):
                return None
            return self._stop(reason)

        def suggest(self, trial_id: str) -> dict | str | None:  # type: ignore[override]
            if self.book.full_count() >= self.num_samples:
                return Searcher.FINISHED
            job = self.book.next_job()
            while job is not None:
                config, rung = job
                params, flops = rung_params(self.book, self.base, config, rung)
                if self._fits(flops):
                    return self._start(trial_id, config, rung, params, flops)
                # spent only grows: this job never fits; it is given up, and a smaller one may still fit
                self.book.give_up(config, rung)
                self._save_book()
                job = self.book.next_job()
            if getattr(self, "no_new", False):
                return self._wait_or_stop("--max-compute reached: no further trial fits")
            cfg = self.inner.suggest(trial_id)
            if not isinstance(cfg, dict):
                return cfg
            a = assess(config_params(cfg), self.base)
            full_flops = float(a.run_train_flops)
            config = self.book.add_config(cfg, full_flops, source=trial_id)
            params, flops = rung_params(self.book, self.base, config, 0)
            if not self._fits(flops):
                return self._wait_or_stop("--max-compute reached: no further trial fits")
            return self._start(trial_id, config, 0, params, flops)

        def _start(self, trial_id: str, config: int, rung: int, params: dict[str, Any], flops: float) -> dict:
            cfg = self.book.configs[config]
            trials = getattr(self.inner, "_ot_trials", {})
            if rung == 0 and cfg["source"] != trial_id and cfg["source"] in trials:  # a lost first run, rerun
                trials[trial_id] = trials.pop(cfg["source"])
                cfg["source"] = trial_id
            self.book.start(trial_id, config, rung)
            self.spent += flops if math.isfinite(flops) else 0.0
            self._save_book()
            return params

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            t = self.book.trials.get(trial_id)
            if t is not None and t["rung"] == 0 and self.book.configs[t["config"]]["source"] == trial_id:
                self.inner.on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            t = self.book.trials.get(trial_id)
            if t is None:
                return
            metric = self.metric[0] if isinstance(self.metric, (list, tuple)) else self.metric
            ok = bool(result) and not error and not (result or {}).get("diverged") \
                and not (result or {}).get("infeasible")
            acc = (result or {}).get(metric)
            first = t["state"] == "running"
            self.book.finish(trial_id, float(acc) if ok and acc is not None else None, ok)
            self._save_book()
            cfg = self.book.configs[t["config"]]
            if first and t["rung"] == 0 and cfg["source"] == trial_id:
                told = dict(result) if result else None
                if told is not None:  # the sampler ranks configs by their full-length cost, exact before training
                    told["run_train_flops"] = cfg["full_flops"]
                self.inner.on_trial_complete(trial_id, result=told, error=error)

        def save(self, checkpoint_path: str) -> None:
            state = {k: v for k, v in self.__dict__.items() if k != "inner"}
            state["book"] = self.book.to_json()
            with open(checkpoint_path, "wb") as f:
                pickle.dump({"mine": state, "inner": self.inner.__dict__.copy()}, f)

        def restore(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "rb") as f:
                doc = pickle.load(f)  # noqa: S301 - Ray's own searcher snapshot in the search folder, as OptunaSearch
            self.inner.__dict__.update(doc["inner"])
            mine = doc["mine"]
            snap = HalvingBook.from_json(mine.pop("book"))
            self.__dict__.update(mine)
            self.book = snap
            if self.book_uri and exists(self.book_uri):
                latest = json.loads(read_bytes(self.book_uri))
                self.spent = float(latest.pop("spent_predicted_flops", self.spent))
                book = HalvingBook.from_json(latest)
                lost = [tid for tid, t in book.trials.items() if t["state"] == "running" and tid not in snap.trials]
                book.requeue(lost)
                if lost:
                    log.warning("halving: %d trial(s) started after Ray's last snapshot were lost with the driver; "
                                "their (config, rung) runs again", len(lost))
                self.book = book
                self._save_book()

    return HalvingSearch


def make_halving(inner: Any, base: dict[str, Any], epochs: int, grace_period: int, reduction_factor: float,
                 num_samples: int, book_uri: str | None, max_compute: float | None, metric: Any, mode: Any) -> Any:
    """The halving searcher around ``inner`` (its own ``num_samples`` limit off: the book counts full-length
    trials). Rungs at ``rungs.rung_lengths(epochs, grace_period, reduction_factor)``."""
    from .rungs import rung_lengths

    inner.num_samples = 0
    book = HalvingBook(rung_lengths(epochs, grace_period, reduction_factor), float(reduction_factor))
    return _halving_class()(inner, book, base, num_samples, book_uri, max_compute, metric, mode)
