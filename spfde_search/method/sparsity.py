"""Unstructured weight masks and dynamic sparse training (docs/method.md §2).

A DST algorithm is a drop score plus a grow score (as in RigL's code); one generic, checked update does the
top-k bookkeeping for all of them: growth draws from every position that is zero after the drop (a weight just
dropped may come back, as in RigL's and MEST's code), grown weights are disjoint from the kept ones, counts land
exactly on the planned value, newly grown weights start at 0 and their momentum is reset. Two details follow each
algorithm's own code: SET and RigL (RigL's ``generic_mask_update``) add N(0, 1e-5) noise to the drop scores to
break ties, and keep the value of a weight dropped and regrown in one update (``reinit_when_same=False``); MEST
ranks |w| as it is and regrows every weight at 0. *How much* is held at each update (target, MEST's soft-bound
extra, drop fraction schedule) is the pure :class:`DSTPlan`, shared with the FLOPs predictor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..config import SparsityConfig
from ..models import UnitModel, is_shortcut
from ..registry import Registry

__all__ = [
    "DSTAlgorithm",
    "ALGORITHMS",
    "DSTPlan",
    "LayerRef",
    "Masker",
    "sparse_layers",
    "layer_densities",
    "erk_densities",
]


# ---------------------------------------------------------------- which layers, which densities


@dataclass(frozen=True)
class LayerRef:
    """A conv/linear layer: its module path, the unit it belongs to (len(units) = head), and its weight shape."""

    name: str
    unit: int
    shape: tuple[int, ...]
    sparse: bool

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def sparse_layers(model: UnitModel, cfg: SparsityConfig) -> list[LayerRef]:
    """All conv/linear layers in module order, each marked sparse or dense by the config's dense rules: the
    first layer (``dense_first``), the last linear, which gives the logits (``dense_classifier``; VGG's and
    MobileNetV3's hidden classifier layers are sparse), and 1x1 projection shortcuts (``dense_shortcuts``);
    every other conv and linear of any family is sparse."""
    units = model.units
    found: list[tuple[str, int, nn.Conv2d | nn.Linear]] = []
    for u_idx, part in enumerate([*units, model.head]):
        prefix = "stem" if u_idx == 0 else ("head" if u_idx == len(units) else f"blocks.{u_idx - 1}")
        found += [(n, u_idx, m) for n, m in part.named_modules(prefix=prefix) if isinstance(m, (nn.Conv2d, nn.Linear))]
    linears = [i for i, (_, _, m) in enumerate(found) if isinstance(m, nn.Linear)]
    refs: list[LayerRef] = []
    for i, (n, u_idx, m) in enumerate(found):
        sparse = cfg.algorithm != "dense"
        if i == 0:
            sparse = sparse and not cfg.dense_first
        elif linears and i == linears[-1]:
            sparse = sparse and not cfg.dense_classifier
        elif is_shortcut(n):
            sparse = sparse and not cfg.dense_shortcuts
        refs.append(LayerRef(n, u_idx, tuple(m.weight.shape), sparse))
    return refs


def erk_densities(shapes: dict[str, tuple[int, ...]], density: float) -> dict[str, float]:
    """Erdős–Rényi-Kernel (RigL, Evci et al. 2020, appendix): d_l = eps * sum(shape_l) / prod(shape_l).

    eps is solved so that sum_l d_l N_l = density * sum_l N_l; layers whose d_l would exceed 1 are made dense
    and eps is solved again over the rest (RigL's loop).
    """
    dense: set[str] = set()
    total = sum(math.prod(s) for s in shapes.values())
    while True:
        budget = density * total - sum(math.prod(shapes[n]) for n in dense)
        raw = {n: sum(s) / math.prod(s) for n, s in shapes.items() if n not in dense}
        denom = sum(raw[n] * math.prod(shapes[n]) for n in raw)
        if not raw or denom <= 0:
            break
        eps = budget / denom
        over = [n for n in raw if eps * raw[n] > 1]
        if not over:
            out = {n: eps * r for n, r in raw.items()}
            out.update({n: 1.0 for n in dense})
            return out
        dense.update(over)
    return {n: 1.0 for n in shapes}


def layer_densities(layers: list[LayerRef], cfg: SparsityConfig) -> dict[str, float]:
    """Target density per sparse layer (uniform: 1 - ratio everywhere; ERK: RigL's distribution)."""
    sparse = {r.name: r.shape for r in layers if r.sparse}
    if not sparse:
        return {}
    if cfg.distribution == "uniform":
        return {n: 1.0 - cfg.ratio for n in sparse}
    return erk_densities(sparse, 1.0 - cfg.ratio)


# ---------------------------------------------------------------- the plan (pure, shared with flops.py)


@dataclass(frozen=True)
class DSTPlan:
    """How much each update holds and mutates (the rules; *when* a layer updates is decided by ``plan.py``).

    Boundaries b are epoch indices: the update runs before epoch b.
    """

    algorithm: str
    epochs: int
    interval: int
    drop_fraction: float
    decay: str
    update_end: float
    soft_bound: tuple[tuple[float, float], ...] = ()

    @classmethod
    def from_config(cls, cfg: SparsityConfig, epochs: int, interval: int) -> DSTPlan:
        return cls(
            cfg.algorithm,
            epochs,
            interval,
            cfg.drop_fraction,
            cfg.decay(),
            cfg.update_end,
            tuple(cfg.soft_bound) if cfg.algorithm == "mest" else (),
        )

    @property
    def dynamic(self) -> bool:
        return ALGORITHMS.get(self.algorithm).dynamic

    def is_update(self, b: int) -> bool:
        """Every interval before ``update_end``, from b = 0 on. MEST's loop updates at epoch 0 (``epoch %
        sp_mask_update_freq == 0`` in prune_utils/retrain.py), so its soft-bound extra is held from the start; so
        do RigL and SET: RigL's code starts ``last_mask_update_step`` at -frequency "to enable early mask updates"
        and updates when ``last + frequency <= step`` and ``step >= begin_step`` (default 0), which holds at step 0
        (google-research/rigl, rigl/sparse_optimizers_base.py lines 164-171 and 216-226)."""
        return self.dynamic and 0 <= b < self.epochs and b % self.interval == 0 and b < self.update_end * self.epochs

    def extra_density(self, b: int) -> float:
        """MEST EM&S soft memory bound: extra density held after the update at boundary b."""
        frac = b / self.epochs
        for until, extra in self.soft_bound:
            if frac < until:
                return extra
        return 0.0

    def drop_fraction_at(self, b: int) -> float:
        if self.decay == "cosine":  # RigL: cosine decay to 0 at update_end
            return self.drop_fraction / 2 * (1 + math.cos(math.pi * b / (self.update_end * self.epochs)))
        return self.drop_fraction

    def held_after_update(self, b: int, n_target: int, numel: int) -> int:
        return n_target + min(round(self.extra_density(b) * numel), numel - n_target)

    def drop_count(self, b: int, n_target: int) -> int:
        """k: target weights swapped out by SET/RigL (MEST's plain EM prunes its own ``drop_fraction`` share in
        ``layer_step``), truncated as RigL's ``_get_update_op``
        casts n_ones x drop_fraction to int32 (rigl/sparse_optimizers_base.py). Regrowth draws from every zero after
        the drop, so k needs no bound beyond the target itself."""
        return max(0, min(int(self.drop_fraction_at(b) * n_target), n_target))

    def layer_step(self, b: int, n_target: int, n_current: int, numel: int) -> tuple[int, int]:
        """(drop, grow) of one layer's update at boundary b; growth draws from every position that is zero after
        the drop, for every algorithm.

        MEST (EM&S, as prune_utils/retrain.py: prune to the lower bound, then ``weight_growing`` to the upper
        bound among the zeros of the *pruned* weights): prune down to the target, grow up to target + extra, so
        the extra is the mutation. With an empty soft bound (MEST's plain EM) the lower bound is the target minus
        ``drop_fraction`` of it. SET/RigL: swap k = drop_fraction x target (RigL's ``_get_update_op``,
        rigl/sparse_optimizers_base.py lines 276-343: keep the top n_keep, grow n_prune among all the rest)."""
        upper = self.held_after_update(b, n_target, numel)
        if self.algorithm == "mest":
            lower = n_target - (0 if self.soft_bound else min(round(self.drop_fraction * n_target), n_target))
            drop = max(0, n_current - lower)
            return drop, upper - (n_current - drop)
        k = self.drop_count(b, n_target)
        return n_current - (n_target - k), upper - (n_target - k)


# ---------------------------------------------------------------- algorithms: drop + grow scores


DropScore = Callable[[torch.Tensor, "torch.Tensor | None", float], torch.Tensor]
GrowScore = Callable[[torch.Tensor, "torch.Tensor | None", torch.Generator], torch.Tensor]


def _magnitude(w: torch.Tensor, grad: torch.Tensor | None, lam: float) -> torch.Tensor:
    s = w.detach().abs().float()
    if lam and grad is not None:
        s = s + lam * grad.detach().abs().float()
    return s


def _random(w: torch.Tensor, dense_grad: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(w.shape, generator=gen).to(w.device)


def _gradient(w: torch.Tensor, dense_grad: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
    if dense_grad is None:
        raise RuntimeError("RigL grow needs the dense gradient")
    return dense_grad.detach().abs().float()


@dataclass(frozen=True)
class DSTAlgorithm:
    """A drop score, a grow score, and the update details its reference code fixes: ``drop_noise`` (std of the
    seeded normal noise added to the drop scores) and ``reinit_when_same`` (a weight dropped and regrown in one
    update restarts at 0; False keeps its value and momentum). ``needs_dense_grad``: grows by the dense gradient
    of the training batch at the update step, whose own step is then not applied (RigL)."""

    name: str
    dynamic: bool
    drop: DropScore = _magnitude
    grow: GrowScore = _random
    needs_dense_grad: bool = False
    masked: bool = True
    drop_noise: float = 0.0
    reinit_when_same: bool = True


# RigL's code (rigl/sparse_optimizers_base.py), for SparseSETOptimizer and SparseRigLOptimizer alike:
# generic_mask_update's noise_std=1e-5 and _get_update_op's reinit_when_same=False
_RIGL_NOISE = 1e-5
ALGORITHMS: Registry[DSTAlgorithm] = Registry("sparsity.algorithm")
ALGORITHMS.add("mest", DSTAlgorithm("mest", dynamic=True))  # |w| (+ lambda |g|), random regrowth, soft bound
ALGORITHMS.add("rigl", DSTAlgorithm("rigl", dynamic=True, grow=_gradient, needs_dense_grad=True,
                                    drop_noise=_RIGL_NOISE, reinit_when_same=False))
ALGORITHMS.add("set", DSTAlgorithm("set", dynamic=True, drop_noise=_RIGL_NOISE, reinit_when_same=False))
ALGORITHMS.add("static", DSTAlgorithm("static", dynamic=False))
ALGORITHMS.add("dense", DSTAlgorithm("dense", dynamic=False, masked=False))


# ---------------------------------------------------------------- the masker


class Masker:
    """Holds one bool mask per sparse layer and keeps masked weights exactly zero.

    Shaped like torch.ao.pruning's sparsifier: state keyed by module path, ``state_dict``/``load_state_dict``.
    """

    def __init__(self, model: UnitModel, cfg: SparsityConfig) -> None:
        self.cfg = cfg
        self.algo = ALGORITHMS.get(cfg.algorithm)
        self.layers = sparse_layers(model, cfg)
        self.densities = layer_densities(self.layers, cfg)
        modules = dict(model.named_modules())
        self.modules: dict[str, nn.Module] = {r.name: modules[r.name] for r in self.layers}
        self.targets: dict[str, int] = {n: round(d * self._numel(n)) for n, d in self.densities.items()}
        self.masks: dict[str, torch.Tensor] = {}

    def _numel(self, name: str) -> int:
        return self.weight(name).numel()

    def weight(self, name: str) -> torch.Tensor:
        return self.modules[name].weight  # type: ignore[return-value]

    def init_random(self, gen: torch.Generator) -> None:
        """Initial random mask at exactly the target count per layer (docs/method.md §1)."""
        for name, n_target in self.targets.items():
            w = self.weight(name)
            idx = torch.randperm(w.numel(), generator=gen)[:n_target]
            m = torch.zeros(w.numel(), dtype=torch.bool)
            m[idx] = True
            self.masks[name] = m.reshape(w.shape).to(w.device)  # a contiguous mask of w's shape, any layout of w
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for name, m in self.masks.items():
            self.weight(name).mul_(m)

    @torch.no_grad()
    def mask_grads(self) -> None:
        for name, m in self.masks.items():
            g = self.weight(name).grad
            if g is not None:
                g.mul_(m)

    def count(self, name: str) -> int:
        return int(self.masks[name].sum()) if name in self.masks else self._numel(name)

    def density(self, name: str) -> float:
        return self.count(name) / self._numel(name)

    def overall_density(self) -> float:
        """Nonzero fraction over the sparse layers (the quantity sparsity.ratio targets)."""
        if not self.masks:
            return 1.0
        return sum(self.count(n) for n in self.masks) / sum(self._numel(n) for n in self.masks)

    @torch.no_grad()
    def update_layer(
        self,
        name: str,
        n_drop: int,
        n_grow: int,
        gen: torch.Generator,
        optimizer: torch.optim.Optimizer | None,
        dense_grad: torch.Tensor | None = None,
    ) -> tuple[int, int]:
        """The one generic prune-and-grow step: drop the n_drop lowest drop scores among active weights, then
        grow the n_grow highest grow scores among *all* positions that are zero after the drop, just-dropped
        ones included. That is RigL's pool (rigl/sparse_optimizers_base.py lines 305-321: grow scores of the
        kept weights are lifted below every other, then the top n_prune of the rest grow; the assert is on
        kept vs grown), sparsimony's (``grow_mask`` after ``prune_mask`` in sparsimony/dst/rigl.py) and
        MEST's (``weight_growing`` among the zeros of the pruned weights). Every newly grown weight starts at 0
        with its momentum reset; a just-dropped one regrown at once does too where the algorithm's
        ``reinit_when_same`` says so (MEST), and keeps its value and momentum otherwise (RigL's
        ``_get_update_op`` default, lines 328-333). The drop scores get the algorithm's ``drop_noise`` (drawn
        from `gen` over the whole layer, then read at the active positions). Scores are only compared within
        the candidate set, so non-finite scores (a huge ``grad_lambda``) cannot pick a wrong position, and an
        empty position never competes with an active weight on noise alone. Writes go through boolean masks
        (``masked_fill_``), so any memory format works."""
        w = self.weight(name)
        old = self.masks[name]
        flat_old = old.reshape(-1)
        active = flat_old.nonzero().squeeze(1)
        new = flat_old.clone()
        empty_idx = torch.empty(0, dtype=torch.long, device=flat_old.device)
        drop_idx, grow_idx = empty_idx, empty_idx
        if n_drop:
            if n_drop > active.numel():
                raise RuntimeError(f"{name}: cannot drop {n_drop} weights, only {active.numel()} are active")
            s = self.algo.drop(w, w.grad, self.cfg.grad_lambda).reshape(-1).to(flat_old.device)
            if self.algo.drop_noise:
                s = s + self.algo.drop_noise * torch.randn(s.numel(), generator=gen).to(s.device)
            s = s[active]
            drop_idx = active[torch.topk(s, n_drop, largest=False).indices]
            new[drop_idx] = False
        if n_grow:
            cand = (~new).nonzero().squeeze(1)
            if cand.numel() < n_grow:
                raise RuntimeError(f"{name}: cannot grow {n_grow} weights, only {cand.numel()} are empty")
            g = self.algo.grow(w, dense_grad, gen).reshape(-1).to(flat_old.device)[cand]
            grow_idx = cand[torch.topk(g, n_grow, largest=True).indices]
            new[grow_idx] = True
        # the checks RigL's update makes: grown and kept sets disjoint, counts exact
        kept = flat_old.clone()
        kept[drop_idx] = False
        assert not bool(kept[grow_idx].any()), "grown weights must have been zero after the drop"
        assert int(new.sum()) == active.numel() - n_drop + n_grow, "mask count drifted"
        if self.algo.reinit_when_same:
            changed = torch.zeros_like(flat_old)
            changed[drop_idx] = True
            changed[grow_idx] = True
        else:
            changed = flat_old ^ new  # dropped and regrown at once: unchanged
        changed = changed.view(old.shape).to(w.device)
        w.masked_fill_(changed, 0.0)  # dropped weights and grown ones (which start at 0)
        if optimizer is not None:
            buf = optimizer.state.get(w, {}).get("momentum_buffer")
            if buf is not None:
                buf.masked_fill_(changed, 0.0)
        self.masks[name] = new.view(old.shape)
        return drop_idx.numel(), grow_idx.numel()

    @torch.no_grad()
    def prune_to_target(self, name: str, optimizer: torch.optim.Optimizer | None) -> int:
        """Drop the lowest-scored weights above the layer's target count (a convenience for tests and tools)."""
        excess = self.count(name) - self.targets[name]
        if excess > 0:
            self.update_layer(name, excess, 0, torch.Generator(), optimizer)
        return max(excess, 0)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: m.cpu().clone() for n, m in self.masks.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.targets) ^ set(state)
        if missing:
            raise ValueError(f"mask state does not match the model's sparse layers: {sorted(missing)}")
        self.masks = {n: state[n].to(self.weight(n).device).bool() for n in self.targets}
