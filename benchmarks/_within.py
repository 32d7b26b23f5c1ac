"""The within-budget fidelity part of ``search_heldout.py`` (issue 31, part 1): among configs of the SAME training
FLOPs, does a complete short schedule rank them as the full one does?

The earlier fidelity part (``_fidelity.py``) found complete 10- and 20-epoch schedules ranking budget-space configs
as 40 epochs do (ρ 0.97), but its 12 configs spread over 0.03-0.41 of dense, so much of that ρ is "cheaper configs
are less accurate". Successive halving helps only if short schedules rank configs of similar cost, which is what
this part measures.

Design (fixed before measuring; ``RULE`` is printed before any number):

- ``--within-levels`` target training-FLOPs ratios (default 0.03, 0.08, 0.2 of dense); at each,
  ``--within-configs`` budget-space configs (default 8) drawn at that target: random splits of the budget space
  with the target fixed (``search_spaces.sample_random``), each kept only if it is feasible and lands within the
  space's tolerance of the target (``optuna_search.reaching_split``), duplicates skipped; the draw uses seed-0's
  base config and seeds fixed by (level, index), so it is the same on every rerun.
- every config is trained as complete schedules of ``--within-schedules`` epochs (default E/8, E/4, E/2 = 5, 10, 20)
  and E = ``--epochs`` (40), each shortened by the shrink rule (``spfde_search.search.rungs.shrink``: epoch-valued
  fields scale, fractions and counts stay, an unreachable freezing target is capped and recorded), with
  ``--within-seeds`` training seeds (default 0 and 1; seed s also draws its training subset and validation split,
  as in the searches), validation and test evaluated once, at the end.
- Rows are stored as runs end (``within.parquet``, keyed by the settings and (level, config, seed, schedule)), so a
  rerun skips them; seed 0's runs all come before seed 1's.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import _common as C
import _fidelity as F
import numpy as np
import search_quality as sq

STEM = "within"
DRAW_SEED = 0
RULE = (
    "**Rule** (fixed before measuring). For each level, seed and short schedule s, Spearman ρ over the level's "
    "configs of the validation accuracy after the complete s-epoch schedule vs after the full E-epoch one (same "
    "seed); ρ̄(s) is its mean over levels and seeds, with a 95 % percentile bootstrap interval (configs resampled "
    "within each level, the same resample for both seeds, 2,000 resamples, seeded). The first rung of "
    "`--fidelity schedule` is the shortest s with ρ̄(s) ≥ 0.6, so its default grace period is s/E of the schedule "
    "(reduction factor 2: the measured schedules are a factor 2 apart). If no s < E reaches 0.6 but E/2 reaches "
    "0.4, the first rung is E/2. If ρ̄ < 0.4 at every s < E, within-level fidelity is too low: the section says so "
    "plainly and `--fidelity schedule` is not turned on by default whatever the held-out verdicts say. The noise "
    "ceiling is ρ between the two seeds' full runs of the same configs; the top-third overlap (the share of a "
    "level's top ⌈n/3⌉ by the full run that the short schedule also puts in its top ⌈n/3⌉) is reported beside ρ. "
    "Test accuracy is stored and never read by the rule.")


def trainer_version() -> str:
    """The commit the trainer ran from (stored with every row: a verdict never mixes trainers); "+dirty" when the
    method or trainer sources differ from it."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "spfde_search", "trainables"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


# pinned: the rows are trained over several sessions whose machines differ (AMD with native bf16, where ``auto``
# picks bf16 autocast, and Intel without it, fp32); the first 48 rows were fp32, so all are
PRECISION = "fp32"


def within_key(a: Any) -> str:
    keys = ("model", "train_subset", "test_subset", "val_size", "epochs", "update_interval", "within_levels",
            "within_configs")
    return json.dumps({k: getattr(a, k) for k in keys}, sort_keys=True)


