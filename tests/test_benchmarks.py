"""Every benchmark script's ``--smoke-test`` runs, writes its raw rows and plots, and leaves RESULTS.md alone.

Each runs as a subprocess exactly as a user would (``python benchmarks/<name>.py --smoke-test``), into a
temporary ``--out`` folder with ``--results-md`` pointed at a file that must not appear.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
FMNIST = Path("/usr/share/datasets/fashion-mnist")

needs_fmnist = pytest.mark.skipif(
    not any(FMNIST.glob("train-images-idx3-ubyte*")), reason=f"Fashion-MNIST not installed in {FMNIST}"
)


def smoke(name: str, tmp_path: Path, timeout: int = 240, extra: tuple[str, ...] = ()) -> tuple[Path, str]:
    out = tmp_path / "out"
    md = tmp_path / "RESULTS.md"
    real_md = BENCH / "RESULTS.md"
    # other runs may append to the real RESULTS.md meanwhile: only a section quoting a smoke command is ours
    before = real_md.read_text().count("--smoke-test") if real_md.exists() else 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), "--smoke-test", "--out", str(out), "--results-md", str(md), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert not md.exists(), "a smoke test must not append to RESULTS.md"
    after = real_md.read_text().count("--smoke-test") if real_md.exists() else 0
    assert after == before, "a smoke test appended to benchmarks/RESULTS.md"
    return out, log


def has(out: Path, *names: str) -> None:
    missing = [n for n in names if not (out / n).is_file()]
    assert not missing, f"missing {missing} in {sorted(p.name for p in out.iterdir())}"


@pytest.mark.slow
@needs_fmnist
def test_trainer_vs_plain_smoke(tmp_path: Path) -> None:
    out, log = smoke("trainer_vs_plain", tmp_path)
    has(out, "epoch_overhead.parquet", "epoch_overhead.csv", "epoch_overhead.png", "savings_summary.csv", "savings.png")
    assert "trainer / plain epoch time" in log


@pytest.mark.slow
@needs_fmnist
def test_wallclock_smoke(tmp_path: Path) -> None:
    out, _ = smoke("wallclock", tmp_path)
    has(out, "epochs.parquet", "summary.csv", "per_epoch_frozen.csv", "wallclock.png")


@pytest.mark.slow
@needs_fmnist
def test_paper_claims_smoke(tmp_path: Path) -> None:
    import pandas as pd

    out, log = smoke("paper_claims", tmp_path)
    has(out, "runs.parquet", "runs.csv", "table.csv", "table.png")
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs["status"]) == {"COMPLETED"}, runs[["name", "status", "error"]].to_string()
    assert (runs.loc[runs["name"] == "dense", "flops_ratio"] == 1.0).all()
    assert "SpFDE" in log  # the claim statements are printed (their verdicts depend on the numbers)


@pytest.mark.slow
@needs_fmnist
def test_packing_smoke_packs_processes_on_cpu(tmp_path: Path) -> None:
    import pandas as pd

    out, _ = smoke("packing", tmp_path)
    has(out, "packing.parquet", "packing.csv", "packing.png")
    rows = pd.read_csv(out / "packing.csv")
    assert list(rows["level"]) == [1, 2]
    assert (rows["trials_failed"] == 0).all() and list(rows["trials_ok"]) == [1, 2]


def test_packing_without_cuda_says_not_measured(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    md = tmp_path / "RESULTS.md"
    proc = subprocess.run([sys.executable, str(BENCH / "packing.py"), "--results-md", str(md)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "not measured: no CUDA device" in proc.stdout
    assert "not measured: no CUDA device" in md.read_text()


@pytest.mark.slow
@pytest.mark.ray
@needs_fmnist
def test_search_quality_smoke(tmp_path: Path) -> None:
    out, log = smoke("search_quality", tmp_path, timeout=400)
    assert "not measured: the search module is not importable" not in log, log[-2000:]
    has(out, "trials.csv", "searches.csv", "hypervolume_growth.png", "fronts.png")


@pytest.mark.slow
@pytest.mark.ray
def test_search_overhead_smoke(tmp_path: Path) -> None:
    out, log = smoke("search_overhead", tmp_path, timeout=300)
    has(out, "overhead.json")
    import json

    result = json.loads((out / "overhead.json").read_text())
    assert result["direct_s"]["n"] == result["search_trial_s"]["n"] == 2  # both arms ran the same 2 configs
    assert result["fixed_overhead_s"] > 0
    assert "overhead per trial" in log
