"""Training-FLOPs accounting (docs/method.md §5), predicted from the config alone.

Convention: FLOPs = 2 x multiply-accumulates of conv and linear layers (as ``torch.utils.flop_counter``).
Per sample and layer, what autograd computes (:func:`layer_cost`, the one place of this rule): forward F*d; if the
layer's unit is active, the weight gradient F*d, plus the input gradient F*d only where the layer's input needs a
gradient (not for a layer reading the input of the first active unit: the image, or the frozen prefix's output,
computed under ``no_grad``); nothing more if frozen. d is the density actually held (MEST's soft-bound extra
included). RigL's mask update runs on the epoch's first training batch (RigL's code grows by that batch's dense
gradient and does not apply its step): that batch costs forward and activation gradient at the counts held before
the update and a dense weight gradient (RigL paper §4: f_S forward, f_S activation gradient, f_D weight gradient),
under the same input-gradient rule; the rest of the epoch trains at the counts after it.
Samples per epoch = the partial set. The model is built uninitialised on the CPU and run once on one zero image:
no data files.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..choices import is_import_path
from ..config import Config, ConfigError
from ..data import DatasetSpec, dataset_spec
from ..models import UnitModel, build_model, check_logits, depth_layers
from .freezing import FreezePlan, freezable_unit_count, plan_freezing
from .plan import RunPlan, build_run_plan, run_key
from .sieving import partial_size
from .sparsity import LayerRef, layer_densities, sparse_layers

__all__ = [
    "ModelProfile",
    "profile_model",
    "FlopsPrediction",
    "predict",
    "layer_cost",
    "per_sample_cost",
    "rigl_pass_cost",
    "build_profile",
    "Plans",
    "plan_all",
    "simulate",
]


@dataclass
class ModelProfile:
    """Static per-sample facts about a model on a data set's input shape."""

    layers: list[LayerRef]
    fwd: dict[str, int]  # dense forward FLOPs per sample, per conv/linear layer
    num_units: int
    unit_depths: list[int]
    total_depth: int
    act_numel: list[int]  # per unit (head last): activation elements per sample (conv/bn/linear outputs)
    other_params: list[int]  # per unit (head last): parameters outside conv/linear weights (BN affine, biases)
    # layers whose input is their unit's input through parameter-free ops only (the stem conv, a block's first
    # conv and shortcut conv, the classifier after pooling): in the first active unit autograd computes no
    # input gradient for them
    reads_unit_input: frozenset[str] = frozenset()
    out_shape: tuple[int, ...] = ()  # of the model's output for one image (logits: (1, classes))
    splittable: bool = True  # False: a model held whole (models.whole), nothing to freeze

    @property
    def dense_forward(self) -> int:
        return sum(self.fwd.values())


def layer_forward_flops(module: nn.Module, out_shape: torch.Size) -> int:
    """2 x MACs for one sample, as FlopCounterMode counts conv (2*out*Cin/g*kh*kw) and linear (2*in*out)."""
    if isinstance(module, nn.Conv2d):
        per_out = module.in_channels // module.groups * math.prod(module.kernel_size)
        return 2 * math.prod(out_shape[1:]) * per_out
    if isinstance(module, nn.Linear):
        return 2 * module.in_features * module.out_features * math.prod(out_shape[1:-1])
    raise TypeError(type(module))


