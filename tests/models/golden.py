"""The per-family golden check (issue 32 item 4): predicted training FLOPs = FlopCounterMode's count of a real
forward + backward, dense and sparse (every layer sparse, MEST's held densities), with 0, 1 and the last-but-one
unit frozen, as the trainer runs a step (frozen units: requires_grad off, eval mode, forward under no_grad).

Sparse kernels are counted as tests/method/test_flops_autograd.py does, generalised to several linears: each
conv/linear kernel FlopCounterMode counts is scaled by the density of the layer whose weight it reads (a linear's
weight-gradient ``mm`` reads no weight: it is told by its output's shape, which the check keeps unique).

One correction to FlopCounterMode (torch 2.x up to the fix in pytorch/pytorch#183405): its ``convolution_backward``
formula drops ``groups`` from the weight gradient, so a depthwise conv's weight gradient (MobileNets) is counted
as if the conv were dense (x channels); the count here divides that term by ``groups`` as the fix does. The
forward and input-gradient terms are FlopCounterMode's own, and groups=1 convs are unchanged."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from spfde_search.config import Config
from spfde_search.method.flops import build_profile, per_sample_cost, plan_all, rigl_pass_cost
from spfde_search.models import UnitModel, build_model

aten = torch.ops.aten
BATCH = 3
Density = Callable[[str], Fraction]


def config(name: str, sparse: bool, **model: Any) -> Config:
    sp = ({"algorithm": "mest", "ratio": 0.9, "dense_first": False, "dense_shortcuts": False, "dense_classifier": False}
          if sparse else {"algorithm": "dense", "ratio": 0.0})
    return Config.parse({"model": {"name": name, **model}, "data": {"name": "synthetic", "synthetic_size": 16},
                         "train": {"epochs": 8, "update_interval": 1}, "sparsity": sp})


def _scaled(flops: int, d: Fraction) -> int:
    v = flops * d
    assert v.denominator == 1
    return int(v)


def density_mapping(model: UnitModel, density: Density, dense_weight_grad: bool) -> dict[Any, Any]:
    base = flop_counter.flop_registry
    named = [(n, m) for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    by_ptr = {m.weight.data_ptr(): n for n, m in named}
    lin_shapes = [tuple(m.weight.shape) for _, m in named if isinstance(m, torch.nn.Linear)]
    assert len(set(lin_shapes)) == len(lin_shapes), "linear weight shapes must be unique for this count"
    by_shape = {tuple(m.weight.shape): n for n, m in named if isinstance(m, torch.nn.Linear)}

    def conv(*args: Any, out_val: Any = None, **kw: Any) -> int:
        return _scaled(base[aten.convolution](*args, out_val=out_val, **kw), density(by_ptr[args[1].data_ptr()]))

    def conv_backward(*args: Any, out_val: Any = None, **kw: Any) -> int:
        d = density(by_ptr[args[2].data_ptr()])
        mask = args[10]
        grad_in = base[aten.convolution_backward](*args[:10], [mask[0], False, False], out_val=out_val)
        grad_w = base[aten.convolution_backward](*args[:10], [False, mask[1], False], out_val=out_val) // args[9]
        return _scaled(grad_in, d) + _scaled(grad_w, Fraction(1) if dense_weight_grad else d)

    def linear(op: Any) -> Callable[..., int]:
        def count(*args: Any, out_val: Any = None, **kw: Any) -> int:
            flops = base[op](*args, out_val=out_val, **kw)
            reads = [by_ptr[a.data_ptr()] for a in args if isinstance(a, torch.Tensor) and a.data_ptr() in by_ptr]
            if reads:  # forward, or input gradient: reads the weight
                return _scaled(flops, density(reads[0]))
            name = by_shape[tuple(out_val.shape)]  # weight gradient: has the weight's shape
            return _scaled(flops, Fraction(1) if dense_weight_grad else density(name))

        return count

    mapping = {aten.convolution: conv, aten.convolution_backward: conv_backward,
               aten.addmm: linear(aten.addmm), aten.mm: linear(aten.mm)}
    for f in mapping.values():
        f._get_raw = True  # type: ignore[attr-defined]
    return mapping


def counted_step(model: UnitModel, shape: tuple[int, ...], prefix: int, density: Density | None = None,
                 dense_weight_grad: bool = False) -> int:
    """One training step of BATCH images with ``prefix`` units frozen, counted by FlopCounterMode (dense if no
    ``density``)."""
    parts = [*model.units, model.head]
    model.train()
    for i, part in enumerate(parts):
        part.requires_grad_(i >= prefix)
        if i < prefix:
            part.eval()
    x = torch.randn(BATCH, *shape, generator=torch.Generator().manual_seed(prefix))
    y = torch.arange(BATCH) % 10
    mapping = density_mapping(model, density or (lambda _: Fraction(1)), dense_weight_grad)
    with FlopCounterMode(display=False, custom_mapping=mapping) as fc:
        F.cross_entropy(model(x, frozen_units=prefix), y).backward()
    assert set(fc.get_flop_counts()["Global"]) <= {aten.convolution, aten.convolution_backward, aten.addmm, aten.mm}
    return int(fc.get_total_flops())


def check_flops(name: str, prefixes: tuple[str, ...] = ("0", "1", "last-but-one"), **model: Any) -> int:
    """Dense and sparse, every prefix asked for: the predictor's per-sample cost x BATCH is the count. Returns
    the number of units; also checks every conv/linear of the model is a layer the predictor and masks see."""
    for sparse in (False, True):
        c = config(name, sparse, **model)
        profile, spec = build_profile(c)
        torch.manual_seed(0)
        net = build_model(c.model.name, c.model.width, spec.channels, spec.num_classes, c.model.kwargs)
        weighted = [n for n, m in net.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        assert [r.name for r in profile.layers] == weighted
        assert all(r.sparse for r in profile.layers) is sparse
        counts = dict(plan_all(c, profile, spec).run.epochs[0].counts) if sparse else {}
        numel = {r.name: r.numel for r in profile.layers}

        def density(n: str, counts: dict[str, int] = counts, numel: dict[str, int] = numel) -> Fraction:
            return Fraction(counts.get(n, numel[n]), numel[n])

        shape = (spec.channels, spec.image_size, spec.image_size)
        want = {"0": 0, "1": 1, "last-but-one": profile.num_units - 1}
        for p in (want[k] for k in prefixes):
            got = counted_step(net, shape, p, density if sparse else None)
            assert got == BATCH * per_sample_cost(profile, counts, p), (sparse, p)
            if sparse:
                rigl = counted_step(net, shape, p, density, dense_weight_grad=True)
                assert rigl == BATCH * rigl_pass_cost(profile, counts, p), p
    return profile.num_units


def same_outputs(original: torch.nn.Module, split: UnitModel, shape: tuple[int, ...]) -> None:
    """The split model computes exactly what the original's forward does (eval mode: no dropout)."""
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    original.eval()
    split.eval()
    with torch.no_grad():
        torch.testing.assert_close(split(x), original(x), rtol=0, atol=0)
        for k in range(len(split.units) + 1):
            torch.testing.assert_close(split(x, frozen_units=k), original(x), rtol=0, atol=0)