def draw_level(a: Any, base: dict[str, Any], level_index: int, target: float) -> list[dict[str, Any]]:
    """``a.within_configs`` distinct budget-space configs at ``target`` (see the module docstring)."""
    from search_spaces import resolve_space
    from spfde_search.config import Config
    from spfde_search.search.optuna_search import reaching_split

    space = resolve_space("budget", Config.parse(base))
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i in range(a.within_configs * 20):
        if len(out) == a.within_configs:
            break
        start = 1_000_000 * (level_index + 1) + 1_000 * i
        probe = reaching_split(space.fn, base, target, range(start, start + 200))
        if probe is None:
            continue
        k = json.dumps(probe.params, sort_keys=True, default=str)
        if k not in seen:
            seen.add(k)
            out.append({"level": target, "config_id": len(out), "params": probe.params})
    return out


def jobs(a: Any, base_of: Any) -> list[tuple[dict[str, Any] | None, dict[str, Any]]]:
    """(config or None if it cannot run, meta) for every (seed, level, config, schedule), seed-major."""
    from spfde_search.config import ConfigError, apply_overrides
    from spfde_search.search.rungs import shrink

    key = within_key(a)
    base0 = base_of(DRAW_SEED)
    draws = [c for li, t in enumerate(a.within_levels) for c in draw_level(a, base0, li, t)]
    out: list[tuple[dict[str, Any] | None, dict[str, Any]]] = []
    for seed in a.within_seeds:
        base = base_of(seed)
        for c in draws:
            full = apply_overrides(base, c["params"])
            for sched in [*a.within_schedules, a.epochs]:
                meta = {"settings": key, "level": c["level"], "config_id": c["config_id"], "seed": seed,
                        "schedule": sched, "params": json.dumps(c["params"], sort_keys=True, default=str),
                        "capped_from": float("nan"), "precision": PRECISION}
                try:
                    s = shrink(full, sched)
                    cfg = apply_overrides(s.config, {"train.eval_every": sched, "train.precision": PRECISION})
                    meta["capped_from"] = s.capped_from if s.capped else float("nan")
                    meta["freezing_target"] = float(cfg["freezing"].get("target_flops_reduction") or 0.0)
                    meta["update_interval"] = int(cfg["train"]["update_interval"])
                    out.append((cfg, meta))
                except ConfigError as e:
                    out.append((None, {**meta, "error": str(e)}))
    return out


