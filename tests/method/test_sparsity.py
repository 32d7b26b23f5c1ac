"""Masks and dynamic sparse training (docs/method.md §2).

A contract suite over every registered DST algorithm (run through the real trainer on the tiny synthetic
config), plus golden tests of the pure pieces: the DST plan, ERK densities, and the one generic update on an
8-weight layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from spfde_search.config import Config, ConfigError, SparsityConfig
from spfde_search.method.sparsity import (
    ALGORITHMS,
    DSTPlan,
    Masker,
    erk_densities,
    layer_densities,
    sparse_layers,
)
from spfde_search.models import UnitModel, create_model
from spfde_search.trainer import Trainer

# ---------------------------------------------------------------- contract suite over the registry


def sparsity_of(algorithm: str) -> dict[str, object]:
    return {"sparsity.algorithm": algorithm, "sparsity.ratio": 0.0 if algorithm == "dense" else 0.9}


def expected_count(algorithm: str, numel: int, epoch: int, final: bool) -> int:
    """Hand schedule for T = 4, dtau = 1, update_end 0.75, soft bound [(0.5625, +2%), (0.75, +1%)]:
    MEST updates before epochs 0, 1 and 2 (b < 0.75 x 4 = 3, epoch 0 included as in MEST's loop); b/T = 0,
    0.25 and 0.5 are all < 0.5625, so it holds +2% of the layer on top of the target in epochs 0-2; before
    epoch 3 it prunes back to the target. SET/RigL hold exactly the target; static never changes. A layer whose
    mask is final (frozen, or in the last interval before it freezes: issue 22) holds the target."""
    target = round(0.1 * numel)
    if algorithm == "mest" and epoch in (0, 1, 2) and not final:
        return target + min(round(0.02 * numel), numel - target)
    return target


@pytest.mark.parametrize("layout", ["off", "on"], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("with_freezing", [False, True], ids=["plain", "freezing+sieving"])
@pytest.mark.parametrize("algorithm", ALGORITHMS.names())
def test_mask_contract(algorithm: str, with_freezing: bool, layout: str, trainer_cfg: Callable[..., Config]) -> None:
    """Issue 9: with channels-last weights (CUDA's default) every mask write must work, in every algorithm."""
    over: dict[str, object] = {**sparsity_of(algorithm), "train.channels_last": layout}
    # units 0 (stem), 1, 2 freeze before epochs 1, 2, 3
    prefixes = [0, 0, 0, 0]
    final = [0, 0, 0, 0]  # per epoch: units < final[e] hold their final mask (frozen, or freezing at e + 1)
    if with_freezing:
        over.update({"freezing.start_epoch": 1, "sieving.fraction": 0.2})
        prefixes = [0, 1, 2, 3]
        final = [1, 2, 3, 3]
    cfg = trainer_cfg(over)
    checked: list[tuple[int, int]] = []
    masks_per_epoch: dict[int, dict[str, torch.Tensor]] = {}

    def check(e: int, i: int, steps: int) -> None:
        mk = tr.masker
        assert tr.plan.epochs[e].frozen_prefix == prefixes[e]
        for name, m in mk.masks.items():
            w = mk.weight(name)
            if w.dim() == 4 and layout == "on":
                assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous(), name
            assert not bool(w[~m].any()), f"{name}: a masked weight is nonzero after step {i} of epoch {e}"
            buf = tr.optimizer.state.get(w, {}).get("momentum_buffer")
            if buf is not None:
                assert not bool(buf[~m].any()), f"{name}: momentum alive at masked positions (epoch {e})"
            done = mk.layers[[r.name for r in mk.layers].index(name)].unit < final[e]
            assert int(m.sum()) == expected_count(algorithm, w.numel(), e, done), (name, e)
            assert int((w != 0).sum()) <= int(m.sum())
        masks_per_epoch.setdefault(e, {n: m.clone() for n, m in mk.masks.items()})
        checked.append((e, i))

    tr = Trainer(cfg, step_callback=check)
    sparse = [r for r in tr.masker.layers if r.sparse]
    if algorithm == "dense":
        assert not sparse and not tr.masker.masks
    else:
        assert sparse and set(tr.masker.masks) == {r.name for r in sparse}
        # the paper's dense rules: first conv, 1x1 shortcuts and the classifier stay dense
        dense_names = {r.name for r in tr.masker.layers if not r.sparse}
        assert dense_names == {"stem.0", "blocks.1.shortcut.0", "blocks.2.shortcut.0", "head.fc"}
    metrics = list(tr.epochs())
    assert len(metrics) == 4 and {e for e, _ in checked} == {0, 1, 2, 3}
    if algorithm == "dense":
        assert all(m.density == 1.0 for m in metrics)
        return
    # the overall density reported per epoch is what the masks hold
    for m in metrics:
        held = sum(expected_count(algorithm, r.numel, m.epoch - 1, r.unit < final[m.epoch - 1]) for r in sparse)
        assert m.density == pytest.approx(held / sum(r.numel for r in sparse))
    # dynamic algorithms change the mask of active layers at updates; static never does
    # (block 2's layers are still active before epoch 1 in both variants)
    changed = [not torch.equal(masks_per_epoch[0][n], masks_per_epoch[1][n]) for n in tr.masker.masks]
    if ALGORITHMS.get(algorithm).dynamic:
        assert any(changed)
    else:
        assert not any(changed)
        assert all(torch.equal(masks_per_epoch[0][n], masks_per_epoch[3][n]) for n in tr.masker.masks)
    # after update_end (epoch 3) every layer is back at exactly its target
    assert all(tr.masker.count(r.name) == round(0.1 * r.numel) for r in sparse)


def test_frozen_layers_keep_their_mask(trainer_cfg: Callable[..., Config]) -> None:
    """A frozen unit keeps its mask: the DST update before epoch 2 skips unit 1, frozen from epoch 1."""
    cfg = trainer_cfg({"sparsity.algorithm": "set", "freezing.start_epoch": 0, "freezing.units": 2})
    tr = Trainer(cfg)
    it = tr.epochs()
    next(it)
    before = {n: m.clone() for n, m in tr.masker.masks.items()}
    for _ in it:
        pass
    for r in tr.masker.layers:
        if r.sparse and r.unit < 2:
            assert torch.equal(before[r.name], tr.masker.masks[r.name]), r.name
    assert any(
        not torch.equal(before[r.name], tr.masker.masks[r.name]) for r in tr.masker.layers if r.sparse and r.unit >= 2
    )


def test_registry_flags() -> None:
    assert ALGORITHMS.names() == ["dense", "mest", "rigl", "set", "static"]
    assert [n for n in ALGORITHMS.names() if ALGORITHMS.get(n).dynamic] == ["mest", "rigl", "set"]
    assert [n for n in ALGORITHMS.names() if ALGORITHMS.get(n).needs_dense_grad] == ["rigl"]
    assert not ALGORITHMS.get("dense").masked
    with pytest.raises(KeyError, match="valid: dense, mest, rigl, set, static"):
        ALGORITHMS.get("gmp")


# ---------------------------------------------------------------- the DST plan (pure)


def mest_plan(**kw: object) -> DSTPlan:
    return DSTPlan.from_config(SparsityConfig.model_validate({"algorithm": "mest", **kw}), 160, 5)


def test_mest_plan_golden() -> None:
    p = mest_plan()
    # updates every 5 epochs, before 0.75 x 160 = 120, epoch 0 included (MEST's loop): 0, 5, ..., 115 (24)
    assert [b for b in range(161) if p.is_update(b)] == list(range(0, 120, 5))
    # soft bound: +2% while b/160 < 0.5625 (b < 90), +1% while b < 120, then 0
    assert [p.extra_density(b) for b in (5, 85, 90, 115, 120, 155)] == [0.02, 0.02, 0.01, 0.01, 0.0, 0.0]
    # a 1,000-weight layer with target 100: 100 + 20, 100 + 10, 100
    assert [p.held_after_update(b, 100, 1000) for b in (5, 90, 120)] == [120, 110, 100]
    # the extra never exceeds the layer: target 995 of 1000 leaves room for 5, not 20
    assert p.held_after_update(5, 995, 1000) == 1000
    # drop count: 0.3 x 100 = 30 (constant decay for MEST)
    assert p.drop_count(10, 100) == 30
    # truncated as RigL casts to int: 0.3 x 9 = 2.7 swaps 2 (round would give 3); regrowth draws from all zeros
    # after the drop, so a nearly dense layer swaps its full k
    assert p.drop_count(10, 9) == 2


def test_mest_layer_step_is_prune_to_target_grow_to_extra() -> None:
    """MEST's EM&S (prune_utils/retrain.py): prune down to the target, grow up to target + extra among the
    zeros after the prune; the extra is the whole mutation (no drop_fraction on top)."""
    p = mest_plan()
    # 1,000-weight layer, target 100: from the initial mask (100) at b = 0: drop 0, grow 20
    assert p.layer_step(0, 100, 100, 1000) == (0, 20)
    # first phase: holds 120 -> drop 20 (to 100), grow 20 (to 120): 2% of the layer mutates
    assert p.layer_step(5, 100, 120, 1000) == (20, 20)
    # second phase (b/T >= 0.5625): drop 20, grow 10 -> 110
    assert p.layer_step(90, 100, 120, 1000) == (20, 10)
    assert p.layer_step(95, 100, 110, 1000) == (10, 10)
    # plain EM (no soft bound): prune drop_fraction below the target, grow back to it
    em = mest_plan(soft_bound=[])
    assert em.layer_step(5, 100, 100, 1000) == (30, 30)
    # SET keeps its drop fraction
    set_ = DSTPlan.from_config(SparsityConfig(algorithm="set"), 160, 5)
    assert set_.layer_step(5, 100, 100, 1000) == (30, 30)
    # a 10-weight layer holding 9: RigL's pool (all zeros after the drop) takes k = int(0.3 x 9) = 2 back; the
    # old bound (room empty before the update) allowed only 1
    assert set_.layer_step(5, 9, 9, 10) == (2, 2)


def test_rigl_plan_golden() -> None:
    p = DSTPlan.from_config(SparsityConfig(algorithm="rigl"), 160, 5)
    assert p.soft_bound == () and p.decay == "cosine"
    # drop fraction 0.3/2 (1 + cos(pi b / 120)): 0.3 at 0, 0.15 at 60, 0 at 120
    assert p.drop_fraction_at(0) == pytest.approx(0.3)
    assert p.drop_fraction_at(60) == pytest.approx(0.15)
    assert p.drop_fraction_at(120) == pytest.approx(0.0, abs=1e-12)
    assert p.drop_fraction_at(40) == pytest.approx(0.15 * (1 + math.cos(math.pi / 3)))  # 0.225
    # round(0.225 x 100) = 22 (22.5 rounds half to even)
    assert p.drop_count(40, 100) == 22
    assert p.held_after_update(5, 100, 1000) == 100


@pytest.mark.parametrize("algorithm", ["static", "dense"])
def test_static_plans_never_update(algorithm: str) -> None:
    p = DSTPlan.from_config(SparsityConfig(algorithm=algorithm, ratio=0.0 if algorithm == "dense" else 0.9), 160, 5)
    assert not p.dynamic and not any(p.is_update(b) for b in range(161))


@pytest.mark.parametrize("algorithm", ["set", "rigl", "mest"])
def test_updates_start_at_epoch_0_and_stop_before_the_end(algorithm: str) -> None:
    """RigL's mask-update condition holds at step 0 (rigl/sparse_optimizers_base.py lines 164-171, 216-226);
    MEST's loop updates at epoch 0 too; no update at b = T."""
    p = DSTPlan.from_config(SparsityConfig(algorithm=algorithm, update_end=1.0), 10, 5)
    assert [b for b in range(11) if p.is_update(b)] == [0, 5]


# ---------------------------------------------------------------- layer densities


def test_erk_golden_two_layers() -> None:
    # raw ERK scores sum(shape)/prod(shape): a 20/100 = 0.2, b 50/400 = 0.125
    # density 0.5 of 500 weights = 250 = eps (0.2 x 100 + 0.125 x 400) = 70 eps -> eps = 25/7
    d = erk_densities({"a": (10, 10), "b": (10, 40)}, 0.5)
    assert d["a"] == pytest.approx(0.2 * 25 / 7) and d["b"] == pytest.approx(0.125 * 25 / 7)
    assert round(d["a"] * 100) == 71 and round(d["b"] * 400) == 179  # 71.43 and 178.57
    assert d["a"] * 100 + d["b"] * 400 == pytest.approx(250)


def test_erk_golden_dense_overflow() -> None:
    # small 4/4 = 1.0, big 40/400 = 0.1; density 0.5 of 404 = 202 = eps (4 + 40) -> eps = 4.59 > 1 for small,
    # so small is made dense and eps is solved again: 202 - 4 = 198 = eps x 40 -> big = 0.495 -> 198 weights
    d = erk_densities({"small": (2, 2), "big": (20, 20)}, 0.5)
    assert d["small"] == 1.0
    assert d["big"] == pytest.approx(0.495)
    assert round(d["big"] * 400) == 198


def test_erk_golden_conv_shapes() -> None:
    # conv (8, 4, 3, 3): 18 / 288 = 1/16; conv (16, 8, 3, 3): 30 / 1152 = 5/192
    # density 0.25 of 1440 = 360 = eps (288/16 + 1152 x 5/192) = eps (18 + 30) -> eps = 7.5
    d = erk_densities({"c1": (8, 4, 3, 3), "c2": (16, 8, 3, 3)}, 0.25)
    assert d["c1"] == pytest.approx(7.5 / 16) and d["c2"] == pytest.approx(7.5 * 5 / 192)
    assert round(d["c1"] * 288) == 135 and round(d["c2"] * 1152) == 225


def test_erk_on_a_model_hits_the_overall_density() -> None:
    with torch.device("meta"):
        m = create_model("resnet20")
    cfg = SparsityConfig(distribution="erk", ratio=0.8)
    layers = sparse_layers(m, cfg)
    dens = layer_densities(layers, cfg)
    sparse = [r for r in layers if r.sparse]
    counts = [round(dens[r.name] * r.numel) for r in sparse]
    total = sum(r.numel for r in sparse)
    assert abs(sum(counts) - 0.2 * total) <= len(sparse) / 2  # exact up to per-layer rounding
    assert len({round(dens[r.name], 6) for r in sparse}) > 1  # not uniform
    # ERK gives the smaller (fewer-weight) layers higher density
    small = min(sparse, key=lambda r: r.numel)
    big = max(sparse, key=lambda r: r.numel)
    assert dens[small.name] > dens[big.name]


def test_uniform_densities_and_dense_rules() -> None:
    m = create_model("resnet8")
    cfg = SparsityConfig(ratio=0.75)
    dens = layer_densities(sparse_layers(m, cfg), cfg)
    assert set(dens.values()) == {0.25}
    assert "stem.0" not in dens and "head.fc" not in dens and "blocks.1.shortcut.0" not in dens
    all_sparse = SparsityConfig(ratio=0.75, dense_first=False, dense_shortcuts=False, dense_classifier=False)
    assert all(r.sparse for r in sparse_layers(m, all_sparse))
    # unit indices: stem 0, blocks 1..3, head 4
    units = {r.name: r.unit for r in sparse_layers(m, cfg)}
    assert units["stem.0"] == 0 and units["blocks.0.conv1"] == 1 and units["blocks.2.conv2"] == 3
    assert units["head.fc"] == 4


def test_init_random_exact_counts() -> None:
    m = create_model("resnet8")
    mk = Masker(m, SparsityConfig(ratio=0.9))
    mk.init_random(torch.Generator().manual_seed(0))
    for name, target in mk.targets.items():
        assert target == round(0.1 * mk.weight(name).numel())
        assert mk.count(name) == target
        assert not bool(mk.weight(name)[~mk.masks[name]].any())
    assert mk.overall_density() == pytest.approx(sum(mk.targets.values()) / sum(mk.weight(n).numel() for n in mk.targets))


# ---------------------------------------------------------------- the generic update, by hand


def tiny(algorithm: str, **kw: object) -> tuple[Masker, torch.Tensor, torch.optim.SGD]:
    """stem: a dense 1x1 conv (first conv); block 0: one 8-weight 1x1 conv, sparse at 50% -> target 4."""
    model = UnitModel(nn.Conv2d(1, 1, 1, bias=False), [nn.Conv2d(1, 8, 1, bias=False)], nn.Identity())
    mk = Masker(model, SparsityConfig.model_validate({"algorithm": algorithm, "ratio": 0.5, **kw}))
    assert list(mk.targets) == ["blocks.0"] and mk.targets["blocks.0"] == 4
    w = mk.weight("blocks.0")
    with torch.no_grad():
        w.copy_(torch.tensor([0.8, -0.1, 0.5, 0.0, -0.7, 0.0, 0.0, 0.0]).view(8, 1, 1, 1))
    mk.masks["blocks.0"] = torch.tensor([1, 1, 1, 0, 1, 0, 0, 0], dtype=torch.bool).view(8, 1, 1, 1)
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    opt.state[w]["momentum_buffer"] = torch.ones_like(w)
    return mk, w, opt


def flat(t: torch.Tensor) -> list:
    return t.flatten().tolist()


def test_generic_update_golden_rigl() -> None:
    """RigL's pool (rigl/sparse_optimizers_base.py lines 305-321): growth ranks every position that is zero
    after the drop, the just-dropped ones included."""
    mk, w, opt = tiny("rigl")
    # drop the 2 smallest |w| among active {0: .8, 1: .1, 2: .5, 4: .7} -> 1 and 2
    # grow the 2 largest |dense grad| among the zeros after the drop {1, 2, 3, 5, 6, 7}:
    # |g| = 9, .3, .1, .6, .4, .05 -> 1 (just dropped, comes back) and 5
    g = torch.tensor([9.0, 9.0, 0.3, -0.1, 9.0, -0.6, 0.4, 0.05]).view(8, 1, 1, 1)
    dropped, grown = mk.update_layer("blocks.0", 2, 2, torch.Generator().manual_seed(0), opt, dense_grad=g)
    assert (dropped, grown) == (2, 2)
    assert flat(mk.masks["blocks.0"]) == [True, True, False, False, True, True, False, False]
    # dropped 2 and grown 5 hold 0 with their momentum reset; 1, dropped and regrown at once, keeps its value and
    # momentum (reinit_when_same=False, the default of RigL's ``_get_update_op``)
    assert flat(w) == pytest.approx([0.8, -0.1, 0.0, 0.0, -0.7, 0.0, 0.0, 0.0])
    assert flat(opt.state[w]["momentum_buffer"]) == [1, 1, 0, 1, 1, 0, 1, 1]


@pytest.mark.parametrize("algorithm", ["set", "mest"])
def test_random_regrowth_may_bring_back_a_just_dropped_weight(algorithm: str) -> None:
    """SET's random growth draws from all positions zero after the drop (RigL's ``_get_update_op``), as MEST's
    ``weight_growing`` does: over seeds, a dropped position (1 or 2) comes back; the two largest |w| always
    survive and counts are exact. Come back, it keeps its value and momentum in SET (RigL's code:
    ``reinit_when_same=False``) and starts at 0 with momentum reset in MEST (its code zeroes the pruned weights
    before ``weight_growing``)."""
    came_back = 0
    keeps = ALGORITHMS.get(algorithm).reinit_when_same is False
    assert keeps is (algorithm == "set")
    for seed in range(30):
        mk, w, opt = tiny(algorithm)
        mk.update_layer("blocks.0", 2, 2, torch.Generator().manual_seed(seed), opt)
        new = flat(mk.masks["blocks.0"])
        assert sum(new) == 4 and new[0] and new[4]  # the two largest |w| survive the prune
        came_back += new[1] or new[2]
        for i, before in ((1, -0.1), (2, 0.5)):
            kept = keeps and new[i]
            assert flat(w)[i] == pytest.approx(before if kept else 0.0)
            assert flat(opt.state[w]["momentum_buffer"])[i] == (1.0 if kept else 0.0)
        assert not bool(w[~mk.masks["blocks.0"]].any())
    assert came_back > 0


@pytest.mark.parametrize("algorithm", ["rigl", "set"])
def test_drop_ties_are_broken_by_seeded_noise(algorithm: str) -> None:
    """RigL's ``generic_mask_update`` adds N(0, 1e-5) to every drop score "for slight bit of randomness": among
    equal |w| the generator decides (the same seed the same way, over seeds both ways), while a weight smaller
    by far more than the noise still goes first. Without the noise topk's order decided, whatever the seed."""
    def dropped(seed: int, values: list[float]) -> list[int]:
        mk, w, opt = tiny(algorithm)
        with torch.no_grad():
            w.copy_(torch.tensor(values).view(8, 1, 1, 1))
        g = torch.arange(8.0).view(8, 1, 1, 1)  # RigL's grow score (SET draws at random)
        mk.update_layer("blocks.0", 1, 0, torch.Generator().manual_seed(seed), opt, dense_grad=g)
        return [i for i in (0, 1, 2, 4) if not flat(mk.masks["blocks.0"])[i]]

    tied = [0.5, 0.5, 0.5, 0.0, 0.5, 0.0, 0.0, 0.0]
    assert all(dropped(seed, tied) == dropped(seed, tied) for seed in range(5))
    assert {tuple(dropped(seed, tied)) for seed in range(20)} == {(0,), (1,), (2,), (4,)}
    assert all(dropped(seed, [0.5, 0.5, 0.4999, 0.0, 0.5, 0.0, 0.0, 0.0]) == [2] for seed in range(20))
    assert ALGORITHMS.get("mest").drop_noise == 0.0  # MEST's code ranks |w| (+ lambda |g|) as it is


def test_mest_soft_bound_grow_more_than_drop() -> None:
    # MEST with extra density: drop 1, grow 2 -> 5 held (target 4 + 1 extra)
    mk, _, opt = tiny("mest")
    mk.update_layer("blocks.0", 1, 2, torch.Generator().manual_seed(0), opt)
    assert mk.count("blocks.0") == 5
    # then prune_to_target drops the smallest magnitude among the 5 (grown ones are 0, so one of those)
    w_before = mk.weight("blocks.0").detach().clone()
    assert mk.prune_to_target("blocks.0", opt) == 1 and mk.count("blocks.0") == 4
    assert torch.equal(mk.weight("blocks.0"), w_before)  # the pruned weight was already 0
    assert mk.prune_to_target("blocks.0", opt) == 0


def test_mest_gradient_term_in_drop_score() -> None:
    # |w| + lambda |g| with lambda = 1: active scores 0: .8+0 = .8, 1: .1+1 = 1.1, 2: .5+0 = .5, 4: .7+0 = .7
    # dropping 1 removes position 2 (not 1, which |w| alone would drop)
    mk, w, opt = tiny("mest", grad_lambda=1.0)
    w.grad = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]).view(8, 1, 1, 1)
    mk.update_layer("blocks.0", 1, 0, torch.Generator(), opt)
    assert flat(mk.masks["blocks.0"]) == [True, True, False, False, True, False, False, False]
    mk0, _, opt0 = tiny("mest")
    mk0.update_layer("blocks.0", 1, 0, torch.Generator(), opt0)
    assert flat(mk0.masks["blocks.0"]) == [True, False, True, False, True, False, False, False]


