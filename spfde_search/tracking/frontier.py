"""The frontier as a pure function of ALL trials of a search: pareto flags, hypervolume and counts.

Nothing here talks to MLflow; the tracker publishes what ``compute_frontier`` returns, so the parent run's
metrics and ``pareto`` tags are the same whichever driver (first run, ``--resume``, ``spfde sync``) wrote them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .records import TrialRecord, _finite


@dataclass(frozen=True)
class Frontier:
    """What the parent run shows about the frontier of a set of trials (``compute_frontier``)."""

    flags: dict[str, bool]  # trial_id -> pareto
    hypervolume: float
    trials_completed: int  # completed full-budget trials (the frontier's candidates)
    trials_failed: int  # FAILED + INFEASIBLE
    best_test_accuracy: float | None

    @property
    def size(self) -> int:
        return sum(self.flags.values())

    def metrics(self) -> dict[str, float]:
        """The parent run's frontier metrics, by MLflow name."""
        out = {"hypervolume": self.hypervolume, "frontier_size": float(self.size),
               "trials_completed": float(self.trials_completed), "trials_failed": float(self.trials_failed)}
        if self.best_test_accuracy is not None:
            out["best_test_accuracy"] = self.best_test_accuracy
        return out


def compute_frontier(records: Sequence[TrialRecord]) -> Frontier:
    """The frontier of ALL ``records`` (every trial of the search, e.g. from ``trials.parquet``); pure."""
    done = [r for r in records if r.on_frontier_candidate]
    return Frontier(
        flags=frontier_flags(records),
        hypervolume=hypervolume_of(records),
        trials_completed=len(done),
        trials_failed=sum(r.status in ("FAILED", "INFEASIBLE") for r in records),
        best_test_accuracy=max(float(r.final["test_accuracy"]) for r in done) if done else None,
    )


def frontier_flags(records: Sequence[TrialRecord]) -> dict[str, bool]:
    """trial_id -> on the frontier: non-dominated (``pareto.non_dominated``: max accuracy, min training FLOPs)
    among the completed full-budget trials above chance (``TrialRecord.front_eligible``); every other is False."""
    from spfde_search.pareto import non_dominated

    flags = {r.trial_id: False for r in records}
    cands = [r for r in records if r.front_eligible]
    if cands:
        mask = non_dominated([float(r.final["test_accuracy"]) for r in cands],
                             [float(r.final["train_flops"]) for r in cands])
        for r, on in zip(cands, mask, strict=True):
            flags[r.trial_id] = bool(on)
    return flags


def search_cost_of(records: Sequence[TrialRecord]) -> dict[str, float]:
    """What the search spent so far: measured training FLOPs and trial-seconds of ALL ended trials (stopped and
    failed ones included; untrained ones add 0), and how many ended / were early-stopped."""
    ended = [r for r in records if r.terminal]
    return {
        "search_train_flops": float(sum(r.final["train_flops"] for r in ended if _finite(r.final.get("train_flops")))),
        "search_trial_seconds": float(sum(r.final["wall_seconds"] for r in ended if _finite(r.final.get("wall_seconds")))),
        "trials_ended": float(len(ended)),
        "trials_early_stopped": float(sum(r.status == "EARLY_STOPPED" for r in ended)),
    }


def hypervolume_of(records: Sequence[TrialRecord]) -> float:
    """Area dominated by the completed full-budget trials above chance, accuracy (up) vs FLOPs ratio (down), reference (0, 1)."""
    from spfde_search.pareto import hypervolume

    pts = [(float(r.final["test_accuracy"]), float(r.final["flops_ratio"])) for r in records
           if r.front_eligible and _finite(r.final.get("flops_ratio"))]
    if not pts:
        return 0.0
    return float(hypervolume([p[0] for p in pts], [p[1] for p in pts], ref=(0.0, 1.0)))
