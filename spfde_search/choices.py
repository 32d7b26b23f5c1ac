"""The names the command line accepts, checked before any heavy import (``spfde_search/cli/precheck.py``).

Why a module of its own: a typo (``spfde search --space nosuch``) must answer in a fraction of a second, so the
lists it is checked against cannot live behind torch, Optuna, Ray or MLflow imports. The search settings
(``search/settings.py``), the sampler factory and the space registry use these same tuples; tests/test_choices.py
checks that they agree with the registry and the settings model.
"""

from __future__ import annotations

import re
import sys

__all__ = [
    "BUILTIN_DATA",
    "BUILTIN_SPACES",
    "EARLY_STOPPING",
    "INITIAL_POINT_SETS",
    "SAMPLERS",
    "TORCHVISION_MODELS",
    "cifar_resnet_depth",
    "is_import_path",
    "looks_like_space_file",
    "name_problem",
]

SAMPLERS = ("auto", "tpe", "nsga2", "gp", "random")
EARLY_STOPPING = ("none", "asha", "moasha")
INITIAL_POINT_SETS = ("paper",)
BUILTIN_SPACES = ("joint", "budget", "paper", "smoke")  # registered in search_spaces/_builtin.py and _budget.py


def looks_like_space_file(name: str) -> bool:
    """``--space`` names a YAML file rather than a built-in space."""
    from pathlib import Path

    return name.endswith((".yaml", ".yml")) or "/" in name or Path(name).is_file()


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
