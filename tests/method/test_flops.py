"""Training-FLOPs accounting (docs/method.md §5).

- dense per-layer forward FLOPs match ``torch.utils.flop_counter.FlopCounterMode`` exactly, layer by layer;
- the prediction from the config alone is hand-checked on simple schedules (backward as autograd computes it:
  no input gradient for a layer reading the first active unit's input; tests/method/test_flops_autograd.py checks
  the rule against FlopCounterMode over real forward + backward passes);
- the trainer's measured count equals the prediction exactly, per epoch, for every algorithm and scheme.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from spfde_search.config import Config
from spfde_search.data import dataset_spec
from spfde_search.method.flops import build_profile, predict
from spfde_search.method.sparsity import ALGORITHMS
from spfde_search.models import create_model
from spfde_search.trainer import Trainer


def counted(name: str, width: int, channels: int, size: int, classes: int) -> tuple[int, dict[str, int]]:
    """FlopCounterMode's forward FLOPs for one image: total, and per conv/linear module path."""
    with torch.device("meta"):
        m = create_model(name, width, channels, classes).eval()
        x = torch.zeros(1, channels, size, size)
    with FlopCounterMode(display=False) as fc:
        m(x)
    per_module = {
        k.removeprefix("UnitModel."): sum(v.values())
        for k, v in fc.get_flop_counts().items()
        if k.startswith("UnitModel.")
    }
    return fc.get_total_flops(), per_module


CASES = [
    *[(f"resnet{d}", 1, "cifar10") for d in (8, 20, 32, 56)],
    ("resnet32", 2, "cifar100"),
    *[(f"resnet{d}", 1, "fashion_mnist") for d in (8, 20, 32, 56)],
    ("resnet32", 2, "fashion_mnist"),
    ("resnet18", 1, "synthetic64"),
    ("resnet50", 1, "synthetic64"),
]


def data_of(name: str) -> dict[str, object]:
    if name == "synthetic64":  # torchvision ResNets at 64 x 64 keep this fast
        return {"name": "synthetic", "synthetic_size": 64}
    return {"name": name}


@pytest.mark.parametrize(("model", "width", "data"), CASES)
def test_dense_forward_matches_flop_counter(model: str, width: int, data: str) -> None:
    cfg = Config.parse({"model": {"name": model, "width": width}, "data": data_of(data)})
    spec = dataset_spec(cfg.data)
    profile, _ = build_profile(cfg)
    total, per_module = counted(model, width, spec.channels, spec.image_size, spec.num_classes)
    assert profile.dense_forward == total
    # layer by layer, every conv and linear
    assert set(profile.fwd) == {r.name for r in profile.layers}
    for name, f in profile.fwd.items():
        assert f == per_module[name], name


def test_paper_model_dense_training_flops(tmp_path: Path) -> None:
    """The must-show number: ResNet-32 (2x wide) on CIFAR-100, 160 epochs, dense = (3 x forward - the stem conv's
    input gradient, which autograd never computes) x 50,000 x 160, from the config alone (data.root points at an
    empty folder: no CIFAR files are read)."""
    cfg = Config.parse(
        {
            "model": {"name": "resnet32", "width": 2},
            "data": {"name": "cifar100", "root": str(tmp_path)},
            "train": {"epochs": 160, "batch_size": 64, "update_interval": 5},
        }
    )
    fwd, per_module = counted("resnet32", 2, 3, 32, 100)
    assert 0.53e9 < fwd < 0.57e9  # the paper's ~0.55 GFLOPs per 32x32 image
    p = predict(cfg)
    assert p.dense_forward_per_sample == fwd
    assert p.dense_train_flops == (3 * fwd - per_module["stem.0"]) * 50_000 * 160
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- the prediction, checked by hand


def synthetic(**over: object) -> Config:
    base = {
        "model": {"name": "resnet8"},
        "data": {"name": "synthetic", "synthetic_train": 256, "synthetic_test": 128, "synthetic_size": 16},
        "train": {"epochs": 4, "batch_size": 64, "update_interval": 1},
    }
    from spfde_search.config import apply_overrides

    return Config.parse(apply_overrides(base, over))


def layer_flops() -> tuple[dict[str, int], dict[str, int], int]:
    """Independent per-layer dense forward FLOPs (FlopCounterMode) and weight counts of resnet8 on 3x16x16."""
    _, per_module = counted("resnet8", 1, 3, 16, 10)
    m = create_model("resnet8")
    numel = {n: mod.weight.numel() for n, mod in m.named_modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))}
    f = {n: per_module[n] for n in numel}
    return f, numel, sum(f.values())


