"""``prepare``: validate a search before Ray starts (base config, space, budget, initial points, name) and find
the cheapest runnable point of the space by probing it (no training, no Ray)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from search_spaces import (
    ProbeTrial,
    ResolvedSpace,
    SpaceError,
    enumerate_corners,
    grid_values,
    initial_points,
    resolve_space,
    run_space,
    sample_random,
)
from trainables import Assessment, Budget, BudgetError, assess

from ..config import Config, ConfigError
from ..data import dataset_spec, default_val_size
from ..storage import exists
from .results import _fmt_params
from .settings import (
    SEARCH_JSON,
    SearchError,
    SearchSettings,
    check_name,
    check_storage,
    experiment_uri,
    half_started,
)


@dataclass
class Prepared:
    settings: SearchSettings
    base: Config
    space: ResolvedSpace
    budget: Budget | None
    dense_flops: float
    cheapest: Assessment | None
    points: list[dict[str, Any]]
    probed: int
    max_compute: float | None = None  # --max-compute in absolute training FLOPs
    address_checked: bool = False  # the CLI checked --address before its banner; drive_search need not again


def _halving_checks(settings: SearchSettings, base: Config, space: ResolvedSpace, dense: float) -> float | None:
    """--fidelity schedule and --max-compute, checked before Ray: returns --max-compute in FLOPs (None: no cap)."""
    cap = None
    if settings.max_compute is not None:
        try:
            b = Budget.parse(settings.max_compute)
        except BudgetError as e:
            raise SearchError(str(e).replace("--flops-budget", "--max-compute").replace(
                "a ratio of dense training FLOPs (0.3, 0.3x, 30%)",
                "a multiple of one full-length dense trial (16x)")) from None
        cap = b.value * dense if b.kind == "ratio" else b.value
    if settings.fidelity != "schedule":
        return cap
    if settings.early_stopping != "none":
        raise SearchError(f"--fidelity schedule runs its own rungs; drop --early-stopping {settings.early_stopping} "
                          "(or use --fidelity none)")
    if "train.epochs" in space.distributions:
        raise SearchError("--fidelity schedule shortens train.epochs itself; the space must not sample train.epochs "
                          "(fix it in the base config)")
    epochs = base.train.epochs
    if settings.grace_period is not None and settings.grace_period >= epochs:
        raise SearchError(f"--grace-period {settings.grace_period}: the first rung must be shorter than "
                          f"train.epochs ({epochs}); give 1 to {epochs - 1}")
    return cap


def _dense_reference(base: Config) -> float:
    from ..method.flops import predict

    plain = base.with_overrides({"freezing.target_flops_reduction": 0.0, "freezing.start_epoch": None,
                                 "freezing.units": None, "sieving.fraction": 0.0})
    try:
        return float(predict(plain).dense_train_flops)
    except ConfigError as e:  # it names its field (model.name: cannot import ...), the line train and flops give
        raise SearchError(str(e)) from None



def _fixed_chooser(fixed: Mapping[str, Any]) -> Callable[[str, Any], Any]:
    """Probe policy: the fixed value where given, else the distribution's low end."""

    def choose(name: str, dist: Any) -> Any:
        return fixed[name] if name in fixed else grid_values(dist, 2)[0]

    return choose


def _probe_cheapest(
    space: ResolvedSpace, base: dict[str, Any], budget: Budget | None, fallback: float, seed: int, extra: list[dict[str, Any]]
) -> tuple[Assessment | None, Assessment | None, int]:
    """(cheapest runnable point, first unrunnable point, points probed): space corners, random points and the
    initial points, then (with a budget none of them meets) coordinate descent from the cheapest one."""
    cache: dict[str, Assessment] = {}

    def run(params: dict[str, Any]) -> Assessment:
        key = json.dumps(params, sort_keys=True, default=str)
        if key not in cache:
            cache[key] = assess(params, base, budget, fallback)
        return cache[key]

    cands = [t.params for t in enumerate_corners(space.fn, limit=48)]
    cands += [t.params for t in sample_random(space.fn, 48, seed)]
    for p in extra:
        t = ProbeTrial(_fixed_chooser(p))
        cands.append(run_space(space.fn, t))
    results = [run(p) for p in cands]
    runnable = [a for a in results if a.runnable]
    bad = next((a for a in results if not a.runnable), None)
    if not runnable:
        return None, bad, len(cache)
    best = min(runnable, key=lambda a: a.run_train_flops)
    if budget is not None and not best.feasible:
        for _ in range(2):  # coordinate descent over each parameter's 5-point grid
            improved = False
            cur = best.params
            t0 = ProbeTrial(_fixed_chooser(cur))
            run_space(space.fn, t0)
            for name, dist in t0.distributions.items():
                for v in grid_values(dist, 5):
                    fixed = {**best.params, name: v}
                    t = ProbeTrial(_fixed_chooser(fixed))
                    a = run(run_space(space.fn, t))
                    if a.runnable and a.run_train_flops < best.run_train_flops:
                        best, improved = a, True
            if not improved or best.feasible:
                break
    return best, bad, len(cache)


