"""The epoch-rung fidelity part of ``search_heldout.py`` (issue 25): does a config's validation accuracy early in a
run, or at the end of a shorter complete schedule, rank configs as its full run does?

``--fidelity-configs`` budget-space configs at the search's size, seed 0 (``draw_configs``: targets stratified on
the log-cost axis by the space's own start, ``BudgetSpace.stratified_points``, a randomly shifted van der Corput
sequence; each split drawn at random with a seed fixed by its index, the first split that meets its target kept; so
the first k configs are the same whatever the count) are trained

- for ``--epochs`` epochs, evaluated (validation and test) every ``--fidelity-every`` epochs and at MOASHA's default
  rungs (grace period 1, η 2: epochs 1, 2, 4, 8, 16, 32; ``scheduler.rung_epochs``);
- as complete ``--fidelity-short`` schedules: the same config with fewer epochs, so its own cosine; where the
  shorter schedule cannot reach the config's freezing target, the target is capped at the most it can (``capped``).

Each run is one process (``--concurrent`` at a time, spawned); its rows are appended to ``fidelity.parquet`` as it
ends, keyed by the settings and (config, schedule), so a rerun skips them and a Ctrl-C loses only the runs in
progress. The report: Spearman ρ (``scipy.stats.spearmanr``) of validation accuracy at each measured epoch vs at the
last, and of each shorter schedule's final validation accuracy vs the full run's, with a 95 % percentile bootstrap
interval over the configs (2,000 resamples, seeded).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import _common as C
import numpy as np
import search_quality as sq

STEM = "fidelity"
SEED = 0
MOASHA_RUNGS = (1, 2)  # the default grace period and reduction factor of --early-stopping moasha


def fidelity_key(a: Any) -> str:
    keys = ("model", "train_subset", "test_subset", "val_size", "epochs", "update_interval", "fidelity_every")
    return json.dumps({**{k: getattr(a, k) for k in keys}, "seed": SEED}, sort_keys=True)


def eval_epochs(a: Any) -> list[int]:
    """The epochs the full run evaluates: every ``--fidelity-every`` and MOASHA's default rungs (the last too)."""
    from spfde_search.search.scheduler import rung_epochs

    return sorted({*range(a.fidelity_every, a.epochs + 1, a.fidelity_every), *rung_epochs(a.epochs, *MOASHA_RUNGS),
                   a.epochs})


