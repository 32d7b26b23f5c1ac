"""The execution settings a run actually resolved (device kind, precision, channels-last, CPU threads), kept with
its config so that ``spfde export`` writes them and ``spfde train --config`` reruns a trial exactly.

Why: ``auto`` / ``None`` settings resolve per machine and per process. A search trial gets one thread from Ray
(``OMP_NUM_THREADS`` = its CPUs), while ``spfde train`` on the same machine gets torch's default (all cores); bf16
reductions then sum in another order and the accuracy differs in the third decimal. Recording the resolved values
makes the rerun exact on the same machine; elsewhere the FLOPs are the same (they never depend on these settings,
``method/flops.py``) and the accuracy agrees within noise.

Pure (no torch): the trainer supplies the values (``Trainer.execution``), the search records them
(``trial_row``), the CLI compares them with this machine's (``differences``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["PATHS", "RESULT_KEY", "differences", "parse", "with_execution"]

# the config paths that hold execution settings, in the order notices list them
PATHS = ("train.device", "train.precision", "train.channels_last", "train.threads")
RESULT_KEY = "execution"
"""Result field a trial reports: the JSON of ``{path: resolved value}`` (a string, so Tune keeps it as is)."""


def parse(value: Any) -> dict[str, Any]:
    """``{path: value}`` from a reported ``execution`` field (JSON text or a mapping); ``{}`` when absent or bad."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    if not isinstance(value, Mapping):
        return {}
    return {k: value[k] for k in PATHS if value.get(k) is not None}


def with_execution(config: Mapping[str, Any], execution: Any) -> dict[str, Any]:
    """The nested ``config`` with the resolved execution settings written into ``train.*`` (a copy)."""
    resolved = parse(execution)
    out = dict(config)
    if resolved:
        train = dict(out.get("train") or {})
        for path, v in resolved.items():
            train[path.split(".", 1)[1]] = v
        out["train"] = train
    return out


def differences(configured: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    """One line per execution setting the config fixes to a value this machine would not pick by itself.

    ``configured``: the config's ``{path: value}`` (``auto`` / ``None`` mean "whatever this machine resolves" and
    never differ); ``here``: what this machine resolves for ``auto`` / ``None``."""
    lines = []
    for path in PATHS:
        want, mine = configured.get(path), here.get(path)
        if want in (None, "auto") or mine is None or str(want) == str(mine):
            continue
        lines.append(f"note: {path} = {want} from the config; left to choose (auto), this machine would resolve "
                     f"{mine}")
    return lines
