"""Search spaces: parameter names are config paths, ranges inside the config's, YAML validation, paper grid."""

from __future__ import annotations

import pickle
import warnings

import optuna
import pytest

from search_spaces import (
    AUXILIARY,
    SPACES,
    SpaceError,
    enumerate_corners,
    initial_points,
    load_space_file,
    max_freezing_saving,
    paper_points,
    resolve_space,
    run_space,
    sample_random,
    trial_config,
)
from spfde_search.config import field_info, load_config

BASE = {"data.name": "synthetic", "model.name": "resnet8", "train.epochs": 4, "train.update_interval": 1}


@pytest.fixture(scope="module")
def base():
    return load_config(None, BASE)


@pytest.mark.parametrize("name", ["joint", "budget", "paper", "smoke"])
def test_builtin_spaces_use_config_paths(name, base):
    space = resolve_space(name, base)
    assert space.distributions
    for path in space.distributions:
        if path not in AUXILIARY:
            field_info(path)  # raises KeyError for a non-config name
    for t in sample_random(space.fn, 20, seed=1):
        assert not set(t.params) & set(AUXILIARY)  # never in a trial's config
        cfg = trial_config(base, t.params)  # base + params, nothing else
        flat = cfg.to_dict()
        for k, v in t.params.items():
            sec, key = k.split(".")
            assert flat[sec][key] == v
    pickle.loads(pickle.dumps(space.fn))  # Ray checkpoints the searcher with pickle


def test_joint_branches(base):
    space = resolve_space("joint", base)
    names = set(space.distributions)
    assert {"sparsity.ratio", "sparsity.algorithm", "freezing.start_epoch", "freezing.saving_fraction",
            "freezing.units", "freezing.scheme", "sieving.fraction", "freezing.lr_schedule"} <= names
    assert "freezing.target_flops_reduction" not in names  # resolved, returned as a constant
    seen_target = 0
    for t in sample_random(space.fn, 60, seed=2):
        p = t.params
        if p["freezing.start_epoch"] is None:
            assert "freezing.units" not in p
        else:
            assert "freezing.target_flops_reduction" not in p
        enabled = p.get("freezing.start_epoch") is not None or p.get("freezing.target_flops_reduction", 0) > 0
        seen_target += p.get("freezing.target_flops_reduction", 0) > 0
        single_shot = trial_config(base, p).freezing.scheme in ("single_shot", "single_shot_resume")
        assert ("freezing.lr_schedule" in p) == (enabled and single_shot)  # per_unit = global when periodic
        if p.get("freezing.target_flops_reduction", 0) > 0:
            assert "freezing.scheme" in p
    assert seen_target > 5


def test_joint_never_offers_two_names_for_one_schedule(base):
    """Issue 22: an explicit start epoch with delayed_periodic was periodic under another name. Explicit
    schedules are single-shot now; every sampled point's config is valid and each periodic scheme keeps its
    own pattern start."""
    space = resolve_space("joint", base)
    periodic = 0
    for t in sample_random(space.fn, 80, seed=3):
        cfg = trial_config(base, t.params)
        if cfg.freezing.start_epoch is not None:
            assert cfg.freezing.scheme in ("single_shot", "single_shot_resume")
        periodic += cfg.freezing.scheme in ("periodic", "delayed_periodic") and cfg.freezing.enabled
    assert periodic > 0  # still offered, through a FLOPs target


def test_joint_runs_in_optuna_study(base):
    space = resolve_space("joint", base)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.TPESampler(seed=0))
    for _ in range(3):
        t = study.ask()
        space.fn(t)
        study.tell(t, [0.5, 1.0])
    assert len(study.trials) == 3


