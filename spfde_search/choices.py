"""The names the command line accepts, checked before any heavy import (``spfde_search/cli/precheck.py``).

Why a module of its own: a typo (``spfde search --space nosuch``) must answer in a fraction of a second, so the
lists it is checked against cannot live behind torch, Optuna, Ray or MLflow imports. The search settings
(``search/settings.py``), the sampler factory and the space registry use these same tuples; tests/test_choices.py
checks that they agree with the registry and the settings model.
"""

from __future__ import annotations

__all__ = ["BUILTIN_SPACES", "EARLY_STOPPING", "FIDELITY", "INITIAL_POINT_SETS", "SAMPLERS", "looks_like_space_file"]

SAMPLERS = ("auto", "tpe", "nsga2", "gp", "random")
EARLY_STOPPING = ("none", "asha", "moasha")
FIDELITY = ("none", "schedule")  # --fidelity: schedule = successive halving over schedule length
INITIAL_POINT_SETS = ("paper",)
BUILTIN_SPACES = ("joint", "budget", "paper", "smoke")  # registered in search_spaces/_builtin.py and _budget.py


def looks_like_space_file(name: str) -> bool:
    """``--space`` names a YAML file rather than a built-in space."""
    from pathlib import Path

    return name.endswith((".yaml", ".yml")) or "/" in name or Path(name).is_file()
