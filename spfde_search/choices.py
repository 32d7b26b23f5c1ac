"""The names the command line accepts, checked before any heavy import (``spfde_search/cli/precheck.py``).

Why a module of its own: a typo (``spfde search --space nosuch``) must answer in a fraction of a second, so the
lists it is checked against cannot live behind torch, Optuna, Ray or MLflow imports. The search settings
(``search/settings.py``), the sampler factory and the space registry use these same tuples; tests/test_choices.py
checks that they agree with the registry and the settings model.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable

__all__ = [
    "BUILTIN_DATA",
    "BUILTIN_SPACES",
    "EARLY_STOPPING",
    "FIDELITY",
    "INITIAL_POINT_SETS",
    "SAMPLERS",
    "TORCHVISION_MODELS",
    "cifar_resnet_depth",
    "closest",
    "did_you_mean",
    "is_import_path",
    "looks_like_space_file",
    "name_problem",
]

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


# ---------------------------------------------------------------- model.name and data.name

TORCHVISION_MODELS = ("resnet18", "resnet34", "resnet50")  # registered in models/torchvision_resnet.py
BUILTIN_DATA = ("fashion_mnist", "mnist", "cifar10", "cifar100", "imagefolder", "synthetic")  # data/sources.py
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_CIFAR_RESNET = re.compile(r"^resnet(\d+)$")
# where each field's registry lives; read only if that module is already imported (a package that registers on
# import has imported it), so checking a name never imports torch
_REGISTRY = {"model.name": ("spfde_search.models", "MODELS"), "data.name": ("spfde_search.data.spec", "DATASETS")}


def is_import_path(name: str) -> bool:
    """``package.module:callable`` (Hydra's ``_target_`` with timm's registry beside it: a name if registered,
    an import path otherwise)."""
    return bool(_IMPORT_PATH.match(name))


def cifar_resnet_depth(name: str) -> int | None:
    """``resnet{6n+2}`` (n >= 1) -> its depth; None for any other name (resnet18/34/50 are torchvision's)."""
    m = _CIFAR_RESNET.match(name)
    depth = int(m.group(1)) if m else 0
    return depth if depth >= 8 and (depth - 2) % 6 == 0 and name not in TORCHVISION_MODELS else None


def name_problem(field: str, name: str) -> str | None:
    """Why ``name`` cannot be ``field`` (``model.name`` / ``data.name``), or None: it must be a built-in or
    registered name or have the import-path form (whether that path imports is checked when it is resolved)."""
    builtin = (
        (cifar_resnet_depth(name) is not None or name in TORCHVISION_MODELS) if field == "model.name"
        else name in BUILTIN_DATA
    )
    module, attr = _REGISTRY[field]
    registry = getattr(sys.modules.get(module), attr, None)
    if builtin or is_import_path(name) or (registry is not None and name in registry):
        return None
    known = (
        "resnet{6n+2} with n >= 1 (resnet8, resnet20, resnet32, resnet56, ...), " + ", ".join(TORCHVISION_MODELS)
        if field == "model.name" else ", ".join(BUILTIN_DATA)
    )
    extra = [n for n in (registry or ()) if n not in TORCHVISION_MODELS + BUILTIN_DATA]
    known += "".join(", " + n for n in extra)
    return f"unknown {field.split('.')[0]} {name!r}; allowed: {known}, or an import path 'module:callable'"
