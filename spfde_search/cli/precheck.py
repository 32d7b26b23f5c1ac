"""Checks of names and flags that need none of the heavy libraries, run before the commands import them.

Why: ``spfde search --space nosuch`` used to import torch, Optuna and pandas (seconds) before saying the space does
not exist, and ``spfde pareto nosuch`` imported MLflow first. These checks answer a typo in a fraction of a second
(``benchmarks/startup.py``); everything else is still validated where it always was (the search's ``prepare``,
the settings model, MLflow), so a value that passes here can still be refused there, never the reverse.
``tests/cli/test_precheck.py`` asserts that no heavy module is loaded when these checks fail.
"""

from __future__ import annotations

from pathlib import Path

from ..choices import (
    BUILTIN_SPACES,
    EARLY_STOPPING,
    FIDELITY,
    INITIAL_POINT_SETS,
    SAMPLERS,
    did_you_mean,
    looks_like_space_file,
)
from ..store_uri import TrackingUnavailable, recorded_searches, resolve_tracking_uri, sqlite_path

__all__ = ["PrecheckError", "check_recorded_search", "check_search_options"]


class PrecheckError(ValueError):
    """Bad input found before any heavy import; the message is the whole ``error:`` line."""


def _choice(flag: str, value: str | None, valid: tuple[str, ...]) -> None:
    if value is not None and value not in valid:
        hint = did_you_mean(value, valid)
        raise PrecheckError(f"{flag} {value!r} is not one of {', '.join(valid)}" + (f"; {hint}" if hint else ""))


def check_search_options(*, space: str | None, sampler: str | None, early_stopping: str | None,
                         initial: str | None, fidelity: str | None = None) -> None:
    """``spfde search``: the space name or file, the sampler, early stopping and initial points."""
    if space is not None and space not in BUILTIN_SPACES:
        if not looks_like_space_file(space):
            hint = did_you_mean(space, BUILTIN_SPACES)
            raise PrecheckError(f"unknown search space {space!r}; " + (f"{hint} " if hint else "") +
                                f"built-in spaces: {', '.join(BUILTIN_SPACES)}, or a YAML file path")
        if not Path(space).is_file():
            raise PrecheckError(f"space file {space!r} does not exist")
    _choice("--sampler", sampler, SAMPLERS)
    _choice("--early-stopping", early_stopping, EARLY_STOPPING)
    _choice("--initial", initial, INITIAL_POINT_SETS)
    _choice("--fidelity", fidelity, FIDELITY)


def check_recorded_search(tracking_uri: str | None, name: str | None) -> None:
    """``spfde pareto | export | ui``: a local SQLite store must exist and hold the search ``name`` (any search
    when ``name`` is None). Other stores (servers, databases) are left to MLflow."""
    try:
        uri = resolve_tracking_uri(tracking_uri)
    except TrackingUnavailable as e:
        raise PrecheckError(str(e)) from None
    except ValueError as e:  # a plain folder: MLflow file stores are gone
        raise PrecheckError(str(e)) from None
    db = sqlite_path(uri)
    if db is None:
        return
    if not db.exists():
        raise PrecheckError(f"no MLflow store at {db} (run a search first, or pass --tracking-uri)")
    names = recorded_searches(uri)
    if names is None:
        return
    if not names:
        raise PrecheckError(f"no search recorded yet in MLflow at {uri}")
    if name is not None and name not in names:
        listed = sorted(names)
        more = f" (and {len(listed) - 10} more)" if len(listed) > 10 else ""
        raise PrecheckError(f"no search named {name!r} in MLflow at {uri}; recorded: {', '.join(listed[:10])}{more}")
