"""Every benchmark script's ``--smoke-test`` runs, writes its raw rows and plots, and leaves RESULTS.md alone.

Each runs as a subprocess exactly as a user would (``python benchmarks/<name>.py --smoke-test``), into a
temporary ``--out`` folder with ``--results-md`` pointed at a file that must not appear.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
FMNIST = Path("/usr/share/datasets/fashion-mnist")

needs_fmnist = pytest.mark.skipif(
    not any(FMNIST.glob("train-images-idx3-ubyte*")), reason=f"Fashion-MNIST not installed in {FMNIST}"
)


def smoke(name: str, tmp_path: Path, timeout: int = 600, extra: tuple[str, ...] = ()) -> tuple[Path, str]:
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
def test_paper_claims_smoke_resumes_and_regenerates_its_report(tmp_path: Path) -> None:
    """Synthetic data, 3 rows x 2 seeds: rows appended per run, a rerun skips them, a lost row is redone (or
    taken from its finished summary), and --report rebuilds its marked section from the rows alone."""
    import shutil

    import pandas as pd

    out, log = smoke("paper_claims", tmp_path)
    has(out, "rows.parquet", "rows.csv", "plan.json", "RESULTS.md")
    rows = pd.read_parquet(out / "rows.parquet")
    assert set(rows["status"]) == {"COMPLETED"}, rows[["name", "status", "error"]].to_string()
    assert len(rows) == rows["run_key"].nunique() == 6 and set(rows["seed"]) == {0, 1}
    flops = rows.groupby("name")["train_flops"].mean()
    assert abs(flops["both [lo]"] / flops["sieve-only [lo]"] - 1) <= 0.02  # matched before training
    assert (rows["train_flops"] == rows["predicted_train_flops"]).all()

    _, log = smoke("paper_claims", tmp_path)  # everything done: nothing runs, no row changes
    assert "6 already in" in log and "ran 0" in log, log[-2000:]
    pd.testing.assert_frame_equal(pd.read_parquet(out / "rows.parquet"), rows)

    # two rows lost as by a kill: one finished (summary.json kept) and one whose run folder is gone too
    took, lost = rows.iloc[0], rows.iloc[3]
    (lost_dir,) = (out / "runs").glob(f"*_s{lost['seed']}_{lost['config_hash'][:10]}")
    shutil.rmtree(lost_dir)
    rows.drop(index=[0, 3]).to_parquet(out / "rows.parquet", index=False)
    _, log = smoke("paper_claims", tmp_path)
    assert "4 already in" in log and "recovered 1" in log and "ran 1" in log, log[-2000:]
    again = pd.read_parquet(out / "rows.parquet").set_index("run_key")
    assert set(again.index) == set(rows["run_key"])
    kept = rows.drop(index=[0, 3]).set_index("run_key")
    assert (again.loc[kept.index, "finished_at"] == kept["finished_at"]).all()
    assert again.loc[took["run_key"], "test_accuracy"] == took["test_accuracy"]

    # the report is a function of the rows: drop one, regenerate; the rest of the file is left alone
    md = out / "RESULTS.md"
    md.write_text("# mine\n\nkeep this\n\n" + md.read_text() + "\n## after\n\nand this\n")
    again.reset_index().query("run_key != @lost['run_key']").to_parquet(out / "rows.parquet", index=False)
    proc = subprocess.run([sys.executable, str(BENCH / "paper_claims.py"), "--smoke-test", "--out", str(out), "--report"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    text = md.read_text()
    assert text.startswith("# mine\n\nkeep this") and text.rstrip().endswith("and this")
    assert text.count("begin (generated by --report") == 1 and text.count("Verdict rules") == 1
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {lost['name']} |"))
    assert "| 1/2 |" in line, line
    assert f"{lost['name']} seed {lost['seed']}" in text.split("Not run yet (1 run):")[1]
    assert text.index("Verdict rules") < text.index("| A | B |")  # rules before numbers


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
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "not measured: no CUDA device" in proc.stdout
    assert "not measured: no CUDA device" in md.read_text()


@pytest.mark.slow
@pytest.mark.ray
@needs_fmnist
def test_search_quality_smoke(tmp_path: Path) -> None:
    import pandas as pd

    out, log = smoke("search_quality", tmp_path, timeout=800)
    assert "not measured: the search module is not importable" not in log, log[-2000:]
    has(out, "trials.csv", "searches.csv", "hypervolume_vs_compute.png", "fronts.png")
    first = pd.read_parquet(out / "searches.parquet")
    assert sorted(first["method"]) == ["paper", "tpe+moasha"], first
    trials = len(pd.read_parquet(out / "trials.parquet"))
    # a rerun with the same settings skips both stored searches and rebuilds the report from their rows
    _, log = smoke("search_quality", tmp_path, timeout=800)
    assert "skipped 2 search(es) already stored" in log, log[-2000:]
    again = pd.read_parquet(out / "searches.parquet")
    assert len(again) == 2 and (again["compute"].to_numpy() == first["compute"].to_numpy()).all()
    assert len(pd.read_parquet(out / "trials.parquet")) == trials


@pytest.mark.slow
@pytest.mark.ray
def test_search_overhead_smoke(tmp_path: Path) -> None:
    out, log = smoke("search_overhead", tmp_path, timeout=800)
    has(out, "overhead.json")
    import json

    result = json.loads((out / "overhead.json").read_text())
    assert result["direct_s"]["n"] == result["search_trial_s"]["n"] == 2  # both arms ran the same 2 configs
    assert result["fixed_overhead_s"] > 0
    assert "overhead per trial" in log


@pytest.mark.slow
@needs_fmnist
def test_precision_smoke(tmp_path: Path) -> None:
    import pandas as pd

    out, log = smoke("precision", tmp_path)
    has(out, "runs.csv", "runs.parquet")
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False)  # the fp32 arm's autocast is the text "None"
    assert set(runs["arm"]) == {"fp32", "auto"} and runs.groupby("arm").size().tolist() == [2, 2]
    assert (runs.loc[runs["arm"] == "fp32", "autocast"] == "None").all()
    by_seed = runs.pivot(index="seed", columns="arm", values="train_flops")
    assert (by_seed["fp32"] == by_seed["auto"]).all()  # precision never changes the FLOPs accounting
    assert "paired Δ auto − fp32" in log


@pytest.mark.slow
@needs_fmnist
def test_gpu_suite_smoke_runs_every_part_on_cpu(tmp_path: Path) -> None:
    out, log = smoke("gpu_suite", tmp_path, timeout=800)
    has(out, "gpu_suite.md", "gpu_suite.csv")
    table = (out / "gpu_suite.md").read_text()
    for part in ("1. MEST 0.9 training", "1. RIGL 0.9 training", "1. SET 0.9 training", "2. Trainer / plain loop",
                 "3. batch 128", "4. packing: 1 process(es)"):
        assert part in table, table
    assert "skipped: over budget" not in table


def test_gpu_suite_without_cuda_says_not_measured(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_suite.py"), "--out", str(tmp_path / "o"),
                           "--results-md", str(tmp_path / "R.md")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "not measured: no CUDA device" in proc.stdout and not (tmp_path / "R.md").exists()


@pytest.mark.slow
def test_startup_smoke(tmp_path: Path) -> None:
    out, log = smoke("startup", tmp_path)
    has(out, "startup.csv")
    import pandas as pd

    rows = pd.read_csv(out / "startup.csv").fillna("")
    mods = dict(zip(rows["arm"], rows["heavy_modules"], strict=True))
    assert "torch._dynamo" in mods["profile on meta (before)"]
    # what `spfde flops` needs: neither torch._dynamo nor sympy (nor ray/mlflow) is imported
    assert not {"torch._dynamo", "sympy", "ray", "mlflow"} & set(mods["spfde flops"].split(","))
    # typos (issue 24): the code before the up-front checks loaded torch or MLflow first; now none of them
    assert "torch" in mods["search --space nosuch (before)"] and "mlflow" in mods["pareto nosuch (before)"]
    assert all(mods[f"{c} (now)"] == "" for c in ("search --space nosuch", "search --sampler tpee", "pareto nosuch"))


@pytest.mark.slow
def test_budget_suggest_smoke(tmp_path: Path) -> None:
    out, _ = smoke("budget_suggest", tmp_path)
    has(out, "budget_suggest.csv")
    import pandas as pd

    rows = pd.read_csv(out / "budget_suggest.csv")
    assert {"random", "tpe", "gp", "(build the space)"} <= set(rows["sampler"])
    assert (rows["wall_seconds"] >= 0).all() and (rows["cpu_seconds"] >= 0).all()


def _bench_module(name: str = "paper_claims") -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_under_test", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_paper_claims_verdict_rules_are_paired_and_three_way() -> None:
    pc = _bench_module()
    base_acc = [70.0, 75.0, 80.0, 85.0, 90.0]  # seeds differ a lot; the rules must look at paired differences

    def stat(name: str, diffs: list[float]) -> Any:
        accs = [b + d for b, d in zip(base_acc, diffs, strict=True)]
        return pc.Stat(name, len(accs), sum(accs) / len(accs), 0.0, 1.0, 1.0, None, dict(enumerate(accs)))

    b = stat("B", [0.0] * 5)
    paired, kept, better = pc.paired, pc.kept, pc.more_accurate
    assert better(paired(stat("A", [1.0, 1.1, 0.9, 1.0, 1.2]), b)) == "more accurate"  # +1 on every seed
    assert better(paired(stat("A", [-1.0, -1.1, -0.9, -1.0, -1.2]), b)) == "less accurate"
    assert kept(paired(stat("A", [0.5, -0.6, 0.3, -0.4, -0.3]), b)) == "kept"  # mean drop 0.1, interval spans 0
    assert kept(paired(stat("A", [-2.0, -2.1, -1.9, -2.2, -1.8]), b)) == "not kept"
    assert kept(paired(stat("A", [-5.0, 4.0, -6.0, 3.0, -1.0]), b)) == "undecided"  # no significant drop, mean 1
    assert kept(paired(stat("A", [2.0, 2.0, 2.1, 1.9, 2.0]), b)) == "kept"  # better is kept too
    p = paired(stat("A", [0.5, -0.6, 0.3, -0.4, -0.3]), b)
    assert p.n == 5 and p.lo < p.boot_lo <= p.mean <= p.boot_hi < p.hi  # t interval wider than the bootstrap at n=5
    one = pc.Stat("A", 1, 70.0, float("nan"), 1.0, 1.0, None, {0: 70.0})
    assert kept(paired(one, b)) == "undecided (n < 2)" and better(paired(one, b)) == "undecided (n < 2)"


def test_search_quality_keys_stored_searches_by_delta_tau_without_rekeying_old_ones() -> None:
    sq = _bench_module("search_quality")
    old = sq.settings_key(sq.parse_args([]))  # Δτ = 1: the key searches were stored under before it was a setting
    assert "update_interval" not in old
    a4 = sq.parse_args(["--update-interval", "4"])
    assert sq.settings_key(a4) != old and '"update_interval": 4' in sq.settings_key(a4)
    assert sq.base_config(a4)["train"]["update_interval"] == 4


def test_search_quality_grid_verdict_is_paired_and_needs_five_seeds() -> None:
    sq = _bench_module("search_quality")
    base = [0.5, 0.6, 0.7, 0.8, 0.9]  # seeds differ a lot; the rule must look at paired differences

    def runs(diffs: list[float]) -> list[dict[str, float | int | str]]:
        grid = [{"method": "paper", "seed": s, "hv_norm": b} for s, b in enumerate(base)]
        return grid + [{"method": "tpe", "seed": s, "hv_norm": b + d}
                       for s, (b, d) in enumerate(zip(base, diffs, strict=True))]

    assert "the search BEATS" in sq._grid_verdict(runs([0.05, 0.04, 0.06, 0.05, 0.05]))
    assert "grid BEATS the search" in sq._grid_verdict(runs([-0.05, -0.04, -0.06, -0.05, -0.05]))
    assert "not shown" in sq._grid_verdict(runs([0.05, -0.04, 0.06, -0.05, 0.01]))
    few = runs([0.05, 0.04, 0.06, 0.05, 0.05])
    few = [r for r in few if r["seed"] in (0, 1, 2)]
    assert sq._grid_verdict(few).startswith("No search-vs-grid verdict yet: 3 paired seeds")


def test_search_quality_ended_by_counts_trials_in_the_order_they_ended() -> None:
    import pandas as pd

    sq = _bench_module("search_quality")
    # listed out of order; they ended b (t=1), c (t=2), a (t=3); compute after each ended trial: 10, 25, 45
    mine = pd.DataFrame({"trial_id": ["a", "b", "c"], "finished_at": ["t3", "t1", "t2"]}, index=[7, 8, 9])
    spent = [10.0, 25.0, 45.0]
    assert sq.ended_by(mine, spent, 9.0).tolist() == [False, False, False]
    assert sq.ended_by(mine, spent, 25.0).tolist() == [False, True, True]  # a budget equal to the spend counts it
    assert sq.ended_by(mine, spent, 44.9).tolist() == [False, True, True]
    assert sq.ended_by(mine, spent, 1e9).tolist() == [True, True, True]


@pytest.mark.slow
def test_val_overhead_smoke(tmp_path: Path) -> None:
    import json

    out, log = smoke("val_overhead", tmp_path)
    has(out, "runs.csv", "val_overhead.json")
    result = json.loads((out / "val_overhead.json").read_text())
    assert result["pairs"] == 2 and result["val_size"] > 0 and result["total_cpu_ratio"] > 0
    assert "summed CPU time after/before" in log


@pytest.mark.slow
def test_sieve_bounce_smoke(tmp_path: Path) -> None:
    import pandas as pd

    out, log = smoke("sieve_bounce", tmp_path)
    has(out, "runs.csv", "runs.parquet")
    rows = pd.read_csv(out / "runs.csv")
    assert len(rows) == 1 and rows["returned"].iloc[0] > 0
    assert rows["returned_removed"].iloc[0] == 0  # issue 34: at dtau 1 a just-returned sample stays
    assert "after  dtau 1: returned removed again 0/" in log


def test_search_heldout_hypervolume_golden_on_the_log_axis_with_the_085_reference() -> None:
    import math

    sh = _bench_module("search_heldout")
    # (FLOPs ratio, validation, test): c is dominated on validation by a (dearer, less accurate), so it is not
    # selected although its test accuracy (0.95) would add area; d is below the reference on test: adds nothing
    ratio = [0.01, 0.1, 0.05, 0.5]
    val = [0.90, 0.92, 0.89, 0.93]
    test = [0.88, 0.91, 0.95, 0.84]
    sel = sh.validation_front(val, ratio, [True] * 4)
    assert sel.tolist() == [True, True, False, True]
    # log10 axis, reference (0.85, log10 1 = 0): a holds 0.03 from -2 to -1, b 0.06 from -1 to 0 (d adds nothing)
    assert math.isclose(sh.heldout_hypervolume(test, ratio, sel), 0.03 * 1 + 0.06 * 1, rel_tol=1e-12)
    # two points only: a alone spans -2..0 at 0.03
    assert math.isclose(sh.heldout_hypervolume(test, ratio, [True, False, False, False]), 0.03 * 2, rel_tol=1e-12)
    # an ineligible point never enters the front (a not eligible: c is no longer dominated and is selected)
    assert sh.validation_front(val, ratio, [False, True, True, True]).tolist() == [False, True, True, True]
    assert math.isclose(sh.heldout_hypervolume(test, ratio, [False, True, True, False]),
                        0.10 * (math.log10(0.1) - math.log10(0.05)) + 0.10 * 1, rel_tol=1e-12)


def test_search_heldout_selection_reads_validation_never_test() -> None:
    import numpy as np

    sh = _bench_module("search_heldout")
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = 12
        ratio, val = rng.uniform(0.01, 1.0, n), rng.uniform(0.8, 0.95, n)
        eligible = rng.random(n) > 0.2
        sel = sh.validation_front(val, ratio, eligible)
        for _ in range(5):  # any test accuracies: the same points are chosen
            test = rng.uniform(0.7, 1.0, n)
            assert (sh.validation_front(val, ratio, eligible) == sel).all()
            assert sh.heldout_hypervolume(test, ratio, sel) >= 0
    # the chosen points do move with validation accuracy
    assert sh.validation_front([0.9, 0.95], [0.1, 0.2], [True, True]).tolist() == [True, True]
    assert sh.validation_front([0.96, 0.95], [0.1, 0.2], [True, True]).tolist() == [True, False]


def test_search_heldout_grid_draw_is_without_replacement_and_seeded() -> None:
    sh = _bench_module("search_heldout")
    grid = {"sparsity.ratio": [0.6, 0.9, 0.95], "freezing.target_flops_reduction": [0.0, 0.1, 0.2, 0.25],
            "sieving.fraction": [0.0, 0.1, 0.2, 0.25]}
    a, b = sh.grid_draw(grid, 16, 0), sh.grid_draw(grid, 16, 1)
    keys = [tuple(sorted(p.items())) for p in a]
    assert len(a) == 16 and len(set(keys)) == 16  # no point twice
    assert all(p[k] in grid[k] for p in a for k in grid) and all(set(p) == set(grid) for p in a)
    assert a == sh.grid_draw(grid, 16, 0) and a != b  # the seed alone fixes the draw
    assert len(sh.grid_draw(grid, 100, 0)) == 48  # never more than the grid holds


def test_search_heldout_paired_rule_needs_the_interval_and_four_of_five_seeds() -> None:
    sh = _bench_module("search_heldout")
    base = {s: 0.1 + 0.05 * s for s in range(10)}  # seeds differ a lot: the rule must pair them

    def verdict(diffs: list[float], seeds: int = 10) -> str:
        x = {s: base[s] + d for s, d in enumerate(diffs) if s < seeds}
        return sh.paired_verdict(x, base, "x", "y")[0]

    assert verdict([0.02, 0.03, 0.02, 0.025, 0.03]).endswith("`x` BEATS `y`")
    assert verdict([-0.02, -0.03, -0.02, -0.025, -0.03]).endswith("`y` BEATS `x`")
    assert verdict([0.02, -0.03, 0.02, -0.025, 0.01]).endswith("neither shown")
    # the t interval lies above 0 (mean 0.035, half-width 0.017) but x is higher in 7 of 10 seeds only: no win
    assert verdict([0.05] * 7 + [0.0] * 3).endswith("neither shown")
    assert verdict([0.05] * 8 + [0.0] * 2).endswith("`x` BEATS `y`")
    assert verdict([0.02, 0.03, 0.02, 0.025, 0.03], seeds=3).endswith(
        "no verdict: 3 of 5 seeds; `y` can no longer beat `x`")
    # before the 5th seed the count half of the rule can already be out of reach: 2 lower of 4 -> x cannot win
    assert verdict([-0.02, -0.03, 0.02, -0.025], seeds=4).endswith("no verdict: 4 of 5 seeds; `x` can no longer beat `y`")
    assert verdict([0.02, 0.03, 0.02, -0.01], seeds=4).endswith("no verdict: 4 of 5 seeds; `y` can no longer beat `x`")
    assert verdict([0.02, -0.03], seeds=2).endswith("no verdict: 2 of 5 seeds")  # either may still win
    assert "neither shown (decided at 4 of 5 seeds" in verdict([0.02, -0.03, 0.01, -0.01], seeds=4)


@pytest.mark.slow
@pytest.mark.ray
@needs_fmnist
def test_search_heldout_smoke_stores_resumes_and_reports(tmp_path: Path) -> None:
    import pandas as pd

    out, log = smoke("search_heldout", tmp_path, timeout=1500)
    has(out, "trials.csv", "searches.csv", "fidelity.csv", "heldout_report.csv", "heldout_hv.png")
    first = pd.read_parquet(out / "searches.parquet")
    assert sorted(first["method"]) == sorted(["budget+tpe", "budget+gp", "grid16", "headline"]), first
    assert (first["trials"] == 2).all(), first  # every arm trained its trials (headline: its first 2 points)
    grid = pd.read_parquet(out / "trials.parquet").query("method == 'grid16'")
    assert len(grid) == 2 and grid["val_accuracy"].notna().all()
    fid = pd.read_parquet(out / "fidelity.parquet")
    assert fid["config_id"].nunique() == 3 and set(fid["schedule"]) == {1, 2}
    within = pd.read_parquet(out / "within.parquet")  # issue 31 part 1: 3 configs at one level x 2 lengths x 2 seeds
    assert len(within) == 12 and set(within["schedule"]) == {1, 2} and set(within["seed"]) == {0, 1}, within
    assert (within["level"] == 0.15).all() and within["trainer"].notna().all()
    # a rerun trains nothing: every search and fidelity run is stored
    _, log = smoke("search_heldout", tmp_path, timeout=600)
    assert "skipped 4 search(es) already stored" in log and "fidelity: 6 run(s) stored, 0 to train" in log, log[-2000:]
    assert "within: 12 run(s) stored, 0 to train" in log, log[-2000:]
    assert len(pd.read_parquet(out / "searches.parquet")) == 4 and len(pd.read_parquet(out / "fidelity.parquet")) == len(fid)
    _, log = smoke("search_heldout", tmp_path, timeout=300, extra=("--report",))
    assert "no verdict: 1 of 5 seeds" in log and "MOASHA's first rung" in log, log[-2000:]
    assert "**Within-budget fidelity**" in log and "noise ceiling" in log, log[-2000:]
    section = (out / "section.md").read_text()
    assert section.startswith("**Rule (fixed before measuring).**")  # the rule before any number
    assert section.index("**Rule") < section.index("| seed |") and "Not run: " in section and "--report" in section


def test_search_heldout_evaluate_counts_trials_ended_by_the_grids_compute_and_selects_on_validation() -> None:
    import math

    import pandas as pd

    sh = _bench_module("search_heldout")

    def trials(method: str, rows: list[tuple[float, float, float, float]]) -> pd.DataFrame:
        # (FLOPs ratio, validation, test, compute spent), in the order the trials ended
        return pd.DataFrame({
            "trial_id": [f"{method}{i}" for i in range(len(rows))], "status": "COMPLETED", "full_budget": True,
            "flops_ratio": [r[0] for r in rows], "val_accuracy": [r[1] for r in rows],
            "test_accuracy": [r[2] for r in rows], "spent_train_flops": [r[3] for r in rows],
            "train_flops": [r[3] for r in rows], "spent_seconds": 1.0,
            "finished_at": [float(i) for i in range(len(rows))], "method": method, "seed": 0})

    grid = trials("grid16", [(0.1, 0.90, 0.88, 10.0), (0.5, 0.92, 0.90, 10.0)])  # spends 20
    # budget+tpe: its third trial ends after 5 + 10 + 30 > 20, so it is not counted though it is the best
    tpe = trials("budget+tpe", [(0.01, 0.89, 0.87, 5.0), (0.1, 0.91, 0.93, 10.0), (0.05, 0.99, 0.99, 30.0)])
    searches = pd.DataFrame({"method": ["grid16", "budget+tpe"], "seed": [0, 0], "seconds": [1.0, 1.0],
                             "trial_seconds": [2.0, 3.0], "compute": [20.0, 45.0]})
    rows = {r["arm"]: r for r in sh.evaluate(searches, pd.concat([grid, tpe], ignore_index=True))}
    assert rows["budget+tpe"]["c_grid"] == 20.0 and rows["budget+tpe"]["ended"] == 2
    # log10 axis, reference 0.85: grid 0.03 over [-1, log10 0.5] + 0.05 over [log10 0.5, 0]
    lg = math.log10
    assert math.isclose(rows["grid16"]["hv"], 0.03 * (lg(0.5) + 1) + 0.05 * -lg(0.5), rel_tol=1e-9)
    assert math.isclose(rows["budget+tpe"]["hv"], 0.02 * 1 + 0.08 * 1, rel_tol=1e-9)
    assert math.isclose(rows["budget+tpe"]["at_0.05"], 0.87) and math.isclose(rows["budget+tpe"]["at_0.1"], 0.93)
    assert math.isclose(rows["budget+tpe"]["bias"], ((0.89 - 0.87) + (0.91 - 0.93)) / 2, abs_tol=1e-12)
    # test accuracies never choose: lowering the front's test accuracies changes the score, not the points
    worse = pd.concat([grid, tpe.assign(test_accuracy=[0.5, 0.5, 0.5])], ignore_index=True)
    again = {r["arm"]: r for r in sh.evaluate(searches, worse)}
    assert again["budget+tpe"]["front"] == rows["budget+tpe"]["front"] == 2 and again["budget+tpe"]["hv"] == 0.0


@pytest.mark.slow
@pytest.mark.ray
@needs_fmnist
def test_soak_smoke_kills_resumes_and_matches_the_uninterrupted_search(tmp_path: Path) -> None:
    import pandas as pd

    out, log = smoke("soak", tmp_path, timeout=1800)
    has(out, "kills.csv", "summary.csv", "kills.jsonl")
    kills = pd.read_csv(out / "kills.csv")
    assert sorted(kills["signal"]) == ["SIGKILL", "SIGTERM"], kills
    s = pd.read_csv(out / "summary.csv").iloc[0]
    # the budget space, a fixed seed, --sampler random, no early stopping: the soak must equal the reference
    assert s["trials"] == s["finished"] == s["distinct_params"] == 4, s.to_dict()
    assert s["lost_vs_ref"] == s["extra_vs_ref"] == s["status_differs_vs_ref"] == 0, s.to_dict()
    assert s["running_rows"] == s["mlflow_running"] == 0 and bool(s["mlflow_equals_table"]), s.to_dict()
    assert s["status"] == "finished" and bool(s["front_identical"]), s.to_dict()
    # a second run with the same --out finds everything done: no new kill, the same rows
    _, log = smoke("soak", tmp_path, timeout=900)
    assert len(pd.read_csv(out / "kills.csv")) == len(kills), log[-2000:]
