"""Issue 25: held-out evidence -- does a search find a better accuracy-vs-FLOPs front than the paper's grid and its
headline points, scored on test images nothing selected on, at the compute the grid spent?

Arms (``ARMS``), each one ``spfde_search.search.drive_search`` in this process (one embedded Ray, ``--concurrent``
trials at a time, ``--threads`` torch threads each), none with early stopping:

- ``budget+tpe`` / ``budget+gp``: ``--space budget`` with TPE / GP, ``--trials`` trained trials;
- ``grid16``: ``--trials`` points of the paper grid (the ``paper`` space's grid: 48 points at the decisive size)
  drawn without replacement by ``numpy.random.default_rng(seed)``, enqueued in that order (``grid_draw``);
- ``headline``: the paper's hand-picked points (``spfde_search.plots.PAPER_POINTS``, in ``paper_points`` order,
  the set ``--initial paper`` starts with), all of them;
- ``joint+tpe`` (optional): today's default space with TPE.

The paper arms run the ``paper`` space with the random sampler: their enqueued points fix every parameter, so the
sampler would only pick a replacement for a point the searcher skipped as infeasible (none at the decisive size).

Size (defaults = the decisive size): ResNet-8, Fashion-MNIST, a 10,000-image training subset, ``data.val_size``
5,000 validation images drawn outside it, the full 10,000-image test set, 40 epochs, Δτ = 4, evaluation at the end
only (``train.eval_every`` = epochs). Seeds are paired: seed s is the sampler seed AND the config's ``seed``, which
seeds the weights, masks and augmentation and, because the code ties them (``spfde_search.data.subsets``: one seed
draws every split), also the training subset and the validation split; so seed s trains on its own 10,000 images
and selects on its own 5,000, every arm of seed s on the same ones; the test set is the same for every seed.

Rule (fixed before measuring; the report prints it before any number): the primary metric is ``heldout_hypervolume``
of each arm's validation-selected front (``validation_front``: non-dominated in validation accuracy vs FLOPs
ratio among COMPLETED full-budget trials above chance) scored in held-out TEST accuracy against log10 of the
training-FLOPs ratio to dense, reference (accuracy 0.85, ratio 1.0), per seed, over the trials that had ended
once the arm had spent what ``grid16`` spent in that seed (trials count in the order they ended,
``search_quality.ended_by``). An arm beats another iff the 95 % t interval of the paired difference over the seeds
lies above 0 AND it is higher in >= 4 of 5 seeds (>= 80 %); with fewer than 5 paired seeds: "no verdict: k of 5
seeds", noting a side that can no longer be higher in 4 of 5 whatever the missing seeds give (the count alone
already decides against it). Secondary: at 0.05/0.07/0.10/0.14/0.20 × dense, the test accuracy of the point the validation front would
answer with (``pareto.best_within`` on validation accuracy); the selection bias (validation − test accuracy of the
front points); wall time and trial-seconds per arm. Nothing that selects reads test accuracy.

Store (as ``search_quality.py``, whose store helpers this reuses): every finished (arm, seed) search is appended at
once to ``trials.parquet`` and ``searches.parquet`` in ``--out`` (default ``benchmarks/results/search_heldout/``),
keyed by the settings (``settings_key``); a rerun skips what is stored, a Ctrl-C loses only the search in progress,
``--report`` regenerates the section from the stored rows only. ``--fidelity`` runs the epoch-rung fidelity part
instead (``_fidelity.py``: stored in ``fidelity.parquet``, resumable per (config, schedule)).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402
import search_quality as sq  # noqa: E402

NAME = "search_heldout"
ARMS: dict[str, tuple[str, str]] = {  # arm -> (space, sampler); the paper arms' points are enqueued (arm_points)
    "budget+tpe": ("budget", "tpe"),
    "budget+gp": ("budget", "gp"),
    "grid16": ("paper", "random"),
    "headline": ("paper", "random"),
    "joint+tpe": ("joint", "tpe"),
    # issue 31 part 3: successive halving over schedule length, and the whole paper grid
    "grid48": ("paper", "random"),
    "budget+tpe+halving": ("budget", "tpe"),
    "budget+gp+halving": ("budget", "gp"),
}
HALVING_ARMS = ("budget+tpe+halving", "budget+gp+halving")  # --fidelity schedule, --max-compute = grid16's compute
ALL_GRID_ARM = "grid48"  # every grid point; scored on all its trials (the cut at grid16's compute does not apply)
PART3_ARMS = ["grid48", "budget+tpe", "budget+tpe+halving"]  # grid16 is read out of grid48 (derive_grid16)
DEFAULT_ARMS = ["budget+tpe", "budget+gp", "grid16", "headline"]
GRID_ARM = "grid16"  # the arm whose compute sets each seed's budget
PAIRS = [("budget+tpe", "grid16"), ("budget+gp", "grid16"), ("budget+tpe", "budget+gp"), ("budget+tpe", "headline"),
         ("budget+gp", "headline"), ("grid16", "headline"), ("joint+tpe", "grid16"), ("joint+tpe", "headline"),
         ("budget+tpe", "joint+tpe"), ("budget+tpe+halving", "grid16"), ("budget+tpe+halving", "budget+tpe"),
         ("budget+tpe+halving", "grid48"), ("budget+gp+halving", "grid16"), ("grid48", "grid16")]
REF = (0.85, 1.0)  # (test accuracy, training-FLOPs ratio) of the hypervolume's reference point
AT_BUDGETS = (0.05, 0.07, 0.10, 0.14, 0.20)
SEEDS_NEEDED = 5
DEFAULTS_RULE = (
    "**Defaults from the verdict** (rule written at 3 of 5 seeds, before seeds 3 and 4 ran): if `grid16` beats "
    "both budget arms, `spfde search --space` defaults to `paper` (its 48-point grid, which `--sampler auto` draws "
    "in a seeded random order, as `grid16` does); if a budget arm beats `grid16`, to `budget`; otherwise the "
    "default space stays `joint`, since no arm was shown better. On the budget space `--sampler auto` becomes GP "
    "only if `budget+gp` beats `budget+tpe`; otherwise it stays TPE (its suggestions cost less CPU). MOASHA's "
    "default follows the rung rule below.")
HALVING_RULE = (
    "**Successive halving over schedule length** (issue 31 part 3; rule written before its numbers). Arms: "
    "`budget+tpe+halving` (`--fidelity schedule`, default rungs, `--max-compute` = what `grid16` spent in the "
    "seed, so it stops proposing where the grid's compute ends) against `grid16`, `budget+tpe` and `grid48` "
    "(all 48 points of the paper grid, about three times grid16's compute; scored on ALL its trials, the one "
    "exception to the cut at grid16's compute; grid16 is read out of grid48's trials at its seeded 16-point "
    "draw where no grid16 search is stored). Verdicts: (1) halving vs grid16, (2) halving vs budget+tpe, (3) the "
    "moonshot: verdict 1 holds and the mean of (halving − grid48) is ≥ 0 (its 95 % t interval reported). "
    "`--fidelity schedule` becomes the default iff verdicts 1 and 3 hold and the within-budget fidelity below "
    "reaches ρ̄ ≥ 0.4 at some schedule shorter than E. Every arm of a verdict must have run on one trainer "
    "(the `trainer` stored with each search); a pair that mixes trainers is refused, not judged.")
KEY_FIELDS = ("model", "train_subset", "test_subset", "val_size", "epochs", "update_interval", "trials",
              "headline_trials")


def parse_args(argv: list[str] | None = None) -> Any:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, choices=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=list(range(SEEDS_NEEDED)),
                   help="paired seeds to run (one per session is fine: the store is additive)")
    p.add_argument("--trials", type=int, default=16, help="trained trials per arm (grid16: grid points drawn)")
    p.add_argument("--grid-points", type=int, default=None, help="grid48: points run (None: the whole grid)")
    p.add_argument("--halving-full-max", type=int, default=48,
                   help="halving arms: -n (full-length trials); --max-compute = grid16's compute ends them first")
    p.add_argument("--headline-trials", type=int, default=None, help="headline points run (None: all of them)")
    p.add_argument("--model", default="resnet8")
    p.add_argument("--train-subset", type=int, default=10000)
    p.add_argument("--test-subset", type=int, default=None, help="None = the full 10,000-image test set")
    p.add_argument("--val-size", type=int, default=5000, help="data.val_size: validation images, outside the subset")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--update-interval", type=int, default=4, help="base Δτ (the paper grid's)")
    p.add_argument("--concurrent", type=int, default=2, help="trials (or fidelity runs) at a time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per trial on CPU")
    p.add_argument("--time-budget-min", type=float, default=None, help="start no new search (or run) after this")
    p.add_argument("--report", action="store_true", help="run nothing; regenerate the report from the stored rows")
    p.add_argument("--fidelity", action="store_true", help="run the epoch-rung fidelity part instead of the searches")
    p.add_argument("--fidelity-configs", type=int, default=12, help="budget-space configs of the fidelity part")
    p.add_argument("--fidelity-every", type=int, default=4, help="fidelity: evaluate every k epochs")
    p.add_argument("--fidelity-short", nargs="+", type=int, default=[10, 20],
                   help="fidelity: complete shorter schedules (their own cosine) of the same configs")
    p.add_argument("--fidelity-at", nargs="+", type=int, default=[8, 12, 20], help="fidelity: the rungs reported first")
    p.add_argument("--within", action="store_true",
                   help="run the within-budget fidelity part (_within.py) instead of the searches")
    p.add_argument("--within-levels", nargs="+", type=float, default=[0.03, 0.08, 0.2],
                   help="within: target training-FLOPs ratios (of dense)")
    p.add_argument("--within-configs", type=int, default=8, help="within: configs per level")
    p.add_argument("--within-schedules", nargs="+", type=int, default=[5, 10, 20],
                   help="within: complete short schedules (epochs) beside --epochs")
    p.add_argument("--within-seeds", nargs="+", type=int, default=[0, 1], help="within: training seeds")
    a = p.parse_args(argv)
    if a.smoke_test:
        # seed 0: at this toy size GP's model keeps proposing splits that cannot reach the two lowest stratified
        # targets; the searcher then queues them with a random split that reaches them (optuna_search._retry_target)
        a.trials, a.headline_trials, a.seeds, a.grid_points, a.halving_full_max = 2, 2, [0], 4, 4
        a.train_subset, a.test_subset, a.val_size, a.epochs, a.update_interval = 128, 100, 64, 2, 1
        a.fidelity_configs, a.fidelity_every, a.fidelity_short, a.fidelity_at = 3, 1, [1], [1]
        a.within_levels, a.within_configs, a.within_schedules, a.within_seeds = [0.15], 3, [1], [0, 1]
    small = [n for n in ("trials", "epochs", "update_interval", "concurrent", "threads", "fidelity_configs",
                         "fidelity_every") if getattr(a, n) < 1]
    if small:
        p.error(f"--{small[0].replace('_', '-')} must be at least 1, got {getattr(a, small[0])}")
    long = [e for e in [*a.fidelity_short, *a.fidelity_at, *a.within_schedules] if not 1 <= e < a.epochs]
    if long:
        p.error(f"--fidelity-short/--fidelity-at {long[0]}: give epochs from 1 to below --epochs ({a.epochs})")
    return a


def settings_key(a: Any) -> str:
    """The comparability key of a stored search: canonical JSON of ``KEY_FIELDS`` (arm and seed beside it)."""
    return json.dumps({k: getattr(a, k) for k in KEY_FIELDS}, sort_keys=True)


def base_config(a: Any, seed: int, epochs: int | None = None, eval_every: int | None = None) -> dict[str, Any]:
    """The base config of seed ``seed`` (``epochs`` and ``eval_every`` default to the search's: the end only)."""
    t = epochs or a.epochs
    return C.fmnist_config(a.train_subset, a.test_subset, t, a.device, a.threads if a.device == "cpu" else None,
                           **{"seed": seed, "model.name": a.model, "freezing.target_flops_reduction": 0.0,
                              "sieving.fraction": 0.0, "train.update_interval": a.update_interval,
                              "train.eval_every": eval_every or t, "data.val_size": a.val_size}).to_dict()


# ---------------------------------------------------------------- the paper arms' points


def grid_draw(grid: dict[str, list[Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` points of the grid drawn without replacement by ``numpy.random.default_rng(seed)`` (the grid's points
    in ``itertools.product`` order over the sorted parameter names, so the draw depends on the seed alone)."""
    names = sorted(grid)
    points = [dict(zip(names, v, strict=True)) for v in itertools.product(*(grid[k] for k in names))]
    idx = np.random.default_rng(seed).choice(len(points), size=min(n, len(points)), replace=False)
    return [points[int(i)] for i in idx]


def headline_points(base: Any, grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The paper's hand-picked points (``plots.PAPER_POINTS``) in ``paper_points`` order, as the paper space's
    parameters; a point whose values the grid of this base config does not hold is left out."""
    from search_spaces import paper_points
    from spfde_search.plots import PAPER_POINTS

    out = []
    for p in paper_points(base):
        if any(all(p.get(k) == v for k, v in d.items()) for _, d in PAPER_POINTS):
            q = {k: p[k] for k in grid}
            if all(q[k] in grid[k] for k in grid):
                out.append(q)
    return out


def arm_points(a: Any, arm: str, base: dict[str, Any], seed: int) -> list[dict[str, Any]] | None:
    """The enqueued points of a paper arm (None for a sampled arm)."""
    if ARMS[arm][0] != "paper":
        return None
    from search_spaces import resolve_space
    from spfde_search.config import Config

    cfg = Config.parse(base)
    grid = resolve_space("paper", cfg).grid
    assert grid is not None
    if arm == GRID_ARM:
        return grid_draw(grid, a.trials, seed)
    if arm == ALL_GRID_ARM:  # every point, in a seeded order (grid16's points are among them)
        return grid_draw(grid, a.grid_points or 10**6, seed)
    return headline_points(cfg, grid)[: a.headline_trials]


# ---------------------------------------------------------------- the metric (pure, golden-tested)


def validation_front(val: Any, ratio: Any, eligible: Any) -> Any:
    """Boolean mask of the front the arm would choose: non-dominated in (validation accuracy max, FLOPs ratio min)
    among the ``eligible`` points. Reads no test accuracy."""
    from spfde_search.pareto import non_dominated

    ok = np.asarray(eligible, dtype=bool)
    v = np.where(ok, np.asarray(val, dtype=float), np.nan)
    return ok & non_dominated(v, np.asarray(ratio, dtype=float))


def heldout_hypervolume(test: Any, ratio: Any, selected: Any, ref: tuple[float, float] = REF) -> float:
    """Hypervolume of the ``selected`` points in (test accuracy, log10 FLOPs ratio), reference ``ref`` =
    (accuracy, ratio): the area, on a log-cost axis, under the best test accuracy reachable at each cost. Points no
    better than the reference add nothing; a selected point dominated on test only adds nothing either."""
    from spfde_search.pareto import hypervolume

    sel = np.asarray(selected, dtype=bool)
    t, r = np.asarray(test, dtype=float)[sel], np.asarray(ratio, dtype=float)[sel]
    with np.errstate(divide="ignore", invalid="ignore"):
        return hypervolume(t, np.log10(r), (ref[0], float(np.log10(ref[1]))))


def paired_verdict(x: dict[int, float], y: dict[int, float], xname: str, yname: str,
                   level: float = 0.95) -> tuple[str, list[Any]]:
    """The rule of the module docstring on the seeds both arms have: (verdict line, a table row)."""
    seeds = sorted(set(x) & set(y))
    d = np.array([x[s] - y[s] for s in seeds], dtype=float)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    if d.size >= 2:
        h = C.t_halfwidth(d, level)
        lo, hi = float(d.mean()) - h, float(d.mean()) + h
        ival = f"{d.mean():+.4f} ({level:.0%} t [{lo:+.4f}, {hi:+.4f}])"
    else:
        lo = hi = float("nan")
        ival = f"{d.mean():+.4f} (one seed)" if d.size else "–"
    need, missing = math.ceil(0.8 * SEEDS_NEEDED), SEEDS_NEEDED - d.size
    if d.size < SEEDS_NEEDED:  # the count half of the rule may already be out of reach for one side or both
        out = [f"`{a}` can no longer beat `{b}`" for a, b, k in ((xname, yname, wins), (yname, xname, losses))
               if k + missing < need]
        word = (f"neither shown (decided at {d.size} of {SEEDS_NEEDED} seeds: neither can be higher in {need})"
                if len(out) == 2 else f"no verdict: {d.size} of {SEEDS_NEEDED} seeds" + (f"; {out[0]}" if out else ""))
    elif lo > 0 and wins >= 0.8 * d.size:
        word = f"`{xname}` BEATS `{yname}`"
    elif hi < 0 and losses >= 0.8 * d.size:
        word = f"`{yname}` BEATS `{xname}`"
    else:
        word = "neither shown"
    row = [f"{xname} − {yname}", d.size, ival, f"{wins} / {d.size - wins - losses} / {losses}", word]
    return f"{xname} − {yname}: {ival}, higher in {wins} of {d.size} seeds -> {word}", row


# ---------------------------------------------------------------- running


def run_searches(a: Any, out: Path, key: str, todo: list[tuple[str, int]]) -> tuple[list[str], float]:
    """Run the ``todo`` (arm, seed) searches in order, storing each as it finishes (``search_quality.run_stored``);
    returns (skipped for time, seconds)."""
    from spfde_search.search import SearchSettings, prepare
    from spfde_search.search.optuna_search import resolve_sampler

    def make(arm: str, seed: int, name: str, storage: Path) -> tuple[Any, Any, dict[str, Any]]:
        space, sampler = ARMS[arm]
        base = base_config(a, seed)
        points = arm_points(a, arm, base, seed)
        kw: dict[str, Any] = dict(  # a dict: mypy does not see the defaults of the pydantic fields
            name=name, space=space, base_config=base, sampler=sampler, seed=seed,
            num_samples=len(points) if points is not None else a.trials, early_stopping="none",
            max_concurrent=a.concurrent, cpus_per_trial=1.0, num_cpus=a.concurrent, storage_path=str(storage),
            gpus_per_trial=(1.0 / a.concurrent) if a.device == "cuda" else 0.0)
        if arm in HALVING_ARMS:  # as many full-length trials as grid16's compute of this seed buys
            budget = grid16_compute(out, key, seed, a)
            if budget is None:
                raise RuntimeError(f"{arm} seed {seed} needs grid16's (or grid48's) search of seed {seed} first")
            kw.update(fidelity="schedule", max_compute=f"{budget:.6e}", num_samples=a.halving_full_max)
        settings = SearchSettings(**kw)
        prep = prepare(settings)
        if points is not None:  # the paper arms: exactly these points, in this order
            prep = dataclasses.replace(prep, points=points)
        used = resolve_sampler(sampler, prep.space, settings.num_samples)[0]
        return settings, prep, {"space": space, "sampler": used, "points": json.dumps(points) if points else "",
                                "trainer": trainer_version()}

    return sq.run_stored(a, out, key, todo, make)


def trainer_version() -> str:
    """The commit the trainer ran from, stored with every search row: a verdict never mixes trainers."""
    from _within import trainer_version as tv

    return tv()


def derive_grid16(searches: Any, trials: Any, a: Any) -> tuple[Any, Any]:
    """Where a seed has ``grid48`` but no ``grid16`` search, ``grid16`` is grid48's trials at the seeded 16-point
    draw (``grid_draw(grid, a.trials, seed)``): the same points a grid16 search would enqueue; its compute is what
    those trials spent. Returns (searches, trials) with the derived rows added (``derived`` = True)."""
    import pandas as pd

    from search_spaces import resolve_space
    from spfde_search.config import Config

    if not len(searches) or ALL_GRID_ARM not in set(searches["method"]):
        return searches, trials
    have16 = set(searches.loc[searches["method"] == GRID_ARM, "seed"].astype(int))
    new_s, new_t = [], []
    for r in searches[searches["method"] == ALL_GRID_ARM].to_dict("records"):
        seed = int(r["seed"])
        if seed in have16:
            continue
        grid = resolve_space("paper", Config.parse(base_config(a, seed))).grid
        assert grid is not None
        mine = trials[(trials["method"] == ALL_GRID_ARM) & (trials["seed"] == seed)]

        def match(row: Any, p: dict[str, Any]) -> bool:
            return all(np.isclose(float(row[f"param.{k}"]), float(v)) if isinstance(v, float)
                       else row[f"param.{k}"] == v for k, v in p.items())

        pick = [i for p in grid_draw(grid, a.trials, seed) for i, row in mine.iterrows() if match(row, p)]
        sub16 = mine.loc[sorted(set(pick))].assign(method=GRID_ARM)
        new_t.append(sub16)
        new_s.append({**r, "method": GRID_ARM, "trials": len(sub16), "derived": True,
                      "compute": float(sub16["spent_train_flops"].astype(float).fillna(0).sum()),
                      "trial_seconds": float(sub16["spent_seconds"].astype(float).fillna(0).sum())})
    if not new_s:
        return searches, trials
    return (pd.concat([searches, pd.DataFrame(new_s)], ignore_index=True),
            pd.concat([trials, *new_t], ignore_index=True))


def grid16_compute(out: Path, key: str, seed: int, a: Any) -> float | None:
    """The training FLOPs grid16 spent in ``seed`` (stored, or derived from grid48), None if neither is stored."""
    s, t = sq.load(out, "searches"), sq.load(out, "trials")
    if not len(s) or "settings" not in s.columns:
        return None
    s, t = s[s["settings"] == key], t[t["settings"] == key]
    s, t = derive_grid16(s, t, a)
    hit = s[(s["method"] == GRID_ARM) & (s["seed"] == seed)]
    return float(hit["compute"].iloc[0]) if len(hit) else None


# ---------------------------------------------------------------- the report


def evaluate(searches: Any, trials: Any) -> list[dict[str, Any]]:
    """One row per stored (arm, seed): the grid's compute in that seed, the trials ended by it, the validation
    front among them, its held-out hypervolume, the test accuracy answered at each budget, the selection bias."""
    from spfde_search.pareto import best_within
    from spfde_search.search.results import front_candidates

    grid_c = {int(r["seed"]): float(r["compute"]) for r in searches.to_dict("records") if r["method"] == GRID_ARM}
    rows = []
    for r in searches.to_dict("records"):
        arm, seed = str(r["method"]), int(r["seed"])
        mine = trials[(trials["method"] == arm) & (trials["seed"] == seed)]
        row: dict[str, Any] = {"arm": arm, "seed": seed, "trials": len(mine), "seconds": float(r["seconds"]),
                               "trainer": _text(r.get("trainer")) or "before trainer versions were stored",
                               "trial_seconds": float(r["trial_seconds"]), "compute": float(r["compute"]),
                               "c_grid": grid_c.get(seed, float("nan")), "hv": float("nan"), "front": 0,
                               "ended": 0, "bias": float("nan"), **{f"at_{b}": float("nan") for b in AT_BUDGETS}}
        rows.append(row)
        if seed not in grid_c:
            continue
        if not len(mine):  # a search that trained nothing (it stopped, or failed) found no front: area 0
            row["hv"] = 0.0
            continue
        spent, _, _ = sq.curve(mine)
        # grid48 is scored on all of its trials: it is the reference at three times grid16's compute
        ended = (np.ones(len(mine), dtype=bool) if arm == ALL_GRID_ARM else sq.ended_by(mine, spent, grid_c[seed]))
        val, test = mine["val_accuracy"].to_numpy(float), mine["test_accuracy"].to_numpy(float)
        ratio = mine["flops_ratio"].to_numpy(float)
        sel = validation_front(val, ratio, front_candidates(mine).to_numpy(bool) & ended)
        full = front_candidates(mine).to_numpy(bool)  # halving: the full-length trials, and where they lie
        row.update(full_length=int(full.sum()), full_ratio_span=(
            f"{ratio[full].min():.3g}–{ratio[full].max():.3g}" if full.any() else "–"))
        row.update(hv=heldout_hypervolume(test, ratio, sel), front=int(sel.sum()), ended=int(ended.sum()),
                   bias=float(np.mean(val[sel] - test[sel])) if sel.any() else float("nan"))
        for b in AT_BUDGETS:
            i = best_within(val[sel], ratio[sel], b)
            row[f"at_{b}"] = float(test[sel][i]) if i is not None else float("nan")
    return rows


def report_body(a: Any, rows: list[dict[str, Any]], searches: Any, fidelity_md: list[str]) -> tuple[str, list[str]]:
    """The section's Markdown (the rule first) and the verdict lines."""
    arms = [m for m in ARMS if any(r["arm"] == m for r in rows)]
    hv = {m: {r["seed"]: r["hv"] for r in rows if r["arm"] == m and r["hv"] == r["hv"]} for m in arms}
    seeds = sorted({r["seed"] for r in rows})
    verdicts, ptable = [], []
    trainer = {(r["arm"], r["seed"]): r.get("trainer") for r in rows}
    for x, y in PAIRS:
        if x in hv and y in hv:
            mixed = {str(trainer[(m, s)]) for m in (x, y) for s in set(hv[x]) & set(hv[y])}
            if len(mixed) > 1:  # rows stored before the trainer was recorded read as "nan": one old trainer
                verdicts.append(f"{x} − {y}: REFUSED, the arms ran on different trainers ({', '.join(sorted(mixed))})"
                                "; rerun the older arm on the current trainer")
                continue
            line, prow = paired_verdict(hv[x], hv[y], x, y)
            verdicts.append(line)
            ptable.append(prow)
    grid_c = {r["seed"]: r["c_grid"] for r in rows if r["arm"] == GRID_ARM}
    per_seed = C.md_table(["seed", "grid16 compute (FLOPs)", *arms],
                          [[s, f"{grid_c.get(s, float('nan')):.4g}", *(
                              f"{hv[m][s]:.4f}" if s in hv[m] else "–" for m in arms)] for s in seeds])
    sec = []
    for m in arms:
        rs = [r for r in rows if r["arm"] == m]
        sec.append([m, *(_spread(100 * r[f"at_{b}"] for r in rs) for b in AT_BUDGETS),
                    _spread((100 * r["bias"] for r in rs), "+.2f"), _spread((r["front"] for r in rs), ".0f")])
    wall = [[m, sum(r["arm"] == m for r in rows), sum(r["trials"] for r in rows if r["arm"] == m),
             f"{sum(r['seconds'] for r in rows if r['arm'] == m) / 3600:.2f}",
             f"{sum(r['trial_seconds'] for r in rows if r['arm'] == m) / 3600:.2f}",
             _spread((r["trial_seconds"] / max(r["trials"], 1) / 60 for r in rows if r["arm"] == m), ".1f"),
             _spread(r["compute"] / r["c_grid"] for r in rows if r["arm"] == m and r["c_grid"] > 0),
             _spread((r.get("full_length", float("nan")) for r in rows if r["arm"] == m), ".0f"),
             "; ".join(str(r.get("full_ratio_span", "–")) for r in rows if r["arm"] == m)]
            for m in arms]
    n_runs = {m: sum(r["arm"] == m for r in rows) for m in arms}
    wanted = [(m, s) for s in range(SEEDS_NEEDED) for m in DEFAULT_ARMS]
    have = {(r["arm"], r["seed"]) for r in rows}
    missing = [f"{m} seed {s}" for m, s in wanted if (m, s) not in have]
    no_grid = sorted({r["seed"] for r in rows} - set(grid_c))
    size = (f"{a.model}, Fashion-MNIST {a.train_subset} training images, {a.val_size} validation images drawn "
            f"outside them, {'the full 10,000-image' if a.test_subset is None else f'a {a.test_subset}-image'} test set, "
            f"{a.epochs} epochs, Δτ = {a.update_interval} (the paper grid's; the sampled spaces search their own), "
            f"batch 128, evaluation at the end only, device {a.device}; {a.trials} trained trials per arm (headline: "
            "its fixed points), no early stopping")
    body = [
        "**Rule (fixed before measuring).** Primary metric: the hypervolume of each arm's *validation-selected* "
        "front (non-dominated in validation accuracy vs training-FLOPs ratio among COMPLETED full-budget trials "
        "above chance) measured in held-out *test* accuracy vs log10 training-FLOPs ratio to dense, reference "
        f"point (accuracy {REF[0]}, ratio {REF[1]}), per seed, over the trials each arm had ended once it had "
        "spent the training FLOPs `grid16` spent in that seed (trials count in the order they ended). An arm beats "
        "another iff the 95 % t interval of the paired difference over the seeds lies above 0 AND it is higher in "
        "≥ 4 of 5 seeds; with fewer than 5 paired seeds: no verdict, except that a side no longer able to be "
        "higher in 4 of 5 seeds, whatever the missing seeds give, is said to be out of reach. Secondary: the test "
        "accuracy of the point the validation front answers with at 0.05/0.07/0.10/0.14/0.20 × dense (its most validation-accurate point "
        "within the budget), the selection bias (validation − test accuracy of the front points), wall time. "
        "Nothing that selects reads test accuracy; no setting was chosen from these numbers.",
        "",
        DEFAULTS_RULE,
        "",
        HALVING_RULE,
        "",
        f"Setting: {size}. Seed s is the sampler seed and the config's `seed`, which also draws the training subset "
        f"and validation split (the code ties them), so each seed has its own {a.train_subset} training and "
        f"{a.val_size} validation images, shared by its arms; the test images are the same for every seed. "
        f"Arms: {', '.join(f'`{m}` ({ARMS[m][0]} space, {ARMS[m][1]})' for m in arms)}; the paper arms' points are "
        "enqueued (grid16: a seeded draw without replacement from the paper grid; headline: the paper's "
        "hand-picked points). Code: every stored row was trained with SET/RigL's drop count rounded "
        "(k = round(drop fraction × n)); the trainer truncates it as RigL's code does since commit 07ca503, at most "
        "one weight per layer per update apart, so later rows stay comparable.",
        "",
        "Verdicts (paired, held-out hypervolume at the grid's compute):",
        "",
        *(f"- {v}" for v in verdicts),
        "",
        "Per seed (held-out hypervolume, log10 FLOPs axis, reference (0.85, 1.0)):",
        "",
        per_seed,
        "",
        C.md_table(["paired Δ", "seeds", "mean (95 % t interval)", "higher / tied / lower", "verdict"], ptable),
        "",
        "Secondary, per arm over seeds: test accuracy (%) of the validation front's answer at each budget "
        "(× dense training FLOPs; – where no front point fits), the selection bias (validation − test, points) "
        "over the front points, and the front's size:",
        "",
        C.md_table(["arm", *(f"≤ {b:.2f}×" for b in AT_BUDGETS), "val − test (points)", "front points"], sec),
        "",
        "Cost per arm (on CPU FLOPs and time differ, so both):",
        "",
        C.md_table(["arm", "searches", "trials", "wall (h)", "trial-hours", "minutes per trial",
                    "compute (× grid16's, same seed)", "full-length trials", "their FLOPs ratios (per seed)"], wall),
        "",
        f"- Run: {len(rows)} stored searches ({', '.join(f'{m} × {n_runs[m]}' for m in arms)}) of these "
        f"settings, {searches['seconds'].sum() / 3600:.1f} h of wall time in all.",
        f"- Not run: {', '.join(missing) if missing else 'nothing of the 4 arms × 5 seeds'}"
        + ("" if "joint+tpe" in arms else "; the optional `joint+tpe` arm was not run") + ".",
        *(f"- `{r['method']}` seed {r['seed']} stopped early or failed ({r['trials']} trials): "
          f"{(_text(r.get('stop_reason')) or _text(r.get('error')))[:300]}"
          for r in searches.to_dict("records") if _text(r.get("stop_reason")) or _text(r.get("error"))),
        *([f"- Seeds without a `grid16` search (no compute budget, so no primary number): {no_grid}."] if no_grid else []),
        *fidelity_md,
        f"- Raw rows: `{C.rel_path(a.out_dir)}` (trials.*, searches.*, fidelity.*). Regenerate this section from "
        f"them: `python benchmarks/search_heldout.py {regen_args(a)}--report`.",
    ]
    return "\n".join(body), verdicts


def _spread(values: Any, spec: str = ".2f") -> str:
    """Median (IQR, min–max, n) of the finite values, '–' where there is none."""
    sp = C.spread(values)
    return sp.fmt(spec) if sp.n else "–"


def _text(v: Any) -> str:
    """A stored text cell ('' for None and for the NaN of a column added after the row was stored)."""
    return v if isinstance(v, str) else ""


def regen_args(a: Any) -> str:
    """The settings arguments that differ from the defaults (what ``--report`` needs to find the same rows)."""
    d = parse_args([])
    keys = (*KEY_FIELDS, "fidelity_configs", "fidelity_every", "fidelity_short", "fidelity_at")
    val = lambda v: " ".join(map(str, v)) if isinstance(v, list) else str(v)  # noqa: E731
    flags = [f"--{k.replace('_', '-')} {val(getattr(a, k))} " for k in keys
             if getattr(a, k) != getattr(d, k) and getattr(a, k) is not None]
    return "".join(flags) + (f"--out {C.rel_path(a.out_dir)} " if a.out is not None else "")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Held-out hypervolume per seed, one line per arm."""
    fig, ax = C.plt_figure(figsize=(6, 4))
    for m in ARMS:
        rs = sorted((r["seed"], r["hv"]) for r in rows if r["arm"] == m and r["hv"] == r["hv"])
        if rs:
            ax.plot([s for s, _ in rs], [v for _, v in rs], "o-", label=m)
    ax.set_xlabel("seed (paired across arms)")
    ax.set_xticks(sorted({int(r["seed"]) for r in rows}))
    ax.set_ylabel("held-out hypervolume")
    ax.set_title(f"test accuracy vs log10 FLOPs ratio, ref {REF}, at grid16's compute", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    import _fidelity as F
    import _within as W

    info = C.machine_info(a.device)
    if a.report:  # the header's machine and load are the regenerating run's, not those the rows were trained on
        info = {**info, "cpu_model": f"{info['cpu_model']} (the machine that regenerated this section from the "
                                     "stored rows; they were trained earlier, on the machines of their sessions)"}
    out = a.out_dir = C.output_dir(NAME, a)
    key = settings_key(a)
    todo: list[tuple[str, int]] = []
    skipped, elapsed = [], 0.0
    if not a.report and (not (a.fidelity or a.within) or a.smoke_test):
        done = sq.done_keys(sq.load(out, "searches"), key)
        wanted = [(m, s) for s in a.seeds for m in a.arms]  # seed-major: a time cut leaves whole seeds
        already = [w for w in wanted if w in done]
        if already:
            print(f"skipped {len(already)} search(es) already stored with these settings: "
                  + ", ".join(f"{m} seed {s}" for m, s in already))
        todo = [w for w in wanted if w not in done]
        skipped, elapsed = run_searches(a, out, key, todo) if todo else ([], 0.0)
        if skipped:
            print(f"not run (time budget): {', '.join(skipped)}")
    if not a.report and (a.fidelity or a.smoke_test):
        F.run(a, out, base_config(a, F.SEED))
    if not a.report and (a.within or a.smoke_test):
        W.run(a, out, lambda seed: base_config(a, seed))
    searches, trials = sq.load(out, "searches"), sq.load(out, "trials")
    has = len(searches) and "settings" in searches.columns and (searches["settings"] == key).any()
    searches = searches[searches["settings"] == key] if has else searches
    trials = trials[trials["settings"] == key] if has else trials
    if has:
        searches, trials = derive_grid16(searches, trials, a)
    rows = evaluate(searches, trials) if has else []
    if rows:
        C.save_rows(rows, out, "heldout_report")
        plot(rows, out / "heldout_hv.png")
    fid_md = [*F.report_lines(a, out), *W.report_lines(a, out)]
    body, verdicts = (report_body(a, rows, searches, fid_md) if has
                      else ("\n".join(["No search stored with these settings.", *fid_md]), []))
    (out / "section.md").write_text(body + "\n")  # the section's body, also where RESULTS.md is not written
    for r in rows:
        print(f"{r['arm']:11s} seed {r['seed']}: held-out HV {r['hv']:.4f} over {r['ended']} trials ended by the "
              f"grid's compute ({r['front']} on the validation front), selection bias {100 * r['bias']:+.2f} points")
    for line in [*verdicts, *fid_md]:
        print(line)
    print(f"ran {len(todo) - len(skipped)} search(es) in {elapsed:.0f} s")
    if not C.should_append(a) or not (has or fid_md):
        return 0
    from paper_claims import write_section

    write_section(a.results_md, f"{NAME}:{C.rel_path(out)}", f"Search quality on held-out test data at the grid's "
                  f"compute ({a.device})", info, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