def profile_model(model: UnitModel, input_shape: tuple[int, int, int], layers: list[LayerRef]) -> ModelProfile:
    """One forward pass with hooks reads every layer's output shape (on meta tensors if the model is on meta).

    The pass runs with autograd on and every unit's input detached (as the first active unit's input is in
    training), so a layer whose input then needs no gradient is one that reads its unit's input directly."""
    device = next(model.parameters()).device
    parts = [*model.units, model.head]
    unit_of = {m: i for i, p in enumerate(parts) for m in p.modules()}
    names = {m: n for n, m in model.named_modules()}
    fwd: dict[str, int] = {}
    acts = [0] * len(parts)
    reads_input: set[str] = set()

    def hook(mod: nn.Module, inp: Any, out: torch.Tensor) -> None:
        acts[unit_of[mod]] += math.prod(out.shape[1:])
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            fwd[names[mod]] = layer_forward_flops(mod, out.shape)
            if not inp[0].requires_grad:
                reads_input.add(names[mod])

    def detach_input(mod: nn.Module, inp: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (inp[0].detach(), *inp[1:])

    hooks = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))
    ]
    hooks += [p.register_forward_pre_hook(detach_input) for p in parts]
    params = list(model.parameters())
    saved_grad = [p.requires_grad for p in params]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            out_shape = tuple(model(torch.zeros((1, *input_shape), device=device)).shape)
    finally:
        for h in hooks:
            h.remove()
        for p, rg in zip(params, saved_grad, strict=True):
            p.requires_grad_(rg)
        model.train(was_training)
    weight_ids = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    other = [sum(p.numel() for p in part.parameters() if id(p) not in weight_ids) for part in parts]
    depths = [depth_layers(u) for u in model.units]
    return ModelProfile(
        layers, fwd, len(model.units), depths, sum(depths) + depth_layers(model.head), acts, other,
        frozenset(reads_input), out_shape, model.splittable,
    )


@contextlib.contextmanager
def _skip_init() -> Iterator[None]:
    """Parameter init is meaningless on meta tensors, and its first call there imports torch._refs (~2 s):
    replace torch.nn.init's in-place initialisers with no-ops while a shape-only model is built."""
    names = [n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(nn.init, n) for n in names}
    try:
        for n in names:
            setattr(nn.init, n, lambda t, *a, **k: t)
        yield
    finally:
        for n, f in saved.items():
            setattr(nn.init, n, f)


# build_profile's results by what they depend on: a search's start-up probes ~100 points of one model (issue 34
# item 9: 25 of a 90 s test search went to these forward passes on a loaded 2-core machine)
_PROFILES: dict[str, ModelProfile] = {}
_PROFILES_MAX = 64


def _profile_key(cfg: Config, spec: DatasetSpec) -> str | None:
    """What the profile depends on: the model, the input and class count, the dense-layer rules (not the sparsity
    ratio, the schedule or the data's sizes); None (never cached) for the user's own model, whose module may be
    edited and reloaded in a notebook, and where the model's kwargs have no stable text."""
    sp = cfg.sparsity
    if is_import_path(cfg.model.name):
        return None
    try:
        return json.dumps([cfg.model.name, cfg.model.width, cfg.model.kwargs, spec.name, spec.channels,
                           spec.image_size, spec.num_classes, sp.algorithm == "dense", sp.dense_first,
                           sp.dense_classifier, sp.dense_shortcuts], sort_keys=True)
    except (TypeError, ValueError):
        return None


def build_profile(cfg: Config, spec: DatasetSpec | None = None) -> tuple[ModelProfile, DatasetSpec]:
    """The model's profile on the data's input shape (:func:`profile_model`), cached per process by
    :func:`_profile_key` (a copy is returned: callers may keep it)."""
    spec = spec or dataset_spec(cfg.data)
    key = _profile_key(cfg, spec)
    if key is not None and key in _PROFILES:
        return copy.deepcopy(_PROFILES[key]), spec
    profile = _build_profile(cfg, spec)
    if key is not None:
        if len(_PROFILES) >= _PROFILES_MAX:
            _PROFILES.pop(next(iter(_PROFILES)))
        _PROFILES[key] = copy.deepcopy(profile)
    return profile, spec


def _build_profile(cfg: Config, spec: DatasetSpec) -> ModelProfile:
    # a real batch-1 CPU pass, not the meta device: meta's shape checks and batch-norm decomposition import
    # sympy and torch._dynamo (~1.5 s of `spfde flops`); uninitialised CPU weights give the same shapes
    with torch.device("cpu"), _skip_init():
        model = build_model(cfg.model.name, cfg.model.width, spec.channels, spec.num_classes, cfg.model.kwargs)
    layers = sparse_layers(model, cfg.sparsity)
    shape = (spec.channels, spec.image_size, spec.image_size)
    try:
        profile = profile_model(model, shape, layers)
    except (RuntimeError, ValueError, TypeError) as e:  # the user's forward on the data's image shape
        raise ConfigError(f"model.name: {cfg.model.name} fails on one {shape} image of {spec.name} "
                          f"({type(e).__name__}: {str(e).splitlines()[0]}); make it accept the data's images") from None
    check_logits(cfg.model.name, profile.out_shape, spec.num_classes)
    return profile


