"""``spfde train`` / ``spfde flops`` as a user runs them: a real Fashion-MNIST run, bad input, resume.

The real run (configs/spfde_fmnist_cpu.yaml, about a minute on 2 cores) happens once per module and every
check on its JSON reuses it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from spfde_search.config import DEFAULT_FASHION_MNIST_ROOT, Config, load_config
from spfde_search.method.flops import predict
from spfde_search.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
FMNIST_CONFIG = REPO / "configs" / "spfde_fmnist_cpu.yaml"
_SCRIPT = shutil.which("spfde", path=str(Path(sys.executable).parent))
SPFDE = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "spfde_search.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}  # one torch thread: see conftest.py


def spfde(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SPFDE, *args], capture_output=True, text=True, env=ENV, timeout=timeout)


def one_clear_error(r: subprocess.CompletedProcess[str]) -> str:
    """Non-zero exit, no traceback, exactly one line starting with 'error:'; returns the whole stderr."""
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, r.stderr
    return r.stderr


# ---------------------------------------------------------------- the real run


@pytest.fixture(scope="module")
def fmnist_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not any(Path(DEFAULT_FASHION_MNIST_ROOT).glob("train-images-idx3-ubyte*")):
        pytest.skip(f"Fashion-MNIST files not found in {DEFAULT_FASHION_MNIST_ROOT}")
    d = tmp_path_factory.mktemp("fmnist")
    r = spfde("train", "--config", str(FMNIST_CONFIG), "--json", str(d / "train.json"), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    f = spfde("flops", "--config", str(FMNIST_CONFIG), "--json", str(d / "flops.json"))
    assert f.returncode == 0, f.stderr[-3000:]
    return {
        "train": json.loads((d / "train.json").read_text()),
        "flops": json.loads((d / "flops.json").read_text()),
        "stdout": r.stdout,
        "stderr": r.stderr,
    }


@pytest.mark.slow
def test_fmnist_learns(fmnist_run: dict[str, Any]) -> None:
    s = fmnist_run["train"]
    assert s["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert s["epochs"] == 8
    # per-epoch progress lines went to stderr, the summary table to stdout
    assert fmnist_run["stderr"].count("epoch ") >= 8 and "SpFDE run summary" in fmnist_run["stdout"]


@pytest.mark.slow
def test_fmnist_json_fields(fmnist_run: dict[str, Any]) -> None:
    s = fmnist_run["train"]
    for k in ("test_accuracy", "train_flops", "dense_train_flops", "flops_ratio", "saved", "freeze_start_epoch",
              "epochs", "wall_seconds", "config"):
        assert k in s, k
    assert set(s["saved"]) == {"sparsity", "freezing", "sieving"}
    assert all(v > 0 for v in s["saved"].values())  # 90% sparsity, 20% freezing, 20% sieving all save
    assert s["flops_ratio"] == pytest.approx(s["train_flops"] / s["dense_train_flops"])
    assert s["config"] == load_config(FMNIST_CONFIG).to_dict()
    assert isinstance(s["freeze_start_epoch"], int) and 0 < s["freeze_start_epoch"] < 8
    assert s["wall_seconds"] > 0


@pytest.mark.slow
def test_fmnist_measured_flops_match_prediction(fmnist_run: dict[str, Any]) -> None:
    s, p = fmnist_run["train"], fmnist_run["flops"]
    assert abs(s["train_flops"] / p["train_flops"] - 1) < 0.01
    assert s["train_flops"] == p["train_flops"]  # in fact exact
    assert s["dense_train_flops"] == p["dense_train_flops"]
    assert s["freeze_start_epoch"] == p["freeze_start_epoch"]
    # the freezing saving reached the config's 20% target
    assert p["freezing_saving_achieved"] >= 0.2


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "foo.bar=1"], "foo.bar"),
        (["--set", "sparsity.ratio=1.5"], "sparsity.ratio"),
        (["--set", "freezing.target_flops_reduction=0.9"], "at most"),
        (["--set", "data.root=/nonexistent/fashion"], "/nonexistent/fashion"),
        (["--set", "sparsity.ratio"], "path=value"),
    ],
    ids=["unknown-key", "ratio-out-of-range", "impossible-freezing", "missing-data", "no-equals"],
)
def test_train_bad_input(args: list[str], needle: str) -> None:
    err = one_clear_error(spfde("train", "--config", str(FMNIST_CONFIG), *args))
    assert needle in err


def test_flops_impossible_target() -> None:
    err = one_clear_error(spfde("flops", "--config", str(FMNIST_CONFIG), "--set", "freezing.target_flops_reduction=0.9"))
    assert "freezing.target_flops_reduction=0.9" in err and "at most" in err


def test_missing_config_file(tmp_path: Path) -> None:
    err = one_clear_error(spfde("flops", "--config", str(tmp_path / "nope.yaml")))
    assert "does not exist" in err


# ---------------------------------------------------------------- checkpoint and resume


def test_resume_needs_checkpoint_dir() -> None:
    err = one_clear_error(spfde("train", "--config", str(FMNIST_CONFIG), "--resume"))
    assert "--checkpoint-dir" in err


def test_checkpoint_and_resume(tmp_path: Path, trainer_cfg: Callable[..., Config]) -> None:
    cfg = trainer_cfg({"train.epochs": 3, "sieving.fraction": 0.2, "freezing.start_epoch": 1})
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.to_dict()))
    ck = tmp_path / "ck"

    # --resume on an empty folder: a clear error, no traceback
    ck.mkdir()
    err = one_clear_error(spfde("train", "--config", str(cfg_file), "--checkpoint-dir", str(ck), "--resume"))
    assert "no trainer checkpoint" in err

    # an interrupted run: one epoch, checkpointed (same config, same process settings: threads = 1)
    first = Trainer(cfg)
    next(first.epochs())
    first.save_checkpoint(ck)
    r = spfde("train", "--config", str(cfg_file), "--checkpoint-dir", str(ck), "--resume", "--json", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr and "at epoch 1" in r.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["epochs"] == 3
    # measured FLOPs carried over from the checkpoint: exactly the whole run's prediction
    assert s["train_flops"] == predict(cfg).train_flops
    # and the checkpoint now holds the finished run
    import torch

    state = torch.load(ck / "trainer.pt", weights_only=True)
    assert state["epoch"] == 3 and len(state["history"]) == 3
    # same result as an uninterrupted run
    full = Trainer(cfg).fit()
    assert s["test_accuracy"] == full["test_accuracy"]


def test_batch_larger_than_the_training_set_warns_up_front(tmp_path: Path) -> None:
    """Issue 34 item 4: batch 65,536 on 2,000 images (1,600 after sieving) trained one step an epoch to chance
    with no word. `spfde flops` and `spfde train` now say so before anything runs; a batch that fits says
    nothing."""
    small = ["-s", "data.name=synthetic", "-s", "data.synthetic_train=64", "-s", "data.synthetic_test=32",
             "-s", "data.synthetic_size=16", "-s", "model.name=resnet8", "-s", "train.epochs=1",
             "-s", "train.threads=1", "-s", "sieving.fraction=0.25"]
    r = spfde("flops", *small, "-s", "train.batch_size=65536")
    assert r.returncode == 0, r.stderr
    assert ("warning: train.batch_size 65,536 exceeds the 48 training samples an epoch uses after sieving, of 64: "
            "every epoch is a single step; set train.batch_size to at most 48") in " ".join(r.stderr.split()), r.stderr
    r = spfde("train", *small, "-s", "train.batch_size=65536")
    assert r.returncode == 0, r.stderr
    assert "warning: train.batch_size 65,536 exceeds" in r.stderr
    assert r.stderr.index("warning: train.batch_size") < r.stderr.index("epoch 1/1")
    r = spfde("flops", *small, "-s", "train.batch_size=48")
    assert r.returncode == 0 and "batch_size" not in r.stderr, r.stderr