def run(a: Any, out: Path, base_of: Any) -> None:
    """Train every stored-missing run, ``a.concurrent`` at a time, storing each as it ends."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import pandas as pd

    stored = sq.load(out, STEM)
    done = set() if not len(stored) else {
        (float(lv), int(c), int(s), int(e)) for lv, c, s, e, k in zip(
            stored["level"], stored["config_id"], stored["seed"], stored["schedule"], stored["settings"],
            strict=True) if k == within_key(a)}
    todo = [(cfg, m) for cfg, m in jobs(a, base_of)
            if (float(m["level"]), m["config_id"], m["seed"], m["schedule"]) not in done]
    print(f"within: {len(done)} run(s) stored, {len(todo)} to train", flush=True)

    def add(rows: list[dict[str, Any]], meta: dict[str, Any], status: str) -> None:
        new = pd.DataFrame([{**meta, "status": status, **r} for r in rows] or [{**meta, "status": status}])
        sq.store(out, STEM, pd.concat([sq.load(out, STEM), new], ignore_index=True))

    version = trainer_version()
    todo = [(cfg, {**m, "trainer": version}) for cfg, m in todo]
    for cfg, meta in todo:
        if cfg is None:
            add([], meta, "infeasible")
    t0 = time.perf_counter()
    ex = ProcessPoolExecutor(a.concurrent, mp_context=mp.get_context("spawn"))
    try:
        futs = {ex.submit(F.train_run, cfg, [int(meta["schedule"])]): meta for cfg, meta in todo if cfg is not None}
        for n, f in enumerate(as_completed(futs), 1):
            meta = futs[f]
            try:
                add(f.result(), meta, "completed")
            except Exception as e:  # one failed run is a result
                add([], {**meta, "error": f"{type(e).__name__}: {e}"}, "failed")
            print(f"within: {n}/{len(futs)} level {meta['level']} config {meta['config_id']} seed {meta['seed']} "
                  f"× {meta['schedule']} epochs stored ({time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- the report


def _final(d: Any) -> Any:
    """One row per (level, config, seed, schedule): its final validation accuracy (completed runs only)."""
    ok = d[d["status"] == "completed"]
    ok = ok[ok["epoch"] == ok["schedule"]]
    return ok.set_index(["level", "seed", "schedule", "config_id"])["val_accuracy"].sort_index()


def _top_overlap(x: np.ndarray, y: np.ndarray) -> float:
    k = math.ceil(x.size / 3)
    return len(set(np.argsort(-x)[:k]) & set(np.argsort(-y)[:k])) / k


def within_stats(d: Any, a: Any, resample: dict[float, np.ndarray] | None = None) -> dict[int, dict[str, float]]:
    """Per short schedule s: mean ρ and top-third overlap over (level, seed); ``ceiling``: mean ρ of the two
    seeds' full runs; ``pooled``: ρ over all levels' configs together (seed-mean). ``resample`` maps a level to
    the config ids to use (a bootstrap draw, with repeats)."""
    v = _final(d)
    out: dict[int, dict[str, float]] = {}
    levels = sorted({float(x) for x in d["level"]})
    seeds = sorted({int(x) for x in d["seed"]})

    def pair(level: float, sa: tuple[int, int], sb: tuple[int, int]) -> tuple[Any, Any] | None:
        """Aligned final accuracies of (seed, schedule) ``sa`` and ``sb`` over the level's configs (the bootstrap
        draw's ids, with repeats, where given); NaN where a run is not stored."""
        try:
            a_, b_ = v.loc[(level, *sa)], v.loc[(level, *sb)]
        except KeyError:
            return None
        ids = resample[level] if resample is not None else np.array(sorted(set(a_.index) | set(b_.index)))
        return a_.reindex(ids).to_numpy(dtype=float), b_.reindex(ids).to_numpy(dtype=float)

    for sched in [*a.within_schedules, a.epochs]:
        rhos, overl = [], []
        for lv in levels:
            for sd in seeds:
                got = pair(lv, (sd, sched), (sd, a.epochs))
                if got is None:
                    continue
                x, y = got
                ok = ~(np.isnan(x) | np.isnan(y))
                if ok.sum() >= 3:
                    rhos.append(F.spearman(x[ok], y[ok]))
                    overl.append(_top_overlap(x[ok], y[ok]))
        rr = [r for r in rhos if r == r]
        out[sched] = {"rho": float(np.mean(rr)) if rr else float("nan"), "cells": len(rr),
                      "overlap": float(np.mean(overl)) if overl else float("nan")}
    ceil = []
    if len(seeds) >= 2:
        for lv in levels:
            got = pair(lv, (seeds[0], a.epochs), (seeds[1], a.epochs))
            if got is not None:
                x, y = got
                ok = ~(np.isnan(x) | np.isnan(y))
                if ok.sum() >= 3:
                    ceil.append(F.spearman(x[ok], y[ok]))
    ceil = [r for r in ceil if r == r]
    out[0] = {"rho": float(np.mean(ceil)) if ceil else float("nan"), "cells": len(ceil), "overlap": float("nan")}
    return out


def boot(d: Any, a: Any, n: int = 2000) -> dict[int, tuple[float, float]]:
    """95 % percentile bootstrap of each schedule's mean ρ, configs resampled within each level."""
    rng = np.random.default_rng(DRAW_SEED)
    ids = {float(lv): np.array(sorted({int(c) for c in g["config_id"]})) for lv, g in d.groupby("level")}
    draws: dict[int, list[float]] = {}
    for _ in range(n):
        res = {lv: rng.choice(c, size=c.size, replace=True) for lv, c in ids.items()}
        for s, st in within_stats(d, a, res).items():
            draws.setdefault(s, []).append(st["rho"])
    out = {}
    for s, vals in draws.items():
        v = np.array([x for x in vals if x == x])
        out[s] = ((float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))) if v.size >= n / 2
                  else (float("nan"), float("nan")))
    return out


def first_rung(stats: dict[int, dict[str, float]], a: Any) -> int | None:
    """The rule's first rung (None: within-level fidelity too low at every s < E)."""
    for s in sorted(a.within_schedules):
        if stats[s]["rho"] >= 0.6:
            return s
    half = a.epochs // 2
    return half if half in stats and stats[half]["rho"] >= 0.4 else None