DENSE = {"stem.0", "blocks.1.shortcut.0", "blocks.2.shortcut.0", "head.fc"}
# layers reading their unit's input (ResNet-8: the stem conv reads the image; a block's conv1 and shortcut conv read
# the block input; the classifier reads the pooled last block): no input gradient in the first active unit
READS_UNIT_INPUT = {"stem.0", "blocks.0.conv1", "blocks.1.conv1", "blocks.1.shortcut.0", "blocks.2.conv1",
                    "blocks.2.shortcut.0", "head.fc"}


def sparse_forward(f: dict[str, int], numel: dict[str, int], extra: float = 0.0) -> int:
    """Forward FLOPs at the uniform 90% target (+ extra density): F * count / numel, exact integer division."""
    total = 0
    for n in f:
        if n in DENSE:
            total += f[n]
        else:
            count = round(0.1 * numel[n]) + round(extra * numel[n])
            total += f[n] * count // numel[n]
    return total


def test_dense_schedule() -> None:
    f, _, fwd = layer_flops()
    step = 3 * fwd - f["stem.0"]  # forward, weight and input gradients; the image needs no gradient
    p = predict(synthetic(**{"sparsity.algorithm": "dense", "sparsity.ratio": 0.0}))
    assert p.train_flops == p.dense_train_flops == step * 256 * 4
    assert p.flops_ratio == 1.0 and p.saved == {"sparsity": 0, "sieving": 0, "freezing": 0}
    assert p.cumulative == [step * 256 * e for e in (1, 2, 3, 4)]


def test_sieving_only() -> None:
    f, _, fwd = layer_flops()
    step = 3 * fwd - f["stem.0"]
    # y = 0.2: round(51.2) = 51 removed, 205 trained per epoch
    p = predict(synthetic(**{"sparsity.algorithm": "dense", "sparsity.ratio": 0.0, "sieving.fraction": 0.2}))
    assert p.samples_per_epoch == 205
    assert p.train_flops == step * 205 * 4
    assert p.saved == {"sparsity": 0, "sieving": step * 51 * 4, "freezing": 0}


def test_static_sparse() -> None:
    f, numel, fwd = layer_flops()
    p = predict(synthetic(**{"sparsity.algorithm": "static"}))
    per_sample = 3 * sparse_forward(f, numel) - f["stem.0"]  # the dense stem conv has no input gradient
    assert p.train_flops == per_sample * 256 * 4
    assert p.saved["sparsity"] == (3 * fwd - f["stem.0"]) * 256 * 4 - p.train_flops
    assert 0.1 < p.flops_ratio < 0.5  # dense stem/shortcuts/classifier keep it well above 10%


def test_mest_soft_bound_is_counted() -> None:
    f, numel, _ = layer_flops()
    static = predict(synthetic(**{"sparsity.algorithm": "static"}))
    mest = predict(synthetic())
    # epochs 0, 1 and 2 hold +2% of every sparse layer (see test_sparsity.expected_count)
    extra = 3 * (sparse_forward(f, numel, 0.02) - sparse_forward(f, numel)) * 256 * 3
    assert mest.train_flops - static.train_flops == extra > 0


