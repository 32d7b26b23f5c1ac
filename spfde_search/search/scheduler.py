"""Multi-objective successive halving (``--early-stopping moasha``): a rung book plus a thin Ray Tune adapter.

Rungs sit at epochs r * eta^k below T (r = ``grace_period``, eta = ``reduction_factor``). When a trial reaches
a rung it is recorded there with (test accuracy at that epoch, predicted whole-run training FLOPs), and
``spfde_search.pareto.moasha_continues`` decides, among every trial recorded at that rung so far, whether it
is in the top 1/eta (Syne Tune's MOASHA, syne_tune/optimizer/schedulers/multiobjective/moasha.py: asynchronous,
one bracket, the first trial at a rung always goes on). A stopped trial ends EARLY_STOPPED; the searcher tells
Optuna it was PRUNED, and the frontier never holds it.

The book is persisted as JSON in the search folder (``moasha_rungs.json``) after every decision, because Ray
does not checkpoint schedulers: a ``--resume`` reloads it, so the rungs continue where they were and a trial
that re-reports a rung after a restart is not recorded twice. A trial the book stopped is stopped again at its first
result after a restart: Ray's snapshot may predate the stop, and the resumed trial re-reports its rung epoch first
(trainables/_trainable.py), so it ends where it was stopped. A trial that continues a lost trial's saved state
(search/rebuild.py ``take_over``) inherits that trial's place in the book at its first result (``RungBook.rename``):
the run is judged once at each rung, and a decision taken before the crash holds for the trial that continues it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spfde_search.pareto import moasha_continues

from ..storage import exists, read_bytes, write_bytes
from .settings import RUNGS_JSON

__all__ = ["RUNGS_JSON", "rung_epochs", "RungBook", "make_moasha"]

log = logging.getLogger(__name__)



def rung_epochs(epochs: int, grace_period: int, reduction_factor: float) -> list[int]:
    """Rung epochs r * eta^k strictly below ``epochs`` (the last epoch ends a trial anyway), ascending."""
    if reduction_factor <= 1 or grace_period < 1:
        raise ValueError("rungs need grace_period >= 1 and reduction_factor > 1")
    out: list[int] = []
    k = 0
    while True:
        e = int(round(grace_period * reduction_factor**k))
        if e >= epochs:
            return out
        if not out or e > out[-1]:
            out.append(e)
        k += 1


def _num(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return x if math.isfinite(x) else float("nan")


@dataclass
class RungBook:
    """Who reached which rung with which objectives, and who was stopped where (plain data: JSON round-trip)."""

    rungs: list[int]
    eta: float
    records: dict[int, dict[str, tuple[float, float]]] = field(default_factory=dict)
    stopped: dict[str, int] = field(default_factory=dict)  # trial id -> rung epoch it was stopped at

    def on_result(self, trial_id: str, epoch: int, accuracy: Any, run_flops: Any) -> bool | None:
        """Record a result. Returns None if no new rung was reached, else whether the trial continues. Like
        Syne Tune: the highest rung at or below ``epoch`` the trial has not been recorded at yet."""
        for rung in reversed(self.rungs):
            seen = self.records.setdefault(rung, {})
            if epoch < rung or trial_id in seen:
                continue
            seen[trial_id] = (_num(accuracy), _num(run_flops))
            ids = list(seen)
            go = moasha_continues([seen[i][0] for i in ids], [seen[i][1] for i in ids], self.eta, ids.index(trial_id))
            if not go:
                self.stopped[trial_id] = rung
            return go
        return None

    def rename(self, old: str, new: str) -> bool:
        """Record ``old``'s rungs and stop under ``new`` (the trial continuing its run), in place, so the rung order
        is kept; False (nothing changed) if ``old`` is in no rung or ``new`` already is."""
        if new in self.stopped or any(new in rec for rec in self.records.values()):
            return False
        changed = False
        for rung, rec in self.records.items():
            if old in rec:
                self.records[rung] = {new if t == old else t: v for t, v in rec.items()}
                changed = True
        if old in self.stopped:
            self.stopped[new] = self.stopped.pop(old)
            changed = True
        return changed

    def to_json(self) -> dict[str, Any]:
        return {"rungs": self.rungs, "eta": self.eta, "stopped": self.stopped,
                "records": {str(r): {t: list(v) for t, v in rec.items()} for r, rec in self.records.items()}}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RungBook:
        recs = {int(r): {t: (float(v[0]), float(v[1])) for t, v in rec.items()} for r, rec in d.get("records", {}).items()}
        return cls([int(r) for r in d["rungs"]], float(d["eta"]), recs, {str(k): int(v) for k, v in d.get("stopped", {}).items()})


def make_moasha(epochs: int, grace_period: int, reduction_factor: int, state_uri: str | None,
                metric: str = "val_accuracy") -> Any:
    """The Ray Tune scheduler (``ray.tune.schedulers.FIFOScheduler`` with MOASHA's stop decisions)."""
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    class MoashaScheduler(FIFOScheduler):
        """Stops a trial at a rung unless ``RungBook`` keeps it; state in ``state_uri`` (JSON)."""

        def __init__(self) -> None:
            super().__init__()
            self.rungs = rung_epochs(epochs, grace_period, reduction_factor)
            self.eta = float(reduction_factor)
            self.state_uri = state_uri
            self._book: RungBook | None = None
            self._followed: set[str] = set()  # trials already checked for a run they continue

        @property
        def book(self) -> RungBook:
            if self._book is None:
                self._book = RungBook(self.rungs, self.eta)
                if self.state_uri and exists(self.state_uri):
                    try:
                        self._book = RungBook.from_json(json.loads(read_bytes(self.state_uri)))
                    except Exception as e:  # a torn file: start the rungs afresh rather than fail the search
                        log.warning("could not read %s (%s); MOASHA rungs start afresh", self.state_uri, e)
            return self._book

        def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
            return True  # the objectives are fixed: `metric` (max) and run_train_flops (min)

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            if result.get("infeasible"):
                return TrialScheduler.CONTINUE
            total = int(result.get("epochs_total") or epochs)
            epoch = int(result.get("epoch") or 0)
            if epoch >= total:
                return TrialScheduler.CONTINUE  # the last epoch: the trial completes on its own
            if self._inherit(trial.trial_id):
                self._save()
            if trial.trial_id in self.book.stopped:  # stopped before a crash, rerun by a --resume: stopped again
                return TrialScheduler.STOP
            go = self.book.on_result(trial.trial_id, epoch, result.get(metric), result.get("run_train_flops"))
            if go is None:
                return TrialScheduler.CONTINUE
            self._save()
            return TrialScheduler.CONTINUE if go else TrialScheduler.STOP

        def _inherit(self, trial_id: str) -> bool:
            """At a trial's first result: if it continues a lost trial's run (``take_over`` recorded it), move that
            trial's rungs and stop to it. Looked up once per trial, in the search folder beside the book."""
            if trial_id in self._followed or not self.state_uri:
                return False
            self._followed.add(trial_id)
            from .rebuild import continued_from

            old = continued_from(self.state_uri.rsplit("/", 1)[0], trial_id)
            return old is not None and self.book.rename(old, trial_id)

        def _save(self) -> None:
            if self.state_uri:
                try:
                    write_bytes(self.state_uri, json.dumps(self.book.to_json()).encode())
                except Exception as e:
                    log.warning("could not write %s: %s", self.state_uri, e)

        def debug_string(self) -> str:
            book = self.book
            return "MOASHA rungs " + ", ".join(f"{r}: {len(book.records.get(r, {}))}" for r in self.rungs)

    return MoashaScheduler()
