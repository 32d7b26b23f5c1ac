"""Space plumbing: the registry, probing a define-by-run space without a study, and validating it.

A *space* is a define-by-run function ``space(trial) -> dict | None`` (Ray Tune's OptunaSearch contract):
only ``trial.suggest_*`` calls and branches, every parameter named by a config dotted path, the returned dict
(if any) holding constant dotted-path values. It must pickle (Ray checkpoints the searcher with ``pickle``),
so spaces are instances of module-level classes, built from the base config by a registered factory.

*Auxiliary parameters* (``AUXILIARY``) are the one exception to "every name is a config path": a space may
suggest one to the sampler and resolve it into real config fields it returns (e.g. ``freezing.saving_fraction``
-> ``freezing.target_flops_reduction``). They never reach a trial's config or an exported YAML: ``run_space``
and the search's Optuna searcher drop them (``config_params``). The ``REPORTED`` ones (the budget space's
target ratio) travel beside the config in the Ray trial (``trial_params``), so ``trials.parquet`` has a
``param.budget.flops_ratio`` column; whatever builds a config from a trial takes ``config_params`` first.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from spfde_search.config import Config, apply_overrides, field_info
from spfde_search.registry import Registry

__all__ = [
    "SpaceError",
    "DefineByRun",
    "SpaceEntry",
    "SPACES",
    "register_space",
    "ProbeTrial",
    "run_space",
    "sample_random",
    "enumerate_corners",
    "grid_values",
    "collect_distributions",
    "validate_distribution",
    "validate_space",
    "trial_config",
    "AUXILIARY",
    "REPORTED",
    "config_params",
    "tidy_number",
    "trial_params",
]


AUXILIARY: dict[str, str] = {
    "budget.flops_ratio": (
        "target training FLOPs / dense training FLOPs of the budget space; the space solves sparsity.ratio (and "
        "the freezing start epoch) from it. Kept beside the trial's parameters (param.budget.flops_ratio), never "
        "in its config"
    ),
    "freezing.saving_fraction": (
        "freezing target as a fraction in [0, 1] of the largest FLOPs saving the sampled schedule can reach "
        "(sparsity, DST algorithm, delta tau, scheme, sieving); the space resolves it to "
        "freezing.target_flops_reduction, which is what the trial's config holds"
    ),
    "fidelity.rung": "--fidelity schedule: the trial's rung (0 = the shortest schedule; the last = full length)",
    "fidelity.epochs": "--fidelity schedule: the rung's schedule length in epochs",
    "fidelity.config": "--fidelity schedule: which config of the rung book the trial runs (one per sampled point)",
}


def tidy_number(value: Any) -> Any:
    """A float as a person would write it: 12 significant digits, so Optuna's ``low + k * step`` arithmetic
    (0.30000000000000004 for 0.3) never reaches a config; other values unchanged."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.12g}")
    return value


REPORTED = ("budget.flops_ratio", "fidelity.rung", "fidelity.epochs", "fidelity.config")  # auxiliary parameters a trial carries beside its config (see AUXILIARY)