def report_lines(a: Any, out: Path) -> list[str]:
    import pandas as pd

    d = sq.load(out, STEM)
    if not len(d):
        return []
    d = d[d["settings"] == within_key(a)]
    if not len(d):
        return []
    stats, ci = within_stats(d, a), boot(d, a)
    fmt = lambda v: f"{v:.3f}" if v == v else "–"  # noqa: E731
    runs = d.drop_duplicates(["level", "config_id", "seed", "schedule"])
    n_done = int((runs["status"] == "completed").sum())
    n_all = len(a.within_levels) * a.within_configs * len(a.within_seeds) * (len(a.within_schedules) + 1)
    capped = runs[runs["capped_from"].notna()]
    pooled = []
    v = _final(d)
    for s in a.within_schedules:
        rs = []
        for sd in sorted({int(x) for x in d["seed"]}):
            try:
                x, y = v.xs((sd, s), level=("seed", "schedule")), v.xs((sd, a.epochs), level=("seed", "schedule"))
            except KeyError:
                continue
            both = x.index.intersection(y.index)
            rs.append(F.spearman(x[both].to_numpy(), y[both].to_numpy()))
        pooled.append((s, float(np.nanmean(rs)) if rs else float("nan")))
    rung = first_rung(stats, a)
    rows = [[f"complete {s}-epoch schedule vs {a.epochs}", str(stats[s]["cells"]), fmt(stats[s]["rho"]),
             f"[{fmt(ci[s][0])}, {fmt(ci[s][1])}]", fmt(stats[s]["overlap"]), fmt(dict(pooled).get(s, float('nan')))]
            for s in a.within_schedules]
    rows.append([f"noise ceiling: seed {a.within_seeds[0]} vs seed {a.within_seeds[-1]} at {a.epochs}",
                 str(stats[0]["cells"]), fmt(stats[0]["rho"]), f"[{fmt(ci[0][0])}, {fmt(ci[0][1])}]", "–", "–"])
    cost = d.groupby(["level", "config_id", "seed", "schedule"])["cpu_seconds"].max()
    return [
        "",
        "**Within-budget fidelity** (issue 31, part 1: does a complete short schedule rank configs of the same "
        "training FLOPs as the full one does?).",
        "",
        RULE,
        "",
        f"Levels {', '.join(f'{x:g}' for x in a.within_levels)} × dense; {a.within_configs} budget-space configs each "
        f"(drawn at the level); schedules {', '.join(map(str, a.within_schedules))} and E = {a.epochs}; "
        f"seeds {', '.join(map(str, a.within_seeds))}. Runs completed: {n_done} of {n_all}"
        f"{'' if n_done == n_all else ' (PARTIAL: the verdict below reads only what is stored)'}.",
        "",
        C.md_table(["comparison", "(level, seed) cells", "mean within-level ρ", "95 % bootstrap",
                    "top-third overlap", "pooled ρ (all levels)"], rows),
        "",
        (f"- **No verdict yet**: {n_done} of {n_all} runs stored; the rule reads the complete measurement only."
         if n_done < n_all else
         f"- First rung by the rule: **{rung} epochs** (E/{a.epochs // rung}" if rung else
         "- **Within-level fidelity is too low** (ρ̄ < 0.4 at every schedule below E): `--fidelity schedule` "
         "stays off by default whatever the held-out verdicts say")
        + ("" if n_done < n_all else
           f"), so `--grace-period` defaults to {rung / a.epochs:g} of the schedule." if rung else "."),
        f"- Freezing targets capped by the shrink rule: {len(capped)} of {len(runs)} runs "
        f"({', '.join(sorted({f'{int(s)} epochs' for s in capped['schedule']})) or 'none'}).",
        f"- Compute: {cost.sum() / 3600:.2f} CPU-hours over {len(cost)} runs; trainer "
        f"{', '.join(sorted({str(t) for t in runs.get('trainer', pd.Series(['unknown'])).dropna()}))}.",
    ]