def held_forward(profile: ModelProfile, r: LayerRef, counts: Mapping[str, int]) -> int:
    """F*d of one layer for one sample, d = count held / size (dense layers: F). Exact in integers: F/numel is
    2 x output positions for a conv (2 for a linear), so F*count/numel has no remainder."""
    f = profile.fwd[r.name]
    return f * counts[r.name] // r.numel if r.name in counts else f


def layer_cost(
    profile: ModelProfile, r: LayerRef, counts: Mapping[str, int], frozen_prefix: int, dense_weight_grad: bool = False
) -> int:
    """Training FLOPs of one layer for one sample, as autograd computes them (docs/method.md §5): forward F*d; if the
    layer is active, its weight gradient (F*d, or F for RigL's dense-gradient pass) and its input gradient F*d
    unless the input needs none (a layer reading the first active unit's input: image or frozen prefix output);
    0 backward if frozen. Golden-tested against FlopCounterMode over a real forward + backward."""
    fwd = held_forward(profile, r, counts)
    if r.unit < frozen_prefix:
        return fwd
    weight_grad = profile.fwd[r.name] if dense_weight_grad else fwd
    input_grad = 0 if r.unit == frozen_prefix and r.name in profile.reads_unit_input else fwd
    return fwd + weight_grad + input_grad


def per_sample_cost(profile: ModelProfile, counts: Mapping[str, int], frozen_prefix: int) -> int:
    """Training FLOPs of one sample over all layers (:func:`layer_cost`)."""
    return sum(layer_cost(profile, r, counts, frozen_prefix) for r in profile.layers)


def rigl_pass_cost(profile: ModelProfile, counts: Mapping[str, int], frozen_prefix: int) -> int:
    """One sample of RigL's update batch: :func:`layer_cost` with a dense weight gradient."""
    return sum(layer_cost(profile, r, counts, frozen_prefix, dense_weight_grad=True) for r in profile.layers)


@dataclass
class Simulation:
    train_flops: int
    per_epoch: list[int]
    counts_per_epoch: list[dict[str, int]]
    prefix_per_epoch: list[int]
    rigl_per_epoch: list[int]  # RigL's update batch (at the counts before the update, dense weight gradient)

    @property
    def cumulative(self) -> list[int]:
        out, acc = [], 0
        for f, r in zip(self.per_epoch, self.rigl_per_epoch, strict=False):
            acc += f + r
            out.append(acc)
        return out


def simulate(profile: ModelProfile, run: RunPlan, samples_per_epoch: int, batch_size: int) -> Simulation:
    """Sum training FLOPs over the epoch plan (the same plan the trainer executes): in an epoch with RigL's
    update, its first batch (min(batch, samples) samples) at the update cost, the other samples at the epoch's."""
    per_epoch: list[int] = []
    rigl: list[int] = []
    first_batch = min(batch_size, samples_per_epoch)
    for ep in run.epochs:
        update = first_batch if ep.rigl_pass else 0
        rigl.append(update * rigl_pass_cost(profile, ep.pass_counts, ep.frozen_prefix))
        per_epoch.append((samples_per_epoch - update) * per_sample_cost(profile, ep.counts, ep.frozen_prefix))
    return Simulation(
        sum(per_epoch) + sum(rigl),
        per_epoch,
        [dict(ep.counts) for ep in run.epochs],
        [ep.frozen_prefix for ep in run.epochs],
        rigl,
    )


def eval_flops(profile: ModelProfile, run: RunPlan, num_val: int, num_test: int) -> dict[str, int]:
    """Forward FLOPs of the evaluation passes the epoch plan schedules (docs/method.md §5: reported apart, never
    training FLOPs), as the trainer runs them: with a validation split, validation after every evaluated epoch
    and test once after the last; without one, test after every evaluated epoch. Each pass is the forward at the
    densities held that epoch, F*d per sample. Extra rung evaluations a scheduler asks for are not included."""
    out = {"validation": 0, "test": 0}
    last = len(run.epochs) - 1
    for i, ep in enumerate(run.epochs):
        fwd = sum(held_forward(profile, r, ep.counts) for r in profile.layers)
        if num_val > 0:
            out["validation"] += num_val * fwd if ep.evaluate else 0
            out["test"] += num_test * fwd if i == last else 0
        elif ep.evaluate:
            out["test"] += num_test * fwd
    return out


