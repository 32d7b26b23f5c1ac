"""Ray Tune adapters over the SpFDE ``Trainer`` (the trainer itself knows nothing of Ray)."""

from __future__ import annotations

from ._assess import Assessment, Budget, BudgetError, assess
from ._state import StorageFull, TrialState
from ._trainable import TrialSetup, infeasible_metrics, node_identity, spfde_trainable

__all__ = [
    "Assessment",
    "Budget",
    "BudgetError",
    "StorageFull",
    "TrialSetup",
    "TrialState",
    "assess",
    "infeasible_metrics",
    "node_identity",
    "spfde_trainable",
]
