"""Successive halving over schedule length: the rung maths, pure (no Ray, no Optuna; torch only through the
FLOPs predictor).

A rung is a *complete* training schedule with fewer epochs, not a pause point inside the long one: BOHB
(HpBandSter), SMAC3 and DEHB restart each rung as a full run with a larger budget. Under a cosine learning rate,
accuracy at epoch e of a 40-epoch run ranks configs at chance until late, while complete 10- and 20-epoch runs of
the same configs rank them as the 40-epoch run does (benchmarks/RESULTS.md, the held-out section's fidelity part).

- ``rung_lengths``: the schedules of the rungs, m, m·η, m·η², ... and always the full length E last.
- ``shrink``: the shrink rule, what the same recipe is in fewer epochs (docs/search.md, "Successive halving over
  schedule length"): epoch-valued fields scale with the schedule, fractions and counts stay, and a freezing
  target the short schedule cannot reach is capped at the most it can (recorded in ``Shrunk.capped_from``).
- ``promotable``: which results of a rung go up. ASHA's rule (Li et al. 2020, "A System for Massively Parallel
  Hyperparameter Tuning", Algorithm 2 ``get_job``: the top ⌊n/η⌋ of a rung's n results, not yet promoted, go up as
  soon as they are there) with a multi-objective order: non-dominated sorting on (validation accuracy, full-length
  predicted training FLOPs), then an ε-net within each front (``pareto.moasha_order``, Syne Tune's MOASHA order;
  SMAC3 ranks a multi-objective rung by fronts then crowding, NePS by non-dominated sorting too).
- ``HalvingBook``: the rung book, who ran which rung and who went up, as JSON (kept beside the search for
  ``--resume``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spfde_search.pareto import moasha_order

__all__ = ["EPOCH_FIELDS", "HalvingBook", "Shrunk", "grace_from_fraction", "promotable", "rung_lengths",
           "scale_epochs", "shrink"]

# Epoch-valued fields and the least each may become: (section, field, floor, at most epochs - 1?)
EPOCH_FIELDS: tuple[tuple[str, str, int, bool], ...] = (
    ("train", "warmup_epochs", 0, True),        # a warm-up must end before the run does
    ("train", "update_interval", 1, False),     # Δτ: an integer >= 1, so short schedules collapse small Δτs to 1
    ("train", "eval_every", 1, False),
    ("freezing", "start_epoch", 0, True),       # an explicit T_frz
    ("freezing", "min_start_epoch", 0, True),
    ("freezing", "resume_epochs", 1, False),
    ("sieving", "window", 1, False),            # set explicitly; the default max(Δτ, 3) follows the shrunk Δτ
)


def scale_epochs(value: int, factor: float, floor: int = 0) -> int:
    """``value`` epochs scaled by ``factor``, rounded half up (Python's round would send 2.5 to 2 but 3.5 to 4),
    never below ``floor``."""
    return max(floor, math.floor(value * factor + 0.5))


def rung_lengths(epochs: int, grace_period: int, reduction_factor: float) -> list[int]:
    """Schedule lengths of the rungs, ascending: round(m·η^k) while below ``epochs``, then ``epochs`` itself.

    >>> rung_lengths(40, 5, 2)
    [5, 10, 20, 40]
    >>> rung_lengths(6, 2, 3)
    [2, 6]
    """
    if grace_period < 1:
        raise ValueError(f"grace period must be at least 1 epoch, got {grace_period}")
    if reduction_factor <= 1:
        raise ValueError(f"reduction factor must be > 1, got {reduction_factor}")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    out: list[int] = []
    k = 0
    while True:
        e = math.floor(grace_period * reduction_factor**k + 0.5)
        if e >= epochs:
            return [*out, epochs]
        if not out or e > out[-1]:
            out.append(e)
        k += 1


def grace_from_fraction(epochs: int, fraction: float) -> int:
    """The first rung's length for a grace period given as a fraction of the full schedule (at least 1 epoch)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"grace fraction must be in (0, 1], got {fraction}")
    return max(1, math.floor(epochs * fraction + 0.5))


@dataclass(frozen=True)
class Shrunk:
    """A config as a complete ``epochs``-epoch schedule. ``capped_from`` is the freezing target the full
    schedule asked for when the short one reaches less (its ``freezing.target_flops_reduction`` is then the
    most it can); None otherwise."""

    config: dict[str, Any]
    epochs: int
    capped_from: float | None = None
    train_flops: float = float("nan")  # predicted training FLOPs of the short run

    @property
    def capped(self) -> bool:
        return self.capped_from is not None


def shrink(config: Mapping[str, Any], epochs: int) -> Shrunk:
    """The same recipe in ``epochs`` epochs (the shrink rule; docs/search.md).

    - ``train.epochs`` becomes ``epochs``; the epoch-valued fields (``EPOCH_FIELDS``) scale by epochs / T, half
      up, with their floors (Δτ and the windows at least 1); an unset field stays unset.
    - fractions (``sparsity.update_end``, ``freezing.delay_fraction``, the freezing and sieving targets) and counts
      (``freezing.units``, ``freezing.freeze_fraction``) stay as they are.
    - a freezing target the short schedule cannot reach (the predictor raises ``FreezingTargetError``) is capped at
      the largest it reaches (6 decimals, rounded down); 0 (freezing off) when it reaches none.

    Raises ``ConfigError`` if the short config cannot run for another reason. ``epochs`` equal to the config's
    own returns it unchanged.
    """
    from spfde_search.config import Config
    from spfde_search.method.flops import predict
    from spfde_search.method.freezing import FreezingTargetError

    cfg = copy.deepcopy(dict(config))
    full = int(cfg["train"]["epochs"])
    if not 1 <= epochs <= full:
        raise ValueError(f"a rung schedule needs 1 <= epochs <= {full} (the full schedule), got {epochs}")
    if epochs == full:
        return Shrunk(cfg, epochs, train_flops=float(predict(Config.parse(cfg)).train_flops))
    factor = epochs / full
    cfg["train"]["epochs"] = epochs
    for section, name, floor, below_end in EPOCH_FIELDS:
        value = cfg.get(section, {}).get(name)
        if value is None or (section, name) == ("sieving", "window") and not value:
            continue
        v = scale_epochs(int(value), factor, floor)
        cfg[section][name] = min(v, epochs - 1) if below_end else v
    try:
        return Shrunk(cfg, epochs, train_flops=float(predict(Config.parse(cfg)).train_flops))
    except FreezingTargetError as e:
        asked = float(cfg["freezing"]["target_flops_reduction"])
        cfg["freezing"]["target_flops_reduction"] = max(0.0, math.floor(float(e.max_reduction) * 1e6) / 1e6)
    pred = predict(Config.parse(cfg))  # a config that still cannot run raises ConfigError here
    return Shrunk(cfg, epochs, capped_from=asked, train_flops=float(pred.train_flops))


def promotable(acc: Sequence[float], flops: Sequence[float], promoted: Sequence[bool], eta: float) -> list[int]:
    """Indices of a rung's results that go up now, best first: those among the top ⌊n/η⌋ of all n results
    (``pareto.moasha_order``: fronts, then ε-net) that are not promoted yet. A result without a finite accuracy
    (a failed or diverged run) counts in n but never goes up. Fewer than η results: nobody goes up yet (ASHA)."""
    if eta <= 1:
        raise ValueError(f"reduction factor must be > 1, got {eta}")
    n = len(acc)
    if not n == len(flops) == len(promoted):
        raise ValueError("acc, flops and promoted need one entry per result")
    k = math.floor(n / eta + 1e-9)
    if k == 0:
        return []
    top = moasha_order(np.asarray(acc, dtype=float), np.asarray(flops, dtype=float))[:k]
    return [int(i) for i in top if not promoted[int(i)] and math.isfinite(float(acc[int(i)]))]


@dataclass
class HalvingBook:
    """The rung book of one search: configs (their sampled parameters and full-length predicted training FLOPs),
    the trials that ran each (config, rung), their validation accuracy, and which went up.

    Pure bookkeeping; ``spfde_search.search.halving`` turns it into Ray trials. ``to_json`` / ``from_json`` keep it
    beside the search after every change. A trial ``requeue``d (lost with a killed driver before Ray saw it) runs
    its (config, rung) again with the next suggestion, before any promotion or new config."""

    lengths: list[int]
    eta: float
    configs: list[dict[str, Any]] = field(default_factory=list)  # {"params", "full_flops", "source"}
    trials: dict[str, dict[str, Any]] = field(default_factory=dict)  # trial id -> {"config", "rung", "acc", "state"}
    queue: list[tuple[int, int]] = field(default_factory=list)  # (config, rung) to run again
    given_up: list[tuple[int, int]] = field(default_factory=list)  # (config, rung) promotions past --max-compute

    @property
    def top(self) -> int:
        return len(self.lengths) - 1

    def add_config(self, params: Mapping[str, Any], full_flops: float, source: str = "") -> int:
        self.configs.append({"params": dict(params), "full_flops": float(full_flops), "source": source})
        return len(self.configs) - 1

    def start(self, trial_id: str, config: int, rung: int) -> None:
        self.trials[trial_id] = {"config": int(config), "rung": int(rung), "acc": float("nan"), "state": "running"}

    def finish(self, trial_id: str, acc: float | None, ok: bool = True) -> None:
        t = self.trials.get(trial_id)
        if t is None or t["state"] != "running":
            return  # unknown, or a repeated end after a restart: the first one counts
        value = float(acc) if ok and acc is not None else float("nan")
        t.update(acc=value if math.isfinite(value) else float("nan"), state="done" if ok else "failed")

    def requeue(self, trial_ids: Sequence[str]) -> None:
        for tid in trial_ids:
            t = self.trials.get(tid)
            if t is not None and t["state"] == "running":
                del self.trials[tid]
                self.queue.append((t["config"], t["rung"]))

    def results(self, rung: int) -> list[tuple[int, float]]:
        """(config, accuracy) of the ended trials of a rung, in the order they started."""
        return [(t["config"], t["acc"]) for t in self.trials.values() if t["rung"] == rung and t["state"] != "running"]

    def started(self, config: int, rung: int) -> bool:
        return any(t["config"] == config and t["rung"] == rung for t in self.trials.values()) or \
            (config, rung) in self.queue or (config, rung) in self.given_up

    def give_up(self, config: int, rung: int) -> None:
        """A job that will never fit the compute cap: never offered again."""
        self.given_up.append((int(config), int(rung)))

    def next_job(self) -> tuple[int, int] | None:
        """(config, rung) to run next: a requeued one, else the best promotion from the highest rung that has one
        (ASHA looks top-down), else None (the caller samples a new config at rung 0)."""
        if self.queue:
            return self.queue.pop(0)
        for rung in range(self.top - 1, -1, -1):
            res = self.results(rung)
            acc = [a for _, a in res]
            flops = [self.configs[c]["full_flops"] for c, _ in res]
            up = [self.started(c, rung + 1) for c, _ in res]
            best = promotable(acc, flops, up, self.eta)
            if best:
                return res[best[0]][0], rung + 1
        return None

    def full_count(self) -> int:
        """Full-length trials running or done (failed ones do not count: -n counts trials that finish)."""
        return sum(t["rung"] == self.top and t["state"] != "failed" for t in self.trials.values()) + \
            sum(r == self.top for _, r in self.queue)

    def to_json(self) -> dict[str, Any]:
        return {"lengths": self.lengths, "eta": self.eta, "configs": self.configs, "trials": self.trials,
                "queue": [list(q) for q in self.queue], "given_up": [list(q) for q in self.given_up]}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> HalvingBook:
        trials = {k: {**v, "acc": float("nan") if v.get("acc") is None else float(v["acc"])}
                  for k, v in dict(doc.get("trials") or {}).items()}
        return cls([int(x) for x in doc["lengths"]], float(doc["eta"]), list(doc.get("configs") or []), trials,
                   [(int(c), int(r)) for c, r in doc.get("queue") or []],
                   [(int(c), int(r)) for c, r in doc.get("given_up") or []])