def test_paper_grid_and_points(base):
    pts = paper_points(base)
    assert len(pts) == 48
    assert pts[1]["sparsity.ratio"] == 0.9 and pts[1]["freezing.target_flops_reduction"] == 0.2
    paper = resolve_space("paper", base)
    assert paper.grid is not None and len(paper.grid["sparsity.ratio"]) == 3
    init = initial_points("paper", paper, base)
    # the grid keeps only the paper's freezing targets every grid point can reach in this short run
    reach = paper.grid["freezing.target_flops_reduction"]
    assert reach[0] == 0.0 and reach == [x for x in (0.0, 0.1, 0.2, 0.25) if x in reach]
    assert len(init) == 3 * len(reach) * 4 and init[0] == {"sparsity.ratio": 0.9, "freezing.target_flops_reduction": 0.0,
                                                          "sieving.fraction": 0.0}
    long = load_config(None, {**BASE, "train.epochs": 40, "train.update_interval": 2})
    assert resolve_space("paper", long).grid["freezing.target_flops_reduction"] == [0.0, 0.1, 0.2, 0.25]
    joint = resolve_space("joint", long)
    pts = initial_points("paper", joint, long, limit=6)
    assert pts[0]["freezing.saving_fraction"] == 0.0
    for p in pts:
        assert p["sparsity.algorithm"] == "mest" and p["freezing.start_epoch"] is None
    # the 20% point becomes the nearest 5% step of what its schedule can reach, and resolves near 20%
    p20 = next(p for p in pts if p["freezing.saving_fraction"] > 0)
    t = sample_random(joint.fn, 1, fixed=p20)[0]
    assert abs(t.params["freezing.target_flops_reduction"] - 0.2) <= 0.025 * max_freezing_saving(trial_config(long, t.params))


def test_paper_points_enqueued_in_the_joint_space_train_the_papers_targets_and_lr_schedule():
    """--initial paper in the joint space: each enqueued point, run by a real Optuna study as the search runs it,
    resolves to exactly one of the paper's (sparsity, x, y) points (not x = 0.2021 from the nearest grid step)
    with the paper's per-unit LR schedule (not one the sampler picks)."""
    long = load_config(None, {**BASE, "train.epochs": 40, "train.update_interval": 2})
    joint = resolve_space("joint", long)
    pts = initial_points("paper", joint, long)
    paper = {(p["sparsity.ratio"], p["freezing.target_flops_reduction"], p["sieving.fraction"]) for p in paper_points(long)}
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    resolved = []
    for p in pts:
        study.enqueue_trial(p)
        t = study.ask()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna notes the exact fraction is off the sampler's 5% grid
            params = run_space(joint.fn, t)
        study.tell(t, [0.5, 1.0])
        x = params.get("freezing.target_flops_reduction", 0.0)
        resolved.append((params["sparsity.ratio"], x, params["sieving.fraction"]))
        assert resolved[-1] in paper, params
        assert params["sparsity.algorithm"] == "mest" and params["freezing.start_epoch"] is None
        if x > 0:
            assert params["freezing.lr_schedule"] == "per_unit" and params["freezing.scheme"] == "single_shot"
        else:
            assert "freezing.lr_schedule" not in params and "freezing.scheme" not in params
    assert len(set(resolved)) == len(resolved)  # one trial per paper point
    # the headline points, freezing included, are all there (this schedule reaches 25%)
    assert {(0.9, 0.0, 0.0), (0.9, 0.2, 0.2), (0.9, 0.25, 0.25), (0.9, 0.1, 0.1)} <= set(resolved)


def test_sampled_floats_reach_the_config_and_its_yaml_as_a_person_writes_them(base):
    """Optuna's stepped floats are ``low + k * step`` (0.30000000000000004); the trial's config, and so its
    exported YAML, holds 0.3."""
    import re

    from spfde_search.config_export import config_to_yaml

    space = resolve_space("joint", base)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    raw_ugly = 0
    for _ in range(40):
        t = study.ask()
        params = run_space(space.fn, t)
        study.tell(t, [0.5, 1.0])
        raw_ugly += any(isinstance(v, float) and len(repr(v)) > 16 for v in t.params.values())
        assert repr(params["sieving.fraction"]) == repr(round(params["sieving.fraction"], 3))  # a 0.025 grid
        text = config_to_yaml(trial_config(base, params))
        assert not re.search(r"\.\d*(0{9}|9{9})\d", text), text
    assert raw_ugly  # the sampler did produce floats like 0.30000000000000004 (else this test shows nothing)


def test_registry_lists_and_rejects(base):
    assert {"joint", "paper", "smoke"} <= set(SPACES.names())
    with pytest.raises(SpaceError, match="unknown search space 'nope'.*joint"):
        resolve_space("nope", base)