def prepare(settings: SearchSettings, *, resume: bool = False) -> Prepared:
    """Validate everything before Ray starts: base config, space, sampler, budget, name. SearchError if bad."""
    check_name(settings.name)
    check_storage(settings.storage_path)
    try:
        base = Config.parse(settings.base_config)
        if not resume and base.data.val_size is None:  # a search selects on validation unless told otherwise
            base = base.with_overrides({"data.val_size": default_val_size(base.data)})
            settings.base_config = base.to_dict()  # search.json keeps it: a resume and every trial see the same
        dataset_spec(base.data)  # a validation split larger than what is left, named before anything else
    except ConfigError as e:
        raise SearchError(f"base config: {e}") from None
    try:
        space = resolve_space(settings.space, base, settings.space_text, budget_range=settings.budget_range)
    except SpaceError as e:
        raise SearchError(str(e)) from None
    if space.text is not None and settings.space_text is None:
        settings.space_text = space.text
    budget = None
    if settings.flops_budget is not None:
        try:
            budget = Budget.parse(settings.flops_budget)
        except BudgetError as e:
            raise SearchError(str(e)) from None
    dense = _dense_reference(base)
    cap = _halving_checks(settings, base, space, dense)
    points: list[dict[str, Any]] = []
    if settings.initial:
        try:
            points = initial_points(settings.initial, space, base, limit=max(1, math.ceil(settings.num_samples / 2)))
        except SpaceError as e:
            raise SearchError(str(e)) from None
        if not points:
            raise SearchError(f"--initial {settings.initial}: the space {settings.space!r} cannot express any of those points")
    if space.stratified is not None:  # the budget space: the first trials' targets spread over the cost axis
        from .optuna_search import startup_trials

        n = min(settings.num_samples, max(4, startup_trials(settings.num_samples)))
        points = points + space.stratified(n, settings.seed)
    cheapest, bad, probed = _probe_cheapest(space, base.to_dict(), budget, dense, settings.seed or 0, points)
    if cheapest is None:
        reason = bad.reason if bad is not None else "no point could be sampled"
        raise SearchError(f"no config in the space {settings.space!r} can run with this base config; e.g. {reason}")
    if budget is not None and not cheapest.feasible:
        raise SearchError(
            f"--flops-budget {budget.text} ({budget.describe()}) is below the cheapest config of the space "
            f"{settings.space!r}: {cheapest.run_train_flops:.4g} training FLOPs "
            f"({(cheapest.run_flops_ratio or float('nan')):.4f} of dense) at {_fmt_params(cheapest.params)}"
        )
    if settings.sampler == "gp" and space.grid is not None:
        pass  # any sampler can run a grid space; auto picks the grid sampler
    if settings.study_storage is not None:
        from .study import check_new_study, check_study_storage

        check_study_storage(settings.study_storage)
        if not resume:
            check_new_study(settings)
    uri = experiment_uri(settings.storage_path, settings.name)
    if not resume and (exists(f"{uri}/tuner.pkl") or exists(f"{uri}/{SEARCH_JSON}")):
        raise SearchError(
            half_started(uri, settings.name) or
            f"a search named {settings.name!r} already exists at {uri}; continue it with --resume {settings.name} "
            "or choose another --name"
        )
    return Prepared(settings, base, space, budget, dense, cheapest, points, probed, cap)
