"""The epoch plan (spfde_search/method/plan.py): golden schedules, the stop-before-freeze rule, and proof that it
is the only place the boundary rules live (the trainer and the FLOPs predictor both follow a patched plan)."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from spfde_search.config import Config
from spfde_search.method import plan as plan_module
from spfde_search.method.flops import build_profile, plan_all, predict
from spfde_search.method.plan import RunPlan
from spfde_search.method.sparsity import DSTPlan
from spfde_search.trainer import Trainer

SRC = Path(__file__).resolve().parents[2] / "spfde_search"


def run_plan(cfg: Config) -> RunPlan:
    profile, spec = build_profile(cfg)
    return plan_all(cfg, profile, spec).run


def test_mest_default_soft_bound_regrown_and_density(trainer_cfg: Callable[..., Config]) -> None:
    """MEST at 90%, default soft bound, T = 16, dtau = 1: updates at b < 12 (epoch 0 included); +2% while
    b/16 < 0.5625 (b <= 8), +1% while b < 12, then the mask stops changing. The mutation per update is the
    extra: ~2% of the sparse weights regrown in the first phase, ~1% in the second, 0 after."""
    p = run_plan(trainer_cfg({"train.epochs": 16}))
    regrown = [p.regrown_fraction(e) for e in range(16)]
    density = [p.density(e) for e in range(16)]
    assert all(r == pytest.approx(0.02, abs=0.001) for r in regrown[:9])
    assert all(r == pytest.approx(0.01, abs=0.001) for r in regrown[9:12])
    assert regrown[12:] == [0.0] * 4
    assert all(d == pytest.approx(0.12, abs=0.001) for d in density[:9])
    assert all(d == pytest.approx(0.11, abs=0.001) for d in density[9:12])
    assert all(d == pytest.approx(0.10, abs=0.001) for d in density[12:])
    ep9 = p.epochs[9]  # the first second-phase update prunes 2% and grows 1%
    assert sum(s.drop for s in ep9.dst_steps) > ep9.grown > 0
    assert p.epochs[12].grown == 0 and sum(s.drop for s in p.epochs[12].dst_steps) > 0  # back to the target
    assert not p.epochs[13].dst_steps  # last phase: no mask change


def test_set_and_rigl_hold_the_target(trainer_cfg: Callable[..., Config]) -> None:
    for algorithm in ("set", "rigl"):
        p = run_plan(trainer_cfg({"sparsity.algorithm": algorithm, "train.epochs": 8}))
        # RigL's code updates at step 0 (rigl/sparse_optimizers_base.py lines 164-171): the full 0.3 swap
        assert p.regrown_fraction(0) == pytest.approx(0.3 * 0.1, abs=0.001)
        assert p.epochs[0].rigl_pass is (algorithm == "rigl")
        assert all(p.density(e) == pytest.approx(0.1, abs=0.001) for e in range(8))
        # SET swaps 0.3 of the target; RigL's fraction is cosine-decayed to 0 at b = 6: (1 + cos(pi / 6)) / 2
        decay = 1.0 if algorithm == "set" else (1 + math.cos(math.pi / 6)) / 2
        assert p.regrown_fraction(1) == pytest.approx(0.3 * 0.1 * decay, abs=0.001)
        assert p.epochs[1].rigl_pass is (algorithm == "rigl")


def test_unit_mask_stops_one_interval_before_freezing(trainer_cfg: Callable[..., Config]) -> None:
    """Unit k freezes at f_k = T_frz + k dtau; its layers take no DST update at any b >= f_k - dtau (issue 9),
    and MEST's soft-bound extra is pruned at f_k - dtau, not at f_k (issue 22), so the unit trains its last
    interval on exactly the mask, and the count, it freezes with."""
    cfg = trainer_cfg({"train.epochs": 16, "train.update_interval": 2, "freezing.start_epoch": 4})
    profile, spec = build_profile(cfg)
    plans = plan_all(cfg, profile, spec)
    unit = {r.name: r.unit for r in profile.layers}
    dtau = 2
    checked = 0
    for k in range(plans.freeze.freezable):
        fe = plans.freeze.unit_freeze_epoch(k)
        assert fe is not None
        names = {n for n in plans.targets if unit[n] == k}
        if not names:
            continue  # the stem is dense
        updated = {ep.epoch for ep in plans.run.epochs for s in ep.dst_steps if s.name in names}
        assert updated and max(updated) < fe - dtau, (k, fe, updated)
        assert max(updated) == fe - 2 * dtau  # ... but it did update until then
        last = plans.run.epochs[fe - dtau]
        assert {s.name for s in last.freeze_prunes} == names and not any(s.grow for s in last.freeze_prunes)
        assert all(plans.run.epochs[fe - dtau - 1].counts[n] > plans.targets[n] for n in names)  # extra held so far
        for e in range(fe - dtau, plans.freeze.epochs):
            assert all(plans.run.epochs[e].counts[n] == plans.targets[n] for n in names), e
            assert not {s.name for s in plans.run.epochs[e].freeze_prunes} & names or e == fe - dtau
        checked += 1
    assert checked >= 2
    # a never-frozen unit keeps updating to update_end (b < 12)
    last = {n for n in plans.targets if unit[n] >= plans.freeze.frozen_units}
    assert max(ep.epoch for ep in plans.run.epochs for s in ep.dst_steps if s.name in last and s.grow) == 10


def test_eval_every_and_lr_schedule(trainer_cfg: Callable[..., Config]) -> None:
    p = run_plan(trainer_cfg({"train.epochs": 7, "train.eval_every": 3}))
    assert [ep.evaluate for ep in p.epochs] == [False, False, True, False, False, True, True]
    frz = {"train.epochs": 8, "freezing.start_epoch": 2}
    per_unit = run_plan(trainer_cfg(frz))
    glob = run_plan(trainer_cfg({**frz, "freezing.lr_schedule": "global"}))
    assert per_unit.lr_horizons == (2, 3, 4, 8, 8)  # units 0-2 freeze at 2, 3, 4
    assert glob.lr_horizons == (8,) * 5
    assert glob.lr(0, 3.0, 0.1, 0.0) > 0 == per_unit.lr(0, 3.0, 0.1, 0.0)


# ---------------------------------------------------------------- the plan is the only place the rules live

RULES = {
    # DSTPlan / FreezePlan rule methods and the plan's own rule: only plan.py may call them
    "is_update", "extra_density", "drop_fraction_at", "held_after_update", "drop_count", "layer_step",
    "frozen_prefix", "unit_freeze_epoch", "lr_horizon", "cosine_lr", "may_update", "final_mask", "prune_to_target",
}


def called_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            names.add(f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", ""))
    return names


@pytest.mark.parametrize("module", ["trainer.py", "method/flops.py"])
def test_consumers_call_no_boundary_rule(module: str) -> None:
    assert not called_names(SRC / module) & RULES
    tree = ast.parse((SRC / module).read_text())
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    used |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert "DSTPlan" not in used
    if module == "trainer.py":  # no schedule arithmetic of its own either
        assert not used & {"update_interval", "eval_every", "soft_bound", "update_end", "scheme"}


def test_trainer_and_predictor_follow_a_patched_plan(
    monkeypatch: pytest.MonkeyPatch, trainer_cfg: Callable[..., Config]
) -> None:
    """Change two rules in one place each (MEST's extra and the stop-before-freeze rule): the predictor's FLOPs
    and the trainer's masks both follow, and measured == predicted still holds exactly."""
    cfg = trainer_cfg({"freezing.start_epoch": 1, "sieving.fraction": 0.2})
    before = predict(cfg)
    monkeypatch.setattr(DSTPlan, "extra_density", lambda self, b: 0.05 if b < 3 else 0.0)
    monkeypatch.setattr(plan_module, "may_update", lambda freeze, unit, b, prefix: unit >= prefix)
    after = predict(cfg)
    assert after.train_flops > before.train_flops
    tr = Trainer(cfg)
    masks: list[dict[str, torch.Tensor]] = []
    ms = []
    for m in tr.epochs():
        ms.append(m)
        masks.append({n: mk.clone() for n, mk in tr.masker.masks.items()})
    assert [m.train_flops for m in ms] == after.cumulative
    assert ms[0].density == pytest.approx(0.15, abs=0.002)
    # unit 2 freezes at epoch 3: the patched rule lets it grow at its last boundary (2), the real one not; the
    # real one prunes its soft-bound extra there instead, so epoch 2 trains on the mask unit 2 freezes with
    unit2 = [r.name for r in tr.masker.layers if r.sparse and r.unit == 2]
    assert any(bool((masks[2][n] & ~masks[1][n]).any()) for n in unit2)
    monkeypatch.undo()
    real = Trainer(cfg)
    real_masks = [{n: mk.clone() for n, mk in real.masker.masks.items()} for _ in real.epochs()]
    assert not any(bool((real_masks[2][n] & ~real_masks[1][n]).any()) for n in unit2)  # nothing grown at 2
    assert all(torch.equal(real_masks[2][n], real_masks[3][n]) for n in unit2)  # frozen on the mask it trained
    assert all(int(real_masks[2][n].sum()) == real.targets[n] < int(real_masks[1][n].sum()) for n in unit2)


# ---------------------------------------------------------------- which fields change a run (issue 31)


def _key(cfg: Config) -> str:
    from spfde_search.method.plan import run_key

    return run_key(cfg, run_plan(cfg))


FREEZE_ON = [
    {"freezing.scheme": s, "freezing.target_flops_reduction": 0.05}
    for s in ("single_shot", "single_shot_resume", "periodic", "delayed_periodic")
] + [
    {"freezing.scheme": s, "freezing.start_epoch": e, **extra}
    for s in ("single_shot", "single_shot_resume")
    for e in (2, 5, 6, 7)
    for extra in ({}, {"freezing.resume_epochs": 3}, {"freezing.units": 1})
]


@pytest.mark.parametrize("dtau", [1, 2])
def test_lr_schedule_matters_exactly_where_per_unit_and_global_differ(
    trainer_cfg: Callable[..., Config], dtau: int
) -> None:
    """``lr_schedule_matters`` (what the search spaces ask before sampling the field) agrees with the plan: the
    two schedules give different LR horizons, and so different run keys, exactly where it says so; under
    periodic schemes and single-shot starts at or after the end of freezing they are one run."""
    from spfde_search.method.freezing import lr_schedule_matters

    said = {True: 0, False: 0}
    for over in FREEZE_ON:
        cfg = trainer_cfg({"train.epochs": 8, "train.update_interval": dtau, **over})
        glob = cfg.with_overrides({"freezing.lr_schedule": "global"})
        differ = run_plan(cfg).lr_horizons != run_plan(glob).lr_horizons
        f = cfg.freezing
        assert lr_schedule_matters(f.scheme, 8, dtau, f.start_epoch, f.resume_epochs) == differ, over
        assert (_key(cfg) != _key(glob)) == differ, over
        said[differ] += 1
    assert said[True] and said[False]  # both answers occur, periodic and late resume starts among the equal


@pytest.mark.parametrize("algorithm", ["mest", "rigl", "set", "static"])
def test_interval_matters_exactly_where_the_plan_reads_delta_tau(
    trainer_cfg: Callable[..., Config], algorithm: str
) -> None:
    """``interval_matters`` agrees with the plan: where it says Δτ is unread (static sparsity, no sieving, no
    freezing or the periodic pattern) Δτ = 1, 2, 3 give one run key; elsewhere they do not (some Δτ may still
    coincide, as delayed_periodic's start at 1 and 2 here: the search's dedupe catches those)."""
    from spfde_search.method.plan import interval_matters

    for sieve in (0.0, 0.2):
        for scheme in (None, "single_shot", "single_shot_resume", "periodic", "delayed_periodic"):
            frz = {"freezing.scheme": scheme, "freezing.target_flops_reduction": 0.02} if scheme else {}
            over = {"train.epochs": 8, "sparsity.algorithm": algorithm, "sieving.fraction": sieve, **frz}
            keys = {_key(trainer_cfg({**over, "train.update_interval": d})) for d in (1, 2, 3)}
            assert interval_matters(algorithm, sieve > 0, scheme) == (len(keys) > 1), over


def test_run_key_names_the_run_not_the_text(trainer_cfg: Callable[..., Config]) -> None:
    """Equal keys for configs that train the same run (the sieve window with sieving off; an explicit start
    epoch and the FLOPs target the solver meets at that start with every freezable unit), different keys for
    anything that changes the run."""
    base = trainer_cfg({"train.epochs": 8})
    assert _key(base) == _key(base.with_overrides({"sieving.window": 5}))
    sieve = base.with_overrides({"sieving.fraction": 0.2})
    assert _key(sieve) != _key(sieve.with_overrides({"sieving.window": 5}))
    assert _key(base) != _key(base.with_overrides({"sparsity.ratio": 0.8}))
    assert _key(base) != _key(base.with_overrides({"train.lr": 0.05}))
    target = base.with_overrides({"freezing.target_flops_reduction": 0.05})
    plans = plan_all(target, *build_profile(target))
    start = plans.freeze.start_epoch
    explicit = base.with_overrides({"freezing.start_epoch": start})
    assert plans.freeze.frozen_units == plans.freeze.freezable and start is not None
    assert _key(explicit) == _key(target) == predict(target).run_key
    assert _key(base.with_overrides({"freezing.start_epoch": start, "freezing.units": 1})) != _key(target)
    assert _key(base.with_overrides({"freezing.start_epoch": start + 1})) != _key(target)