def _yaml(tmp_path, text):
    p = tmp_path / "space.yaml"
    p.write_text(text)
    return p


def test_yaml_space_ok(tmp_path, base):
    p = _yaml(tmp_path, "sparsity.ratio: {type: float, low: 0.8, high: 0.95}\n"
                        "sparsity.algorithm: {type: categorical, choices: [mest, rigl]}\n"
                        "train.update_interval: {type: int, low: 1, high: 2}\n"
                        "train.lr: {type: float, low: 0.01, high: 0.2, log: true}\n")
    space = resolve_space(str(p), base)
    assert list(space.distributions) == ["sparsity.ratio", "sparsity.algorithm", "train.update_interval", "train.lr"]
    t = sample_random(space.fn, 1)[0]
    assert 0.8 <= t.params["sparsity.ratio"] <= 0.95
    # stored text replaces the file on --resume
    again = resolve_space(str(tmp_path / "gone.yaml"), base, text=p.read_text())
    assert again.distributions == space.distributions


@pytest.mark.parametrize(
    "text, match",
    [
        ("sparsity.ratioo: {type: float, low: 0.1, high: 0.5}",
         r"^unknown parameter path 'sparsity.ratioo': did you mean 'sparsity.ratio'\?$"),  # not all 56 paths
        ("sparsity.ratio: {type: float, low: 0.5, high: 1.0}", r"'sparsity.ratio'.*high=1 is outside.*\[0, 1\)"),
        ("sieving.fraction: {type: float, low: -0.1, high: 0.3}", r"low=-0.1 is outside"),
        ("train.epochs: {type: float, low: 1, high: 3}", "integer; use type: int"),
        ("sparsity.algorithm: {type: categorical, choices: [mest, foo]}", "choice 'foo' is outside"),
        ("sparsity.ratio: {type: float, low: 0.9, high: 0.5}", "low=0.9 is above high=0.5"),
        ("sparsity.ratio: {type: float, low: 0.5, hi: 0.9}", "unknown key"),
        ("sparsity.algorithm: {type: float, low: 0, high: 1}", "use type: categorical"),
        ("- a\n- b", "non-empty mapping"),
    ],
)
def test_yaml_space_errors(tmp_path, base, text, match):
    with pytest.raises(SpaceError, match=match):
        resolve_space(str(_yaml(tmp_path, text)), base)


def test_yaml_space_boolean_words_follow_the_field(tmp_path, base):
    """YAML 1.1 reads on/off as booleans; a string field's choices stay what was typed, a bool field's are bools."""
    space = resolve_space(str(_yaml(tmp_path, "train.channels_last: {choices: [on, off]}\n"
                                              "sparsity.dense_first: {choices: [yes, no]}\n"
                                              "train.lr: {type: float, low: 0.01, high: 0.2, log: true}\n")), base)
    assert space.distributions["train.channels_last"].choices == ("on", "off")
    assert space.distributions["sparsity.dense_first"].choices == (True, False)
    assert space.distributions["train.lr"].log is True


def test_yaml_space_list_field_cannot_be_searched(tmp_path, base):
    with pytest.raises(SpaceError, match=r"\(a list of \[number, number\] pairs\) cannot be searched"):
        resolve_space(str(_yaml(tmp_path, "sparsity.soft_bound: {type: float, low: 0, high: 1}\n")), base)


def test_missing_space_file(base):
    with pytest.raises(SpaceError, match="does not exist"):
        load_space_file("/nonexistent/space.yaml")


@pytest.mark.parametrize("overrides", [
    {"train.epochs": 3},  # delta tau 5 >= T: no target reachable, only explicit start epochs
    {"train.epochs": 3, "train.update_interval": 1},
    {"train.epochs": 2, "train.update_interval": 1},  # the case: 1 of 4 trials was INFEASIBLE
    {"train.epochs": 12, "train.update_interval": 2},
])
@pytest.mark.parametrize("name", ["joint", "smoke"])
def test_no_impossible_freezing_target(name, overrides):
    """Every sampled point of joint / smoke has a freezing target its own schedule reaches (assess: feasible)."""
    from trainables import assess

    base = load_config(None, {"data.name": "fashion_mnist", "model.name": "resnet8", **overrides})
    space = resolve_space(name, base)
    trials = sample_random(space.fn, 40, seed=3) + list(enumerate_corners(space.fn, limit=40))
    targets = []
    for t in trials:
        a = assess(t.params, base.to_dict())
        assert a.feasible, (t.params, a.reason)
        targets.append(t.params.get("freezing.target_flops_reduction", 0.0))
    reachable = max_freezing_saving(base.with_overrides({"train.update_interval": 1})) > 0
    if overrides.get("train.update_interval") == 1 or overrides["train.epochs"] > 3:
        assert reachable and max(targets) > 0  # targets are sampled where the schedule allows one


