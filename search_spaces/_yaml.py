"""User spaces from a YAML file: ``path: {type: float|int|categorical, low, high, log, step, choices}``.

Example::

    sparsity.ratio: {type: float, low: 0.8, high: 0.98}
    freezing.target_flops_reduction: {type: float, low: 0.0, high: 0.3, step: 0.05}
    sparsity.algorithm: {type: categorical, choices: [mest, rigl]}

Everything is checked against the config model when the file is loaded (unknown path, wrong type, bound
outside the field's range: SpaceError naming the parameter), before any trial starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from spfde_search.config import field_info, read_yaml, typed_value

from ._base import SpaceError, validate_distribution

__all__ = ["YamlSpace", "load_space_file", "parse_space_mapping"]

_KEYS = {"type", "low", "high", "log", "step", "choices"}


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _distribution(name: str, spec: Any) -> BaseDistribution:
    where = f"parameter {name!r}"
    if not isinstance(spec, dict):
        raise SpaceError(f"{where}: expected a mapping like {{type: float, low: 0.5, high: 0.9}}, got {spec!r}")
    # on/off/yes/no in choices are booleans only for a bool field: `choices: [on, off]` for channels_last stays text
    spec = {k: typed_value(v, name if k == "choices" else None) for k, v in spec.items()}
    unknown = set(spec) - _KEYS
    if unknown:
        raise SpaceError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; allowed: {', '.join(sorted(_KEYS))}")
    try:
        info = field_info(name)
    except KeyError as e:
        raise SpaceError(f"unknown parameter path {name!r}: {e.args[0].split(';', 1)[-1].strip()}") from None
    kind = spec.get("type")
    if kind is None:
        kind = "categorical" if "choices" in spec else info.kind
    if kind not in ("float", "int", "categorical"):
        if info.kind == "other":
            raise SpaceError(f"{where}: this config field ({info.describe()}) cannot be searched; set it in the base config")
        if "type" not in spec:  # a string field: no range to sample, only choices
            raise SpaceError(f"{where}: the config field takes {info.describe()}; give type: categorical and choices")
        raise SpaceError(f"{where}: type must be float, int or categorical, got {kind!r}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{where}: a categorical parameter needs a non-empty list 'choices'")
        extra = {"low", "high", "log", "step"} & set(spec)
        if extra:
            raise SpaceError(f"{where}: {', '.join(sorted(extra))} do not apply to a categorical parameter")
        return CategoricalDistribution(choices)
    if "choices" in spec:
        raise SpaceError(f"{where}: 'choices' only applies to type: categorical")
    for key in ("low", "high"):
        if key not in spec or not _is_num(spec[key]):
            raise SpaceError(f"{where}: '{key}' must be a number, got {spec.get(key)!r}")
    low, high = spec["low"], spec["high"]
    if low > high:
        raise SpaceError(f"{where}: low={low:g} is above high={high:g}")
    log = bool(spec.get("log", False))
    step = spec.get("step")
    if step is not None and (not _is_num(step) or step <= 0):
        raise SpaceError(f"{where}: step must be a positive number, got {step!r}")
    if log and step is not None:
        raise SpaceError(f"{where}: log and step cannot be combined")
    if log and low <= 0:
        raise SpaceError(f"{where}: a log range needs low > 0, got low={low:g}")
    if kind == "int":
        if not all(isinstance(v, int) for v in (low, high)) or (step is not None and not isinstance(step, int)):
            raise SpaceError(f"{where}: type int needs integer low/high/step")
        return IntDistribution(low, high, step=step or 1, log=log)
    return FloatDistribution(float(low), float(high), step=None if step is None else float(step), log=log)


def parse_space_mapping(data: Any, source: str = "space") -> dict[str, BaseDistribution]:
    if not isinstance(data, dict) or not data:
        raise SpaceError(f"{source}: a space file must be a non-empty mapping of config paths to ranges")
    dists = {}
    for name, spec in data.items():
        d = _distribution(str(name), spec)
        validate_distribution(str(name), d)
        dists[str(name)] = d
    return dists


class YamlSpace:
    """A flat (unconditional) space; the suggestions are exactly the file's entries, in file order."""

    def __init__(self, distributions: dict[str, BaseDistribution], source: str = "", text: str = "") -> None:
        self.distributions = dict(distributions)
        self.source = source
        self.text = text

    def __call__(self, trial: Any) -> dict[str, Any] | None:
        for name, d in self.distributions.items():
            if isinstance(d, CategoricalDistribution):
                trial.suggest_categorical(name, list(d.choices))
            elif isinstance(d, IntDistribution):
                trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
            else:
                assert isinstance(d, FloatDistribution)
                trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
        return None


def load_space_file(path: str | Path, text: str | None = None) -> YamlSpace:
    """Parse and validate a YAML space file (or its ``text``, as stored with a search for ``--resume``)."""
    p = Path(path)
    if text is None:
        if not p.is_file():
            raise SpaceError(f"space file {str(p)!r} does not exist")
        text = p.read_text()
    try:
        data = read_yaml(text)  # boolean words kept as typed; _distribution types them per field
    except yaml.YAMLError as e:
        raise SpaceError(f"space file {str(p)!r} is not valid YAML: {e}") from None
    return YamlSpace(parse_space_mapping(data, f"space file {str(p)!r}"), str(p), text)