@dataclass
class FlopsPrediction:
    """What a config will cost, known before training (``spfde flops``)."""

    train_flops: int
    dense_train_flops: int
    flops_ratio: float
    saved: dict[str, int]
    saved_fraction: dict[str, float]
    freeze_start_epoch: int | None
    unit_freeze_epochs: list[int | None]
    freezable_units: int
    num_units: int
    frozen_prefix_per_epoch: list[int]
    freezing_saving_achieved: float  # freezing saving / same run without freezing (compare with the target x)
    dense_forward_per_sample: int
    samples_per_epoch: int
    num_train: int
    epochs: int
    cumulative: list[int]  # predicted training FLOPs after each epoch (RigL passes counted when they happen)
    memory: dict[str, int]
    overall_density: float
    dense_step_per_sample: int = 0  # forward + weight grads + input grads, none for the image (stem conv)
    eval_flops: dict[str, int] = field(default_factory=dict)  # {validation, test}: never in train_flops
    extra: dict[str, Any] = field(default_factory=dict)
    run_key: str = ""  # equal keys: the same run (method.plan.run_identity); the search dedupes on it

    @property
    def batch_warning(self) -> str:
        """A line when ``train.batch_size`` exceeds the samples an epoch trains on ('' otherwise): each epoch is
        then one step of that many samples, which silently trained 2,000 images to chance at batch 65,536."""
        b, n = self.memory["batch_size"], self.samples_per_epoch
        if b <= n:
            return ""
        sieved = f" after sieving, of {self.num_train:,}" if n < self.num_train else ""
        return (f"train.batch_size {b:,} exceeds the {n:,} training samples an epoch uses{sieved}: every epoch is a "
                f"single step; set train.batch_size to at most {n:,}")

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("cumulative", "frozen_prefix_per_epoch")}
        d["frozen_prefix_per_epoch"] = self.frozen_prefix_per_epoch
        return d


def memory_estimate(profile: ModelProfile, targets: Mapping[str, int], batch: int, frozen_prefix: int) -> dict[str, int]:
    """Paper Fig. 4 convention, fp32: weights + weight grads + activations + activation grads at ``batch``;
    the frozen prefix keeps no gradients (an estimate, not a measurement)."""
    weights = grads = 0
    for r in profile.layers:
        n = targets.get(r.name, r.numel)
        weights += n
        if r.unit >= frozen_prefix:
            grads += n
    for u, n in enumerate(profile.other_params):
        weights += n
        if u >= frozen_prefix:
            grads += n
    acts = sum(profile.act_numel) * batch
    act_grads = sum(a for u, a in enumerate(profile.act_numel) if u >= frozen_prefix) * batch
    out = {
        "weights_bytes": 4 * weights,
        "weight_grads_bytes": 4 * grads,
        "activations_bytes": 4 * acts,
        "activation_grads_bytes": 4 * act_grads,
    }
    out["total_bytes"] = sum(out.values())
    return out


@dataclass(frozen=True)
class Plans:
    """What a config resolves to before training: per-layer targets, the freeze plan and the epoch plan."""

    targets: dict[str, int]
    freeze: FreezePlan
    run: RunPlan
    samples_per_epoch: int


