"""Define-by-run Optuna search spaces whose parameter names are config dotted paths.

``resolve_space("joint" | "budget" | "paper" | "smoke" | "my_space.yaml", base)`` builds and validates a space
for a base config; ``initial_points("paper", space, base)`` gives the paper's points restricted to that space.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from spfde_search.choices import INITIAL_POINT_SETS, looks_like_space_file
from spfde_search.config import Config

from ._base import (
    AUXILIARY,
    REPORTED,
    SPACES,
    DefineByRun,
    ProbeTrial,
    SpaceEntry,
    SpaceError,
    collect_distributions,
    config_params,
    enumerate_corners,
    grid_values,
    register_space,
    run_space,
    sample_random,
    trial_config,
    trial_params,
    validate_distribution,
    validate_space,
)
from ._budget import (
    DEFAULT_BUDGET_RANGE,
    TARGET,
    TARGET_TOLERANCE,
    BudgetSpace,
    RatioSolver,
    stratified_targets,
    target_miss,
)
from ._builtin import (
    JointSpace,
    PaperSpace,
    SmokeSpace,
    _Resolver,
    freezing_limits,
    max_freezing_saving,
    paper_points,
    resolve_saving_fraction,
    saving_fraction_for,
)
from ._yaml import YamlSpace, load_space_file, parse_space_mapping

__all__ = [
    "AUXILIARY",
    "REPORTED",
    "SPACES",
    "BudgetSpace",
    "DEFAULT_BUDGET_RANGE",
    "RatioSolver",
    "TARGET",
    "TARGET_TOLERANCE",
    "stratified_targets",
    "target_miss",
    "trial_params",
    "DefineByRun",
    "ProbeTrial",
    "ResolvedSpace",
    "SpaceEntry",
    "SpaceError",
    "JointSpace",
    "PaperSpace",
    "SmokeSpace",
    "YamlSpace",
    "collect_distributions",
    "config_params",
    "enumerate_corners",
    "freezing_limits",
    "grid_values",
    "initial_points",
    "load_space_file",
    "max_freezing_saving",
    "paper_points",
    "parse_space_mapping",
    "register_space",
    "resolve_saving_fraction",
    "resolve_space",
    "run_space",
    "saving_fraction_for",
    "sample_random",
    "trial_config",
    "validate_distribution",
    "validate_space",
]



@dataclass
class ResolvedSpace:
    """A space ready for a search: the callable, where it came from and its validated distributions."""

    name: str  # built-in name, or the YAML file path
    fn: DefineByRun
    distributions: dict[str, BaseDistribution]
    grid: dict[str, list[Any]] | None = None
    conditional: bool = False
    text: str | None = None  # YAML source of a file space (stored with the search so --resume needs no file)
    note: str = ""  # what the space resolved to for this base config, printed at the start (budget: the range)
    stratified: Callable[[int, int | None], list[dict[str, Any]]] | None = None  # first trials' fixed params

    @property
    def all_categorical(self) -> bool:
        return all(isinstance(d, CategoricalDistribution) for d in self.distributions.values())


def resolve_space(name: str, base: Config, text: str | None = None, **options: Any) -> ResolvedSpace:
    """A built-in name or a YAML file (``text`` = its stored content); SpaceError listing valid names.
    ``options`` (None values ignored) go to a built-in space that takes them (``budget_range`` for budget)."""
    options = {k: v for k, v in options.items() if v is not None}
    if name in SPACES:
        entry = SPACES.get(name)
        extra = sorted(set(options) - set(entry.options))
        if extra:
            raise SpaceError(f"--{extra[0].replace('_', '-')} does not apply to the space {name!r}"
                             + (f"; spaces that take it: {', '.join(n for n in SPACES.names() if extra[0] in SPACES.get(n).options)}"))
        fn = entry.build(base, **options)
        dists = validate_space(fn)
        grid = entry.grid(base) if entry.grid else None
        describe, stratified = getattr(fn, "describe", None), getattr(fn, "stratified_points", None)
        return ResolvedSpace(name, fn, dists, grid, entry.conditional, None,
                             describe() if callable(describe) else "", stratified)
    if options:
        raise SpaceError(f"--{next(iter(options)).replace('_', '-')} does not apply to a YAML space; it needs --space budget")
    if text is not None or looks_like_space_file(name):
        space = load_space_file(name, text)
        return ResolvedSpace(name, space, dict(space.distributions), None, False, space.text)
    raise SpaceError(f"unknown search space {name!r}; built-in spaces: {', '.join(SPACES.names())}, or a YAML file path")


def _contains(dist: BaseDistribution, value: Any, on_grid: bool = True) -> bool:
    """Whether ``dist`` can hold ``value``; ``on_grid=False`` asks only for the range (a float off its step)."""
    if not on_grid and isinstance(dist, FloatDistribution) and isinstance(value, (int, float)):
        return bool(dist.low <= value <= dist.high)
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except Exception:
        return False


def initial_points(kind: str, space: ResolvedSpace, base: Config, limit: int | None = None) -> list[dict[str, Any]]:
    """Starting points for the sampler, restricted to the parameters the space suggests and to values its
    distributions contain; duplicates after restriction are dropped. ``kind``: 'paper'.

    In a space that samples ``freezing.saving_fraction``, a point's freezing target becomes the exact fraction
    of what the point's own schedule can reach that resolves to the paper's target (off the sampler's grid on
    purpose: the paper's 20% stays 20%, not 20.2%); a point whose schedule cannot reach its target is dropped,
    and a point without freezing drops the freezing scheme and LR schedule (the space asks for neither). In the budget space a point's target ratio is its own predicted cost (points
    outside the space's range are dropped); its sparsity is then solved back from it."""
    if kind not in INITIAL_POINT_SETS:
        raise SpaceError(f"unknown initial point set {kind!r}; valid: {', '.join(INITIAL_POINT_SETS)}")
    out: list[dict[str, Any]] = []
    seen = set()
    aux = space.distributions.get("freezing.saving_fraction")
    resolver = _Resolver(base) if aux is not None else None
    budget = space.fn if isinstance(space.fn, BudgetSpace) else None
    for point in paper_points(base):
        if budget is not None:  # the budget space: the point's own predicted cost becomes its target
            try:
                r = round(budget.solver.ratio(point), 6)
            except Exception:  # noqa: BLE001 - a point this base config cannot run
                continue
            if not budget.low <= r <= budget.high:
                continue
            point = {**point, TARGET: r}
        if aux is not None and "freezing.target_flops_reduction" not in space.distributions:
            f = saving_fraction_for(base, point, resolver=resolver)
            if f is None:
                continue  # this schedule cannot reach the paper's target
            point = {**point, "freezing.saving_fraction": f}
            if f == 0:
                point.pop("freezing.scheme", None)
                point.pop("freezing.lr_schedule", None)
        kept = {k: v for k, v in point.items() if k in space.distributions}
        if not kept or not all(_contains(space.distributions[k], v, on_grid=k not in AUXILIARY) for k, v in kept.items()):
            continue  # the space cannot express this point (say a freezing target beyond what T epochs allow)
        key = tuple(sorted((k, repr(v)) for k, v in kept.items()))
        if key in seen:
            continue
        seen.add(key)
        out.append(kept)
        if limit is not None and len(out) >= limit:
            break
    return out