def test_saving_fraction_one_is_the_maximum(base):
    """f = 1 resolves to the largest target the point's schedule reaches (and the solver meets it)."""
    from spfde_search.method.flops import predict

    space = resolve_space("joint", base)
    fixed = {"freezing.start_epoch": None, "freezing.saving_fraction": 1.0, "freezing.scheme": "single_shot",
             "sparsity.algorithm": "mest"}
    t = sample_random(space.fn, 1, seed=4, fixed=fixed)[0]
    x = t.params["freezing.target_flops_reduction"]
    cfg = trial_config(base, t.params)
    mx = max_freezing_saving(cfg)
    assert 0 < x <= mx and mx - x < 1e-6
    assert predict(cfg).freezing_saving_achieved >= x - 1e-9
    with pytest.raises(Exception, match="impossible"):
        predict(cfg.with_overrides({"freezing.target_flops_reduction": round(mx + 0.01, 6)}))


def test_yaml_space_rejects_auxiliary(tmp_path, base):
    with pytest.raises(SpaceError, match="unknown parameter path 'freezing.saving_fraction'"):
        resolve_space(str(_yaml(tmp_path, "freezing.saving_fraction: {type: float, low: 0, high: 1}")), base)


@pytest.mark.parametrize("name", ["joint", "budget"])
def test_spaces_sample_only_parameters_that_change_the_run(name):
    """Issue 31: a search must not spend two trials on one schedule. Where a point leaves
    ``freezing.lr_schedule`` or delta tau unsampled, every value of it gives the same run (equal run keys,
    ``method.plan.run_key``); where the space samples the LR schedule, per_unit and global are two runs. Periodic
    freezing is still offered, without the LR schedule."""
    from spfde_search.method.flops import predict

    base = load_config(None, {**BASE, "train.epochs": 12})  # delta tau in 1..2
    space = resolve_space(name, base)
    assert {"freezing.lr_schedule", "train.update_interval"} <= set(space.distributions)
    lo, hi = space.distributions["train.update_interval"].low, space.distributions["train.update_interval"].high
    seen = {"periodic_without_lr": 0, "lr_sampled": 0, "dtau_unsampled": 0}
    # where delta tau and the LR schedule can be unread: static sparsity, no sieving, no or periodic freezing
    static = {"sparsity.algorithm": "static", "sieving.fraction": 0.0, "freezing.start_epoch": None}
    periodic = {**static, "freezing.saving_fraction": 0.5, "freezing.scheme": "periodic"}
    probes = (sample_random(space.fn, 12, seed=4) + sample_random(space.fn, 3, seed=5, fixed=periodic)
              + sample_random(space.fn, 3, seed=6, fixed={**static, "freezing.saving_fraction": 0.0}))
    for t in probes:
        cfg = trial_config(base, t.params)
        key = predict(cfg).run_key
        flip = {"per_unit": "global", "global": "per_unit"}[cfg.freezing.lr_schedule]
        flipped = predict(cfg.with_overrides({"freezing.lr_schedule": flip})).run_key
        if "freezing.lr_schedule" in t.params:
            assert flipped != key, t.params
            seen["lr_sampled"] += 1
        else:
            assert flipped == key, t.params
            seen["periodic_without_lr"] += cfg.freezing.enabled and cfg.freezing.scheme == "periodic"
        if "train.update_interval" not in t.params:
            for d in (lo, hi):
                assert predict(cfg.with_overrides({"train.update_interval": d})).run_key == key, t.params
            seen["dtau_unsampled"] += 1
    assert all(seen.values()), seen