def config_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters that are config fields: ``params`` without the auxiliary ones, floats tidied
    (``tidy_number``). Every sampled point passes here on its way into a trial's config, so the trial runs with
    the tidy value and its exported YAML, which is that config, says ``0.3``."""
    return {k: tidy_number(v) for k, v in params.items() if k not in AUXILIARY}


def trial_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """What a Ray trial carries: the config fields plus the ``REPORTED`` auxiliary ones (a budget-space trial's
    target, so ``trials.parquet`` can hold it); whatever builds a config from them takes ``config_params``."""
    return {**config_params(params), **{k: params[k] for k in REPORTED if k in params}}


class SpaceError(ValueError):
    """A search space that cannot be used; the message names the parameter and what is wrong."""


class DefineByRun(Protocol):
    def __call__(self, trial: Any) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class SpaceEntry:
    """A registered space: ``build(base)`` returns the define-by-run callable for that base config.

    ``grid(base)`` (finite spaces only) returns ``{param: [values]}`` for Optuna's GridSampler,
    ``conditional`` says whether the set of parameters depends on earlier choices (a capability flag the
    sampler choice checks instead of inspecting the function) and ``options`` names the keyword arguments
    ``build`` takes besides the base config (``budget_range`` for ``budget``)."""

    name: str
    description: str
    build: Callable[..., DefineByRun]
    grid: Callable[[Config], dict[str, list[Any]]] | None = None
    conditional: bool = False
    options: tuple[str, ...] = ()


SPACES: Registry[SpaceEntry] = Registry("search space")


def register_space(
    name: str,
    description: str,
    *,
    grid: Callable[[Config], dict[str, list[Any]]] | None = None,
    conditional: bool = False,
    options: tuple[str, ...] = (),
) -> Callable[[Callable[..., DefineByRun]], Callable[..., DefineByRun]]:
    def deco(build: Callable[..., DefineByRun]) -> Callable[..., DefineByRun]:
        SPACES.add(name, SpaceEntry(name, description, build, grid, conditional, options))
        return build

    return deco


# ---------------------------------------------------------------- probing without a study


Chooser = Callable[[str, BaseDistribution], Any]


class ProbeTrial:
    """Stands in for ``optuna.Trial``: records each suggestion's distribution, asks ``choose`` for the value
    (like Optuna's ``FixedTrial``, but with a policy instead of a fixed dict)."""

    def __init__(self, choose: Chooser) -> None:
        self._choose = choose
        self.params: dict[str, Any] = {}
        self.distributions: dict[str, BaseDistribution] = {}
        self.suggestions: dict[str, Any] = {}  # sample_random: the suggestions, where ``params`` becomes the config's

    def _suggest(self, name: str, dist: BaseDistribution) -> Any:
        if name in self.distributions and self.distributions[name] != dist:
            raise SpaceError(f"parameter {name!r} is suggested twice with different ranges")
        if name not in self.params:
            self.params[name] = self._choose(name, dist)
            self.distributions[name] = dist
        return self.params[name]

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return float(self._suggest(name, FloatDistribution(low, high, step=step, log=log)))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return int(self._suggest(name, IntDistribution(low, high, step=step, log=log)))

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._suggest(name, CategoricalDistribution(list(choices)))


def run_space(space: DefineByRun, trial: Any) -> dict[str, Any]:
    """Suggested parameters plus returned constants, as OptunaSearch builds a trial's config."""
    ret = space(trial)
    if ret is not None and not isinstance(ret, Mapping):
        raise SpaceError(f"a define-by-run space must return a dict or None, got {type(ret).__name__}")
    return config_params({**trial.params, **(dict(ret) if ret else {})})


def grid_values(dist: BaseDistribution, n: int = 5) -> list[Any]:
    """Candidate values of a distribution for corner probing: choices, or low..high in n steps."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution):
        k = (dist.high - dist.low) // dist.step
        idx = sorted({round(i * k / (n - 1)) for i in range(n)})
        return [dist.low + i * dist.step for i in idx]
    assert isinstance(dist, FloatDistribution)
    if dist.step is not None:
        k = round((dist.high - dist.low) / dist.step)
        idx = sorted({round(i * k / (n - 1)) for i in range(n)})
        return [round(dist.low + i * dist.step, 12) for i in idx]
    if dist.log:
        return [math.exp(math.log(dist.low) + i * (math.log(dist.high) - math.log(dist.low)) / (n - 1)) for i in range(n)]
    return [dist.low + i * (dist.high - dist.low) / (n - 1) for i in range(n)]


def _random_value(rng: random.Random, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return rng.choice(list(dist.choices))
    if isinstance(dist, IntDistribution):
        return rng.randrange(dist.low, dist.high + 1, dist.step)
    assert isinstance(dist, FloatDistribution)
    if dist.step is not None:
        k = round((dist.high - dist.low) / dist.step)
        return round(dist.low + rng.randint(0, k) * dist.step, 12)
    if dist.log:
        return math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
    return rng.uniform(dist.low, dist.high)


def sample_random(space: DefineByRun, n: int, seed: int = 0, fixed: Mapping[str, Any] | None = None) -> list[ProbeTrial]:
    """n probe trials with independent uniform choices (seeded); ``fixed`` values win where suggested."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        t = ProbeTrial(lambda name, d: fixed[name] if fixed and name in fixed else _random_value(rng, d))
        ret = run_space(space, t)
        t.suggestions = dict(t.params)  # what was suggested, auxiliary parameters included
        t.params = ret
        out.append(t)
    return out


def enumerate_corners(space: DefineByRun, limit: int = 256, values_per_param: int = 2) -> Iterator[ProbeTrial]:
    """Depth-first walk over every branch: each categorical choice and ``values_per_param`` values of each
    numeric parameter (2 = the bounds), up to ``limit`` leaves."""
    stack: list[list[int]] = [[]]
    emitted = 0
    while stack and emitted < limit:
        prefix = stack.pop()
        sizes: list[int] = []

        def choose(name: str, dist: BaseDistribution, prefix: list[int] = prefix, sizes: list[int] = sizes) -> Any:
            vals = grid_values(dist, values_per_param) if not isinstance(dist, CategoricalDistribution) else list(dist.choices)
            k = len(sizes)
            sizes.append(len(vals))
            return vals[prefix[k] if k < len(prefix) else 0]

        t = ProbeTrial(choose)
        t.params = run_space(space, t)
        # children: for every decision after the prefix, each alternative index > 0 starts a new branch
        for k in range(len(sizes) - 1, len(prefix) - 1, -1):
            base = prefix + [0] * (k - len(prefix))
            for alt in range(sizes[k] - 1, 0, -1):
                stack.append(base + [alt])
        emitted += 1
        yield t


def collect_distributions(space: DefineByRun, n_random: int = 64, seed: int = 0) -> dict[str, BaseDistribution]:
    """Every parameter the space can suggest with its distribution (corners plus random probes)."""
    out: dict[str, BaseDistribution] = {}
    for t in itertools.chain(enumerate_corners(space, limit=128), sample_random(space, n_random, seed)):
        for name, d in t.distributions.items():
            if name in out and out[name] != d:
                raise SpaceError(f"parameter {name!r} is suggested with different ranges in different branches")
            out[name] = d
    return out


# ---------------------------------------------------------------- validation against the config model


def _num(x: float) -> str:
    return f"{x:g}"


def validate_distribution(name: str, dist: BaseDistribution) -> None:
    """Raise SpaceError unless ``name`` is a config path and every value of ``dist`` is allowed there
    (an auxiliary parameter: a number range inside [0, 1])."""
    if name in AUXILIARY:
        if not (isinstance(dist, FloatDistribution) and 0.0 <= dist.low <= dist.high <= 1.0):
            raise SpaceError(f"auxiliary parameter {name!r} must be a float range inside [0, 1], got {dist!r}")
        return
    try:
        info = field_info(name)
    except KeyError as e:
        raise SpaceError(f"unknown parameter path {name!r}: {e.args[0].split(';', 1)[-1].strip()}") from None
    where = f"parameter {name!r}"
    if info.kind == "other":
        raise SpaceError(f"{where}: this config field ({info.describe()}) cannot be searched; set it in the base config")
    if isinstance(dist, CategoricalDistribution):
        for c in dist.choices:
            if c is None and info.optional:
                continue
            if info.kind in ("float", "int", "categorical") and not info.contains(c):
                raise SpaceError(
                    f"{where}: choice {c!r} is outside the config's range ({info.describe()}"
                    f"{' or null' if info.optional else ''})"
                )
            if info.kind == "int" and (isinstance(c, bool) or not isinstance(c, int)):
                raise SpaceError(f"{where}: choice {c!r} is not an integer ({info.describe()})")
            if info.kind == "str" and not isinstance(c, str):
                raise SpaceError(f"{where}: choice {c!r} is not a string")
        return
    if info.kind not in ("float", "int"):
        raise SpaceError(
            f"{where}: a numeric range was given but the config field takes {info.describe()}; use type: categorical"
        )
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    if isinstance(dist, FloatDistribution) and info.kind == "int":
        raise SpaceError(f"{where}: the config field is an integer; use type: int")
    low, high = dist.low, dist.high
    for label, v in (("low", low), ("high", high)):
        if not info.contains(v if info.kind == "float" else int(v)):
            raise SpaceError(
                f"{where}: bound {label}={_num(v)} is outside the config's range {info.describe().split(' in ', 1)[-1]}"
            )


def validate_space(space: DefineByRun, n_random: int = 64) -> dict[str, BaseDistribution]:
    """Probe the space and validate every parameter; returns the distributions. SpaceError on any problem."""
    try:
        dists = collect_distributions(space, n_random=n_random)
    except SpaceError:
        raise
    except Exception as e:  # a broken user space: say so before any trial runs
        raise SpaceError(f"the search space failed while probing it: {type(e).__name__}: {e}") from None
    if not dists:
        raise SpaceError("the search space suggests no parameters")
    for name, d in dists.items():
        validate_distribution(name, d)
    return dists


def trial_config(base: Config | Mapping[str, Any], params: Mapping[str, Any]) -> Config:
    """The config a trial runs: the base config plus its parameters, nothing else (ConfigError if invalid)."""
    base_dict = base.to_dict() if isinstance(base, Config) else dict(base)
    return Config.parse(apply_overrides(base_dict, dict(params)))