def plan_all(cfg: Config, profile: ModelProfile, spec: DatasetSpec) -> Plans:
    """Targets, freeze plan and epoch plan for a config (raises ConfigError for an impossible freezing target)."""
    t, dtau = cfg.train.epochs, cfg.train.update_interval
    dens = layer_densities(profile.layers, cfg.sparsity)
    targets = {r.name: round(dens[r.name] * r.numel) for r in profile.layers if r.name in dens}
    samples = partial_size(spec.num_train, cfg.sieving.fraction)  # |partial set|, docs/method.md §4
    # a model held whole (models.whole) has no freezable unit
    k = freezable_unit_count(profile.unit_depths, profile.total_depth, cfg.freezing.freeze_fraction) if profile.splittable else 0
    off = plan_freezing(cfg.freezing.model_copy(update={"target_flops_reduction": 0.0, "start_epoch": None}),
                        t, dtau, profile.num_units, k, [], 0.0)

    def run_for(p: FreezePlan) -> RunPlan:
        return build_run_plan(cfg, profile.layers, targets, p)

    if not cfg.freezing.enabled:
        return Plans(targets, off, run_for(off), samples)
    if not profile.splittable:
        raise ConfigError(
            f"freezing: model {cfg.model.name} cannot be split into units, so nothing can be frozen; set "
            "freezing.target_flops_reduction=0 (and no freezing.start_epoch), or return UnitModel(stem, blocks, head) "
            "from the model callable (docs/own_model.md)"
        )
    no_freeze = simulate(profile, run_for(off), samples, cfg.train.batch_size)
    # Bp_k: what freezing unit k saves per epoch at target densities (its backward, and the input gradients
    # of the next unit's layers that read its output), so sum_{k<p} Bp_k is the saving of a frozen prefix p
    bp = [
        float((per_sample_cost(profile, targets, u) - per_sample_cost(profile, targets, u + 1)) * samples)
        for u in range(k)
    ]

    def exact_saving(p: FreezePlan) -> float:
        return float(no_freeze.train_flops - simulate(profile, run_for(p), samples, cfg.train.batch_size).train_flops)

    plan = plan_freezing(cfg.freezing, t, dtau, profile.num_units, k, bp, float(no_freeze.train_flops), exact_saving)
    return Plans(targets, plan, run_for(plan), samples)


def predict(cfg: Config, spec: DatasetSpec | None = None) -> FlopsPrediction:
    """The analytic prediction from the config alone; ConfigError if the config cannot run."""
    profile, spec = build_profile(cfg, spec)
    plans = plan_all(cfg, profile, spec)
    targets, plan, samples = plans.targets, plans.freeze, plans.samples_per_epoch
    b = cfg.train.batch_size
    n, t = spec.num_train, cfg.train.epochs
    actual = simulate(profile, plans.run, samples, b)
    off = FreezePlan(plan.scheme, t, plan.interval, plan.num_units, plan.freezable, None, 0)
    off_run = build_run_plan(cfg, profile.layers, targets, off)
    sieve_only = simulate(profile, off_run, samples, b)
    sparse_only = simulate(profile, off_run, n, b)
    dense_step = per_sample_cost(profile, {}, 0)  # every layer dense and active
    dense = dense_step * n * t  # on the full set
    saved = {
        "sparsity": dense - sparse_only.train_flops,
        "sieving": sparse_only.train_flops - sieve_only.train_flops,
        "freezing": sieve_only.train_flops - actual.train_flops,
    }
    max_prefix = max(actual.prefix_per_epoch) if actual.prefix_per_epoch else 0
    mem = memory_estimate(profile, targets, b, 0)
    mem_frozen = memory_estimate(profile, targets, b, max_prefix)
    memory = {**mem, "total_bytes_max_frozen": mem_frozen["total_bytes"], "batch_size": b}
    sparse_total = sum(r.numel for r in profile.layers if r.name in targets)
    return FlopsPrediction(
        train_flops=actual.train_flops,
        dense_train_flops=dense,
        flops_ratio=actual.train_flops / dense,
        saved=saved,
        saved_fraction={k: v / dense for k, v in saved.items()},
        freeze_start_epoch=plan.start_epoch if plan.enabled else None,
        unit_freeze_epochs=list(plans.run.unit_freeze_epochs),
        freezable_units=plan.freezable,
        num_units=profile.num_units,
        frozen_prefix_per_epoch=actual.prefix_per_epoch,
        freezing_saving_achieved=saved["freezing"] / sieve_only.train_flops if sieve_only.train_flops else 0.0,
        dense_forward_per_sample=profile.dense_forward,
        samples_per_epoch=samples,
        num_train=n,
        epochs=t,
        cumulative=actual.cumulative,
        memory=memory,
        overall_density=(sum(targets.values()) / sparse_total) if sparse_total else 1.0,
        dense_step_per_sample=dense_step,
        eval_flops=eval_flops(profile, plans.run, spec.num_val, spec.num_test),
        extra={"lr_horizons": list(plans.run.lr_horizons), "lr_schedule": cfg.freezing.lr_schedule},
        run_key=run_key(cfg, plans.run),
    )
