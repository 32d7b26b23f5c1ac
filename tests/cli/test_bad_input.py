"""Bad input through the real CLI (``python -m spfde_search.cli``): each gives exit code 2 and exactly one
``error:`` line that names what to fix, never a traceback or a bare "Aborted.". Tiny settings (a synthetic set
of 64 images, or data that fails before any training) keep each case to a few seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spfde_search import checkpoint

CLI = [sys.executable, "-m", "spfde_search.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
TINY = [
    "data.name=synthetic", "data.synthetic_train=64", "data.synthetic_test=32", "data.synthetic_size=8",
    "model.name=resnet8", "train.epochs=2", "train.batch_size=32", "train.update_interval=1",
    "train.device=cpu", "train.threads=1",
]


def cli(*args: str, sets: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    flags = [x for s in sets or [] for x in ("--set", s)]
    return subprocess.run([*CLI, *args, *flags], capture_output=True, text=True, env=ENV, timeout=300)


def one_error(r: subprocess.CompletedProcess[str]) -> str:
    """Exit code 2, no traceback, exactly one line starting with 'error:'; returns that line."""
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert "Traceback" not in out and "Aborted" not in out, out
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, out
    return errors[0]


# ---------------------------------------------------------------- data files


def test_label_file_shorter_than_images(tmp_path: Path, trainer_idx_fmnist) -> None:
    root = trainer_idx_fmnist(tmp_path / "fm", labels={"train": 12})
    line = one_error(cli("train", sets=[f"data.root={root}", "train.epochs=1", "train.device=cpu"]))
    assert "train-labels-idx1-ubyte.gz has 12 labels" in line and "train-images-idx3-ubyte.gz has 20 images" in line


def test_truncated_gz(tmp_path: Path, trainer_idx_fmnist) -> None:
    root = trainer_idx_fmnist(tmp_path / "fm")
    f = root / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:-100])
    line = one_error(cli("train", sets=[f"data.root={root}", "train.epochs=1", "train.device=cpu"]))
    assert str(f) in line and "truncated" in line


def test_bit_flipped_gz(tmp_path: Path, trainer_idx_fmnist) -> None:
    root = trainer_idx_fmnist(tmp_path / "fm")
    f = root / "train-labels-idx1-ubyte.gz"
    data = bytearray(f.read_bytes())
    data[-6] ^= 0x01  # the CRC32 trailer
    f.write_bytes(bytes(data))
    line = one_error(cli("train", sets=[f"data.root={root}", "train.epochs=1", "train.device=cpu"]))
    assert str(f) in line and "corrupt" in line


# ---------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch run's checkpoint folder: trainer.pt (epoch 2) and trainer.prev.pt (epoch 1)."""
    ck = tmp_path_factory.mktemp("ck")
    r = cli("train", "--checkpoint-dir", str(ck), sets=TINY)
    assert r.returncode == 0, r.stderr
    assert {p.name for p in ck.iterdir()} == {checkpoint.LATEST, checkpoint.PREVIOUS}
    return ck


