"""The frontier as a pure function of ALL trials of a search: pareto flags, hypervolume, counts and the best
schedule at a few FLOPs budgets, all selected on validation accuracy (test accuracy only for a search without a
validation split, ``selected_on``); test accuracy is reported beside it and never selects.

Nothing here talks to MLflow; the tracker publishes what ``compute_frontier`` returns, so the parent run's
metrics and ``pareto`` tags are the same whichever driver (first run, ``--resume``, ``spfde sync``) wrote them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from spfde_search.pareto import is_finite

from .records import TrialRecord


@dataclass(frozen=True)
class Frontier:
    """What the parent run shows about the frontier of a set of trials (``compute_frontier``)."""

    flags: dict[str, bool]  # trial_id -> pareto
    hypervolume: float
    trials_completed: int  # completed full-budget trials (the frontier's candidates)
    trials_failed: int  # FAILED + INFEASIBLE
    best_test_accuracy: float | None  # test accuracy of the best trial by the selection accuracy
    best_val_accuracy: float | None = None  # that trial's validation accuracy (None: no validation split)
    at_budget: dict[float, tuple[float | None, float | None]] = field(default_factory=dict)  # ratio -> (val, test)

    @property
    def size(self) -> int:
        return sum(self.flags.values())

    def metrics(self) -> dict[str, float]:
        """The parent run's frontier metrics, by MLflow name."""
        out = {"hypervolume": self.hypervolume, "frontier_size": float(self.size),
               "trials_completed": float(self.trials_completed), "trials_failed": float(self.trials_failed)}
        if self.best_val_accuracy is not None:
            out["best_val_accuracy"] = self.best_val_accuracy
        if self.best_test_accuracy is not None:
            out["best_test_accuracy"] = self.best_test_accuracy
        for ratio, (val, test) in sorted(self.at_budget.items()):  # best_at_0.1_val_accuracy, ...
            for name, v in (("val_accuracy", val), ("test_accuracy", test)):
                if v is not None:
                    out[f"best_at_{ratio:g}_{name}"] = v
        return out


def selected_on(records: Sequence[TrialRecord]) -> str:
    """``val_accuracy``, or ``test_accuracy`` when no frontier candidate has a validation accuracy."""
    from spfde_search.pareto import selection_metric

    return selection_metric(r.final.get("val_accuracy") for r in records if r.on_frontier_candidate)


def _candidates(records: Sequence[TrialRecord], metric: str) -> list[TrialRecord]:
    """The trials that may enter the front and the hypervolume (``TrialRecord.front_eligible`` on ``metric``)."""
    return [r for r in records if r.front_eligible(metric)]


def _value(r: TrialRecord, key: str) -> float | None:
    return float(r.final[key]) if is_finite(r.final.get(key)) else None


def compute_frontier(records: Sequence[TrialRecord], ratios: Sequence[float] | None = None) -> Frontier:
    """The frontier of ALL ``records`` (every trial of the search, e.g. from ``trials.parquet``); pure. ``ratios``
    (default ``pareto.BUDGET_RATIOS``): FLOPs ratios at which the best schedule's accuracies are reported."""
    from spfde_search.pareto import BUDGET_RATIOS, best_within

    metric = selected_on(records)
    done = _candidates(records, metric)
    best = max(done, key=lambda r: float(r.final[metric])) if done else None
    at_budget: dict[float, tuple[float | None, float | None]] = {}
    acc = [float(r.final[metric]) for r in done]
    ratio = [float(r.final.get("flops_ratio", float("nan"))) for r in done]
    for cap in BUDGET_RATIOS if ratios is None else ratios:
        i = best_within(acc, ratio, cap) if done else None
        if i is not None:
            at_budget[float(cap)] = (_value(done[i], "val_accuracy"), _value(done[i], "test_accuracy"))
    return Frontier(
        flags=frontier_flags(records),
        hypervolume=hypervolume_of(records),
        trials_completed=len([r for r in records if r.on_frontier_candidate]),
        trials_failed=sum(r.status in ("FAILED", "INFEASIBLE") for r in records),
        best_test_accuracy=_value(best, "test_accuracy") if best is not None else None,
        best_val_accuracy=_value(best, "val_accuracy") if best is not None else None,
        at_budget=at_budget,
    )


def frontier_flags(records: Sequence[TrialRecord]) -> dict[str, bool]:
    """trial_id -> on the frontier: non-dominated (``pareto.non_dominated``: max validation accuracy, min training
    FLOPs) among the completed full-budget trials above chance (``_candidates``); every other trial is False."""
    from spfde_search.pareto import non_dominated

    flags = {r.trial_id: False for r in records}
    metric = selected_on(records)
    cands = _candidates(records, metric)
    if cands:
        mask = non_dominated([float(r.final[metric]) for r in cands],
                             [float(r.final["train_flops"]) for r in cands])
        for r, on in zip(cands, mask, strict=True):
            flags[r.trial_id] = bool(on)
    return flags


def search_cost_of(records: Sequence[TrialRecord]) -> dict[str, float]:
    """What the search spent so far: measured training FLOPs and trial-seconds of ALL ended trials (stopped and
    failed ones included; untrained ones add 0), and how many ended / were early-stopped."""
    ended = [r for r in records if r.terminal]
    return {
        "search_train_flops": float(sum(r.final["train_flops"] for r in ended if is_finite(r.final.get("train_flops")))),
        "search_trial_seconds": float(sum(r.final["wall_seconds"] for r in ended if is_finite(r.final.get("wall_seconds")))),
        "trials_ended": float(len(ended)),
        "trials_early_stopped": float(sum(r.status == "EARLY_STOPPED" for r in ended)),
    }


def hypervolume_of(records: Sequence[TrialRecord]) -> float:
    """Area dominated by the completed full-budget trials above chance, accuracy (up) vs FLOPs ratio (down), reference (0, 1)."""
    from spfde_search.pareto import hypervolume

    metric = selected_on(records)
    pts = [(float(r.final[metric]), float(r.final["flops_ratio"])) for r in _candidates(records, metric)
           if is_finite(r.final.get("flops_ratio"))]
    if not pts:
        return 0.0
    return float(hypervolume([p[0] for p in pts], [p[1] for p in pts], ref=(0.0, 1.0)))
