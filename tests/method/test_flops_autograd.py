"""Training FLOPs are what autograd computes (docs/method.md §5, issue 22): golden against FlopCounterMode.

``torch.utils.flop_counter.FlopCounterMode`` counts the conv/linear kernels of a real forward + backward, with
the frozen prefix under ``no_grad`` and ``requires_grad=False`` as the trainer runs it. Dense models must match the
predictor exactly for every frozen prefix; sparse ones through the density scaling, where a custom FlopCounterMode
formula scales FlopCounterMode's own count of each kernel by the density of the layer whose weight it reads (so
the per-layer attribution is autograd's, not ours). The trainer's measured count is checked the same way over
real training runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from spfde_search.cli import app
from spfde_search.config import Config
from spfde_search.data import dataset_spec
from spfde_search.method.flops import build_profile, per_sample_cost, plan_all, predict, rigl_pass_cost
from spfde_search.models import UnitModel, create_model
from spfde_search.trainer import Trainer

aten = torch.ops.aten
COUNTED = {aten.convolution, aten.convolution_backward, aten.addmm, aten.mm}
BATCH = 3  # differs from every layer width, so a linear's weight-gradient mm is told apart by its shape

Density = Callable[[str], Fraction]


def _scaled(flops: int, d: Fraction) -> int:
    v = flops * d
    assert v.denominator == 1  # F * count / numel is exact (docs/method.md §5's integer convention)
    return int(v)


def density_mapping(
    model: UnitModel, density: Density, dense_weight_grad: bool | Callable[[], bool] = False
) -> dict[Any, Any]:
    """FlopCounterMode formulas that scale its own count of each conv/linear kernel by the density of the layer
    whose weight the kernel reads; while ``dense_weight_grad`` (a flag, or a function read at each kernel) holds,
    the weight-gradient kernels stay dense (RigL's pass)."""
    base = flop_counter.flop_registry
    dense_wg = dense_weight_grad if callable(dense_weight_grad) else (lambda: bool(dense_weight_grad))
    convs = {m.weight.data_ptr(): n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 1  # ResNets: the classifier; every mm/addmm is its forward or backward
    fc_name, fc = linears[0]
    fc_weight_grad_shapes = {tuple(fc.weight.shape), tuple(fc.weight.shape)[::-1]}

    def conv(*args: Any, out_val: Any = None, **kw: Any) -> int:
        return _scaled(base[aten.convolution](*args, out_val=out_val, **kw), density(convs[args[1].data_ptr()]))

    def conv_backward(*args: Any, out_val: Any = None, **kw: Any) -> int:
        d = density(convs[args[2].data_ptr()])
        mask = args[10]
        grad_in = base[aten.convolution_backward](*args[:10], [mask[0], False, False], out_val=out_val)
        grad_w = base[aten.convolution_backward](*args[:10], [False, mask[1], False], out_val=out_val)
        return _scaled(grad_in, d) + _scaled(grad_w, Fraction(1) if dense_wg() else d)

    def linear(op: Any) -> Callable[..., int]:
        def count(*args: Any, out_val: Any = None, **kw: Any) -> int:
            weight_grad = op is aten.mm and tuple(out_val.shape) in fc_weight_grad_shapes
            d = Fraction(1) if weight_grad and dense_wg() else density(fc_name)
            return _scaled(base[op](*args, out_val=out_val, **kw), d)

        return count

    mapping = {aten.convolution: conv, aten.convolution_backward: conv_backward,
               aten.addmm: linear(aten.addmm), aten.mm: linear(aten.mm)}
    for f in mapping.values():
        f._get_raw = True  # type: ignore[attr-defined]  # FlopCounterMode passes the tensors, not their shapes
    return mapping


def dense(_: str) -> Fraction:
    return Fraction(1)


def shape_of(spec: Any) -> tuple[int, int, int]:
    return (spec.channels, spec.image_size, spec.image_size)


def counted_step(
    model: UnitModel, shape: tuple[int, int, int], prefix: int, density: Density = dense, dense_weight_grad: bool = False
) -> int:
    """FlopCounterMode's count of one training forward + backward of BATCH images with ``prefix`` units frozen,
    as the trainer runs it (frozen: requires_grad off, eval mode, forward under no_grad)."""
    parts = [*model.units, model.head]
    model.train()
    for i, part in enumerate(parts):
        part.requires_grad_(i >= prefix)
        if i < prefix:
            part.eval()
    x = torch.randn(BATCH, *shape, generator=torch.Generator().manual_seed(prefix))
    y = torch.arange(BATCH) % 10
    mapping = {} if density is dense else density_mapping(model, density, dense_weight_grad)
    with FlopCounterMode(display=False, custom_mapping=mapping) as fc:
        F.cross_entropy(model(x, frozen_units=prefix), y).backward()
    assert set(fc.get_flop_counts()["Global"]) <= COUNTED
    return int(fc.get_total_flops())


MODELS = [  # (config, why)
    ({"model": {"name": "resnet8"}, "data": {"name": "fashion_mnist"}}, "the README's model, 1 channel"),
    ({"model": {"name": "resnet8"}, "data": {"name": "synthetic", "synthetic_size": 16}}, "the test model"),
    ({"model": {"name": "resnet18"}, "data": {"name": "synthetic", "synthetic_size": 64}}, "torchvision blocks"),
]


@pytest.mark.parametrize("cfg", [c for c, _ in MODELS], ids=[w for _, w in MODELS])
def test_dense_training_step_matches_flop_counter_for_every_frozen_prefix(cfg: dict[str, Any]) -> None:
    """0, 1, ..., all units frozen: the predictor's per-sample cost is FlopCounterMode's count exactly. Nothing
    frozen still saves the stem conv's input gradient (its input is the image)."""
    c = Config.parse(cfg)
    profile, spec = build_profile(c)
    torch.manual_seed(0)
    model = create_model(c.model.name, c.model.width, spec.channels, spec.num_classes)
    for prefix in range(profile.num_units + 1):
        got = counted_step(model, shape_of(spec), prefix)
        assert BATCH * per_sample_cost(profile, {}, prefix) == got, prefix
    assert BATCH * per_sample_cost(profile, {}, 0) < 3 * BATCH * profile.dense_forward  # the old 3F rule overcounts


SPARSE = {
    "model": {"name": "resnet8"},
    "data": {"name": "synthetic", "synthetic_size": 16},
    "train": {"epochs": 8, "update_interval": 1},
    "sparsity": {"algorithm": "mest", "ratio": 0.9},
}


@pytest.mark.parametrize("all_sparse", [False, True], ids=["dense-first-shortcuts-classifier", "all-sparse"])
def test_sparse_costs_are_the_density_scaled_autograd_count(all_sparse: bool) -> None:
    """Every held density (MEST's soft-bound extra included) and every frozen prefix: training step and RigL's
    dense-gradient pass equal FlopCounterMode's per-kernel counts scaled by the density of the layer they read."""
    over = {"dense_first": False, "dense_shortcuts": False, "dense_classifier": False} if all_sparse else {}
    c = Config.parse({**SPARSE, "sparsity": {**SPARSE["sparsity"], **over}})
    profile, spec = build_profile(c)
    plans = plan_all(c, profile, spec)
    counts = dict(plans.run.epochs[0].counts)  # target + MEST's 2% extra
    assert any(counts[n] > plans.targets[n] for n in counts)
    assert ("stem.0" in counts) is all_sparse and ("head.fc" in counts) is all_sparse
    numel = {r.name: r.numel for r in profile.layers}

    def density(name: str) -> Fraction:
        return Fraction(counts.get(name, numel[name]), numel[name])

    model = create_model(c.model.name, c.model.width, spec.channels, spec.num_classes)
    for prefix in range(profile.num_units + 1):
        assert counted_step(model, shape_of(spec), prefix, density) == BATCH * per_sample_cost(profile, counts, prefix), prefix
        rigl = counted_step(model, shape_of(spec), prefix, density, dense_weight_grad=True)
        assert rigl == BATCH * rigl_pass_cost(profile, counts, prefix), prefix


FMNIST_DENSE_FREEZING = {
    "seed": 0,
    "model": {"name": "resnet8", "width": 1},
    "data": {"name": "fashion_mnist", "train_subset": 2000, "test_subset": 1000},
    "train": {"epochs": 6, "batch_size": 64, "update_interval": 1},
    "sparsity": {"algorithm": "dense", "ratio": 0.0},
    "freezing": {"start_epoch": 2},
    "sieving": {"fraction": 0.2},
}


def test_spfde_flops_equals_flop_counter_over_an_explicit_freezing_schedule(tmp_path: Path) -> None:
    """The done-when of issue 22: ``spfde flops`` (no data read) for dense ResNet-8 freezing its 3 units at
    epochs 2, 3, 4 equals FlopCounterMode's count of the same forward + backward passes, epoch by epoch, and so
    does the dense reference (every layer active, full set)."""
    cfg_path = tmp_path / "dense_freezing.yaml"
    cfg_path.write_text(yaml.safe_dump(FMNIST_DENSE_FREEZING))
    out = tmp_path / "flops.json"
    r = CliRunner().invoke(app, ["flops", "--config", str(cfg_path), "--json", str(out)])
    assert r.exit_code == 0, r.output
    import json

    d = json.loads(out.read_text())
    prefixes = [0, 0, 1, 2, 3, 3]  # start_epoch 2, one more unit per epoch (Δτ = 1), ResNet-8's 3 freezable units
    assert d["frozen_prefix_per_epoch"] == prefixes
    samples = 2000 - round(0.2 * 2000)
    assert d["samples_per_epoch"] == samples
    c = Config.parse(FMNIST_DENSE_FREEZING)
    spec = dataset_spec(c.data)
    torch.manual_seed(0)
    model = create_model("resnet8", 1, spec.channels, spec.num_classes)
    per_step = {p: counted_step(model, shape_of(spec), p) for p in set(prefixes)}
    want = sum(samples * per_step[p] // BATCH for p in prefixes)
    assert abs(d["train_flops"] / want - 1) < 1e-4  # the tolerance (0.01%) ...
    assert d["train_flops"] == want  # ... met exactly
    assert d["dense_train_flops"] == 6 * 2000 * per_step[0] // BATCH


def live_density(tr: Trainer) -> Density:
    """The density each layer's mask holds at the moment a kernel runs."""
    numel = {n: m.weight.numel() for n, m in tr.model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    return lambda name: Fraction(tr.masker.count(name), numel[name])


@pytest.mark.parametrize(
    "over",
    [
        {"sparsity.algorithm": "dense", "sparsity.ratio": 0.0, "freezing.start_epoch": 1},
        {"sparsity.algorithm": "mest", "freezing.start_epoch": 1, "train.epochs": 5},
        {"sparsity.algorithm": "mest", "freezing.target_flops_reduction": 0.1, "train.epochs": 6},
        {"sparsity.algorithm": "rigl", "freezing.start_epoch": 2, "train.epochs": 5},
    ],
    ids=["dense", "mest-explicit", "mest-target", "rigl"],
)
def test_trainer_measured_flops_are_what_autograd_computes(
    over: Mapping[str, Any], trainer_cfg: Callable[..., Config]
) -> None:
    """A real training run under FlopCounterMode (each kernel scaled by the density its layer's mask holds at that
    moment; dense weight gradients in RigL's update batch): its count minus the final evaluation is the
    trainer's measured count, which is the prediction."""
    cfg = trainer_cfg({"sieving.fraction": 0.2, "train.eval_every": 100, "train.precision": "fp32",
                       "train.channels_last": "off", **over})
    tr = Trainer(cfg)
    p = tr.prediction
    assert max(p.frozen_prefix_per_epoch) > 0
    density = live_density(tr)
    in_rigl_pass = [False]
    rigl_pass = tr._rigl_update_step

    def flagged(*args: Any) -> Any:
        in_rigl_pass[0] = True
        try:
            return rigl_pass(*args)
        finally:
            in_rigl_pass[0] = False

    tr._rigl_update_step = flagged  # type: ignore[method-assign]
    mapping = density_mapping(tr.model, density, lambda: in_rigl_pass[0])
    with FlopCounterMode(display=False, custom_mapping=mapping) as fc:
        ms = list(tr.epochs())  # evaluates after the last epoch only
    with FlopCounterMode(display=False, custom_mapping=density_mapping(tr.model, density)) as fc_eval:
        tr.evaluate()  # the same masks as that evaluation
    assert set(fc.get_flop_counts()["Global"]) <= COUNTED
    assert fc.get_total_flops() - fc_eval.get_total_flops() == tr.train_flops == ms[-1].train_flops
    assert tr.train_flops == p.train_flops == predict(cfg).train_flops
