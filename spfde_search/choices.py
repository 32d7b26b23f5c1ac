"""The names the command line accepts, checked before any heavy import (``spfde_search/cli/precheck.py``).

Why a module of its own: a typo (``spfde search --space nosuch``) must answer in a fraction of a second, so the
lists it is checked against cannot live behind torch, Optuna, Ray or MLflow imports. The search settings
(``search/settings.py``), the sampler factory and the space registry use these same tuples; tests/test_choices.py
checks that they agree with the registry and the settings model.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["BUILTIN_SPACES", "EARLY_STOPPING", "FIDELITY", "INITIAL_POINT_SETS", "SAMPLERS", "closest", "did_you_mean",
           "looks_like_space_file"]

SAMPLERS = ("auto", "tpe", "nsga2", "gp", "random")
EARLY_STOPPING = ("none", "asha", "moasha")
FIDELITY = ("none", "schedule")  # --fidelity: schedule = successive halving over schedule length
INITIAL_POINT_SETS = ("paper",)
BUILTIN_SPACES = ("joint", "budget", "paper", "smoke")  # registered in search_spaces/_builtin.py and _budget.py


def looks_like_space_file(name: str) -> bool:
    """``--space`` names a YAML file rather than a built-in space."""
    from pathlib import Path

    return name.endswith((".yaml", ".yml")) or "/" in name or Path(name).is_file()


def closest(word: str, names: Iterable[str], n: int = 3) -> list[str]:
    """The names nearest a typo, best first (``difflib`` ratios): a dotted path is compared whole and by its last
    part (``sieve.fraction`` -> ``sieving.fraction``, ``ratio`` -> ``sparsity.ratio``), among its own section's
    names when that section exists (``sparsity.ration`` -> ``sparsity.ratio``); only names about as close as the
    best one are kept. Listing every valid name (56 config paths) buried the one the user meant."""
    from difflib import SequenceMatcher

    pool = list(dict.fromkeys(names))
    section = word.split(".", 1)[0] + "." if "." in word else ""
    own = [x for x in pool if section and x.startswith(section)]

    def score(name: str) -> float:
        whole = SequenceMatcher(None, word, name).ratio()
        typed, last = word.rsplit(".", 1)[-1], name.rsplit(".", 1)[-1]
        tail = SequenceMatcher(None, typed, last).ratio()
        if len(typed) >= 4 and last.startswith(typed):  # a cut-short name: freezing.target
            tail = max(tail, 0.8)
        return (whole + tail) / 2 if tail >= 0.6 or whole >= 0.75 else 0.0

    for cands in ([own] if own else []) + [pool]:
        scored = sorted(((score(x), x) for x in cands), key=lambda t: -t[0])
        if scored and scored[0][0] > 0:
            best = scored[0][0]
            return [x for sc, x in scored if sc > 0 and sc >= best - 0.08][:n]
    return []


def did_you_mean(word: str, names: Iterable[str]) -> str:
    """``did you mean 'a' or 'b'?`` for the closest names, '' when none is close."""
    near = closest(word, names)
    return f"did you mean {' or '.join(repr(x) for x in near)}?" if near else ""
