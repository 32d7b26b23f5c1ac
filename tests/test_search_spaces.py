"""Search spaces: parameter names are config paths, ranges inside the config's, YAML validation, paper grid."""

from __future__ import annotations

import pickle

import optuna
import pytest

from search_spaces import (
    SPACES,
    SpaceError,
    initial_points,
    load_space_file,
    paper_points,
    resolve_space,
    sample_random,
    trial_config,
)
from spfde_search.config import field_info, load_config

BASE = {"data.name": "synthetic", "model.name": "resnet8", "train.epochs": 4, "train.update_interval": 1}


@pytest.fixture(scope="module")
def base():
    return load_config(None, BASE)


@pytest.mark.parametrize("name", ["joint", "paper", "smoke"])
def test_builtin_spaces_use_config_paths(name, base):
    space = resolve_space(name, base)
    assert space.distributions
    for path in space.distributions:
        field_info(path)  # raises KeyError for a non-config name
    for t in sample_random(space.fn, 20, seed=1):
        cfg = trial_config(base, t.params)  # base + params, nothing else
        flat = cfg.to_dict()
        for k, v in t.params.items():
            sec, key = k.split(".")
            assert flat[sec][key] == v
    pickle.loads(pickle.dumps(space.fn))  # Ray checkpoints the searcher with pickle


def test_joint_branches(base):
    space = resolve_space("joint", base)
    names = set(space.distributions)
    assert {"sparsity.ratio", "sparsity.algorithm", "freezing.start_epoch", "freezing.target_flops_reduction",
            "freezing.units", "freezing.scheme", "sieving.fraction"} <= names
    for t in sample_random(space.fn, 60, seed=2):
        p = t.params
        if p["freezing.start_epoch"] is None:
            assert "freezing.units" not in p
        else:
            assert "freezing.target_flops_reduction" not in p
        enabled = p.get("freezing.start_epoch") is not None or p.get("freezing.target_flops_reduction", 0) > 0
        assert ("freezing.scheme" in p) == enabled


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
    assert len(init) == 48 and init[0] == {"sparsity.ratio": 0.9, "freezing.target_flops_reduction": 0.0,
                                          "sieving.fraction": 0.0}
    joint = resolve_space("joint", base)
    for p in initial_points("paper", joint, base, limit=5):
        assert p["sparsity.algorithm"] == "mest" and p["freezing.start_epoch"] is None


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
        ("sparsity.ratioo: {type: float, low: 0.1, high: 0.5}", "unknown parameter path 'sparsity.ratioo'"),
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


def test_missing_space_file(base):
    with pytest.raises(SpaceError, match="does not exist"):
        load_space_file("/nonexistent/space.yaml")
