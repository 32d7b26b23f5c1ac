"""Built-in spaces: ``joint`` (default), ``paper`` (the paper's grid) and ``smoke`` (demos and tests).

Every parameter is a config dotted path but one: ``joint`` and ``smoke`` sample the freezing target as
``freezing.saving_fraction`` (auxiliary, see ``search_spaces._base.AUXILIARY``), a fraction of the largest
saving the point's own schedule can reach, and return the resolved ``freezing.target_flops_reduction`` as a
constant; so no sampled point has an impossible freezing target, and the trial's config (and an exported YAML)
holds the real target. ``paper`` keeps the paper's targets but drops those that no point of its grid reaches.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from spfde_search.config import Config, ConfigError, apply_overrides

from ._base import config_params, register_space

__all__ = [
    "JointSpace",
    "PaperSpace",
    "SmokeSpace",
    "PAPER_SPARSITY",
    "PAPER_FREEZE",
    "PAPER_SIEVE",
    "paper_points",
    "freezing_limits",
    "max_freezing_saving",
    "resolve_saving_fraction",
    "saving_fraction_for",
]

STEP = 0.025  # grid of freezing targets and sieve fractions: contains the paper's 0/10/20/25 %

PAPER_SPARSITY = (0.6, 0.9, 0.95)
PAPER_FREEZE = (0.0, 0.1, 0.2, 0.25)
PAPER_SIEVE = (0.0, 0.1, 0.2, 0.25)
# the paper's headline points first (docs/method.md §6), then the rest of the 3 x 4 x 4 grid
_HEADLINE = [(0.9, 0.0, 0.0), (0.9, 0.2, 0.2), (0.9, 0.25, 0.25), (0.95, 0.0, 0.0), (0.6, 0.0, 0.0), (0.9, 0.1, 0.1)]


def paper_points(base: Config) -> list[dict[str, Any]]:
    """The paper's hand-picked points as full dotted overrides (MEST, single-shot freezing with the paper's
    per-unit LR schedule, base delta tau), headline points first. Spaces keep the keys they suggest (see
    ``initial_points``)."""
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
            p["freezing.lr_schedule"] = "per_unit"  # the paper's (docs/method.md §3); `global` is ours
        out.append(p)
    return out


def freezing_limits(base: Config) -> tuple[int, float]:
    """(freezable units, largest freezing target the base config's own schedule can reach)."""
    from spfde_search.method.flops import predict  # torch: imported only when a space is built

    plain = base.with_overrides({"freezing.target_flops_reduction": 0.0, "freezing.start_epoch": None,
                                 "freezing.units": None})
    return predict(plain).freezable_units, max_freezing_saving(plain)


_NO_TARGET = {"freezing.target_flops_reduction": 0.0, "freezing.start_epoch": None, "freezing.units": None}


def max_freezing_saving(cfg: Config | Mapping[str, Any], profiles: dict[str, Any] | None = None) -> float:
    """The largest ``freezing.target_flops_reduction`` this config's schedule can reach (its sparsity, DST
    algorithm, delta tau, scheme, freeze fraction, sieving), as the FLOPs predictor's own target solver
    (``plan_freezing``) reports it; 0.0 when freezing can save nothing (say delta tau >= T). ConfigError if the
    config cannot run at all. ``profiles`` caches the model profiles (a meta-device forward, most of the cost)."""
    from spfde_search.method.flops import plan_all
    from spfde_search.method.freezing import FreezingTargetError

    c = cfg if isinstance(cfg, Config) else Config.parse(cfg)
    c = c.with_overrides({**_NO_TARGET, "freezing.target_flops_reduction": _ASK})
    profile, spec = cached_profile(c, profiles if profiles is not None else {})
    try:
        plan_all(c, profile, spec)
    except FreezingTargetError as e:
        return max(0.0, float(e.max_reduction))
    except ConfigError:
        if plan_all(c.with_overrides(_NO_TARGET), profile, spec).freeze.freezable < 1:
            return 0.0  # freeze_fraction covers no whole unit
        raise
    return _ASK


def cached_profile(c: Config, cache: dict[str, Any]) -> tuple[Any, Any]:
    """``build_profile(c)`` cached by what it depends on (model, data, sparse-layer choice; not the ratio)."""
    from spfde_search.method.flops import build_profile

    d = c.to_dict()
    key = json.dumps([d["model"], d["data"], {k: v for k, v in d["sparsity"].items() if k != "ratio"}], sort_keys=True)
    if key not in cache:
        cache[key] = build_profile(c)
    return cache[key]


_ASK = 0.999999  # a target no schedule reaches: the solver then reports the maximum it can


def resolve_saving_fraction(fraction: float, max_saving: float) -> float:
    """``freezing.target_flops_reduction`` for a saving fraction in [0, 1]: fraction x max, rounded to 6
    decimals but never above the maximum (so the solver always meets it)."""
    x = round(fraction * max_saving, 6)
    if x > max_saving:
        x = math.floor(max_saving * 1e6) / 1e6
    return max(0.0, x)


class _Resolver:
    """Resolves ``freezing.saving_fraction`` against the point's own schedule (cached: probing and the sampler
    ask for the same schedules many times; a dict, so the space still pickles)."""

    def __init__(self, base: Config) -> None:
        self.base = base.to_dict()
        self.cache: dict[str, float] = {}
        self.profiles: dict[str, Any] = {}

    def max_saving(self, params: Mapping[str, Any]) -> float:
        key = json.dumps(sorted(params.items()), default=str)
        if key not in self.cache:
            if len(self.cache) > 4096:
                self.cache.clear()
            try:
                self.cache[key] = max_freezing_saving(apply_overrides(self.base, {**params, **_NO_TARGET}), self.profiles)
            except ConfigError:
                self.cache[key] = 0.0  # the point cannot run anyway; assess() reports why
        return self.cache[key]

    def target(self, trial: Any, fraction: float) -> float:
        if fraction <= 0:
            return 0.0
        return resolve_saving_fraction(fraction, self.max_saving(config_params(trial.params)))


def _start_epoch_choices(T: int) -> list[int | None]:
    picks = sorted({max(1, round(T * f)) for f in (0.25, 0.375, 0.5, 0.625, 0.75)} - {T})
    return [None, *[p for p in picks if p < T]]


SCHEMES = ["single_shot", "single_shot_resume", "periodic", "delayed_periodic"]  # four distinct schedules
SINGLE_SHOT = ("single_shot", "single_shot_resume")  # the schemes an explicit start epoch applies to
FRACTION_STEP = 0.05  # grid of freezing.saving_fraction in the joint space (0 = freezing off)


def _lr_schedules() -> list[str]:
    """The choices of ``freezing.lr_schedule`` (empty where the config has no such field)."""
    from spfde_search.config import field_info

    try:
        info = field_info("freezing.lr_schedule")
    except KeyError:
        return []
    return [str(c) for c in (info.choices or ())]


class JointSpace:
    """Sparsity ratio x DST algorithm x delta tau x sieving x freezing (reachable target, or start epoch +
    units) x scheme x LR schedule.

    Branches: ``freezing.start_epoch`` None -> ``freezing.saving_fraction`` f of the largest saving this
    point's schedule can reach (0 = freezing off), resolved to ``freezing.target_flops_reduction``, with
    ``freezing.scheme`` sampled among all four schemes before the target is resolved (the reachable saving
    depends on it), only when freezing is asked for; an epoch -> an explicit single-shot schedule with
    ``freezing.units`` of the freezable units and the base config's single-shot scheme (``single_shot`` unless
    the base says ``single_shot_resume``): periodic schemes fix their own pattern start, so an explicit start
    would give one schedule two names, and Optuna needs one choice list per parameter name.

    Only parameters that change the run are sampled (define-by-run): delta tau only where the epoch plan reads it
    (``method.plan.interval_matters``: a dynamic algorithm, sieving, or freezing other than ``periodic``), and
    ``freezing.lr_schedule`` only where per_unit and global differ (``method.freezing.lr_schedule_matters``:
    a single-shot schedule that freezes a unit before the end; under periodic schemes they are one schedule)."""

    def __init__(self, base: Config, max_sparsity: float = 0.98, max_sieve: float = 0.5) -> None:
        T = base.train.epochs
        self.units, _ = freezing_limits(base)
        self.start_choices = _start_epoch_choices(T) if self.units >= 1 else [None]
        lo = max(1, round(T / 40))
        hi = max(lo, round(T / 8))
        self.interval = (lo, hi)
        self.max_sparsity = max_sparsity
        self.max_sieve = max_sieve
        self.resolver = _Resolver(base)
        # can any point reach a positive target? (the shortest delta tau and the most forgiving scheme)
        shortest = {"train.update_interval": lo} if hi > lo else {}
        self.can_target = self.units >= 1 and any(
            self.resolver.max_saving({**shortest, "freezing.scheme": sc}) > 0 for sc in SCHEMES
        )
        self.lr_schedules = _lr_schedules()
        self.explicit_scheme = None if base.freezing.scheme in SINGLE_SHOT else "single_shot"

    def __call__(self, trial: Any) -> dict[str, Any] | None:
        from spfde_search.method.freezing import lr_schedule_matters
        from spfde_search.method.plan import interval_matters

        base = self.resolver.base  # the base config as a dict (attributes a pickled older space also has)
        algorithm = trial.suggest_categorical("sparsity.algorithm", ["mest", "rigl", "set", "static"])
        trial.suggest_float("sparsity.ratio", 0.5, self.max_sparsity)
        sieve = trial.suggest_float("sieving.fraction", 0.0, self.max_sieve, step=STEP)
        out: dict[str, Any] = {}
        f = 0.0
        scheme: str | None = None  # the scheme of the freezing this point asks for (None: no freezing)
        start = trial.suggest_categorical("freezing.start_epoch", self.start_choices) if len(self.start_choices) > 1 else None
        if start is None:
            if self.can_target:
                f = trial.suggest_float("freezing.saving_fraction", 0.0, 1.0, step=FRACTION_STEP)
                if f > 0:
                    scheme = trial.suggest_categorical("freezing.scheme", SCHEMES)
        else:
            if self.units > 1:
                trial.suggest_int("freezing.units", 1, self.units)
            if self.explicit_scheme is not None:
                out["freezing.scheme"] = self.explicit_scheme
            scheme = self.explicit_scheme or base["freezing"]["scheme"]
        # delta tau only where the plan reads it (it sets the reachable target, so it comes before that)
        interval = base["train"]["update_interval"]
        if self.interval[1] > self.interval[0] and interval_matters(algorithm, sieve > 0, scheme):
            interval = trial.suggest_int("train.update_interval", self.interval[0], self.interval[1])
        if f > 0:
            x = self.resolver.target(trial, f)
            if x > 0:
                out["freezing.target_flops_reduction"] = x
            else:
                scheme = None  # this schedule cannot freeze: no freezing after all
        if (scheme is not None and len(self.lr_schedules) > 1
                and lr_schedule_matters(scheme, base["train"]["epochs"], interval, start, base["freezing"]["resume_epochs"])):
            trial.suggest_categorical("freezing.lr_schedule", self.lr_schedules)
        return out or None


class PaperSpace:
    """The paper's grid: sparsity 0.6/0.9/0.95 x SpFDE x%+y% with x, y in {0, 10, 20, 25}% (48 points), minus
    the freezing targets some point of the grid cannot reach with this base config's schedule (a short run
    cannot save 20%), so the grid has no impossible point."""

    def __init__(self, base: Config) -> None:
        resolver = _Resolver(base)
        reach = min(
            resolver.max_saving({"sparsity.ratio": s, "sieving.fraction": y}) for s in PAPER_SPARSITY for y in PAPER_SIEVE
        )
        self.freeze = [x for x in PAPER_FREEZE if x <= reach]

    def __call__(self, trial: Any) -> dict[str, Any] | None:
        trial.suggest_categorical("sparsity.ratio", list(PAPER_SPARSITY))
        trial.suggest_categorical("freezing.target_flops_reduction", self.freeze)
        trial.suggest_categorical("sieving.fraction", list(PAPER_SIEVE))
        return None


def _paper_grid(base: Config) -> dict[str, list[Any]]:
    return {
        "sparsity.ratio": list(PAPER_SPARSITY),
        "freezing.target_flops_reduction": PaperSpace(base).freeze,
        "sieving.fraction": list(PAPER_SIEVE),
    }


class SmokeSpace:
    """Three knobs on coarse grids, for demos and tests: sparsity ratio, freezing saving fraction (0, 1/4, ...,
    1 of what the point can reach, resolved to ``freezing.target_flops_reduction``), sieve fraction."""

    def __init__(self, base: Config) -> None:
        self.resolver = _Resolver(base)
        self.can_target = self.resolver.max_saving({}) > 0

    def __call__(self, trial: Any) -> dict[str, Any] | None:
        trial.suggest_float("sparsity.ratio", 0.5, 0.95, step=0.05)
        trial.suggest_float("sieving.fraction", 0.0, 0.4, step=0.1)
        if self.can_target:
            x = self.resolver.target(trial, trial.suggest_float("freezing.saving_fraction", 0.0, 1.0, step=0.25))
            if x > 0:
                return {"freezing.target_flops_reduction": x}
        return None


def saving_fraction_for(
    base: Config, point: Mapping[str, Any], step: float | None = None, resolver: _Resolver | None = None
) -> float | None:
    """The ``freezing.saving_fraction`` that expresses ``point``'s freezing target in this base config's spaces;
    None if the point's schedule cannot reach that target. Without ``step`` it is exact: the fraction resolves
    (``resolve_saving_fraction``) to the point's target itself, so an enqueued paper point trains the paper's
    20%, not the nearest grid step's 20.2%; with ``step``, the nearest fraction on that grid."""
    x = float(point.get("freezing.target_flops_reduction", 0.0) or 0.0)
    if x <= 0:
        return 0.0
    mx = (resolver or _Resolver(base)).max_saving(config_params(point))
    if x > mx or mx <= 0:
        return None
    if step is not None:
        return round(round(x / mx / step) * step, 10)
    f = min(1.0, x / mx)
    for _ in range(8):  # x / mx * mx can miss x by an ulp; resolving rounds to 6 decimals, so this rarely moves
        got = resolve_saving_fraction(f, mx)
        if got == x:
            break
        f = math.nextafter(f, math.inf if got < x else -math.inf)
    return f


register_space(
    "joint",
    "sparsity ratio x DST algorithm x delta tau x sieving x freezing (reachable target or start epoch + units) x scheme"
    " x LR schedule (default)",
    conditional=True,
)(JointSpace)
register_space("paper", "the paper's grid: sparsity 0.6/0.9/0.95 x SpFDE x%+y%, x, y in {0,10,20,25}%", grid=_paper_grid)(
    PaperSpace
)
register_space("smoke", "tiny space for demos and tests: sparsity ratio, reachable freezing target, sieve fraction")(SmokeSpace)