def copy_folder(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_corrupt_checkpoint_without_fallback(tmp_path: Path, two_epochs: Path) -> None:
    ck = copy_folder(two_epochs, tmp_path / "ck")
    (ck / checkpoint.PREVIOUS).unlink()
    latest = ck / checkpoint.LATEST
    latest.write_bytes(latest.read_bytes()[:1000])
    line = one_error(cli("train", "--checkpoint-dir", str(ck), "--resume", sets=TINY))
    assert str(latest) in line and "truncated or corrupt" in line


def test_crafted_checkpoint_is_refused_before_it_runs(tmp_path: Path) -> None:
    target = tmp_path / "created-by-unpickling"
    # the payload is built in a child process so that this test process never holds the class
    code = (
        "import pathlib, sys, torch\n"
        "class T:\n"
        "    def __reduce__(self): return (pathlib.Path.touch, (pathlib.Path(sys.argv[2]),))\n"
        "torch.save({'version': 1, 'epoch': 1, 'x': T()}, sys.argv[1])\n"
    )
    ck = tmp_path / "ck"
    ck.mkdir()
    subprocess.run([sys.executable, "-c", code, str(ck / "trainer.pt"), str(target)], check=True, timeout=120)
    line = one_error(cli("train", "--checkpoint-dir", str(ck), "--resume", sets=TINY))
    assert "refused" in line and not target.exists()


def test_truncated_latest_checkpoint_resumes_from_previous(tmp_path: Path, two_epochs: Path) -> None:
    """Not an error: the previous checkpoint stands in, with one warning line, and the run finishes."""
    ck = copy_folder(two_epochs, tmp_path / "ck")
    latest = ck / checkpoint.LATEST
    latest.write_bytes(latest.read_bytes()[:1000])
    r = cli("train", "--checkpoint-dir", str(ck), "--resume", "--json", str(tmp_path / "s.json"), sets=TINY)
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and checkpoint.PREVIOUS in warnings[0], r.stderr
    assert "at epoch 1" in r.stderr and json.loads((tmp_path / "s.json").read_text())["epochs"] == 2
    assert torch.load(latest, weights_only=True)["epoch"] == 2  # the damaged file was replaced


# ---------------------------------------------------------------- config values


def test_lr_nan() -> None:
    line = one_error(cli("train", sets=[*TINY, "train.lr=nan"]))
    assert line.startswith("error: invalid config: train.lr: must be a finite number, got nan")  # one problem, one line
    r = cli("flops", sets=[*TINY, "train.lr=nan"])
    one_error(r)
    assert "train.lr: must be a finite number, got nan" in r.stderr and "less than or equal" not in r.stderr


@pytest.mark.parametrize("command", ["train", "flops", "search"])
def test_one_bad_value_is_one_line_and_nothing_else(command: str, tmp_path: Path) -> None:
    """The quickstart config with a ratio of 1.5: the whole output is the error line (no note before it, no
    problem list after it)."""
    extra = ["--storage-path", str(tmp_path), "--tracking-uri", "none"] if command == "search" else []
    r = cli(command, *extra, sets=["sparsity.ratio=1.5"])
    line = one_error(r)
    assert (r.stdout + r.stderr).strip().splitlines() == [line]
    assert line.startswith("error: invalid config: sparsity.ratio: ") and "[0, 1)" in line


def test_list_field_message() -> None:
    r = cli("flops", sets=[*TINY, "sparsity.soft_bound=0.5"])
    one_error(r)
    assert "sparsity.soft_bound: Input should be a valid list (allowed: a list of [number, number] pairs)" in r.stderr
    assert "a other" not in r.stderr


def test_channels_last_off_is_accepted(tmp_path: Path) -> None:
    r = cli("train", "--json", str(tmp_path / "s.json"), sets=[*TINY, "train.epochs=1", "train.channels_last=off"])
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "s.json").read_text())["config"]["train"]["channels_last"] == "off"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  channels_last: off\n  device: cpu\n")
    r = cli("flops", "--config", str(cfg), "--json", str(tmp_path / "f.json"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "f.json").read_text())["config"]["train"]["channels_last"] == "off"


# ---------------------------------------------------------------- the budget space's range


@pytest.mark.parametrize("low, high, says", [
    ("0.3", "0.1", "LOW must be below HIGH"),
    ("0", "0.3", "in (0, 1]"),
    ("0.1", "1.5", "in (0, 1]"),
    ("0.00001", "0.0001", "outside what this base config can reach"),
])
def test_impossible_budget_range(tmp_path: Path, low: str, high: str, says: str) -> None:
    line = one_error(cli("search", "--space", "budget", "--budget-range", low, high, "-n", "4", "--tracking-uri", "none",
                         "--storage-path", str(tmp_path), sets=TINY))
    assert says in line and "--budget-range" in line


# ---------------------------------------------------------------- validation split and the answer at a budget


def test_val_size_larger_than_what_is_left_train_and_search(tmp_path: Path) -> None:
    """64 synthetic training images, nothing outside them: at most half (32) may be carved out."""
    for args in (["train"], ["search", "--storage-path", str(tmp_path), "--tracking-uri", "none", "-n", "1"]):
        line = one_error(cli(*args, sets=[*TINY, "data.val_size=40"]))
        assert "data.val_size=40" in line and "use at most 32" in line, line


def test_pareto_max_flops_not_positive(tmp_path: Path) -> None:
    for bad in ("0", "-0.1"):
        line = one_error(cli("pareto", "any", "--max-flops", bad, "--tracking-uri",
                             f"sqlite:///{tmp_path / 'none.db'}"))
        assert "--max-flops must be a positive number" in line, line
