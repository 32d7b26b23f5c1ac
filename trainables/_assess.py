"""What a sampled config costs and whether it can run, from the config alone (no Ray, no data, no training).

Shared by the trainable (each trial checks itself before touching data) and the search driver (budget and
cheapest-config checks before any trial starts).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from spfde_search.config import Config, ConfigError, apply_overrides
from spfde_search.user_code import UserCodeError

__all__ = ["Budget", "Assessment", "assess", "BudgetError"]


class BudgetError(ValueError):
    """A --flops-budget that cannot be parsed."""


_SUFFIX = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "p": 1e15, "e": 1e18}


@dataclass(frozen=True)
class Budget:
    """A training-FLOPs budget: ``absolute`` FLOPs, or a ``ratio`` of the dense training FLOPs of the run.

    Text forms: ``0.3``, ``0.3x`` or ``30%`` (ratio; a bare number below 100 is a ratio), ``2.5e12``, ``800G``,
    ``1.5T``, ``2P`` (absolute FLOPs)."""

    kind: Literal["absolute", "ratio"]
    value: float
    text: str = ""

    def __post_init__(self) -> None:
        if not (self.value > 0 and math.isfinite(self.value)):
            raise BudgetError(f"--flops-budget must be a positive finite number, got value={self.value!r}")

    @classmethod
    def parse(cls, text: str | float) -> Budget:
        s = str(text).strip().lower().replace("_", "")
        m = re.fullmatch(r"([0-9.]+(?:e[+-]?[0-9]+)?)\s*(%|x|[kmgtpe]|flops)?", s)
        if not m:
            raise BudgetError(
                f"--flops-budget {text!r} is not understood; use a ratio of dense training FLOPs (0.3, 0.3x, 30%) "
                "or absolute FLOPs (2.5e12, 800G, 1.5T)"
            )
        try:
            v = float(m.group(1))
        except ValueError:
            raise BudgetError(f"--flops-budget {text!r}: {m.group(1)!r} is not a number") from None
        unit = m.group(2)
        if unit == "%":
            return cls("ratio", v / 100, str(text))
        if unit == "x":
            return cls("ratio", v, str(text))
        if unit in _SUFFIX:
            return cls("absolute", v * _SUFFIX[unit], str(text))
        if unit == "flops" or v >= 100:
            return cls("absolute", v, str(text))
        return cls("ratio", v, str(text))

    def warning(self) -> str:
        """'' or why the budget constrains nothing: a ratio of dense >= 1 admits every sparse schedule (none
        costs more than dense training), which is almost never what was meant (2 for 2%?)."""
        if self.kind == "ratio" and self.value >= 1:
            return (f"--flops-budget {self.text} is a ratio of dense training FLOPs >= 1: it constrains nothing; "
                    f"give a ratio below 1 (0.3, 30%) or absolute FLOPs (2.5e12, 800G)")
        return ""

    def describe(self) -> str:
        return f"{self.value:.4g} of dense training FLOPs" if self.kind == "ratio" else f"{self.value:.4g} training FLOPs"

    def violation(self, train_flops: float, flops_ratio: float) -> float:
        """Relative excess over the budget (> 0: over budget; <= 0: slack)."""
        x = flops_ratio if self.kind == "ratio" else train_flops
        return (x - self.value) / self.value

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "text": self.text}


@dataclass
class Assessment:
    """A sampled point checked against the config model, the FLOPs predictor and the budget."""

    params: dict[str, Any]
    config: Config | None
    prediction: Any  # spfde_search.method.flops.FlopsPrediction | None
    reason: str  # why the point cannot run ('' if it can)
    violation: float  # Optuna constraint value: > 0 infeasible, <= 0 feasible
    run_train_flops: float  # predicted whole-run training FLOPs (fallback when unpredictable)
    run_flops_ratio: float | None
    # the user's model or data code failed to import or build here (UserCodeError), '' if not: on a Ray worker
    # that is a failure of the trial's run (the worker's environment), not an infeasible point
    failure: str = ""

    @property
    def feasible(self) -> bool:
        return not self.reason

    @property
    def runnable(self) -> bool:
        """The config itself can run (it may still be over budget)."""
        return self.prediction is not None

    def report_fields(self) -> dict[str, Any]:
        """Per-trial constants reported with every epoch (numbers only, so Tune can aggregate them)."""
        p = self.prediction
        return {
            "run_train_flops": float(self.run_train_flops),
            "run_flops_ratio": float(self.run_flops_ratio) if self.run_flops_ratio is not None else float("nan"),
            "constraint_violation": float(self.violation),
            "infeasible": not self.feasible and not self.failure,
            "error": self.reason,
            "saved_sparsity": float(p.saved["sparsity"]) if p is not None else float("nan"),
            "saved_freezing": float(p.saved["freezing"]) if p is not None else float("nan"),
            "saved_sieving": float(p.saved["sieving"]) if p is not None else float("nan"),
            "freeze_start_epoch": -1 if p is None or p.freeze_start_epoch is None else int(p.freeze_start_epoch),
            "epochs_total": int(self.config.train.epochs) if self.config is not None else 0,
        }


def _one_line(msg: str) -> str:
    lines = [ln.strip() for ln in str(msg).splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return lines[0] + " " + "; ".join(lines[1:])
    return "; ".join(lines)


def assess(
    params: Mapping[str, Any],
    base: Mapping[str, Any],
    budget: Budget | None = None,
    fallback_flops: float = 0.0,
) -> Assessment:
    """Base config + params -> config, prediction and feasibility. Never raises for a bad point."""
    from spfde_search.method.flops import predict  # torch: imported on use

    params = dict(params)
    try:
        cfg = Config.parse(apply_overrides(dict(base), params))
    except ConfigError as e:
        return Assessment(params, None, None, f"config rejected: {_one_line(str(e))}", 1.0, fallback_flops, None)
    try:
        pred = predict(cfg)
    except ConfigError as e:
        failure = _one_line(str(e)) if isinstance(e, UserCodeError) else ""
        return Assessment(params, cfg, None, f"cannot run: {_one_line(str(e))}", 1.0, fallback_flops, None, failure)
    flops, ratio = float(pred.train_flops), float(pred.flops_ratio)
    if budget is None:
        return Assessment(params, cfg, pred, "", -1.0, flops, ratio)
    v = budget.violation(flops, ratio)
    reason = ""
    if v > 0:
        reason = (
            f"over the FLOPs budget: predicted {flops:.4g} training FLOPs ({ratio:.4f} of dense) "
            f"> budget {budget.describe()}"
        )
    return Assessment(params, cfg, pred, reason, v, flops, ratio)
