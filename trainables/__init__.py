"""Ray Tune adapters over the SpFDE ``Trainer`` (the trainer itself knows nothing of Ray)."""

from __future__ import annotations

from ._assess import Assessment, Budget, BudgetError, assess
from ._state import LAST_REPORT, STATE_DIR, StorageFull, TrialState
from ._trainable import TrialSetup, infeasible_metrics, node_identity, spfde_trainable

__all__ = [
    "LAST_REPORT",
    "STATE_DIR",
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
