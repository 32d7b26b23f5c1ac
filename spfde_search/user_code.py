"""Import paths to the user's code (``model.name: mypkg.nets:build_net``) and calling it, each failure one line.

Hydra's ``_target_`` names any callable by its import path; timm's registry resolves short names. The config
takes both (``choices.name_problem``); this module does the import and the call for the model and data
resolvers, so a bad path or a callable that raises is one ``error:`` line naming the field before anything
starts. As uvicorn does for ``app:module`` (uvicorn/main.py, ``--app-dir`` default "."), the current directory
is importable, so ``spfde search`` run from a project finds that project's modules as ``python -m`` would.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import sysconfig
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .config import ConfigError

__all__ = ["UserCodeError", "call_user", "load_callable", "local_modules"]


class UserCodeError(ConfigError):
    """The user's code behind an import path did not import, or its callable raised. On the driver it is one
    ``error:`` line like any ConfigError; on a Ray worker it is a failure of that trial's run (the worker's
    environment, not the sampled point: trainables/_assess.py), never an infeasible point."""


def load_callable(field: str, path: str) -> Callable[..., Any]:
    """``module:attr`` -> the callable; ConfigError naming ``field`` if the module does not import, lacks the
    attribute or it is not callable."""
    module, _, attr = path.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as e:
        raise UserCodeError(f"{field}: cannot import {module!r} ({e}); check the module path before ':' and that "
                            "it is importable from here (pip install -e, or run from its project folder)") from None
    except Exception as e:  # the module itself failed while importing
        raise UserCodeError(f"{field}: importing {module!r} raised {type(e).__name__}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserCodeError(f"{field}: {module!r} has no attribute {attr!r}; check the name after ':'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserCodeError(f"{field}: {path} is a {type(obj).__name__}, not callable; name a function or class "
                            "that builds it")
    return obj


def call_user(
    field: str, fn: Callable[..., Any], offered: Mapping[str, Any], kwargs: Mapping[str, Any]
) -> Any:
    """Call ``fn`` with the ``offered`` arguments its signature names and the user's ``kwargs``
    (``model.kwargs``); anything it raises becomes one ConfigError line naming ``field``. A signature that only
    takes ``**kwargs`` gets ``num_classes`` alone: torchvision's and timm's builders pass it on to the model class,
    which may not know the others (torchvision's MobileNetV2 has no ``in_channels``)."""
    label = f"{getattr(fn, '__name__', type(fn).__name__)}()"
    kw_field = field.replace(".name", ".kwargs")
    try:
        sig: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: offer nothing, pass the kwargs
        sig = None
    params = sig.parameters if sig is not None else {}
    any_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    args = {k: v for k, v in offered.items() if k in params or (any_kw and k == "num_classes")}
    args.update(kwargs)
    try:
        if sig is not None:
            sig.bind(**args)
    except TypeError as e:
        raise ConfigError(f"{kw_field}: {label} does not accept {sorted(kwargs)} ({e}); fix {kw_field}") from None
    try:
        return fn(**args)
    except Exception as e:
        raise UserCodeError(f"{field}: {label} raised {type(e).__name__}: {e}; fix the callable or {kw_field}") from None


_OURS = ("spfde_search", "search_spaces", "trainables")  # shipped by --ship-code, never as user code


def local_modules(names: Iterable[str]) -> list[str]:
    """Where the user's code behind import paths lives, for Ray's ``runtime_env`` ``py_modules``: the folder of
    each top-level package (or the file of a top-level module) that is not installed (site-packages, the
    standard library) and not ours. Installed packages are the cluster's to install; a project folder or a
    script beside the command is what a worker would otherwise not see."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    installed = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    out: list[str] = []
    for name in names:
        top = name.partition(":")[0].split(".")[0]
        if top in _OURS:
            continue
        spec = importlib.util.find_spec(top)
        if spec is None:
            continue  # resolving the name says why, in one line
        if spec.submodule_search_locations:
            where = Path(next(iter(spec.submodule_search_locations)))
        elif spec.origin and spec.origin.endswith(".py"):
            where = Path(spec.origin)
        else:
            continue  # built-in or compiled: installed
        if any(where.resolve().is_relative_to(i) for i in installed):
            continue
        if str(where) not in out:
            out.append(str(where))
    return out
