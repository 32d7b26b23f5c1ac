"""The one config model. Every knob of a run lives here under a dotted path (``sparsity.ratio``).

Search spaces use these same dotted paths as parameter names, so a trial's config is the base config plus
its sampled values and an exported config is exactly what the trial ran. Unknown keys are rejected and
every error names the field and its allowed range. Choices marked (ours) in docs/method.md are fields here.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .choices import name_problem

__all__ = [
    "Config",
    "ConfigError",
    "FieldInfo",
    "field_info",
    "load_config",
    "apply_overrides",
    "parse_overrides",
    "parse_value", "parse_config_yaml",
    "read_yaml", "typed_value",
    "flatten", "unflatten",
]

DEFAULT_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


class ConfigError(ValueError):
    """A config that cannot run; the message names the field(s) and what to fix."""


class _Section(BaseModel):
    # allow_inf_nan=False: nan/inf in any float field (lr=nan) is "must be a finite number", not a range error
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelConfig(_Section):
    name: str = Field("resnet8", description="registered model (resnet{6n+2}, resnet18/34/50) or import path "
                      "'module:callable' returning an nn.Module (docs/own_model.md)")
    width: int = Field(1, ge=1, le=16, description="channel multiplier of CIFAR-style ResNets (paper: resnet32 width 2)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the model callable")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _checked_name("model.name", v)


def _checked_name(field: str, v: str) -> str:
    if problem := name_problem(field, v):
        raise ValueError(problem)
    return v


class DataConfig(_Section):
    name: str = Field("fashion_mnist", description="registered data set (fashion_mnist, mnist, cifar10, cifar100, "
                      "imagefolder, synthetic) or import path 'module:callable' returning (train, test)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the data callable")
    root: str | None = Field(None, description="where the data lives (default: the data set's usual place)")
    train_subset: int | None = Field(None, ge=10, description="seeded class-balanced training subset size (None = all)")
    test_subset: int | None = Field(None, ge=10, description="seeded class-balanced test subset size (None = all)")
    val_size: int | None = Field(
        None, ge=0, description="validation images that every selection reads (class-balanced, seeded by `seed`): "
        "drawn outside data.train_subset when there is room, else carved out of the training set; 0 = none (selects "
        "on test); None = automatic: 0 for `spfde train`, min(5000, test set) for `spfde search` (docs/search.md)")
    augment: bool = Field(True, description="random crop (pad 4, or 2 for 28x28) + horizontal flip on the device")
    image_size: int = Field(224, ge=16, le=1024, description="crop size for imagefolder data")
    num_workers: int = Field(4, ge=0, le=64, description="DataLoader workers for imagefolder and streamed user data")
    stream: bool | None = Field(None, description="a user Dataset (data.name: module:callable) is read item by item "
                                "through a DataLoader each epoch instead of held on the device; None = when its "
                                "training images would take over 1 GiB (docs/own_model.md)")
    # synthetic (tests only): sizes of a random, learnable-by-construction set
    synthetic_classes: int = Field(10, ge=2, le=1000)
    synthetic_size: int = Field(16, ge=8, le=256)
    synthetic_train: int = Field(512, ge=10)
    synthetic_test: int = Field(256, ge=10)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _checked_name("data.name", v)


class TrainConfig(_Section):
    epochs: int = Field(10, ge=1, le=10_000, description="T, training epochs")
    batch_size: int = Field(128, ge=1, le=65_536)
    lr: float = Field(0.1, gt=0, le=10, description="peak learning rate eta0 (cosine decay, docs/method.md §3)")
    lr_min: float = Field(0.0, ge=0, le=10, description="eta_min at the end of each cosine")
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up epochs before the cosine (ours)")
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(1e-4, ge=0, le=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    update_interval: int = Field(5, ge=1, le=1000, description="delta tau: epochs between mask / sieving / freezing steps")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto = bf16 autocast on CUDA and on CPUs with native bf16 (avx512_bf16/AMX), else fp32")
    channels_last: Literal["auto", "on", "off"] = Field(
        "auto", description="auto = on wherever precision resolves to native bf16 (CUDA, bf16 CPUs), else off")
    threads: int | None = Field(None, ge=1, le=1024, description="torch CPU threads (None = torch's default)")
    eval_batch_size: int = Field(1024, ge=1)
    eval_every: int = Field(1, ge=1, le=10_000, description="evaluate every k epochs, and always after the last (validation if data.val_size > 0, else test)")

    @model_validator(mode="after")
    def _lr_order(self) -> TrainConfig:
        if self.lr_min > self.lr:
            raise ValueError(f"train.lr_min ({self.lr_min}) must not exceed train.lr ({self.lr})")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"train.warmup_epochs ({self.warmup_epochs}) must be below train.epochs ({self.epochs})")
        return self


Algorithm = Literal["mest", "rigl", "set", "static", "dense"]


class SparsityConfig(_Section):
    algorithm: Algorithm = Field("mest", description="DST algorithm")
    ratio: float = Field(0.9, ge=0, lt=1, description="target sparsity of the sparse layers (fraction of zeros)")
    distribution: Literal["uniform", "erk"] = "uniform"
    dense_first: bool = Field(True, description="keep the first conv/linear dense (paper: the stem conv)")
    dense_shortcuts: bool = Field(True, description="keep 1x1 shortcut convs dense (ours, as MEST's profile)")
    dense_classifier: bool = Field(True, description="keep the last linear (the classifier) dense (ours, as MEST's)")
    drop_fraction: float = Field(
        0.3, gt=0, le=1,
        description="SET/RigL: fraction of a layer's target weights swapped per update (MEST: only with an empty soft_bound, plain EM)",
    )
    drop_decay: Literal["auto", "cosine", "constant"] = Field(
        "auto", description="auto = cosine for rigl (RigL paper), constant for mest/set"
    )
    update_end: float = Field(0.75, gt=0, le=1, description="fraction of training after which masks stop changing")
    grad_lambda: float = Field(0.0, ge=0, le=1e6, description="MEST drop score |w| + lambda*|dL/dw| (finite, at most 1e6)")
    soft_bound: list[tuple[float, float]] = Field(
        default_factory=lambda: [(0.5625, 0.02), (0.75, 0.01)],
        description="MEST EM&S: [(until_fraction, extra_density), ...]; extra density above target until that point",
    )

    @field_validator("soft_bound")
    @classmethod
    def _phases(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        last = 0.0
        for until, extra in v:
            if not (0 < until <= 1) or until <= last:
                raise ValueError("soft_bound phases need increasing until-fractions in (0, 1]")
            if not (0 <= extra < 1):
                raise ValueError("soft_bound extra densities must be in [0, 1)")
            last = until
        return v

    @model_validator(mode="after")
    def _dense_ratio(self) -> SparsityConfig:
        if self.algorithm == "dense" and self.ratio != 0:
            raise ValueError("sparsity.ratio must be 0 when sparsity.algorithm is 'dense' (set sparsity.ratio=0)")
        return self

    def decay(self) -> Literal["cosine", "constant"]:
        if self.drop_decay == "auto":
            return "cosine" if self.algorithm == "rigl" else "constant"
        return self.drop_decay


class FreezingConfig(_Section):
    target_flops_reduction: float = Field(
        0.0, ge=0, lt=1, description="x: FLOPs saved by freezing relative to the same run without it (0 = off)"
    )
    freeze_fraction: float = Field(2 / 3, gt=0, le=1, description="freezable prefix: units covering this fraction of layers")
    scheme: Literal["single_shot", "single_shot_resume", "periodic", "delayed_periodic"] = "single_shot"
    start_epoch: int | None = Field(None, ge=0, description="explicit T_frz (instead of a FLOPs target)")
    units: int | None = Field(None, ge=1, description="with start_epoch: how many freezable units to freeze (default all)")
    min_start_epoch: int | None = Field(None, ge=0, description="earliest T_frz the solver may pick (default: delta tau)")
    resume_epochs: int | None = Field(None, ge=1, description="single_shot_resume: t, epochs unfrozen at the end (default delta tau)")
    resume_lr: float = Field(0.001, gt=0, description="single_shot_resume: learning rate of the final unfrozen epochs")
    delay_fraction: float = Field(
        0.5, gt=0, lt=1, description="delayed_periodic: every unit fully active for this fraction (periodic: none)"
    )
    lr_schedule: Literal["per_unit", "global"] = Field(
        "per_unit", description="per_unit: each unit's cosine ends at its freeze epoch (paper); global: one cosine to T"
    )

    @model_validator(mode="after")
    def _exclusive(self) -> FreezingConfig:
        if self.start_epoch is not None and self.target_flops_reduction > 0:
            raise ValueError(
                "set either freezing.target_flops_reduction or freezing.start_epoch, not both"
            )
        if self.units is not None and self.start_epoch is None:
            raise ValueError("freezing.units needs freezing.start_epoch")
        if self.start_epoch is not None and self.scheme in ("periodic", "delayed_periodic"):
            raise ValueError(
                f"freezing.start_epoch does not apply to freezing.scheme={self.scheme!r}: periodic runs its pattern "
                "from epoch 0 and delayed_periodic after freezing.delay_fraction of training; set "
                "freezing.target_flops_reduction instead"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.target_flops_reduction > 0 or self.start_epoch is not None


class SievingConfig(_Section):
    fraction: float = Field(0.0, ge=0, lt=1, description="y: fraction of the training set held out in the removed queue (0 = off)")
    window: int | None = Field(
        None, ge=0, le=10_000,
        description="W: epochs whose forgetting events rank the samples, a sliding window (None or 0 = max(delta tau, 3), ours)",
    )

    @property
    def enabled(self) -> bool:
        return self.fraction > 0


class Config(_Section):
    seed: int = Field(0, ge=0, le=2**31 - 1)
    model: ModelConfig = Field(default_factory=ModelConfig)  # type: ignore[arg-type]
    data: DataConfig = Field(default_factory=DataConfig)  # type: ignore[arg-type]
    train: TrainConfig = Field(default_factory=TrainConfig)  # type: ignore[arg-type]
    sparsity: SparsityConfig = Field(default_factory=SparsityConfig)  # type: ignore[arg-type]
    freezing: FreezingConfig = Field(default_factory=FreezingConfig)  # type: ignore[arg-type]
    sieving: SievingConfig = Field(default_factory=SievingConfig)  # type: ignore[arg-type]

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Config:
        """Validate a nested mapping; raise ConfigError with one line per problem."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as e:
            raise ConfigError(format_validation_error(e)) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        return Config.parse(apply_overrides(self.to_dict(), overrides))


