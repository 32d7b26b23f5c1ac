"""Built-in spaces: ``joint`` (default), ``paper`` (the paper's grid) and ``smoke`` (demos and tests).

Every parameter is a config dotted path. Ranges that depend on the run (how many units can freeze, how much
freezing can save in T epochs) are read from the base config once, when the space is built, so the space
itself stays a plain picklable object.
"""

from __future__ import annotations

import math
from typing import Any

from spfde_search.config import Config, ConfigError

from ._base import register_space

__all__ = [
    "JointSpace",
    "PaperSpace",
    "SmokeSpace",
    "PAPER_SPARSITY",
    "PAPER_FREEZE",
    "PAPER_SIEVE",
    "paper_points",
    "freezing_limits",
]

STEP = 0.025  # grid of freezing targets and sieve fractions: contains the paper's 0/10/20/25 %

PAPER_SPARSITY = (0.6, 0.9, 0.95)
PAPER_FREEZE = (0.0, 0.1, 0.2, 0.25)
PAPER_SIEVE = (0.0, 0.1, 0.2, 0.25)
# the paper's headline points first (SPFDE.md §6), then the rest of the 3 x 4 x 4 grid
_HEADLINE = [(0.9, 0.0, 0.0), (0.9, 0.2, 0.2), (0.9, 0.25, 0.25), (0.95, 0.0, 0.0), (0.6, 0.0, 0.0), (0.9, 0.1, 0.1)]


def paper_points(base: Config) -> list[dict[str, Any]]:
    """The paper's hand-picked points as full dotted overrides (MEST, single-shot freezing, base delta tau),
    headline points first. Spaces keep the keys they suggest (see ``initial_points``)."""
    grid = [(s, x, y) for s in PAPER_SPARSITY for x in PAPER_FREEZE for y in PAPER_SIEVE]
    ordered = _HEADLINE + [p for p in grid if p not in _HEADLINE]
    out = []
    for s, x, y in ordered:
        p: dict[str, Any] = {
            "sparsity.algorithm": "mest",
            "sparsity.ratio": s,
            "train.update_interval": base.train.update_interval,
            "freezing.start_epoch": None,
            "freezing.target_flops_reduction": x,
            "sieving.fraction": y,
        }
        if x > 0:
            p["freezing.scheme"] = "single_shot"
        out.append(p)
    return out


def freezing_limits(base: Config) -> tuple[int, float]:
    """(freezable units, largest freezing target x the base schedule can reach with single-shot freezing).

    The maximum comes from the earliest allowed start (delta tau) with every freezable unit frozen; a sampled
    config with a different delta tau or scheme may reach less, and is then recorded as infeasible."""
    from spfde_search.flops import predict  # torch: imported only when a space is built

    T, dt = base.train.epochs, base.train.update_interval
    plain = base.with_overrides({"freezing.target_flops_reduction": 0.0, "freezing.start_epoch": None,
                                 "freezing.units": None, "freezing.scheme": "single_shot"})
    units = predict(plain).freezable_units
    if dt >= T or units < 1:
        return units, 0.0
    try:
        p = predict(plain.with_overrides({"freezing.start_epoch": dt}))
    except ConfigError:
        return units, 0.0
    return units, float(p.freezing_saving_achieved)


def _floor_step(x: float, step: float = STEP) -> float:
    return round(math.floor(x / step + 1e-9) * step, 10)


def _start_epoch_choices(T: int) -> list[int | None]:
    picks = sorted({max(1, round(T * f)) for f in (0.25, 0.375, 0.5, 0.625, 0.75)} - {T})
    return [None, *[p for p in picks if p < T]]


