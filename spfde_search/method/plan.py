"""The epoch plan: every boundary rule of a run, in one pure function of the config (docs/method.md §2-§4).

Before epoch e the trainer may prune units whose mask is final to their target, update or prune masks, and step
the sieve; RigL's update runs on the epoch's first training batch, whose dense gradient grows and whose step is not
applied (RigL's code); after it nothing changes within the epoch. :func:`build_run_plan` decides all of it
from the config, the model's layers and the freeze plan, and tracks the exact weight count every layer holds.
``Trainer._epoch_start`` executes the plan (and raises if what it measures differs), ``flops.simulate`` sums
FLOPs over it, so a boundary rule is written here once and nowhere else (tests/method/test_plan.py checks that).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import Config
from .freezing import FreezePlan, cosine_lr
from .sieving import forgetting_window
from .sparsity import ALGORITHMS, DSTPlan, LayerRef

__all__ = ["LayerStep", "EpochPlan", "RunPlan", "build_run_plan", "may_update", "final_mask", "interval_matters",
           "PLAN_ONLY_FIELDS", "run_identity", "run_key"]


@dataclass(frozen=True)
class LayerStep:
    """One layer's mask change at a boundary: drop ``drop`` active weights, then grow ``grow`` among all the
    zeros after the drop (``Masker.update_layer``)."""

    name: str
    drop: int
    grow: int


@dataclass(frozen=True)
class EpochPlan:
    """Everything that happens at the start of epoch ``epoch`` (0-based), in execution order, and what is held."""

    epoch: int
    frozen_prefix: int  # units 0..prefix-1 are frozen in this epoch
    freeze_prunes: tuple[LayerStep, ...]  # layers that may no longer update back to their exact target (MEST)
    rigl_pass: bool  # RigL's update on the epoch's first batch: its dense gradient grows, its step is not applied
    pass_counts: Mapping[str, int]  # counts held during that batch (before the update)
    dst_steps: tuple[LayerStep, ...]  # DST updates, or the prune back to target past update_end
    dst_update: bool  # this boundary is a DST update (False: none, or only prunes)
    sieve_step: bool  # the sieve moves samples and the forgetting counts of the closed interval reset
    evaluate: bool  # the test set is evaluated after this epoch (eval_every, always the last epoch)
    counts: Mapping[str, int]  # weights held per sparse layer during the epoch

    @property
    def grown(self) -> int:
        return sum(s.grow for s in self.dst_steps)


@dataclass(frozen=True)
class RunPlan:
    """The epoch plans plus the learning-rate rule (per-unit horizons, single_shot_resume's final phase)."""

    epochs: tuple[EpochPlan, ...]
    numel: Mapping[str, int]  # size of each sparse layer
    lr_horizons: tuple[int, ...]  # per unit (head last): epoch at which that unit's cosine reaches lr_min
    resume_start: int | None  # single_shot_resume: from this epoch on, everything trains at resume_lr
    resume_lr: float
    unit_freeze_epochs: tuple[int | None, ...] = ()  # per freezable unit: epoch it freezes for good (None: never)
    forgetting_window: int = 1  # W: epochs of forgetting events that rank the samples at a sieve step

    @property
    def sparse_numel(self) -> int:
        return sum(self.numel.values())

    def density(self, e: int) -> float:
        """Fraction of the sparse layers' weights held in epoch e (1.0 without sparse layers)."""
        total = self.sparse_numel
        return sum(self.epochs[e].counts.values()) / total if total else 1.0

    def regrown_fraction(self, e: int) -> float:
        """Weights grown at epoch e's boundary / weights of the sparse layers."""
        total = self.sparse_numel
        return self.epochs[e].grown / total if total else 0.0

    def lr(self, unit: int, t: float, lr0: float, lr_min: float, warmup: float = 0.0) -> float:
        """Learning rate of ``unit``'s parameter group at fractional epoch t."""
        if self.resume_start is not None and t >= self.resume_start:
            return self.resume_lr
        return cosine_lr(t, self.lr_horizons[unit], lr0, lr_min, warmup)


def may_update(freeze: FreezePlan, unit: int, b: int, prefix: int) -> bool:
    """Whether a layer of ``unit`` takes a DST update at boundary b (ours, docs/method.md §3): not while frozen, and
    with a fixed freeze epoch f (single-shot schemes) only while b < f - Δτ, so the mask is final for the
    whole last interval [f - Δτ, f) before freezing: a weight grown at that last boundary would get only the
    near-zero tail of the unit's cosine and freeze at about 0 while FLOPs count it live."""
    if unit < prefix:
        return False
    fe = freeze.unit_freeze_epoch(unit) if unit < freeze.num_units else None
    return fe is None or b < fe - freeze.interval


def final_mask(freeze: FreezePlan, unit: int, b: int, prefix: int) -> bool:
    """Whether a layer of ``unit`` holds its final mask from boundary b on: frozen, or in the last interval
    before its fixed freeze epoch (``may_update`` is False). Such a layer is pruned to its exact target at the
    first such boundary (docs/method.md §3: MEST's soft-bound extra goes at the unit's last DST update, one Δτ before
    it freezes), so it trains its final interval on the mask it freezes with."""
    return not may_update(freeze, unit, b, prefix)


def interval_matters(algorithm: str, sieving: bool, freezing_scheme: str | None) -> bool:
    """Whether Δτ (``train.update_interval``) changes a run (``freezing_scheme`` None: freezing off). The plan
    reads it for DST updates and their prunes (a dynamic algorithm), sieve steps and the forgetting window
    (sieving on), single-shot freeze steps, single_shot_resume's default t and delayed_periodic's start; the
    periodic pattern runs epoch by epoch from epoch 0. Otherwise every Δτ gives one plan, so search spaces
    sample it only where this is True (tests/method/test_plan.py checks both ways)."""
    return ALGORITHMS.get(algorithm).dynamic or sieving or (freezing_scheme is not None and freezing_scheme != "periodic")


def _prunes(counts: dict[str, int], targets: Mapping[str, int], names: Sequence[str]) -> tuple[LayerStep, ...]:
    """Prune-only steps back to the exact target for the layers holding more (MEST's soft-bound extra)."""
    steps = tuple(LayerStep(n, counts[n] - targets[n], 0) for n in names if counts[n] > targets[n])
    for s in steps:
        counts[s.name] -= s.drop
    return steps


def build_run_plan(
    cfg: Config, layers: Sequence[LayerRef], targets: Mapping[str, int], freeze: FreezePlan
) -> RunPlan:
    """Every epoch's boundary actions and held counts. At the start of epoch e, in this order:

    1. layers with a final mask (:func:`final_mask`: frozen, or within Δτ of a fixed freeze epoch) are pruned
       to their exact target;
    2. at a DST update boundary (``DSTPlan.is_update``): each layer allowed by :func:`may_update` takes
       ``DSTPlan.layer_step`` (RigL: on the epoch's first training batch, after step 3, by that batch's dense
       gradient, if any layer updates); at any other Δτ boundary of a dynamic algorithm (past ``update_end``),
       every layer is pruned to its exact target;
    3. at every Δτ boundary after the first epoch, with sieving on: the sieve step.
    """
    tc = cfg.train
    t_total, dtau = tc.epochs, tc.update_interval
    dst = DSTPlan.from_config(cfg.sparsity, t_total, dtau)
    algo = ALGORITHMS.get(cfg.sparsity.algorithm)
    unit = {r.name: r.unit for r in layers}
    numel = {r.name: r.numel for r in layers if r.name in targets}
    names = list(targets)
    counts = dict(targets)
    epochs: list[EpochPlan] = []
    for e in range(t_total):
        prefix = freeze.frozen_prefix(e)
        freeze_prunes = _prunes(counts, targets, [n for n in names if final_mask(freeze, unit[n], e, prefix)])
        pass_counts = dict(counts)
        steps: list[LayerStep] = []
        update = dst.is_update(e)
        if update:
            for n in names:
                if may_update(freeze, unit[n], e, prefix):
                    drop, grow = dst.layer_step(e, targets[n], counts[n], numel[n])
                    if drop or grow:
                        steps.append(LayerStep(n, drop, grow))
                        counts[n] += grow - drop
        elif dst.dynamic and e > 0 and e % dtau == 0:
            steps.extend(_prunes(counts, targets, names))
        epochs.append(
            EpochPlan(
                epoch=e,
                frozen_prefix=prefix,
                freeze_prunes=freeze_prunes,
                rigl_pass=update and algo.needs_dense_grad and bool(steps),
                pass_counts=pass_counts,
                dst_steps=tuple(steps),
                dst_update=update,
                sieve_step=cfg.sieving.enabled and e > 0 and e % dtau == 0,
                evaluate=(e + 1) % tc.eval_every == 0 or e == t_total - 1,
                counts=dict(counts),
            )
        )
    n_parts = freeze.num_units + 1  # units, then the head
    if cfg.freezing.lr_schedule == "global":  # one cosine for all units (ours), to T (or T - t when resuming)
        horizons = tuple(freeze.lr_horizon(freeze.num_units) for _ in range(n_parts))
    else:
        horizons = tuple(freeze.lr_horizon(u) for u in range(n_parts))
    resume = freeze.enabled and freeze.scheme == "single_shot_resume"
    return RunPlan(
        epochs=tuple(epochs),
        numel=numel,
        lr_horizons=horizons,
        resume_start=t_total - freeze.resume_epochs if resume else None,
        resume_lr=freeze.resume_lr,
        unit_freeze_epochs=tuple(freeze.unit_freeze_epoch(k) for k in range(freeze.freezable)),
        forgetting_window=forgetting_window(cfg.sieving.window, dtau),
    )


PLAN_ONLY_FIELDS = ("freezing", "train.update_interval", "sieving.window")  # read by the trainer only via the plan


def _steps(steps: Sequence[LayerStep]) -> list[list[Any]]:
    return [[s.name, s.drop, s.grow] for s in steps]


def run_identity(cfg: Config, run: RunPlan) -> dict[str, Any]:
    """What a run trains, as plain data: the config without the fields that reach training only through the
    epoch plan (``PLAN_ONLY_FIELDS``: every freezing field, Δτ, the sieve window; the trainer reads them nowhere
    else), plus the plan they resolved to. Equal identities train the same run though the configs' texts differ:
    per_unit and global LR under a periodic scheme, any Δτ under static sparsity without sieving, the sieve
    window with sieving off, an explicit freezing start and the FLOPs target the solver meets with the same start.
    The search dedupes on it (docs/search.md, "Duplicate configs")."""
    d = cfg.to_dict()
    d.pop("freezing")
    d["train"].pop("update_interval")
    d["sieving"].pop("window")
    d["plan"] = {
        "epochs": [
            [e.frozen_prefix, _steps(e.freeze_prunes), e.rigl_pass, sorted(e.pass_counts.items()) if e.rigl_pass else None,
             _steps(e.dst_steps), e.dst_update, e.sieve_step, e.evaluate, sorted(e.counts.items())]
            for e in run.epochs
        ],
        "lr_horizons": list(run.lr_horizons),
        "resume": [run.resume_start, run.resume_lr] if run.resume_start is not None else None,
        "unit_freeze_epochs": list(run.unit_freeze_epochs),
        "forgetting_window": run.forgetting_window if cfg.sieving.enabled else None,
    }
    return d


def run_key(cfg: Config, run: RunPlan) -> str:
    """A short digest of :func:`run_identity` (sha256 of its canonical JSON, 20 hex digits)."""
    text = json.dumps(run_identity(cfg, run), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]
