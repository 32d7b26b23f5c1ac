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
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["EPOCH_FIELDS", "Shrunk", "grace_from_fraction", "rung_lengths", "scale_epochs", "shrink"]

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
        return Shrunk(cfg, epochs)
    factor = epochs / full
    cfg["train"]["epochs"] = epochs
    for section, name, floor, below_end in EPOCH_FIELDS:
        value = cfg.get(section, {}).get(name)
        if value is None or (section, name) == ("sieving", "window") and not value:
            continue
        v = scale_epochs(int(value), factor, floor)
        cfg[section][name] = min(v, epochs - 1) if below_end else v
    try:
        predict(Config.parse(cfg))
        return Shrunk(cfg, epochs)
    except FreezingTargetError as e:
        asked = float(cfg["freezing"]["target_flops_reduction"])
        cfg["freezing"]["target_flops_reduction"] = max(0.0, math.floor(float(e.max_reduction) * 1e6) / 1e6)
    predict(Config.parse(cfg))  # a config that still cannot run raises ConfigError here
    return Shrunk(cfg, epochs, capped_from=asked)