class JointSpace:
    """Sparsity ratio x DST algorithm x delta tau x freezing (target, or start epoch + units) x scheme x sieving.

    Branches: ``freezing.start_epoch`` None -> a FLOPs target ``freezing.target_flops_reduction`` (0 = off);
    an epoch -> an explicit schedule with ``freezing.units`` of the freezable units. ``freezing.scheme`` is
    only sampled when freezing is on."""

    def __init__(self, base: Config, max_sparsity: float = 0.98, max_sieve: float = 0.5, max_freeze: float = 0.5) -> None:
        T = base.train.epochs
        self.units, x_max = freezing_limits(base)
        self.max_freeze = min(max_freeze, _floor_step(x_max))
        self.start_choices = _start_epoch_choices(T) if self.units >= 1 else [None]
        lo = max(1, round(T / 40))
        hi = max(lo, round(T / 8))
        self.interval = (lo, hi)
        self.max_sparsity = max_sparsity
        self.max_sieve = max_sieve

    def __call__(self, trial: Any) -> dict[str, Any] | None:
        trial.suggest_categorical("sparsity.algorithm", ["mest", "rigl", "set", "static"])
        trial.suggest_float("sparsity.ratio", 0.5, self.max_sparsity)
        if self.interval[1] > self.interval[0]:
            trial.suggest_int("train.update_interval", self.interval[0], self.interval[1])
        freezing = False
        start = trial.suggest_categorical("freezing.start_epoch", self.start_choices) if len(self.start_choices) > 1 else None
        if start is None:
            if self.max_freeze > 0:
                freezing = trial.suggest_float("freezing.target_flops_reduction", 0.0, self.max_freeze, step=STEP) > 0
        else:
            freezing = True
            if self.units > 1:
                trial.suggest_int("freezing.units", 1, self.units)
        if freezing:
            trial.suggest_categorical("freezing.scheme", ["single_shot", "single_shot_resume", "periodic", "delayed_periodic"])
        trial.suggest_float("sieving.fraction", 0.0, self.max_sieve, step=STEP)
        return None


class PaperSpace:
    """The paper's grid: sparsity 0.6/0.9/0.95 x SpFDE x%+y% with x, y in {0, 10, 20, 25}% (48 points)."""

    def __init__(self, base: Config) -> None:
        del base

    def __call__(self, trial: Any) -> dict[str, Any] | None:
        trial.suggest_categorical("sparsity.ratio", list(PAPER_SPARSITY))
        trial.suggest_categorical("freezing.target_flops_reduction", list(PAPER_FREEZE))
        trial.suggest_categorical("sieving.fraction", list(PAPER_SIEVE))
        return None


def _paper_grid(base: Config) -> dict[str, list[Any]]:
    del base
    return {
        "sparsity.ratio": list(PAPER_SPARSITY),
        "freezing.target_flops_reduction": list(PAPER_FREEZE),
        "sieving.fraction": list(PAPER_SIEVE),
    }


class SmokeSpace:
    """Three knobs on coarse grids, for demos and tests: sparsity ratio, freezing target, sieve fraction."""

    def __init__(self, base: Config) -> None:
        _, x_max = freezing_limits(base)
        self.max_freeze = min(0.2, math.floor(x_max / 0.05 + 1e-9) * 0.05)

    def __call__(self, trial: Any) -> dict[str, Any] | None:
        trial.suggest_float("sparsity.ratio", 0.5, 0.95, step=0.05)
        if self.max_freeze > 0:
            trial.suggest_float("freezing.target_flops_reduction", 0.0, round(self.max_freeze, 10), step=0.05)
        trial.suggest_float("sieving.fraction", 0.0, 0.4, step=0.1)
        return None


register_space(
    "joint",
    "sparsity ratio x DST algorithm x delta tau x freezing (target or start epoch + units) x scheme x sieving (default)",
    conditional=True,
)(JointSpace)
register_space("paper", "the paper's grid: sparsity 0.6/0.9/0.95 x SpFDE x%+y%, x, y in {0,10,20,25}%", grid=_paper_grid)(
    PaperSpace
)
register_space("smoke", "tiny space for demos and tests: sparsity ratio, freezing target, sieve fraction")(SmokeSpace)
