"""Progressive layer freezing (docs/method.md §3): freezable prefix, T_frz from a FLOPs target, schemes, per-unit LR.

Everything here is pure arithmetic on per-unit costs, so it is golden-tested and shared by the trainer and the
FLOPs predictor. A *frozen prefix* of length k means units 0..k-1 run forward only (no weight or activation
gradients).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..config import ConfigError, FreezingConfig

__all__ = [
    "PERIODIC_SCHEMES",
    "FreezingTargetError",
    "periodic_start",
    "freezable_unit_count",
    "solve_start_closed_form",
    "FreezePlan",
    "plan_freezing",
    "cosine_lr",
    "lr_schedule_matters",
]


PERIODIC_SCHEMES = ("periodic", "delayed_periodic")


def periodic_start(scheme: str, delay_fraction: float, epochs: int, interval: int) -> int:
    """First epoch of the periodic pattern (docs/method.md §3): ``periodic`` runs it from epoch 0, so every unit is
    updated at every stage of training (the paper's appendix); ``delayed_periodic`` keeps every unit fully active
    for the first ``delay_fraction`` of training, rounded up to a multiple of Δτ (at least Δτ, since
    ``delay_fraction`` > 0). The two starts never coincide, so no schedule has both names."""
    if scheme == "periodic":
        return 0
    return max(interval, math.ceil(delay_fraction * epochs / interval) * interval)


class FreezingTargetError(ConfigError):
    """A freezing target the schedule cannot reach; ``max_reduction`` is the largest target it can (search
    spaces use it to sample only reachable targets)."""

    def __init__(self, message: str, max_reduction: float) -> None:
        super().__init__(message)
        self.max_reduction = max_reduction

    def __reduce__(self) -> tuple[type, tuple[str, float]]:
        return type(self), (str(self), self.max_reduction)


def freezable_unit_count(unit_depths: Sequence[int], total_depth: int, fraction: float) -> int:
    """Units (front to back) whose depth covers ``fraction`` of the model's layers, rounded to whole units.

    ResNet-32: depth 32 (stem 1 + 15 blocks x 2 + fc 1); 2/3 of 32 = 21.3 -> stem + 10 blocks = 21 layers.
    """
    goal = fraction * total_depth
    best, best_err, cum = 0, goal, 0
    for k, d in enumerate(unit_depths, start=1):
        cum += d
        err = abs(cum - goal)
        if err < best_err - 1e-9:
            best, best_err = k, err
    return best


def solve_start_closed_form(x: float, f_train: float, bp: Sequence[float], epochs: int, interval: int) -> int:
    """docs/method.md §3: x*F = sum_k Bp_k (T - T_frz - k*dtau)  =>  T_frz = T - (x*F + dtau*sum_k k*Bp_k) / sum_k Bp_k,
    rounded down to a multiple of dtau (so the target is met or beaten). ``bp`` is per-epoch backward FLOPs."""
    s = sum(bp)
    if s <= 0:
        raise ValueError("freezable units have no backward cost")
    t = epochs - (x * f_train + interval * sum(k * b for k, b in enumerate(bp))) / s
    return int(math.floor(t / interval)) * interval


@dataclass(frozen=True)
class FreezePlan:
    """Which prefix of units is frozen in each epoch, and each unit's LR horizon."""

    scheme: str
    epochs: int
    interval: int
    num_units: int  # all units of the model (stem + blocks)
    freezable: int  # K
    start_epoch: int | None  # T_frz (None: freezing off)
    frozen_units: int  # how many of the K freezable units the schedule freezes
    resume_epochs: int = 0
    resume_lr: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.start_epoch is not None and self.frozen_units > 0

    def unit_freeze_epoch(self, k: int) -> int | None:
        """single-shot schemes: the epoch from which unit k stays frozen (None: never)."""
        if not self.enabled or k >= self.frozen_units or self.scheme not in ("single_shot", "single_shot_resume"):
            return None
        assert self.start_epoch is not None
        e = self.start_epoch + k * self.interval
        end = self.epochs - (self.resume_epochs if self.scheme == "single_shot_resume" else 0)
        return e if e < end else None

    def frozen_prefix(self, epoch: int) -> int:
        if not self.enabled:
            return 0
        assert self.start_epoch is not None
        if self.scheme in ("single_shot", "single_shot_resume"):
            if self.scheme == "single_shot_resume" and epoch >= self.epochs - self.resume_epochs:
                return 0  # everything unfrozen for the last t epochs
            n = 0
            for k in range(self.frozen_units):
                fe = self.unit_freeze_epoch(k)
                if fe is not None and epoch >= fe:
                    n = k + 1
            return n
        # periodic schemes, from the pattern's start: the front half of the frozen units trains 1 epoch in 4,
        # the back half 1 in 2, the rest always
        if epoch < self.start_epoch:
            return 0
        j = epoch - self.start_epoch
        front = (self.frozen_units + 1) // 2
        if j % 2:
            return self.frozen_units
        if j % 4:
            return front
        return 0

    def schedule(self) -> list[int]:
        return [self.frozen_prefix(e) for e in range(self.epochs)]

    def saving(self, bp_per_epoch: Sequence[float]) -> float:
        """Backward FLOPs saved over the run: sum over epochs of the frozen prefix's per-epoch backward cost."""
        prefix_cost = [0.0]
        for b in bp_per_epoch:
            prefix_cost.append(prefix_cost[-1] + b)
        return sum(prefix_cost[p] for p in self.schedule())

    def lr_horizon(self, unit: int) -> int:
        """Epoch at which unit's own cosine reaches eta_min: its freeze epoch, else T (or T - t when resuming)."""
        if self.scheme in ("single_shot", "single_shot_resume") and unit < self.num_units:
            fe = self.unit_freeze_epoch(unit)
            if fe is not None:
                return fe
        if self.enabled and self.scheme == "single_shot_resume":
            return self.epochs - self.resume_epochs
        return self.epochs


def plan_freezing(
    cfg: FreezingConfig,
    epochs: int,
    interval: int,
    num_units: int,
    freezable: int,
    bp_per_epoch: Sequence[float],
    f_train_no_freeze: float,
    saving_fn: Callable[[FreezePlan], float] | None = None,
) -> FreezePlan:
    """Resolve the config into a plan. With a target x, T_frz is the latest multiple of dtau whose saving meets
    x * F (the closed form of docs/method.md §3 for single_shot when every unit freezes before T; a direct search over
    candidates handles units that would freeze at or after T and the other schemes). The saving of a candidate
    is ``saving_fn(plan)`` when given (the predictor passes its exact simulation, which also counts MEST's
    soft-bound extra density that freezing removes), else ``plan.saving(bp_per_epoch)`` at target densities.
    Periodic schemes have a fixed pattern start (:func:`periodic_start`); x picks the fewest freezable units (front
    to back) whose pattern meets it. Impossible x -> ConfigError naming the maximum."""
    t_resume = (cfg.resume_epochs or interval) if cfg.scheme == "single_shot_resume" else 0

    def make(start: int | None, units: int) -> FreezePlan:
        return FreezePlan(cfg.scheme, epochs, interval, num_units, freezable, start, units, t_resume, cfg.resume_lr)

    if not cfg.enabled:
        return make(None, 0)
    if freezable < 1:
        raise ConfigError(
            f"freezing.freeze_fraction={cfg.freeze_fraction:g} covers no whole unit of this model; raise it"
        )
    if cfg.start_epoch is not None and cfg.scheme in PERIODIC_SCHEMES:  # also refused by FreezingConfig
        raise ConfigError(f"freezing.start_epoch does not apply to freezing.scheme={cfg.scheme!r}")
    if cfg.start_epoch is not None:
        units = cfg.units if cfg.units is not None else freezable
        if units > freezable:
            raise ConfigError(f"freezing.units={units} exceeds the {freezable} freezable units of this model")
        if cfg.start_epoch >= epochs:
            raise ConfigError(f"freezing.start_epoch={cfg.start_epoch} must be below train.epochs={epochs}")
        return make(cfg.start_epoch, units)
    x = cfg.target_flops_reduction
    need = x * f_train_no_freeze
    best: FreezePlan | None = None
    max_saving = 0.0
    if cfg.scheme in PERIODIC_SCHEMES:
        start = periodic_start(cfg.scheme, cfg.delay_fraction, epochs, interval)
        where = f"a pattern from epoch {start}"
        plans = [make(start, k) for k in range(1, freezable + 1)] if start < epochs else []
    else:
        min_start = cfg.min_start_epoch if cfg.min_start_epoch is not None else interval
        where = f"earliest start epoch {min_start}"
        plans = [make(s, freezable) for s in range(0, epochs, interval) if s >= min_start]
    for p in plans:
        sv = saving_fn(p) if saving_fn is not None else p.saving(bp_per_epoch)
        max_saving = max(max_saving, sv)
        if sv >= need * (1 - 1e-12):
            best = p  # single-shot: the latest start that meets the target; periodic: the fewest units
            if cfg.scheme in PERIODIC_SCHEMES:
                break
    if best is None:
        mx = max_saving / f_train_no_freeze if f_train_no_freeze else 0.0
        raise FreezingTargetError(
            f"freezing.target_flops_reduction={x:g} is impossible for this schedule: freezing can save at most "
            f"{mx:.4f} ({mx:.2%}) of training FLOPs with scheme {cfg.scheme!r}, freeze_fraction "
            f"{cfg.freeze_fraction:.3g} and {where}; use a target <= {math.floor(mx * 1000) / 1000:g}",
            mx,
        )
    return best


def lr_schedule_matters(
    scheme: str, epochs: int, interval: int, start_epoch: int | None = None, resume_epochs: int | None = None
) -> bool:
    """Whether ``freezing.lr_schedule`` changes a run whose freezing is on (a positive target, or an explicit
    ``start_epoch``). per_unit ends a unit's cosine at its freeze epoch, global at T (T - t when resuming)
    (:meth:`FreezePlan.lr_horizon`), so they differ exactly when some unit has a freeze epoch: never under the
    periodic schemes (units come back, none has one); always for a single-shot target (a single-shot plan saves
    FLOPs only once unit 0 freezes, so the plan meeting a positive target has a freeze epoch); for an explicit
    start, when it lies before the end of freezing (T, or T - t for single_shot_resume, t defaulting to Δτ).
    Search spaces ask this before they sample the field, so one schedule is never sampled under two names."""
    if scheme in PERIODIC_SCHEMES:
        return False
    if start_epoch is None:
        return True
    end = epochs - ((resume_epochs or interval) if scheme == "single_shot_resume" else 0)
    return start_epoch < end


def cosine_lr(t: float, horizon: float, lr0: float, lr_min: float, warmup: float = 0.0) -> float:
    """eta(t) = eta_min + (eta0 - eta_min)(1 + cos(pi t / horizon)) / 2, after an optional linear warm-up;
    eta_min past the horizon (a frozen unit's LR no longer matters)."""
    if warmup > 0 and t < warmup:
        return lr0 * (t + 1e-12) / warmup
    if t >= horizon:
        return lr_min
    span = max(horizon - warmup, 1e-12)
    return lr_min + (lr0 - lr_min) * (1 + math.cos(math.pi * (t - warmup) / span)) / 2