def test_rigl_dense_gradient_is_counted() -> None:
    f, numel, _ = layer_flops()
    set_ = predict(synthetic(**{"sparsity.algorithm": "set"}))
    rigl = predict(synthetic(**{"sparsity.algorithm": "rigl"}))
    # 3 updates (before epochs 0, 1, 2: RigL's code updates at step 0), each on the epoch's first training batch
    # of 64 (issue 34: RigL's SparseRigLOptimizer grows by the training batch and does not apply it): that batch's
    # backward computes a dense weight gradient F instead of F d per sparse layer, nothing else changes
    dense_wgrad = sum(f[n] - f[n] * round(0.1 * numel[n]) // numel[n] for n in f if n not in DENSE)
    assert rigl.train_flops - set_.train_flops == 3 * 64 * dense_wgrad > 0
    assert rigl.cumulative[0] - set_.cumulative[0] == 64 * dense_wgrad  # the update batch of epoch 0


def test_explicit_freezing_saving() -> None:
    f, numel, _ = layer_flops()
    p = predict(synthetic(**{"sparsity.algorithm": "static", "freezing.start_epoch": 1}))
    # units 0, 1, 2 freeze at epochs 1, 2, 3: prefixes 0, 1, 2, 3. Backward of a layer with prefix p: 0 if frozen,
    # else the weight gradient F d plus the input gradient F d unless it reads the first active unit's input
    assert p.frozen_prefix_per_epoch == [0, 1, 2, 3] and p.unit_freeze_epochs == [1, 2, 3]
    unit_of = {n: (0 if n.startswith("stem") else 1 + int(n.split(".")[1]) if n.startswith("blocks") else 4) for n in f}

    def bwd(n: str, prefix: int) -> int:
        fd = f[n] if n in DENSE else f[n] * round(0.1 * numel[n]) // numel[n]
        if unit_of[n] < prefix:
            return 0
        return fd if unit_of[n] == prefix and n in READS_UNIT_INPUT else 2 * fd

    saved = sum((bwd(n, 0) - bwd(n, prefix)) * 256 for prefix in [0, 1, 2, 3] for n in f)
    assert p.saved["freezing"] == saved


def test_profile_finds_the_layers_reading_their_unit_input() -> None:
    profile, _ = build_profile(synthetic())
    assert profile.reads_unit_input == READS_UNIT_INPUT


def test_profile_cache_keys_on_what_the_profile_depends_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """build_profile is cached per process (a search probes ~100 points of one model): a cached profile equals a
    fresh one, a caller changing its copy changes nothing cached, and a change of what the profile depends on (the
    dense-layer rules, the image size) is a new profile, while the ratio, epochs and data sizes are not."""
    from spfde_search.method import flops as F

    cfg = synthetic(**{"sparsity.dense_first": False, "sparsity.ratio": 0.8})
    first, spec = build_profile(cfg)
    fresh = F._build_profile(cfg, spec)
    first.fwd.clear()
    first.layers.clear()
    again, _ = build_profile(synthetic(**{"sparsity.dense_first": False, "sparsity.ratio": 0.5, "train.epochs": 2,
                                          "data.synthetic_train": 128}))
    assert again == fresh and again.layers and again.layers[0].sparse  # the stem conv: sparse by this config
    stem_dense, _ = build_profile(synthetic())
    assert not stem_dense.layers[0].sparse
    bigger, _ = build_profile(synthetic(**{"data.synthetic_size": 32}))
    assert bigger.fwd != fresh.fwd

    def built_again(*a: object) -> None:
        raise AssertionError("a profile already built was built again")

    monkeypatch.setattr(F, "_build_profile", built_again)
    assert predict(synthetic(**{"sparsity.ratio": 0.95})).train_flops > 0  # served from the cache


def test_memory_estimate() -> None:
    p = predict(synthetic(**{"sparsity.algorithm": "dense", "sparsity.ratio": 0.0}))
    params = sum(q.numel() for q in create_model("resnet8").parameters())
    assert p.memory["weights_bytes"] == p.memory["weight_grads_bytes"] == 4 * params
    parts = ("weights_bytes", "weight_grads_bytes", "activations_bytes", "activation_grads_bytes")
    assert p.memory["total_bytes"] == sum(p.memory[k] for k in parts)
    assert p.memory["total_bytes_max_frozen"] == p.memory["total_bytes"]  # nothing frozen
    fr = predict(synthetic(**{"freezing.start_epoch": 1}))
    assert fr.memory["total_bytes_max_frozen"] < fr.memory["total_bytes"]


# ---------------------------------------------------------------- measured == predicted


RUNS = [
    *[{"sparsity.algorithm": a} for a in ALGORITHMS.names()],
    # channels-last weights (CUDA's default) crashed every mask update (issue 9)
    *[{"sparsity.algorithm": a, "train.channels_last": "on"} for a in ("mest", "rigl", "set", "static")],
    {"freezing.lr_schedule": "global", "freezing.target_flops_reduction": 0.1},
    {"freezing.scheme": "single_shot_resume", "freezing.start_epoch": 1, "freezing.resume_epochs": 1},
    {"freezing.scheme": "periodic", "freezing.target_flops_reduction": 0.1},
    {"freezing.scheme": "delayed_periodic", "freezing.target_flops_reduction": 0.05, "train.epochs": 6},
    {"sparsity.distribution": "erk", "sparsity.algorithm": "rigl"},
]


@pytest.mark.parametrize("over", RUNS, ids=lambda o: "-".join(f"{v}" for v in o.values()))
def test_measured_equals_predicted(over: dict[str, object], trainer_cfg: Callable[..., Config]) -> None:
    """Freezing and sieving on: the trainer's count matches the config-only prediction exactly, every epoch."""
    o = dict(over)
    if o.get("sparsity.algorithm") == "dense":
        o["sparsity.ratio"] = 0.0
    if "freezing.start_epoch" not in o:
        o.setdefault("freezing.target_flops_reduction", 0.1)
    o.setdefault("sieving.fraction", 0.2)
    cfg = trainer_cfg(o)
    p = predict(cfg)
    assert p.freeze_start_epoch is not None and max(p.frozen_prefix_per_epoch) > 0  # freezing really happens
    tr = Trainer(cfg)
    ms = list(tr.epochs())
    assert [m.train_flops for m in ms] == p.cumulative
    assert [m.predicted_train_flops for m in ms] == p.cumulative
    assert [m.frozen_units for m in ms] == p.frozen_prefix_per_epoch
    s = tr.summary()
    assert s["train_flops"] == s["predicted_train_flops"] == p.train_flops
    assert abs(s["train_flops"] / p.train_flops - 1) < 0.01  # the tolerance, met exactly
    assert s["dense_train_flops"] == p.dense_train_flops and s["saved"] == p.saved


# ---------------------------------------------------------------- the CLI


def test_flops_cli_consistent(tmp_path: Path, trainer_repo: Path) -> None:
    # how fast `spfde flops` starts is measured by benchmarks/startup.py (RESULTS.md), never asserted here
    out = tmp_path / "flops.json"
    cfg_path = trainer_repo / "configs" / "paper_resnet32_cifar100.yaml"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "spfde_search.cli", "flops", "--config", str(cfg_path), "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,  # generous: a loaded machine only makes it slower
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    from spfde_search.config import load_config

    p = predict(load_config(cfg_path))
    assert d["train_flops"] == p.train_flops and d["dense_train_flops"] == p.dense_train_flops
    assert d["freeze_start_epoch"] == p.freeze_start_epoch and d["config"]["model"]["width"] == 2
    assert "predicted training FLOPs" in r.stdout


@pytest.mark.parametrize(("model", "depths"), [("resnet32", [1] + [2] * 15), ("resnet50", [1] + [3] * 16)])
def test_profile_depths_exclude_shortcuts(model: str, depths: list[int]) -> None:
    """The freezable prefix is measured in depth layers; 1x1 shortcut/downsample convs are not depth."""
    profile, _ = build_profile(Config.parse({"model": {"name": model}, "data": {"name": "cifar10"}}))
    assert profile.unit_depths == depths
    assert profile.total_depth == int(model.removeprefix("resnet"))


# ---------------------------------------------------------------- evaluation, reported apart (issue 33 item 6)


def test_evaluation_flops_are_the_scheduled_forward_passes_and_apart_from_training() -> None:
    """With a validation split: validation after every evaluated epoch, test once after the last; without one,
    test after every evaluated epoch. One validation pass equals FlopCounterMode over the trainer's own
    ``evaluate('val')``. Training FLOPs do not change with how often evaluation runs."""
    cfg = synthetic(**{"sparsity.algorithm": "dense", "sparsity.ratio": 0.0, "data.val_size": 64,
                       "train.device": "cpu", "train.threads": 1})
    spec = dataset_spec(cfg.data)
    p = predict(cfg)
    fwd = p.dense_forward_per_sample
    assert spec.num_val == 64 and p.eval_flops == {"validation": 4 * 64 * fwd, "test": spec.num_test * fwd}
    trainer = Trainer(cfg)  # built outside the counter: its profile pass is not an evaluation
    with FlopCounterMode(display=False) as fc:
        trainer.evaluate("val")
    assert fc.get_total_flops() == 64 * fwd
    static = {"sparsity.algorithm": "static", "data.val_size": 0}  # 90%, one density all run: passes compare
    sparse_every_2 = predict(synthetic(**static, **{"train.eval_every": 3}))
    every_1 = predict(synthetic(**static))
    assert sparse_every_2.train_flops == every_1.train_flops  # evaluation is never training
    assert sparse_every_2.eval_flops["validation"] == 0
    assert 0 < sparse_every_2.eval_flops["test"] * 2 == every_1.eval_flops["test"]  # after epochs 3, 4 vs 1..4
    assert every_1.eval_flops["test"] < 4 * spec.num_test * fwd  # sparse passes at the densities held


def test_dense_step_is_what_autograd_computes_not_three_forwards() -> None:
    """``spfde flops`` says what it counts: 3 x forward minus the stem conv's input gradient (never computed)."""
    p = predict(synthetic(**{"sparsity.algorithm": "dense", "sparsity.ratio": 0.0}))
    _, per_module = counted("resnet8", 1, 3, 16, 10)
    assert p.dense_step_per_sample == 3 * p.dense_forward_per_sample - per_module["stem.0"]
    assert p.dense_train_flops == p.dense_step_per_sample * 256 * 4
    r = subprocess.run([sys.executable, "-m", "spfde_search.cli", "flops", "--set", "model.name=resnet8"],
                       capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"}, timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert "3 x fwd" not in out and "dense training (step x N x T)" in out
    assert "evaluation: validation passes" in out and "never in training FLOPs" in out
