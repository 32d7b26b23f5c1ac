"""Issue 5 §2: search quality at a fixed trial budget N — which sampler finds the best accuracy-vs-FLOPs front?

Methods, all on the same base config (model, data, epochs) and the same budget of N trials, ``--seeds`` seeds each:
``auto`` (the default sampler on the ``joint`` space: multivariate TPE), ``nsga2``, ``gp`` and ``random`` on
``joint``, and ``paper``: the paper's grid (sparsity 0.6/0.9/0.95 × x, y ∈ {0, 10, 20, 25}%) sampled by the grid
sampler. Each search is ``spfde_search.search.run_search`` in this process (one embedded Ray shared by all
searches, ``--concurrent`` trials at a time).

Reported: hypervolume of (test accuracy, training-FLOPs ratio to dense) with reference (0, 1) after N trials —
raw (area in the unit box) and normalised by the hypervolume of the pooled front of every trial of every search —
its growth curve over trials, and how many of the paper-grid points (all completed trials of the ``paper``
searches, pooled) each method's final front dominates.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "search_quality"
METHODS = {  # method -> (space, sampler)
    "auto": ("joint", "auto"),
    "nsga2": ("joint", "nsga2"),
    "gp": ("joint", "gp"),
    "random": ("joint", "random"),
    "paper": ("paper", "auto"),
}


def parse_args(argv: list[str] | None = None) -> Any:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--trials", type=int, default=8, help="N, the trial budget of every search")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--model", default="resnet8")
    p.add_argument("--train-subset", type=int, default=500)
    p.add_argument("--test-subset", type=int, default=500)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--concurrent", type=int, default=2, help="trials at a time (and Ray CPUs)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per trial on CPU")
    p.add_argument("--time-budget-min", type=float, default=None, help="start no new search after this")
    a = p.parse_args(argv)
    if a.smoke_test:
        a.methods = ["auto", "paper"]
        a.trials, a.seeds, a.train_subset, a.test_subset, a.epochs = 2, 1, 128, 100, 2
    return a


def base_config(a: Any) -> dict[str, Any]:
    cfg = C.fmnist_config(a.train_subset, a.test_subset, a.epochs, a.device, a.threads if a.device == "cpu" else None,
                          **{"model.name": a.model, "freezing.target_flops_reduction": 0.0, "sieving.fraction": 0.0})
    return cfg.to_dict()


def growth(df: Any, n: int) -> list[float]:
    """Hypervolume after each of the first n trials (by finish time; unfinished trials count as nothing)."""
    from spfde_search.pareto import hypervolume

    d = df.copy()
    d["_order"] = d["finished_at"].fillna("~") if "finished_at" in d else range(len(d))
    d = d.sort_values(["_order", "trial_id"]).reset_index(drop=True)
    ok = (d["status"] == "COMPLETED") & d["full_budget"].astype(bool)
    out = []
    for k in range(1, n + 1):
        sub = d.iloc[:k][ok.iloc[:k]]
        out.append(hypervolume(sub["test_accuracy"], sub["flops_ratio"]) if len(sub) else 0.0)
    return out


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    # run from a checkout: the repository's search_spaces/ and trainables/ must win over whatever the installed
    # distribution maps (an editable install made before they existed maps them as empty namespace packages);
    # PYTHONPATH carries this to Ray's worker processes.
    root = str(C.REPO_ROOT)
    sys.path.insert(0, root)
    os.environ["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    try:
        from spfde_search.search import SearchSettings, load_trials, run_search
    except ImportError as e:
        print(f"not measured: the search module is not importable ({e})")
        return 0
    import numpy as np
    import pandas as pd

    from spfde_search.pareto import hypervolume, non_dominated

    info = C.machine_info(a.device)
    out = C.output_dir(NAME, a)
    storage = out / "searches"
    if storage.exists():
        shutil.rmtree(storage)
    storage.mkdir(parents=True)
    base = base_config(a)
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=a.concurrent, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
                 object_store_memory=200 * 1024**2)
    t0 = time.perf_counter()
    tables: list[pd.DataFrame] = []
    runs: list[dict[str, Any]] = []
    skipped: list[str] = []
    try:
        for seed in range(a.seeds):  # seed-major: a time cut leaves every method with as many seeds as possible
            for m in a.methods:
                if a.time_budget_min is not None and time.perf_counter() - t0 > 60 * a.time_budget_min:
                    skipped.append(f"{m} seed {seed}")
                    continue
                space, sampler = METHODS[m]
                name = f"{m}_s{seed}"
                settings = SearchSettings(
                    name=name, space=space, base_config=base, num_samples=a.trials, sampler=sampler, seed=seed,
                    max_concurrent=a.concurrent, cpus_per_trial=1.0, num_cpus=a.concurrent,
                    storage_path=str(storage),
                    gpus_per_trial=(1.0 / a.concurrent) if a.device == "cuda" else 0.0,
                )
                ts = time.perf_counter()
                try:
                    res = run_search(settings, verbose=0)
                    df = res.table.copy()
                except Exception as e:  # one failed search is a result, not a crash of the benchmark
                    print(f"{name}: search failed: {type(e).__name__}: {e}")
                    try:
                        df = load_trials(str(storage / name))
                    except Exception:
                        df = pd.DataFrame(columns=["trial_id", "status", "full_budget", "test_accuracy", "flops_ratio"])
                df["method"], df["seed"] = m, seed
                tables.append(df)
                curve = growth(df, a.trials) if len(df) else [0.0] * a.trials
                n_ok = int(((df["status"] == "COMPLETED") & df["full_budget"].astype(bool)).sum()) if len(df) else 0
                runs.append({"method": m, "seed": seed, "trials": len(df), "completed": n_ok,
                             "hv": curve[-1] if curve else 0.0, "curve": curve,
                             "seconds": time.perf_counter() - ts})
                print(f"{name}: {len(df)} trials, {n_ok} completed, HV {runs[-1]['hv']:.4f} "
                      f"({time.perf_counter() - ts:.0f} s; {time.perf_counter() - t0:.0f} s elapsed)", flush=True)
    finally:
        ray.shutdown()
    elapsed = time.perf_counter() - t0
    all_trials = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    keep = [c for c in all_trials.columns if all_trials[c].dtype != object or c in
            ("trial_id", "status", "params", "method", "error", "finished_at", "started_at")]
    C.save_rows(all_trials[keep] if len(all_trials) else all_trials, out, "trials")

    ok = (all_trials["status"] == "COMPLETED") & all_trials["full_budget"].astype(bool) if len(all_trials) else []
    done = all_trials[ok] if len(all_trials) else all_trials
    # Per seed: the searches of one seed share the sampler seed (and whatever it seeds in the trials), so the
    # reference front and the paper-grid points are those of the same seed.
    seed_hv = {s: hypervolume(g["test_accuracy"], g["flops_ratio"]) for s, g in done.groupby("seed")} if len(done) else {}
    for r in runs:
        ref = seed_hv.get(r["seed"], float("nan"))
        r["hv_norm"] = r["hv"] / ref if ref and ref > 0 else float("nan")
        paper_pts = done[(done["method"] == "paper") & (done["seed"] == r["seed"])] if len(done) else done
        mine = done[(done["method"] == r["method"]) & (done["seed"] == r["seed"])] if len(done) else done
        dominated = 0
        if len(mine) and len(paper_pts):
            fa = mine["test_accuracy"].to_numpy(float)
            fr = mine["flops_ratio"].to_numpy(float)
            for pa_, pr_ in zip(paper_pts["test_accuracy"].to_numpy(float), paper_pts["flops_ratio"].to_numpy(float),
                                strict=True):
                if ((fa >= pa_) & (fr <= pr_) & ((fa > pa_) | (fr < pr_))).any():
                    dominated += 1
        r["paper_points"] = len(paper_pts)
        r["paper_dominated"] = dominated
    C.save_rows([{k: (json.dumps(v) if k == "curve" else v) for k, v in r.items()} for r in runs], out, "searches")

    # plots: growth curves, and every completed trial with each method's pooled front
    fig, ax = C.plt_figure(figsize=(6, 4))
    for m in a.methods:
        curves = np.array([r["curve"] for r in runs if r["method"] == m])
        if len(curves) == 0:
            continue
        k = np.arange(1, curves.shape[1] + 1)
        med = np.median(curves, axis=0)
        ax.plot(k, med, label=f"{m} (median of {len(curves)})")
        ax.fill_between(k, curves.min(axis=0), curves.max(axis=0), alpha=0.15)
    ax.set_xlabel("trials finished")
    ax.set_ylabel("hypervolume (acc × (1 − FLOPs ratio)), ref (0, 1)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "hypervolume_growth.png", dpi=120)
    fig, ax = C.plt_figure(figsize=(6, 4))
    for m in a.methods:
        d = done[done["method"] == m] if len(done) else done
        if not len(d):
            continue
        ax.scatter(d["flops_ratio"], 100 * d["test_accuracy"], s=12, alpha=0.6, label=m)
        nd = non_dominated(d["test_accuracy"], d["flops_ratio"])
        f = d[nd].sort_values("flops_ratio")
        ax.step(f["flops_ratio"], 100 * f["test_accuracy"], where="post", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs / dense (log)")
    ax.set_ylabel("test accuracy %")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "fronts.png", dpi=120)

    for r in runs:
        print(f"{r['method']:7s} seed {r['seed']}: HV {r['hv']:.4f} (norm {r['hv_norm']:.3f}), "
              f"dominates {r['paper_dominated']}/{r['paper_points']} paper-grid points")
    print(f"done in {elapsed:.0f} s")
    if not C.should_append(a):
        return 0
    table = []
    for m in a.methods:
        rs = [r for r in runs if r["method"] == m]
        if not rs:
            table.append([m, 0, "–", "–", "–", "–"])
            continue
        table.append([m, len(rs), C.spread(r["hv"] for r in rs).fmt(".4f"), C.spread(r["hv_norm"] for r in rs).fmt(".3f"),
                      C.spread(r["paper_dominated"] for r in rs).fmt(".0f") + f" of {rs[0]['paper_points']}",
                      f"{sum(r['completed'] for r in rs)}/{sum(r['trials'] for r in rs)}"])
    med = {m: C.spread(r["hv"] for r in runs if r["method"] == m).median for m in a.methods}
    best = max((m for m in med if med[m] == med[m]), key=lambda m: med[m], default=None)
    body = [
        f"Setting: {a.model}, Fashion-MNIST {a.train_subset}/{a.test_subset} images, {a.epochs} epochs, Δτ = 1, "
        f"batch 128, device {a.device}; N = {a.trials} trials per search, {a.seeds} seeds per method, "
        f"{a.concurrent} trials at a time on one embedded Ray ({a.threads} torch thread per trial). Hypervolume of "
        "(test accuracy, training-FLOPs ratio to dense), reference (0, 1), over COMPLETED full-budget trials; "
        f"'normalised' divides by the hypervolume of the pooled front of all completed trials of all methods with "
        f"the same seed (per seed: " + ", ".join(f"{s}: {v:.4f}" for s, v in seed_hv.items()) + "). Paper-grid "
        "points: the completed trials of the `paper` search of the same seed (up to N of the 48 grid points; each "
        "is one measurement), counted when some trial of the method strictly dominates them.",
        "",
        C.md_table(["method", "searches", "hypervolume after N", "normalised", "paper-grid points dominated by the front",
                    "completed / trials"], table),
        "",
        f"- Median hypervolume after N trials is highest for `{best}`." if best else "- No search completed.",
        f"- With N = {a.trials} and {a.seeds} seed(s) per method, differences between samplers are within the seed-to-seed spread unless "
        "the min–max ranges above separate; the growth curves are in `hypervolume_growth.png`. Trials that are "
        "not COMPLETED (mostly INFEASIBLE: a freezing target the short schedule cannot reach) count against the "
        "budget N, as they do in a real search.",
    ]
    if skipped:
        body.append(f"- Not run (time budget): {', '.join(skipped)}.")
    try:
        shown = out.resolve().relative_to(C.REPO_ROOT)
    except ValueError:
        shown = out
    body += [f"- Raw rows: `{shown}` (trials.*, searches.*, fronts.png). Wall time {elapsed / 60:.1f} min.",
             f"- {C.NO_GPU_NOTE}." if a.device == "cpu" else ""]
    C.append_section(a.results_md, f"Search quality at a fixed trial budget ({a.device})", info, "\n".join(body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
