"""The budget-first space (``--space budget``, docs/method.md §7): choose *where on the cost axis* a trial lands, then
search only the *split* of that budget.

A trial samples its target training-FLOPs ratio ``budget.flops_ratio`` (auxiliary, log-uniform over the range)
and the split: DST algorithm, sieve fraction, freezing share (``freezing.saving_fraction``) and scheme, delta tau
(only where the epoch plan reads it) and LR schedule (only where per_unit and global differ). ``sparsity.ratio`` is then *solved* so the FLOPs predictor gives the target (``RatioSolver``), the
freezing share turned into a fixed freezing target first, so the cost is (nearly) continuous and monotone in the
sparsity while it is solved. The trial's config holds the resolved fields (``sparsity.ratio``,
``freezing.target_flops_reduction``): an exported config reruns with no space. A split that cannot reach its target
(``target_miss``) is skipped by the searcher before anything trains and the sampler is asked again.

Why: a schedule's training FLOPs are known exactly before training, and the decisive search-vs-grid benchmark
lost only on where its trials landed on the cost axis (benchmarks/RESULTS.md; docs/search.md).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from typing import Any

from spfde_search.config import Config, ConfigError, apply_overrides

from ._base import register_space
from ._builtin import (
    _NO_TARGET,
    FRACTION_STEP,
    SCHEMES,
    STEP,
    _lr_schedules,
    cached_profile,
    freezing_limits,
    max_freezing_saving,
    resolve_saving_fraction,
)

__all__ = [
    "BudgetSpace",
    "RatioSolver",
    "DEFAULT_BUDGET_RANGE",
    "TARGET",
    "TARGET_TOLERANCE",
    "target_miss",
    "stratified_targets",
]

TARGET = "budget.flops_ratio"  # the auxiliary trial parameter: target training FLOPs / dense training FLOPs
DEFAULT_BUDGET_RANGE = (0.025, 0.45)  # of dense training FLOPs; clipped to what the base config reaches
TARGET_TOLERANCE = 0.01  # a trial's predicted ratio is within 1% of its target, or the split is resampled
SPARSITY_RANGE = (0.0, 0.99)  # where sparsity.ratio is solved
ALGORITHMS = ["mest", "rigl", "set", "static"]
_SOLVE_RTOL = 1e-4  # the solver stops this close to the target (relative), far inside TARGET_TOLERANCE


def target_miss(target: float, ratio: float | None) -> str:
    """Why a predicted ratio does not meet its target ('' when within ``TARGET_TOLERANCE``): the one rule the
    searcher applies before a budget-space trial may train."""
    if ratio is None or not math.isfinite(ratio):
        return f"the split cannot reach its target {TARGET}={target:.4g}: its FLOPs cannot be predicted"
    if abs(ratio / target - 1) <= TARGET_TOLERANCE:
        return ""
    return (f"the split cannot reach its target {TARGET}={target:.4g}: the closest it gets is {ratio:.4g} of dense "
            f"(sparsity.ratio in [{SPARSITY_RANGE[0]:g}, {SPARSITY_RANGE[1]:g}])")


def stratified_targets(low: float, high: float, n: int, seed: int | None = 0) -> list[float]:
    """``n`` targets stratified on the log-cost axis, for the first trials: a randomly shifted base-2 van der
    Corput sequence (Cranley-Patterson rotation), so every prefix (the first 2, the first 4, ...) already spans
    the range. Optuna's QMCSampler would not do here: it samples its first trial independently and infers its
    space from past trials, while Ray asks for several trials before any has finished."""
    shift = random.Random(seed).random()
    out = []
    for i in range(1, n + 1):
        u, f, k = 0.0, 0.5, i
        while k:
            u, k, f = u + f * (k & 1), k >> 1, f / 2
        u = (u + shift) % 1.0
        out.append(round(math.exp(math.log(low) + u * (math.log(high) - math.log(low))), 6))
    return out


class RatioSolver:
    """Predicted training-FLOPs ratio of base + params, and the ``sparsity.ratio`` that hits a target ratio.

    The ratio is ``simulate(plan_all(cfg)).train_flops / dense`` with the model profile cached: the same
    functions ``method.flops.predict`` composes (0.2 ms instead of 3 ms, so probing the space stays fast); the
    searcher checks every suggestion with ``predict`` itself (``target_miss``). Dense training FLOPs are
    ``predict(base).dense_train_flops``: they depend on the model, data and epochs only."""

    def __init__(self, base: Config) -> None:
        from spfde_search.method.flops import predict

        self.base = base.to_dict()
        self.dense = float(predict(base.with_overrides({**_NO_TARGET, "sieving.fraction": 0.0})).dense_train_flops)
        self.profiles: dict[str, Any] = {}
        self.cache: dict[str, Any] = {}

    def config(self, params: Mapping[str, Any]) -> Config:
        return Config.parse(apply_overrides(self.base, dict(params)))

    def ratio(self, params: Mapping[str, Any]) -> float:
        from spfde_search.method.flops import plan_all, simulate

        cfg = self.config(params)
        profile, spec = cached_profile(cfg, self.profiles)
        plans = plan_all(cfg, profile, spec)
        return simulate(profile, plans.run, plans.samples_per_epoch, cfg.train.batch_size).train_flops / self.dense

    def solve_sparsity(self, fixed: Mapping[str, Any], target: float) -> tuple[float, float]:
        """(sparsity.ratio, its ratio) closest to ``target`` for the other fields ``fixed``: Illinois false
        position on ratio(s) - target, which falls monotonically in s (density); the bound when out of reach."""
        lo, hi = SPARSITY_RANGE

        def g(s: float) -> float:
            return self.ratio({**fixed, "sparsity.ratio": s}) - target

        a, b = lo, hi
        fa, fb = g(a), g(b)
        if fa <= 0:
            return a, fa + target  # cheaper than the target even at the lowest sparsity
        if fb >= 0:
            return b, fb + target  # dearer than the target even at the highest sparsity
        best, fbest = (a, fa) if abs(fa) < abs(fb) else (b, fb)
        for _ in range(60):
            c = b - fb * (b - a) / (fb - fa)
            fc = g(c)
            if abs(fc) < abs(fbest):
                best, fbest = c, fc
            if abs(fc) <= _SOLVE_RTOL * target or abs(b - a) < 1e-9:
                break
            if fc * fb < 0:
                a, fa = b, fb
            else:
                fa /= 2  # Illinois: halve the stale end's value so the bracket shrinks from both sides
            b, fb = c, fc
        s = round(best, 6)
        return s, g(s) + target

    def solve(self, split: Mapping[str, Any], target: float) -> dict[str, Any]:
        """The resolved fields of a split at a target: ``sparsity.ratio`` and, with freezing,
        ``freezing.target_flops_reduction``. The freezing share f becomes the target x = f x the most the split
        can save, found at the sparsity that meets the budget without freezing; with x fixed the sparsity is
        solved again (the freezing plan x picks, a start epoch or a number of periodic units, saves nearly the
        same fraction at any sparsity, so the cost stays continuous near the answer; a jump that misses the target
        is caught by ``target_miss``). Cached per (split, target)."""
        key = json.dumps([sorted(split.items()), target], default=str)
        if key in self.cache:
            return dict(self.cache[key])
        if len(self.cache) > 4096:
            self.cache.clear()
        split = dict(split)
        f = float(split.pop("freezing.saving_fraction", 0.0) or 0.0)
        fixed = {**split, **_NO_TARGET}
        s, _ = self.solve_sparsity(fixed, target)
        out: dict[str, Any] = {"sparsity.ratio": s}
        if f > 0:
            try:
                at = apply_overrides(self.base, {**fixed, "sparsity.ratio": s})
                x = resolve_saving_fraction(f, max_freezing_saving(at, self.profiles))
                if x > 0:
                    out = {"sparsity.ratio": self._solve_frozen(fixed, x, s, target), "freezing.target_flops_reduction": x}
            except ConfigError:
                pass  # this split cannot freeze: the searcher's check reports it if the target is missed too
        self.cache[key] = out
        return dict(out)


    def _solve_frozen(self, fixed: Mapping[str, Any], x: float, s: float, target: float) -> float:
        """The sparsity meeting ``target`` with freezing target ``x``. A costed freezing target is slow on long
        runs (the predictor simulates every candidate plan: ~0.1 s at 160 epochs), so instead of a root search
        on it: freezing keeps a nearly constant fraction k of the no-freeze cost, so solve the cheap no-freeze
        cost for target / k and re-measure k there (a fixed-point iteration; one or two costed evaluations)."""
        frozen = {**fixed, "freezing.target_flops_reduction": x}
        best, err = s, math.inf
        for _ in range(6):
            r = self.ratio({**frozen, "sparsity.ratio": s})
            if abs(r / target - 1) < err:
                best, err = s, abs(r / target - 1)
            if err <= 10 * _SOLVE_RTOL:
                break
            keep = r / self.ratio({**fixed, "sparsity.ratio": s})
            s_next, _ = self.solve_sparsity(fixed, target / keep)
            if s_next == s:
                break
            s = s_next
        return best


class BudgetSpace:
    """Target FLOPs ratio (log-uniform) x its split: DST algorithm, delta tau, sieve fraction, freezing share and
    scheme, LR schedule; ``sparsity.ratio`` (and the freezing target) solved from the target.

    ``low``/``high`` (default ``DEFAULT_BUDGET_RANGE``) are clipped to what the base config can reach; a range
    that is empty or entirely out of reach raises ``SpaceError`` naming the reachable range."""

    def __init__(self, base: Config, low: float | None = None, high: float | None = None, max_sieve: float = 0.5) -> None:
        from ._base import SpaceError

        lo_req, hi_req = DEFAULT_BUDGET_RANGE if low is None and high is None else (low, high)
        if lo_req is None or hi_req is None:
            raise SpaceError("--budget-range needs two numbers, LOW HIGH (ratios of dense training FLOPs)")
        if not (0 < lo_req <= 1 and 0 < hi_req <= 1):
            raise SpaceError(f"--budget-range {lo_req:g} {hi_req:g}: both ends must be ratios of dense training "
                             "FLOPs in (0, 1], e.g. --budget-range 0.025 0.45")
        if lo_req >= hi_req:
            raise SpaceError(f"--budget-range {lo_req:g} {hi_req:g}: LOW must be below HIGH, e.g. --budget-range 0.025 0.45")
        T = base.train.epochs
        self.units, _ = freezing_limits(base)
        dlo = max(1, round(T / 40))
        dhi = max(dlo, round(T / 8))
        self.interval = (dlo, dhi)
        self.max_sieve = max_sieve
        self.solver = RatioSolver(base)
        shortest = {"train.update_interval": dlo} if dhi > dlo else {}
        self.can_freeze = self.units >= 1 and any(
            max_freezing_saving(apply_overrides(self.solver.base, {**shortest, "freezing.scheme": sc}), self.solver.profiles) > 0
            for sc in SCHEMES
        )
        self.lr_schedules = _lr_schedules()
        self.reach = self._reach()
        low_c, high_c = max(lo_req, self.reach[0]), min(hi_req, self.reach[1])
        if low_c >= high_c:
            raise SpaceError(
                f"--budget-range {lo_req:g} {hi_req:g} lies outside what this base config can reach "
                f"({self.reach[0]:.4g} to {self.reach[1]:.4g} of dense training FLOPs); give a range inside it")
        self.low, self.high = math.ceil(low_c * 1e6 - 1e-6) / 1e6, math.floor(high_c * 1e6 + 1e-6) / 1e6  # inside
        self.requested = (lo_req, hi_req)

    def _reach(self) -> tuple[float, float]:
        """(cheapest, dearest) ratio any split reaches: the highest sparsity with the most sieving and freezing,
        and the lowest sparsity with neither (RigL's dense pass and the shortest delta tau cost most)."""
        s_lo, s_hi = SPARSITY_RANGE
        dts = sorted(set(self.interval))
        dear = 0.0
        cheapest: tuple[float, dict[str, Any]] = (math.inf, {})
        for alg in ALGORITHMS:
            for dt in dts:
                common = {"sparsity.algorithm": alg, "train.update_interval": dt, **_NO_TARGET}
                dear = max(dear, self.solver.ratio({**common, "sparsity.ratio": s_lo, "sieving.fraction": 0.0}))
                at = {**common, "sparsity.ratio": s_hi, "sieving.fraction": self.max_sieve}
                cheapest = min(cheapest, (self.solver.ratio(at), at), key=lambda c: c[0])
        cheap, at = cheapest
        if self.can_freeze:  # the most freezing on the cheapest split (freezing saves about the same share of any)
            for sc in SCHEMES:
                p = {**at, "freezing.scheme": sc}
                x = resolve_saving_fraction(1.0, max_freezing_saving(apply_overrides(self.solver.base, p),
                                                                     self.solver.profiles))
                if x > 0:
                    cheap = min(cheap, self.solver.ratio({**p, "freezing.target_flops_reduction": x}))
        return cheap * (1 + TARGET_TOLERANCE / 2), min(1.0, dear * (1 - TARGET_TOLERANCE / 2))

    def describe(self) -> str:
        clipped = "" if (self.low, self.high) == tuple(round(v, 6) for v in self.requested) else (
            f", clipped from {self.requested[0]:g}-{self.requested[1]:g} to what this base config reaches "
            f"({self.reach[0]:.4g}-{self.reach[1]:.4g})")
        return f"target training FLOPs {self.low:.4g}-{self.high:.4g} of dense, log-uniform{clipped}"

    def stratified_points(self, n: int, seed: int | None) -> list[dict[str, Any]]:
        """The first ``n`` trials' targets, stratified on the log-cost axis (the rest of each split is sampled)."""
        return [{TARGET: t} for t in stratified_targets(self.low, self.high, n, seed)]

    def __call__(self, trial: Any) -> dict[str, Any] | None:
        from spfde_search.method.freezing import lr_schedule_matters
        from spfde_search.method.plan import interval_matters

        target = trial.suggest_float(TARGET, self.low, self.high, log=True)
        split: dict[str, Any] = {"sparsity.algorithm": trial.suggest_categorical("sparsity.algorithm", ALGORITHMS)}
        split["sieving.fraction"] = trial.suggest_float("sieving.fraction", 0.0, self.max_sieve, step=STEP)
        scheme: str | None = None
        if self.can_freeze:
            f = trial.suggest_float("freezing.saving_fraction", 0.0, 1.0, step=FRACTION_STEP)
            if f > 0:
                split["freezing.scheme"] = scheme = trial.suggest_categorical("freezing.scheme", SCHEMES)
                split["freezing.saving_fraction"] = f
        # delta tau only where the plan reads it (only parameters that change the run are sampled)
        if self.interval[1] > self.interval[0] and interval_matters(split["sparsity.algorithm"],
                                                                     split["sieving.fraction"] > 0, scheme):
            split["train.update_interval"] = trial.suggest_int("train.update_interval", *self.interval)
        out = self.solver.solve(split, target)
        if ("freezing.target_flops_reduction" in out and scheme is not None and len(self.lr_schedules) > 1
                and lr_schedule_matters(scheme, self.solver.base["train"]["epochs"], 1)):  # a target: Δτ unread
            trial.suggest_categorical("freezing.lr_schedule", self.lr_schedules)
        base_f = self.solver.base.get("freezing", {})
        for k, v in _NO_TARGET.items():  # the trial's config holds exactly the schedule that was solved
            if k not in out and base_f.get(k.split(".", 1)[1]) != v:
                out[k] = v
        return out


def _budget_space(base: Config, budget_range: tuple[float, float] | None = None) -> BudgetSpace:
    return BudgetSpace(base, *(budget_range or (None, None)))


register_space(
    "budget",
    "budget first: target training-FLOPs ratio (log-uniform, stratified first trials) x its split (DST algorithm, "
    "delta tau, sieving, freezing share and scheme, LR schedule); sparsity solved from the target",
    conditional=True,
    options=("budget_range",),
)(_budget_space)