def test_rigl_needs_the_dense_gradient() -> None:
    mk, _, opt = tiny("rigl")
    with pytest.raises(RuntimeError, match="dense gradient"):
        mk.update_layer("blocks.0", 1, 1, torch.Generator(), opt)


def test_cannot_grow_more_than_empty() -> None:
    mk, _, opt = tiny("set")
    with pytest.raises(RuntimeError, match="cannot grow 5"):
        mk.update_layer("blocks.0", 0, 5, torch.Generator(), opt)  # only 4 positions are empty


def test_masker_state_dict_roundtrip() -> None:
    mk, _, _ = tiny("set")
    state = mk.state_dict()
    other, _, _ = tiny("set")
    other.masks["blocks.0"] = torch.ones(8, 1, 1, 1, dtype=torch.bool)
    other.load_state_dict(state)
    assert torch.equal(other.masks["blocks.0"], mk.masks["blocks.0"])
    with pytest.raises(ValueError, match="does not match"):
        other.load_state_dict({"blocks.9": state["blocks.0"]})


def test_update_writes_work_on_channels_last_weights() -> None:
    """Issue 9: ``w.view(-1)[idx] = 0`` raised on a channels-last weight (every CUDA run); writes are by mask."""
    model = UnitModel(nn.Conv2d(3, 4, 3, bias=False), [nn.Conv2d(4, 8, 3, bias=False)], nn.Identity())
    model = model.to(memory_format=torch.channels_last)
    mk = Masker(model, SparsityConfig(algorithm="set", ratio=0.5))
    mk.init_random(torch.Generator().manual_seed(0))
    w = mk.weight("blocks.0")
    assert not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    opt.state[w]["momentum_buffer"] = torch.ones_like(w)  # channels-last too
    with torch.no_grad():
        w.add_(1.0).mul_(mk.masks["blocks.0"])
    old = mk.masks["blocks.0"].clone()
    assert mk.update_layer("blocks.0", 10, 10, torch.Generator().manual_seed(1), opt) == (10, 10)
    new = mk.masks["blocks.0"]
    changed = old ^ new
    # a just-dropped weight may be regrown (it then stays in old & new, at 0): at most 10 such
    assert int((old & ~new).sum()) == int((new & ~old).sum()) <= 10 and mk.count("blocks.0") == mk.targets["blocks.0"]
    assert not bool(w[changed].any()) and not bool(opt.state[w]["momentum_buffer"][changed].any())
    assert int((w[old & new] != 0).sum()) >= int((old & new).sum()) - 10  # untouched weights keep their values
    assert mk.prune_to_target("blocks.0", opt) == 0


def test_huge_grad_lambda_keeps_exact_counts_and_is_bounded_in_config() -> None:
    """An infinite drop score used to pick inactive positions ("mask count drifted"); scores are compared only
    among candidates now, and the config rejects a non-finite or absurd lambda with a clear message."""
    mk, w, opt = tiny("mest", grad_lambda=1e6)
    w.grad = torch.full_like(w, 1e38)  # |w| + 1e6 x 1e38 overflows to inf everywhere
    assert mk.update_layer("blocks.0", 2, 2, torch.Generator().manual_seed(0), opt) == (2, 2)
    assert mk.count("blocks.0") == 4
    for bad, says in ((float("inf"), "must be a finite number"), (1e39, "less than or equal to 1000000")):
        with pytest.raises(ConfigError, match=rf"sparsity.grad_lambda.*{says}"):
            Config.parse({"sparsity": {"grad_lambda": bad}})
