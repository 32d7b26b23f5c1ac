"""Issue 11: search quality at equal compute — which search finds the best accuracy-vs-FLOPs front per FLOP spent?

Methods, all on the same base config (model, data, epochs), ``--seeds`` seeds each (seed s of every method uses
sampler seed s): ``tpe+moasha`` (the default sampler on ``joint`` with ``--early-stopping moasha``), ``tpe``
(default sampler, no early stopping), ``random+moasha``, ``random`` and ``paper`` (the paper's grid, no early
stopping). Each search is ``spfde_search.search.drive_search`` in this process (one embedded Ray shared by all,
``--concurrent`` trials at a time). Searches with MOASHA get ``--moasha-trials`` trained trials (more than the
``--trials`` of the others, since a stopped trial costs less); the comparison is then made at EQUAL COMPUTE:

- compute = measured training FLOPs of every trial the search ran (stopped and failed ones included), in the
  order trials ended; trial-seconds are recorded too;
- C* = the smallest total compute any stored search of the same settings spent (every method stored, not only
  those of this invocation); every search's hypervolume is read at C* (its curve is a step function of
  compute; a trial counts once it has ended);
- the searches select on a validation split (``--val-size``, the search default; 0 reproduces the searches stored
  before validation existed, which selected on test, and keys their rows);
- hypervolume of (test accuracy on the full 10,000-image test set, training-FLOPs ratio to dense), reference
  (0, 1), over COMPLETED full-budget trials; normalised by the hypervolume of the pooled front of every
  completed trial of every stored search with the same seed and settings;
- paper-grid points dominated: completed trials of the ``paper`` search of the same seed strictly dominated by
  the method's front at C*; compute to reach the paper grid's hypervolume (its final one, same seed).

Additive: every finished search is appended at once to ``trials.parquet`` (its trials) and ``searches.parquet``
(one row) in ``--out``, keyed by (method, seed, settings), where the settings are the fields of ``KEY_FIELDS``
that make two searches comparable. A rerun skips the searches already stored with the same settings (a Ctrl-C
loses only the search in progress) and the report is regenerated from ALL stored rows of those settings, so
methods can be added in later runs. ``--report`` runs nothing and only regenerates.

Verdict rule, fixed before measuring: ``moasha`` becomes the default for searches of >= 8 epochs iff, with >= 5
paired seeds, ``tpe+moasha`` has a higher median normalised hypervolume at C* than ``tpe`` AND is higher in at
least 4 of 5 (80 %) of the paired seeds; otherwise the default stays ``none``.

Search-vs-grid rule, fixed before measuring at the decisive size: with >= 5 paired seeds, Δ = (``tpe`` − ``paper``)
normalised hypervolume at C*, 95 % t interval over the seeds: "the search beats the paper's grid" iff the interval
lies above 0, "the grid beats the search" iff it lies below 0, otherwise "not shown"; with fewer seeds, no verdict.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "search_quality"
METHODS: dict[str, tuple[str, Any, Any]] = {  # method -> (space, sampler, early stopping)
    "tpe+moasha": ("joint", "auto", "moasha"),
    "tpe": ("joint", "auto", "none"),
    "random+moasha": ("joint", "random", "moasha"),
    "random": ("joint", "random", "none"),
    "paper": ("paper", "auto", "none"),
}
# the arguments that make two searches comparable (the key of a stored search, with method and seed)
KEY_FIELDS = ("model", "train_subset", "test_subset", "epochs", "trials", "moasha_trials", "grace_period",
              "reduction_factor")
PAIRS = [("tpe+moasha", "tpe"), ("random+moasha", "random"), ("tpe", "random"), ("tpe+moasha", "random+moasha"),
         ("tpe+moasha", "paper"), ("tpe", "paper"), ("random+moasha", "paper"), ("random", "paper")]


def parse_args(argv: list[str] | None = None) -> Any:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--trials", type=int, default=8, help="trained trials of a search without early stopping")
    p.add_argument("--moasha-trials", type=int, default=None, help="trained trials of a MOASHA search (default 2x)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--model", default="resnet8")
    p.add_argument("--train-subset", type=int, default=2000)
    p.add_argument("--test-subset", type=int, default=None, help="None = the full 10,000-image test set")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--val-size", type=int, default=None,
                   help="data.val_size of the searches (None: the search default, min(5000, test set); 0: select on "
                        "test, as every search stored before validation existed did)")
    p.add_argument("--update-interval", type=int, default=1,
                   help="base Δτ: the paper grid's; the joint space searches its own range around it")
    p.add_argument("--grace-period", type=int, default=1)
    p.add_argument("--reduction-factor", type=int, default=2)
    p.add_argument("--concurrent", type=int, default=2, help="trials at a time (and Ray CPUs)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per trial on CPU")
    p.add_argument("--time-budget-min", type=float, default=None, help="start no new search after this")
    p.add_argument("--report", action="store_true", help="run no search; regenerate the report from the stored rows")
    p.add_argument("--also-over", nargs="+", default=None, choices=list(METHODS),
                   help="also report C* and normalisation computed over only these stored methods")
    a = p.parse_args(argv)
    if a.smoke_test:
        a.methods = ["tpe+moasha", "paper"]
        a.trials, a.moasha_trials, a.seeds, a.train_subset, a.test_subset, a.epochs = 2, 3, 1, 128, 100, 3
    if a.moasha_trials is None:
        a.moasha_trials = 2 * a.trials
    return a


def settings_key(a: Any) -> str:
    """The comparability key of this invocation's searches (canonical JSON of ``KEY_FIELDS``; Δτ only where it
    is not 1, so searches stored before it was a setting keep their key)."""
    key = {k: getattr(a, k) for k in KEY_FIELDS}
    if a.update_interval != 1:
        key["update_interval"] = a.update_interval
    if getattr(a, "val_size", None) != 0:  # searches that select on validation never mix with the older ones
        key["val_size"] = "auto" if a.val_size is None else a.val_size
    return json.dumps(key, sort_keys=True)


def base_config(a: Any) -> dict[str, Any]:
    cfg = C.fmnist_config(a.train_subset, a.test_subset, a.epochs, a.device, a.threads if a.device == "cpu" else None,
                          **{"model.name": a.model, "freezing.target_flops_reduction": 0.0, "sieving.fraction": 0.0,
                             "train.update_interval": a.update_interval,
                             "train.eval_every": a.epochs,  # evaluate at the end (and at MOASHA's rungs) only
                             "data.val_size": a.val_size})
    return cfg.to_dict()


def curve(df: Any) -> tuple[Any, Any, Any]:
    """(compute after each ended trial, trial-seconds after each, hypervolume so far): the search's own
    ``hypervolume_vs_compute`` table (``spfde_search.search.results.compute_curve``), scored here on the held-out
    TEST accuracy of the completed trials, like every other number of this benchmark (the searches themselves
    chose on validation accuracy where they had a validation split)."""
    from spfde_search.search.results import compute_curve

    c = compute_curve(df.drop(columns=["val_accuracy"], errors="ignore"))
    return c["spent_train_flops"].to_numpy(float), c["spent_seconds"].to_numpy(float), c["hypervolume"].to_numpy(float)


def ended_by(mine: Any, spent: Any, budget: float) -> Any:
    """Boolean mask (aligned with ``mine``, one search's trials) of the trials that had ended once the search
    had spent ``budget`` compute: trials count in the order they ended, as in ``curve``."""
    import numpy as np

    order = mine.sort_values(["finished_at", "trial_id"], na_position="last").index
    k = int((np.asarray(spent) <= budget * (1 + 1e-12)).sum())
    return mine.index.isin(order[:k])


def at(spent: Any, hv: Any, budget: float) -> float:
    """Hypervolume of a step curve after ``budget`` compute (0 before its first trial ended)."""
    import numpy as np

    k = np.flatnonzero(np.asarray(spent) <= budget * (1 + 1e-12))
    return float(np.asarray(hv)[k[-1]]) if k.size else 0.0


# ---------------------------------------------------------------- the store


def load(out: Path, stem: str) -> Any:
    import pandas as pd

    p = out / f"{stem}.parquet"
    return pd.read_parquet(p) if p.exists() else pd.DataFrame()


def store(out: Path, stem: str, df: Any) -> None:
    """Write ``df`` as <stem>.parquet (atomically; an error here is an error, the store must stay whole) and
    <stem>.csv (for reading by eye)."""
    tmp = out / f".{stem}.parquet.tmp"
    df.to_parquet(tmp, index=False)
    os.replace(tmp, out / f"{stem}.parquet")
    df.to_csv(out / f"{stem}.csv", index=False)


def append(out: Path, trials: Any, search: dict[str, Any]) -> None:
    """Add one finished search: its trials, then its row (the row is what marks it done)."""
    import pandas as pd

    keep = [c for c in trials.columns if trials[c].dtype != object or c in
            ("trial_id", "status", "params", "method", "error", "settings")]
    store(out, "trials", pd.concat([load(out, "trials"), trials[keep]], ignore_index=True))
    store(out, "searches", pd.concat([load(out, "searches"), pd.DataFrame([search])], ignore_index=True))


def done_keys(searches: Any, key: str) -> set[tuple[str, int]]:
    if not len(searches) or "settings" not in searches.columns:
        return set()
    s = searches[searches["settings"] == key]
    return {(str(m), int(sd)) for m, sd in zip(s["method"], s["seed"], strict=True)}


# ---------------------------------------------------------------- the report


def evaluate(searches: Any, trials: Any, methods: list[str]) -> tuple[list[dict[str, Any]], float, dict[int, float]]:
    """Per-search report rows for the stored ``methods``: C*, hypervolume at C*, normalised, paper-grid points
    dominated and compute to reach the paper grid's hypervolume — all derived from the stored trial rows."""
    import numpy as np

    from spfde_search.pareto import cost_to_reach, hypervolume

    trials = trials[trials["method"].isin(methods)]
    runs = [{k: r[k] for k in ("method", "seed", "trials", "counts", "seconds")} for r in
            searches[searches["method"].isin(methods)].to_dict("records")]
    for r in runs:
        r["counts"] = json.loads(r["counts"]) if isinstance(r["counts"], str) else dict(r["counts"])
        mine = trials[(trials["method"] == r["method"]) & (trials["seed"] == r["seed"])]
        spent, secs, hv = curve(mine) if len(mine) else (np.zeros(0), np.zeros(0), np.zeros(0))
        r["curve"] = [list(map(float, spent)), list(map(float, hv))]
        r["compute"] = float(spent[-1]) if len(spent) else 0.0
        r["trial_seconds"] = float(secs[-1]) if len(secs) else 0.0
        r["hv_final"] = float(hv[-1]) if len(hv) else 0.0
    if not runs:
        return runs, float("nan"), {}
    c_star = min(r["compute"] for r in runs)
    done = trials[(trials["status"] == "COMPLETED") & trials["full_budget"].astype(bool)]
    seed_hv = {int(s): hypervolume(g["test_accuracy"], g["flops_ratio"]) for s, g in done.groupby("seed")}
    for r in runs:
        spent, hv = np.asarray(r["curve"][0]), np.asarray(r["curve"][1])
        r["hv_at_c"] = at(spent, hv, c_star)
        ref = seed_hv.get(int(r["seed"]), float("nan"))
        r["hv_norm"] = r["hv_at_c"] / ref if ref and ref > 0 else float("nan")
        mine = trials[(trials["method"] == r["method"]) & (trials["seed"] == r["seed"])]
        mine = mine[ended_by(mine, spent, c_star) & (mine["status"] == "COMPLETED") & mine["full_budget"].astype(bool)]
        paper_pts = done[(done["method"] == "paper") & (done["seed"] == r["seed"])]
        fa, fr = mine["test_accuracy"].to_numpy(float), mine["flops_ratio"].to_numpy(float)
        r["paper_points"] = len(paper_pts)
        r["paper_dominated"] = sum(
            bool(((fa >= pa_) & (fr <= pr_) & ((fa > pa_) | (fr < pr_))).any())
            for pa_, pr_ in zip(paper_pts["test_accuracy"].to_numpy(float), paper_pts["flops_ratio"].to_numpy(float),
                                strict=True)
        ) if len(fa) else 0
        paper_run = next((p for p in runs if p["method"] == "paper" and p["seed"] == r["seed"]), None)
        r["paper_hv"] = paper_run["hv_final"] if paper_run else float("nan")
        r["compute_to_paper_hv"] = cost_to_reach(spent, hv, r["paper_hv"]) if paper_run and r["paper_hv"] > 0 else float("nan")
        r["c_star"] = c_star
    return runs, c_star, seed_hv


def method_table(runs: list[dict[str, Any]], methods: list[str], c_star: float) -> str:
    table = []
    for m in methods:
        rs = [r for r in runs if r["method"] == m]
        st: dict[str, int] = {}
        for r in rs:
            for k, v in r["counts"].items():
                st[k] = st.get(k, 0) + int(v)
        reach = [r["compute_to_paper_hv"] for r in rs]
        table.append([
            m, len(rs), C.spread(r["hv_at_c"] for r in rs).fmt(".4f"), C.spread(r["hv_norm"] for r in rs).fmt(".3f"),
            C.spread(r["paper_dominated"] for r in rs).fmt(".0f") + f" of {rs[0]['paper_points']}",
            (C.spread(x / c_star for x in reach if x == x).fmt(".2f") + f" ({sum(x == x for x in reach)}/{len(rs)} reached)")
            if any(x == x for x in reach) else f"never (0/{len(rs)})",
            C.spread(r["compute"] / c_star for r in rs).fmt(".2f"),
            ", ".join(f"{k} {v}" for k, v in sorted(st.items())),
        ])
    return C.md_table(["method", "searches", "hypervolume at C*", "normalised", "paper-grid points dominated at C*",
                       "compute to reach the paper grid's HV (× C*)", "total compute (× C*)", "trial statuses"], table)


def paired(runs: list[dict[str, Any]], methods: list[str]) -> tuple[str, list[str]]:
    """Per-seed normalised hypervolume at C* of every method, and for each pair of methods the paired
    difference over the seeds both have; returns (markdown, one 'where X does not win' line per losing pair)."""
    import numpy as np

    by = {m: {int(r["seed"]): float(r["hv_norm"]) for r in runs if r["method"] == m} for m in methods}
    seeds = sorted({s for v in by.values() for s in v})
    per_seed = C.md_table(["seed", *methods], [[s, *(f"{by[m][s]:.3f}" if s in by[m] else "–" for m in methods)]
                                               for s in seeds])
    rows, losses = [], []
    for x, y in PAIRS:
        if x not in by or y not in by:
            continue
        both = sorted(set(by[x]) & set(by[y]))
        if not both:
            continue
        d = [by[x][s] - by[y][s] for s in both]
        wins, ties = sum(v > 0 for v in d), sum(v == 0 for v in d)
        rows.append([f"{x} − {y}", len(both), C.spread(d).fmt("+.3f"), f"{wins} / {ties} / {len(both) - wins - ties}"])
        if not (float(np.median(d)) > 0 and wins >= 0.8 * len(both)):
            losses.append(f"`{x}` does not beat `{y}`: median paired Δ {float(np.median(d)):+.3f}, higher in {wins} "
                          f"of {len(both)} seeds ({ties} tied).")
    pair_md = C.md_table(["paired Δ normalised HV at C*", "seeds", "Δ (median, IQR, min–max)",
                          "higher / tied / lower"], rows)
    return per_seed + "\n\n" + pair_md, losses


def plots(runs: list[dict[str, Any]], trials: Any, methods: list[str], c_star: float, out: Path) -> None:
    import numpy as np

    fig, ax = C.plt_figure(figsize=(6, 4))
    grid = np.linspace(0, max(r["compute"] for r in runs), 60)
    for m in methods:
        rs = [r for r in runs if r["method"] == m]
        ys = np.array([[at(r["curve"][0], r["curve"][1], g) for g in grid] for r in rs])
        ax.plot(grid, np.median(ys, axis=0), label=f"{m} (median of {len(rs)})")
        ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), alpha=0.15)
    ax.axvline(c_star, color="k", lw=0.8, ls=":")
    ax.set_xlabel("training FLOPs spent by the search (all trials)")
    ax.set_ylabel("hypervolume, ref (0, 1)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "hypervolume_vs_compute.png", dpi=120)
    fronts_plot(runs, trials, methods, c_star, out / "fronts.png")


def fronts_plot(runs: list[dict[str, Any]], trials: Any, methods: list[str], c_star: float, path: Path) -> None:
    """One panel a seed: each method's trials (filled if ended by C*, hollow if after; the paper grid as crosses)
    and its front at C* (the points its hypervolume at C* counts); a last panel with each method's paired Δ
    normalised hypervolume at C* against the paper grid, seed by seed, with the 95 % t interval of the mean."""
    import math

    import numpy as np
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    from spfde_search.pareto import non_dominated

    seeds = sorted({int(r["seed"]) for r in runs})
    others = [m for m in methods if m != "paper"]
    summary = "paper" in methods and bool(others)
    n = len(seeds) + summary
    ncols = min(3, n)
    fig, axes = C.plt_figure(math.ceil(n / ncols), ncols, figsize=(4.2 * ncols, 3.4 * math.ceil(n / ncols)),
                             squeeze=False)
    color = {m: f"C{i}" for i, m in enumerate(methods)}
    norm = {(r["method"], int(r["seed"])): float(r["hv_norm"]) for r in runs}
    for ax, seed in zip(axes.flat, seeds, strict=False):
        for m in methods:
            r = next((r for r in runs if r["method"] == m and int(r["seed"]) == seed), None)
            mine = trials[(trials["method"] == m) & (trials["seed"] == seed)]
            if r is None or not len(mine):
                continue
            ok = (mine["status"] == "COMPLETED").to_numpy() & mine["full_budget"].astype(bool).to_numpy()
            by_c = ended_by(mine, r["curve"][0], c_star)
            early, late = by_c & ok, ~by_c & ok
            mk, sz = ("X", 46) if m == "paper" else ("o", 22)
            d = mine[early]
            ax.scatter(d["flops_ratio"], 100 * d["test_accuracy"], marker=mk, s=sz, color=color[m],
                       label=f"{m}: {norm.get((m, seed), float('nan')):.3f}")
            if late.any():
                d2 = mine[late]
                ax.scatter(d2["flops_ratio"], 100 * d2["test_accuracy"], marker=mk, s=sz, facecolors="none",
                           edgecolors=color[m], linewidths=0.9)
            if len(d):
                f = d[non_dominated(d["test_accuracy"], d["flops_ratio"])].sort_values("flops_ratio")
                ax.step(f["flops_ratio"], 100 * f["test_accuracy"], where="post", lw=1.1, color=color[m])
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator([0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"seed {seed} (normalised HV at C* in the legend)", fontsize=8)
        ax.set_xlabel("training FLOPs / dense (log)", fontsize=8)
        ax.set_ylabel("test accuracy %", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="best", title="hollow: ended after C*", title_fontsize=6)
    if summary:
        ax = axes.flat[len(seeds)]
        for i, m in enumerate(others):
            both = [s for s in seeds if (m, s) in norm and ("paper", s) in norm]
            d = np.array([norm[(m, s)] - norm[("paper", s)] for s in both])
            if not d.size:
                continue
            xs = i + np.linspace(-0.12, 0.12, d.size)
            ax.scatter(xs, d, s=18, color=color[m])
            for x, s, v in zip(xs, both, d, strict=True):
                ax.annotate(str(s), (x, v), fontsize=6, xytext=(3, 0), textcoords="offset points")
            if d.size >= 2:
                ax.errorbar([i + 0.3], [d.mean()], yerr=[C.t_halfwidth(d)], fmt="s", color="k", capsize=4, ms=4)
        ax.axhline(0, color="k", lw=0.8, ls=":")
        ax.set_xticks(range(len(others)), [f"{m} − paper" for m in others], fontsize=8)
        ax.set_xlim(-0.6, len(others) - 0.4)
        ax.set_ylabel("paired Δ normalised HV at C*", fontsize=8)
        ax.set_title("per seed (labelled); black: mean, 95 % t interval", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ---------------------------------------------------------------- running


def run_searches(a: Any, out: Path, key: str, todo: list[tuple[str, int]]) -> tuple[list[str], float]:
    """Run the ``todo`` searches seed-major, storing each as it finishes; returns (skipped for time, seconds)."""
    from spfde_search.search import SearchSettings

    base = base_config(a)

    def make(m: str, seed: int, name: str, storage: Path) -> tuple[Any, Any, dict[str, Any]]:
        space, sampler, es = METHODS[m]
        kw: dict[str, Any] = dict(  # as a dict: mypy does not see the defaults of the pydantic fields
            name=name, space=space, base_config=base, sampler=sampler, seed=seed,
            num_samples=a.moasha_trials if es == "moasha" else a.trials, early_stopping=es,
            grace_period=a.grace_period, reduction_factor=a.reduction_factor,
            max_concurrent=a.concurrent, cpus_per_trial=1.0, num_cpus=a.concurrent, storage_path=str(storage),
            gpus_per_trial=(1.0 / a.concurrent) if a.device == "cuda" else 0.0,
        )
        return SearchSettings(**kw), None, {}

    return run_stored(a, out, key, todo, make)


def run_stored(a: Any, out: Path, key: str, todo: list[tuple[str, int]], make: Any) -> tuple[list[str], float]:
    """Run (method, seed) searches in order on one embedded Ray, appending each to the store as it finishes (a
    failed search is stored as a result, with what its trials table holds); ``make(method, seed, name, storage)``
    gives (``SearchSettings``, a ``Prepared`` or None, extra row fields). Returns (skipped for time, seconds).
    Shared by ``search_heldout.py``."""
    # run from a checkout: the repository's search_spaces/ and trainables/ must win over whatever the installed
    # distribution maps; PYTHONPATH carries this to Ray's worker processes.
    root = str(C.REPO_ROOT)
    sys.path.insert(0, root)
    os.environ["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    import hashlib

    import ray

    from spfde_search.search import drive_search, load_trials

    storage = out / "searches"
    storage.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha256(key.encode()).hexdigest()[:8]
    if not ray.is_initialized():
        ray.init(num_cpus=a.concurrent, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
                 object_store_memory=200 * 1024**2)
    t0 = time.perf_counter()
    skipped: list[str] = []
    try:
        for m, seed in todo:
            if a.time_budget_min is not None and time.perf_counter() - t0 > 60 * a.time_budget_min:
                skipped.append(f"{m} seed {seed}")
                continue
            name = f"{m.replace('+', '_')}_s{seed}_{tag}"
            shutil.rmtree(storage / name, ignore_errors=True)  # a search cut short is run again from its start
            ts = time.perf_counter()
            error, stop, extra = "", "", {}
            try:
                settings, prepared, extra = make(m, seed, name, storage)
                outcome = drive_search(settings, verbose=0, prepared=prepared)
                df, stop = outcome.table.copy(), outcome.stop_reason
            except Exception as e:  # one failed search is a result, not a crash of the benchmark
                error = f"{type(e).__name__}: {e}"
                print(f"{name}: search failed: {error}")
                try:
                    df = load_trials(str(storage / name))
                except Exception:
                    continue
            df["method"], df["seed"], df["settings"] = m, seed, key
            spent, secs, hv = curve(df)
            counts = {str(k): int(v) for k, v in df["status"].value_counts().items()}
            row = {"method": m, "seed": seed, "settings": key, "trials": len(df), "counts": json.dumps(counts),
                   "compute": float(spent[-1]) if len(spent) else 0.0,
                   "trial_seconds": float(secs[-1]) if len(secs) else 0.0,
                   "hv_final": float(hv[-1]) if len(hv) else 0.0, "seconds": time.perf_counter() - ts,
                   "error": error, "stop_reason": stop, "concurrent": a.concurrent, "threads": a.threads,
                   "device": a.device, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
            append(out, df, row)
            shutil.rmtree(storage / name, ignore_errors=True)  # its rows are stored; Ray's folder is 10 MB a search
            print(f"{name}: {counts}, compute {row['compute']:.3g} FLOPs, test HV (ref 0, 1) {row['hv_final']:.4f} "
                  f"({row['seconds']:.0f} s; {time.perf_counter() - t0:.0f} s elapsed)", flush=True)
    finally:
        ray.shutdown()
    return skipped, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        import spfde_search.search  # noqa: F401
    except ImportError as e:
        print(f"not measured: the search module is not importable ({e})")
        return 0

    info = C.machine_info(a.device)
    out = C.output_dir(NAME, a)
    key = settings_key(a)
    done = done_keys(load(out, "searches"), key)
    wanted = [(m, s) for s in range(a.seeds) for m in a.methods]  # seed-major: a time cut leaves every method
    todo = [] if a.report else [w for w in wanted if w not in done]  # with as many seeds as possible
    already = [w for w in wanted if w in done]
    if already:
        print(f"skipped {len(already)} search(es) already stored with these settings: "
              + ", ".join(f"{m} seed {s}" for m, s in already))
    skipped, elapsed = run_searches(a, out, key, todo) if todo else ([], 0.0)

    searches, trials = load(out, "searches"), load(out, "trials")
    if not len(searches) or "settings" not in searches.columns or not (searches["settings"] == key).any():
        print("no search stored with these settings")
        return 1
    searches, trials = searches[searches["settings"] == key], trials[trials["settings"] == key]
    methods = [m for m in METHODS if m in set(searches["method"])]  # every stored method, not only --methods
    runs, c_star, seed_hv = evaluate(searches, trials, methods)
    derived = ["hv_at_c", "hv_norm", "paper_points", "paper_dominated", "paper_hv", "compute_to_paper_hv", "c_star"]
    report = {(r["method"], int(r["seed"])): r for r in runs}
    everything = load(out, "searches")  # the latest report's numbers next to the raw rows; other settings keep theirs
    for i, row in everything.iterrows():
        r = report.get((row["method"], int(row["seed"]))) if row["settings"] == key else None
        for col in derived:
            if r is not None:
                everything.loc[i, col] = r[col]
            elif col not in everything.columns:
                everything[col] = float("nan")
    store(out, "searches", everything)
    plots(runs, trials, methods, c_star, out)

    for r in runs:
        print(f"{r['method']:14s} seed {r['seed']}: compute {r['compute']:.3g}, HV@C* {r['hv_at_c']:.4f} "
              f"(norm {r['hv_norm']:.3f}), dominates {r['paper_dominated']}/{r['paper_points']} paper-grid points, "
              f"compute to paper HV {r['compute_to_paper_hv']:.3g}")
    print(f"C* = {c_star:.4g} training FLOPs over {', '.join(methods)}; ran {len(todo) - len(skipped)} search(es) "
          f"in {elapsed:.0f} s")
    verdict = _verdict(runs)
    print(verdict)
    if "tpe" in methods and "paper" in methods:
        print(_grid_verdict(runs))
    pair_md, losses = paired(runs, methods)
    sub = [m for m in methods if m in (a.also_over or [])]
    sub_md: list[str] = []
    if sub and sub != methods:
        sruns, sc, _ = evaluate(searches, trials, sub)
        sub_md = ["", f"The same over only {', '.join(f'`{m}`' for m in sub)} (C* and normalisation computed over "
                  f"these alone): C* = {sc:.4g} training FLOPs{' (unchanged)' if sc == c_star else ''}; "
                  + _verdict(sruns), "", method_table(sruns, sub, sc)]
    if not C.should_append(a):
        return 0
    counts = ", ".join(f"{m} × {sum(r['method'] == m for r in runs)}" for m in methods)
    conc = " or ".join(str(c) for c in sorted(set(searches.get("concurrent", [a.concurrent]))))
    body = [
        f"Setting: {a.model}, Fashion-MNIST {a.train_subset} training images, "
        f"{'the full 10,000-image' if a.test_subset is None else a.test_subset} test set, {a.epochs} epochs, "
        f"Δτ = {a.update_interval} (the paper grid's; the joint space searches its own range), batch 128, "
        f"device {a.device}; {a.trials} trained trials per search without early stopping, "
        f"{a.moasha_trials} with MOASHA (rungs at epochs {a.grace_period}·{a.reduction_factor}^k); "
        f"{len(runs)} stored searches of these settings ({counts}); {conc} trials at a time on one embedded Ray. "
        f"Compared at equal compute C* = {c_star:.4g} training FLOPs (the smallest total any stored search of these "
        "settings spent, over all the methods listed); hypervolume of (test accuracy, training-FLOPs ratio to dense), "
        "reference (0, 1), over COMPLETED full-budget trials ended by C*; 'normalised' divides by the hypervolume of "
        "the pooled front of all completed trials of all methods with the same seed ("
        + ", ".join(f"seed {s}: {v:.4f}" for s, v in seed_hv.items()) + ").",
        "",
        "Verdict rule (fixed before measuring): MOASHA becomes the default for searches of ≥ 8 epochs iff, with ≥ 5 "
        "paired seeds, `tpe+moasha` has a higher median normalised hypervolume at C* than `tpe` and is higher in at "
        "least 80 % of the paired seeds.",
        "",
        method_table(runs, methods, c_star),
        "",
        f"- {verdict}",
        "",
        "Search-vs-grid rule (fixed before measuring): with ≥ 5 paired seeds, Δ = `tpe` − `paper` normalised "
        "hypervolume at C* with its 95% t interval; the search beats the grid iff the interval lies above 0, the grid "
        "beats the search iff it lies below 0, otherwise not shown.",
        "",
        f"- {_grid_verdict(runs)}" if "tpe" in methods and "paper" in methods else "- No search-vs-grid verdict: "
        "`tpe` and `paper` are not both stored.",
        "",
        "Per seed (normalised hypervolume at C*) and paired differences (seed s of every method shares sampler seed s):",
        "",
        pair_md,
        "",
        *(f"- {line}" for line in losses),
        *sub_md,
        "",
        "- Curves of hypervolume against compute (median and min–max over seeds): `hypervolume_vs_compute.png`.",
    ]
    if skipped:
        body.append(f"- Not run (time budget): {', '.join(skipped)}.")
    body += [f"- Raw rows: `{C.rel_path(out)}` (trials.*, searches.*, fronts.png); this invocation ran "
             f"{len(todo) - len(skipped)} search(es) in {elapsed / 60:.1f} min and reused {len(already)} stored; the "
             f"{len(runs)} stored searches took {searches['seconds'].sum() / 60:.1f} min of wall time in all.",
             f"- {C.NO_GPU_NOTE}." if a.device == "cpu" else ""]
    from paper_claims import write_section

    write_section(a.results_md, f"{NAME}:{C.rel_path(out)}", f"Search quality at equal compute ({a.device})", info,
                  "\n".join(body))
    return 0


def _verdict(runs: list[dict[str, Any]]) -> str:
    """Apply the rule stated in the module docstring to the paired seeds of tpe+moasha and tpe."""
    ms = {r["seed"]: r["hv_norm"] for r in runs if r["method"] == "tpe+moasha"}
    no = {r["seed"]: r["hv_norm"] for r in runs if r["method"] == "tpe"}
    seeds = sorted(set(ms) & set(no))
    if len(seeds) < 5:
        return (f"No verdict: {len(seeds)} paired seed(s) of tpe+moasha and tpe (the rule needs 5); the default "
                "early stopping stays `none`.")
    import numpy as np

    diff = [ms[s] - no[s] for s in seeds]
    wins = sum(d > 0 for d in diff)
    med_ms, med_no = float(np.median([ms[s] for s in seeds])), float(np.median([no[s] for s in seeds]))
    ok = med_ms > med_no and wins >= 0.8 * len(seeds)
    return (f"Verdict: tpe+moasha median normalised HV at C* {med_ms:.3f} vs tpe {med_no:.3f}, higher in {wins} of "
            f"{len(seeds)} paired seeds -> MOASHA {'IS' if ok else 'is NOT'} made the default for searches of ≥ 8 epochs.")


def _grid_verdict(runs: list[dict[str, Any]], search: str = "tpe", level: float = 0.95) -> str:
    """Apply the search-vs-grid rule of the module docstring to the paired seeds of ``search`` and ``paper``."""
    sv = {int(r["seed"]): float(r["hv_norm"]) for r in runs if r["method"] == search}
    gv = {int(r["seed"]): float(r["hv_norm"]) for r in runs if r["method"] == "paper"}
    seeds = sorted(set(sv) & set(gv))
    if not seeds:
        return f"No search-vs-grid verdict: no paired seeds of {search} and paper."
    import numpy as np

    d = np.array([sv[s] - gv[s] for s in seeds])
    wins = int((d > 0).sum())
    head = f"{search} − paper normalised HV at C*: {d.mean():+.3f}"
    if d.size < 2:
        return f"No search-vs-grid verdict: {d.size} paired seed (the rule needs 5); {head}."
    h = C.t_halfwidth(d, level)
    lo, hi = float(d.mean()) - h, float(d.mean()) + h
    head += f" ({level:.0%} t [{lo:+.3f}, {hi:+.3f}], higher in {wins} of {d.size} paired seeds)"
    if d.size < 5:
        return f"No search-vs-grid verdict yet: {d.size} paired seeds (the rule needs 5); {head}."
    word = ("the search BEATS the paper's grid" if lo > 0 else "the paper's grid BEATS the search" if hi < 0
            else "not shown either way (the interval includes 0)")
    return f"Search-vs-grid verdict: {head} -> {word}."


if __name__ == "__main__":
    raise SystemExit(main())