def draw_configs(a: Any, base: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """``n`` budget-space configs (see the module docstring): {config_id, target, params}."""
    from search_spaces import TARGET, resolve_space
    from spfde_search.config import Config
    from spfde_search.search.optuna_search import SPLIT_DRAWS, reaching_split

    space = resolve_space("budget", Config.parse(base))
    out = []
    for i, point in enumerate(space.fn.stratified_points(n, SEED)):
        t = float(point[TARGET])
        probe = reaching_split(space.fn, base, t, range(10_000 * i, 10_000 * i + SPLIT_DRAWS))
        if probe is not None:
            out.append({"config_id": i, "target": t, "params": probe.params})
    return out


def schedule_config(full: dict[str, Any], epochs: int) -> tuple[dict[str, Any] | None, bool]:
    """The config as a complete ``epochs``-epoch schedule: (config or None if it cannot run, freezing capped?)."""
    from search_spaces import max_freezing_saving, resolve_saving_fraction
    from spfde_search.config import Config, ConfigError, apply_overrides
    from spfde_search.method.flops import predict

    cfg = apply_overrides(full, {"train.epochs": epochs, "train.eval_every": epochs})
    try:
        predict(Config.parse(cfg))
        return cfg, False
    except ConfigError:
        if not float(cfg["freezing"].get("target_flops_reduction") or 0):
            return None, False
    try:
        x = resolve_saving_fraction(1.0, max_freezing_saving(Config.parse(cfg)))
        cfg = apply_overrides(cfg, {"freezing.target_flops_reduction": x})
        predict(Config.parse(cfg))
        return cfg, True
    except ConfigError:
        return None, True


def train_run(cfg: dict[str, Any], evals: list[int]) -> list[dict[str, Any]]:
    """Train one config (in a worker process); one row per evaluated epoch, validation and test."""
    from spfde_search.config import Config
    from spfde_search.trainer import Trainer

    t0 = time.process_time()
    trainer = Trainer(Config.parse(cfg), eval_epochs=evals)
    rows = []
    for m in trainer.epochs():
        if m.val_accuracy is not None:
            test = m.test_accuracy if m.test_accuracy is not None else trainer.evaluate("test")
            rows.append({"epoch": m.epoch, "val_accuracy": m.val_accuracy, "test_accuracy": test,
                         "flops_ratio": m.flops_ratio, "wall_seconds": m.wall_seconds,
                         "cpu_seconds": time.process_time() - t0})
    return rows


def run(a: Any, out: Path, base: dict[str, Any]) -> None:
    """Train every (config, schedule) of ``base`` (the search's base config, seed 0) not stored yet,
    ``a.concurrent`` at a time, storing each as it ends."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import pandas as pd

    from spfde_search.config import apply_overrides

    key = fidelity_key(a)
    stored = sq.load(out, STEM)
    done = set() if not len(stored) else {
        (int(c), int(s)) for c, s, k in zip(stored["config_id"], stored["schedule"], stored["settings"], strict=True)
        if k == key}
    jobs = []
    for c in draw_configs(a, base, a.fidelity_configs):
        full = apply_overrides(base, c["params"])
        for sched in [a.epochs, *a.fidelity_short]:
            if (c["config_id"], sched) in done:
                continue
            cfg, capped = (full, False) if sched == a.epochs else schedule_config(full, sched)
            evals = eval_epochs(a) if sched == a.epochs else []
            meta = {"settings": key, "config_id": c["config_id"], "schedule": sched, "target": c["target"],
                    "params": json.dumps(c["params"], sort_keys=True), "capped": capped}
            jobs.append((cfg, evals, meta))
    print(f"fidelity: {len(done)} run(s) stored, {len(jobs)} to train")
    t0 = time.perf_counter()

    def add(rows: list[dict[str, Any]], meta: dict[str, Any], status: str) -> None:
        new = pd.DataFrame([{**meta, "status": status, **r} for r in rows] or [{**meta, "status": status}])
        sq.store(out, STEM, pd.concat([sq.load(out, STEM), new], ignore_index=True))

    for cfg, _, meta in jobs:
        if cfg is None:  # cannot run at this length even with the freezing target capped
            add([], meta, "infeasible")
    runnable = [j for j in jobs if j[0] is not None]
    ex = ProcessPoolExecutor(a.concurrent, mp_context=mp.get_context("spawn"))
    try:
        futs = {}
        for cfg, evals, meta in runnable:
            futs[ex.submit(train_run, cfg, evals)] = meta
        for f in as_completed(futs):
            meta = futs[f]
            if f.cancelled():
                continue
            try:
                add(f.result(), meta, "completed")
            except Exception as e:  # one failed run is a result
                add([], {**meta, "error": f"{type(e).__name__}: {e}"}, "failed")
            print(f"fidelity: config {meta['config_id']} × {meta['schedule']} epochs stored "
                  f"({time.perf_counter() - t0:.0f} s elapsed)", flush=True)
            over = a.time_budget_min is not None and time.perf_counter() - t0 > 60 * a.time_budget_min
            if over and sum(g.cancel() for g in futs):  # the runs not started wait for a rerun; running ones are kept
                print("fidelity: time budget spent; the runs not started are left for a rerun")
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def spearman(x: Any, y: Any) -> float:
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def boot_interval(x: Any, y: Any, n: int = 2000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of Spearman ρ, resampling the configs (seeded)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rng = np.random.default_rng(SEED)
    vals = [spearman(x[i], y[i]) for i in (rng.integers(0, x.size, x.size) for _ in range(n))]
    v = np.array([r for r in vals if r == r])
    if v.size < n / 2:
        return float("nan"), float("nan")
    return float(np.quantile(v, (1 - level) / 2)), float(np.quantile(v, (1 + level) / 2))


def rho_rows(d: Any, a: Any) -> list[tuple[str, int, float, tuple[float, float]]]:
    """(comparison, configs, ρ, interval): each measured epoch's validation accuracy, then each shorter schedule's
    final one, against the full run's final validation accuracy."""
    full = d[(d["schedule"] == a.epochs) & (d["status"] == "completed")]
    last = full[full["epoch"] == a.epochs].set_index("config_id")["val_accuracy"]
    out = []
    first = [e for e in (*MOASHA_RUNGS[:1], *a.fidelity_at) if e < a.epochs]
    rest = sorted(set(full["epoch"].astype(int)) - set(first) - {a.epochs})
    for e in [*dict.fromkeys(first), *rest]:
        at = full[full["epoch"] == e].set_index("config_id")["val_accuracy"]
        both = last.index.intersection(at.index)
        if len(both):
            x, y = at[both].to_numpy(), last[both].to_numpy()
            out.append((f"validation at epoch {e} vs epoch {a.epochs}", len(both), spearman(x, y), boot_interval(x, y)))
    for s in a.fidelity_short:
        sh = d[(d["schedule"] == s) & (d["status"] == "completed") & (d["epoch"] == s)].set_index("config_id")
        both = last.index.intersection(sh.index)
        if len(both):
            x, y = sh.loc[both, "val_accuracy"].to_numpy(), last[both].to_numpy()
            out.append((f"complete {s}-epoch schedule vs the {a.epochs}-epoch run (final validation)", len(both),
                        spearman(x, y), boot_interval(x, y)))
    return out


def report_lines(a: Any, out: Path) -> list[str]:
    """The fidelity part of the section (the rule first), from the stored rows; [] when none are stored."""
    d = sq.load(out, STEM)
    if not len(d):
        return []
    d = d[d["settings"] == fidelity_key(a)]
    if not len(d):
        return []
    rows = rho_rows(d, a)
    n_cfg = d["config_id"].nunique()
    rho1 = next((r[2] for r in rows if r[0].startswith(f"validation at epoch {MOASHA_RUNGS[0]} ")), float("nan"))
    status = d.drop_duplicates(["config_id", "schedule"])
    capped = int(status["capped"].astype(bool).sum())
    not_ok = status[status["status"] != "completed"]
    word = ("not measured" if rho1 != rho1 else "PASSES" if rho1 >= 0.8 else "FAILS")
    fmt = lambda v: f"{v:.3f}" if v == v else "–"  # noqa: E731
    return [
        "",
        "**Epoch-rung fidelity.** Rule (fixed before measuring): MOASHA may become the default only where Spearman ρ "
        f"≥ 0.8 at its first rung (epoch {MOASHA_RUNGS[0]} with the default grace period; rungs at 1·2^k) AND it "
        "wins the paired rule above; otherwise the docs say why not. This run has no MOASHA arm, so only the rung "
        "half is measured here.",
        "",
        f"{n_cfg} budget-space configs (seed 0; targets stratified on the log-cost axis) at the size above, trained "
        f"for {a.epochs} epochs with validation and test evaluated at epochs {', '.join(map(str, eval_epochs(a)))}, "
        f"and as complete {', '.join(map(str, a.fidelity_short))}-epoch schedules (their own cosine"
        f"{f'; {capped} with the freezing target capped at what the shorter schedule reaches' if capped else ''}). "
        "Spearman ρ over the configs, 95 % percentile bootstrap interval over them:",
        "",
        C.md_table(["comparison", "configs", "Spearman ρ", "95 % bootstrap"],
                   [[c, n, fmt(r), f"[{fmt(i[0])}, {fmt(i[1])}]"] for c, n, r, i in rows]),
        "",
        f"- MOASHA's first rung: ρ = {fmt(rho1)} -> the rung rule {word}"
        + (f" (partial: {n_cfg} of {a.fidelity_configs} configs)" if n_cfg < a.fidelity_configs else "") + ".",
        *([f"- Not completed: {', '.join(f'config {c} × {s} epochs ({st})' for c, s, st in zip(not_ok['config_id'], not_ok['schedule'], not_ok['status'], strict=True))}."]
          if len(not_ok) else []),
        f"- Fidelity runs: {len(status)} stored, {d.groupby(['config_id', 'schedule'])['cpu_seconds'].max().sum() / 3600:.2f} "
        "CPU-hours.",
    ]