# ---------------------------------------------------------------- field introspection


@dataclass(frozen=True)
class FieldInfo:
    """What a dotted path accepts: kind ('float', 'int', 'bool', 'str', 'categorical', 'other') and bounds."""

    path: str
    kind: str
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    choices: tuple[Any, ...] | None = None
    optional: bool = False
    type_text: str = ""  # what the field holds, in words ("a list of [number, number] pairs"), for kind 'other'

    def describe(self) -> str:
        if self.choices == (False, True):
            return "true or false (also on/off, yes/no)"
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind in ("float", "int") and (self.low is not None or self.high is not None):
            lo = "-inf" if self.low is None else f"{self.low:g}"
            hi = "inf" if self.high is None else f"{self.high:g}"
            lb = "[" if self.low_inclusive and self.low is not None else "("
            hb = "]" if self.high_inclusive and self.high is not None else ")"
            return f"{'an integer' if self.kind == 'int' else 'a number'} in {lb}{lo}, {hi}{hb}"
        return self.type_text or _KIND_TEXT.get(self.kind, f"a {self.kind}")

    def contains(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if self.kind in ("float", "int"):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                return False
            if self.low is not None and (value < self.low or (value == self.low and not self.low_inclusive)):
                return False
            return not (self.high is not None and (value > self.high or (value == self.high and not self.high_inclusive)))
        return True


_KIND_TEXT = {"float": "a number", "int": "an integer", "str": "a string", "bool": "true or false"}
_NOUNS = {float: "number", int: "integer", str: "string", bool: "boolean"}


def _type_text(ann: Any) -> str:
    """A container annotation in words: list[tuple[float, float]] -> 'a list of [number, number] pairs'."""

    def noun(a: Any, plural: bool = False) -> str:
        origin = getattr(a, "__origin__", None)
        args: tuple[Any, ...] = tuple(getattr(a, "__args__", ()))
        if origin is tuple and args and args[-1] is not Ellipsis:
            word = "[" + ", ".join(noun(x) for x in args) + "] " + ("pair" if len(args) == 2 else "tuple")
        elif origin is tuple:
            word = f"list of {noun(args[0], True)}"
        elif origin in (list, set, frozenset):
            word = f"list of {noun(args[0], True) if args else 'values'}"
        elif origin is dict:
            k, v = args if len(args) == 2 else (str, Any)
            word = f"mapping of {noun(k, True)} to {noun(v, True)}"
        else:
            word = _NOUNS.get(a, getattr(a, "__name__", str(a)))
        return word + "s" if plural and not word.endswith("s") and not word.startswith(("list", "mapping")) else word

    text = noun(ann)
    return ("an " if text[0] in "aeiou" else "a ") + text


def _section_models() -> dict[str, type[BaseModel]]:
    out: dict[str, type[BaseModel]] = {}
    for name, f in Config.model_fields.items():
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out[name] = ann
    return out


def field_paths() -> list[str]:
    paths = []
    for name, _f in Config.model_fields.items():
        sec = _section_models().get(name)
        if sec is None:
            paths.append(name)
        else:
            paths.extend(f"{name}.{k}" for k in sec.model_fields)
    return paths


def _path_hint(path: str) -> str:
    """The closest valid paths to a typo; with none close, the keys of its section or the sections."""
    from .choices import did_you_mean

    hint = did_you_mean(path, field_paths())
    if hint:
        return hint
    section = path.split(".", 1)[0]
    keys = [p for p in field_paths() if p.startswith(section + ".")]
    if keys:
        return f"keys of {section}: {', '.join(keys)}"
    return f"sections: {', '.join(_section_models())}"


def field_info(path: str) -> FieldInfo:
    """Bounds and kind of one dotted config path; KeyError naming the valid paths if unknown."""
    parts = path.split(".")
    sections = _section_models()
    if len(parts) == 1 and parts[0] in Config.model_fields and parts[0] not in sections:
        f = Config.model_fields[parts[0]]
    elif len(parts) == 2 and parts[0] in sections and parts[1] in sections[parts[0]].model_fields:
        f = sections[parts[0]].model_fields[parts[1]]
    else:
        raise KeyError(f"unknown config path {path!r}; {_path_hint(path)}")
    ann: Any = f.annotation
    optional = False
    args = getattr(ann, "__args__", ())
    if type(None) in args:
        optional = True
        rest = [a for a in args if a is not type(None)]
        ann = rest[0] if len(rest) == 1 else ann
    if getattr(ann, "__origin__", None) is Literal:
        return FieldInfo(path, "categorical", choices=tuple(ann.__args__), optional=optional)
    if path in ("model.name", "data.name"):
        return FieldInfo(path, "str")
    kind = {float: "float", int: "int", bool: "bool", str: "str"}.get(ann, "other")
    type_text = _type_text(ann) if kind == "other" else ""
    low = high = None
    lo_inc = hi_inc = True
    for m in f.metadata:
        if isinstance(m, annotated_types.Ge):
            low, lo_inc = float(m.ge), True  # type: ignore[arg-type]
        elif isinstance(m, annotated_types.Gt):
            low, lo_inc = float(m.gt), False  # type: ignore[arg-type]
        elif isinstance(m, annotated_types.Le):
            high, hi_inc = float(m.le), True  # type: ignore[arg-type]
        elif isinstance(m, annotated_types.Lt):
            high, hi_inc = float(m.lt), False  # type: ignore[arg-type]
    if kind == "bool":
        return FieldInfo(path, "categorical", choices=(False, True), optional=optional)
    return FieldInfo(path, kind, low, high, lo_inc, hi_inc, optional=optional, type_text=type_text)


def format_validation_error(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
        shown = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "finite_number":  # nan / inf: pydantic checks this before any bound
            msg = f"must be a finite number, got {err.get('input')}"
        if err["type"] == "extra_forbidden":
            parent = loc.rsplit(".", 1)[0] if "." in loc else ""
            valid = [p for p in field_paths() if p.startswith(parent + ".")] if parent else list(Config.model_fields)
            from .choices import did_you_mean

            hint = did_you_mean(loc, valid) or f"valid keys here: {', '.join(valid)}"
            lines.append(f"{loc}: unknown key; {hint}")
            continue
        hint = ""
        try:
            info = field_info(loc)
            # "a string" adds nothing; nor does a list's type beside its validator's own message
            if info.kind != "str" and not (info.kind == "other" and err["type"] == "value_error"):
                hint = f" (allowed: {info.describe()}{' or null' if info.optional else ''})"
        except KeyError:
            pass
        lines.append(f"{shown or 'config'}: {msg}{hint}")
    if len(lines) == 1:  # one problem, one line (the CLI's ``error:`` line)
        return f"invalid config: {lines[0]}"
    return "invalid config:\n  " + "\n  ".join(lines)


# ---------------------------------------------------------------- loading and overrides


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and key not in ("model.kwargs", "data.kwargs"):  # dict fields stay one value
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in flat.items():
        cur = out
        parts = k.split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = v
    return out


def apply_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set dotted paths in a nested dict; an unknown path is a ConfigError naming the valid ones."""
    out = copy.deepcopy(dict(base))
    for path, value in overrides.items():
        try:
            field_info(path)
        except KeyError as e:
            raise ConfigError(str(e.args[0])) from None
        cur = out
        parts = path.split(".")
        for p in parts[:-1]:
            nxt = cur.get(p)
            if not isinstance(nxt, dict):
                nxt = {}
                cur[p] = nxt
            cur = nxt
        cur[parts[-1]] = value
    return out


class _ConfigLoader(yaml.SafeLoader):
    """YAML 1.1 resolves on/off/yes/no/true/false to booleans; this loader leaves them as the text typed, and
    :func:`typed_value` turns them into booleans only where the config field is a bool. A string field
    (``train.channels_last: off``, ``data.root: yes``) gets exactly what the user wrote."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_BOOL_WORDS = {"true": True, "yes": True, "on": True, "y": True, "false": False, "no": False, "off": False, "n": False}


def read_yaml(text: str) -> Any:
    """Parse YAML with boolean words left as strings (see :func:`typed_value`); yaml.YAMLError if invalid."""
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def _bool_field(path: str | None) -> bool:
    """Whether boolean words at ``path`` mean booleans: a bool field, or no config field at all."""
    if path is None:
        return True
    try:
        return field_info(path).choices == (False, True)
    except KeyError:
        return True  # not a field: left to the unknown-key error, as YAML would have read it


def typed_value(value: Any, path: str | None = None) -> Any:
    """``value`` as read by :func:`read_yaml`, with on/off/yes/no/true/false (any case) turned into booleans
    where the dotted config ``path`` is a bool field (or None: no field), and kept as typed elsewhere.
    Mappings recurse with their keys appended to the path; list items share the list field's path."""
    if isinstance(value, dict):
        return {k: typed_value(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [typed_value(v, path) for v in value]
    if isinstance(value, str) and value.lower() in _BOOL_WORDS and _bool_field(path):
        return _BOOL_WORDS[value.lower()]
    return value


def parse_config_yaml(text: str) -> Any:
    """A config file's text as nested values, booleans resolved per field (yaml.YAMLError if invalid)."""
    return typed_value(read_yaml(text))


def parse_value(path: str, text: str) -> Any:
    """One value for a dotted path from text (``--set``, an MLflow param): a YAML scalar, booleans per field."""
    if text.strip() == "":
        return None
    try:
        return typed_value(read_yaml(text), path)
    except yaml.YAMLError:
        return text


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["sparsity.ratio=0.9", "train.channels_last=off"]`` -> dict; values parsed by :func:`parse_value`."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects path=value, got {item!r} (e.g. --set sparsity.ratio=0.9)")
        k, v = item.split("=", 1)
        k = k.strip()
        out[k] = parse_value(k, v)
    return out


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults <- YAML file <- dotted overrides, validated once at the end."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            loaded = parse_config_yaml(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping of sections, got {type(loaded).__name__}")
        data = loaded
    if overrides:
        data = apply_overrides(data, overrides)
    return Config.parse(data)
