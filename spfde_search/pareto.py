"""Pareto sets of accuracy (maximised) vs training FLOPs (minimised): non-dominated mask, 2-D hypervolume, knee,
and the multi-objective successive-halving ranking (MOASHA) the search's early-stopping scheduler calls.

Pure numpy, no Ray/MLflow: the search driver, the CLI and the tracking module all call these.

Conventions (golden-tested in ``tests/test_pareto.py``):

- Point *j dominates i* when ``acc[j] >= acc[i]`` and ``flops[j] <= flops[i]`` with at least one strict.
  Identical points do not dominate each other, so duplicates on the front are all kept.
- A point with a NaN coordinate is never on the front and dominates nothing.
- A trial at or below chance (``above_chance``) is reported but never a front candidate: a run that learnt
  nothing is always the cheapest point and would otherwise sit on the front and add hypervolume.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "CHANCE_FRONT_MARGIN",
    "above_chance",
    "VAL_ACCURACY",
    "TEST_ACCURACY",
    "BUDGET_RATIOS",
    "selection_metric",
    "best_within",
    "non_dominated",
    "front_indices",
    "hypervolume",
    "knee_point",
    "nondominated_sort",
    "epsilon_net_order",
    "moasha_order",
    "moasha_continues",
    "moasha_top",
    "hypervolume_curve",
    "cost_to_reach",
]

ArrayLike = Sequence[float] | np.ndarray

VAL_ACCURACY, TEST_ACCURACY = "val_accuracy", "test_accuracy"
BUDGET_RATIOS = (0.05, 0.1, 0.2)  # the parent run's best-at-budget metrics: FLOPs ratios to dense training


def is_finite(x: Any) -> bool:
    """A finite number, not a bool: result rows, MLflow rows and YAML hand over None, NaN, text and numpy scalars
    alike, and only this counts as a measurement."""
    try:
        return x is not None and not isinstance(x, bool) and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def selection_metric(val_values: Iterable[Any] | None) -> str:
    """The accuracy everything that chooses reads (the sampler, the rungs, the front, the knee, the hypervolume,
    export): ``val_accuracy`` when any of ``val_values`` (the trials' validation accuracies) is a finite number,
    else ``test_accuracy`` (``data.val_size`` 0, or a search from before validation existed), which every output
    then names. The one place this rule lives."""
    return VAL_ACCURACY if any(is_finite(v) for v in (() if val_values is None else val_values)) else TEST_ACCURACY


def selected_on(table: Any) -> str:
    """The column that selects in a trials table (a DataFrame): ``selection_metric`` of its ``val_accuracy``
    column, ``test_accuracy`` where it has none (a search from before validation existed)."""
    return selection_metric(table["val_accuracy"] if "val_accuracy" in table.columns else None)


def best_within(acc: ArrayLike, ratio: ArrayLike, max_ratio: float) -> int | None:
    """Index of the most accurate point whose FLOPs ratio is at most ``max_ratio`` (a tie goes to the cheaper
    point, then the first); None when no point with finite coordinates fits. "The answer at a budget"."""
    a, r = _pair(acc, ratio)
    ok = np.flatnonzero(np.isfinite(a) & np.isfinite(r) & (r <= max_ratio))
    if not ok.size:
        return None
    return int(min(ok, key=lambda i: (-a[i], r[i], i)))


def _pair(acc: ArrayLike, cost: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(acc, dtype=float).reshape(-1)
    c = np.asarray(cost, dtype=float).reshape(-1)
    if a.shape != c.shape:
        raise ValueError(f"acc and flops must have the same length, got {a.size} and {c.size}")
    return a, c


CHANCE_FRONT_MARGIN = 0.01
"""A trial must beat chance (1 / number of classes) by more than this to be a front candidate (1 point)."""


def above_chance(acc: ArrayLike, chance: ArrayLike | float | None, margin: float = CHANCE_FRONT_MARGIN) -> np.ndarray:
    """Boolean mask: accuracy strictly above ``chance + margin`` -- the one rule for who may enter the front and
    the hypervolume, applied to whatever accuracy the front selects on. ``chance`` is a scalar or one value per
    point; NaN or None (chance unknown) lets the point through, a NaN accuracy does not."""
    a = np.asarray(acc, dtype=float).reshape(-1)
    c = np.broadcast_to(np.asarray(np.nan if chance is None else chance, dtype=float), a.shape)
    return np.where(np.isnan(c), ~np.isnan(a), a > c + margin)


def non_dominated(acc: ArrayLike, flops: ArrayLike) -> np.ndarray:
    """Boolean mask of the non-dominated points (maximise ``acc``, minimise ``flops``).

    O(n log n): sort by flops ascending (accuracy descending within equal flops) and sweep, keeping the best
    accuracy seen at strictly lower flops. Within a group of equal flops only the points with the group's best
    accuracy survive, and only if they beat every cheaper point.
    """
    a, c = _pair(acc, flops)
    mask = np.zeros(a.size, dtype=bool)
    valid = np.flatnonzero(~(np.isnan(a) | np.isnan(c)))
    if valid.size == 0:
        return mask
    order = valid[np.lexsort((-a[valid], c[valid]))]
    best_cheaper = -np.inf  # best accuracy among points with strictly lower flops
    i = 0
    while i < order.size:
        j = i
        while j + 1 < order.size and c[order[j + 1]] == c[order[i]]:
            j += 1
        group = order[i : j + 1]
        top = a[group[0]]
        if top > best_cheaper:
            mask[group[a[group] == top]] = True
        best_cheaper = max(best_cheaper, top)
        i = j + 1
    return mask


def front_indices(acc: ArrayLike, flops: ArrayLike) -> np.ndarray:
    """Indices of the non-dominated points, cheapest first (ties: higher accuracy first, then index)."""
    a, c = _pair(acc, flops)
    idx = np.flatnonzero(non_dominated(a, c))
    return idx[np.lexsort((idx, -a[idx], c[idx]))]


def hypervolume(acc: ArrayLike, ratio: ArrayLike, ref: tuple[float, float] = (0.0, 1.0)) -> float:
    """Exact 2-D hypervolume: the area of {(a, r): ref_acc <= a <= acc_i, ratio_i <= r <= ref_ratio for some i}.

    ``ratio`` is usually training FLOPs / dense training FLOPs, so the default reference (accuracy 0, ratio 1)
    makes the value the area dominated inside the unit box. Points no better than the reference in both
    coordinates add nothing; NaNs are ignored. Computed as the integral over r of the best accuracy reachable
    at cost <= r, which is a step function: sum of (r_{k+1} - r_k) * (best_acc_k - ref_acc).
    """
    a, r = _pair(acc, ratio)
    ref_a, ref_r = float(ref[0]), float(ref[1])
    keep = ~(np.isnan(a) | np.isnan(r)) & (a > ref_a) & (r < ref_r)
    if not keep.any():
        return 0.0
    a, r = a[keep], r[keep]
    order = np.lexsort((-a, r))
    a, r = a[order], r[order]
    area, best = 0.0, ref_a
    for k in range(a.size):
        best = max(best, a[k])
        nxt = r[k + 1] if k + 1 < a.size else ref_r
        area += (nxt - r[k]) * (best - ref_a)
    return float(area)


def knee_point(acc: ArrayLike, flops: ArrayLike) -> int | None:
    """Index (into the inputs) of the front's knee, or None if no point is valid.

    Kneedle's rule (Satopää, Albrecht, Irwin, Raghavan, "Finding a 'Kneedle' in a Haystack: Detecting Knee Points
    in System Behavior", ICDCS Workshops 2011; as in kneed's ``knee_locator.py`` lines 185-199, steps 2-4, for a
    concave increasing curve): both axes are normalised to [0, 1] over the front (FLOPs linearly, as given), so
    the chord joining the cheapest and the most accurate point runs from (0, 0) to (1, 1), and the knee is the
    point with the largest ``accuracy - flops`` there: the one farthest *above* the chord, the best accuracy
    bought per FLOP relative to the front's own trade-off. A point below the chord is never the knee, however far
    from it (it buys less accuracy than the straight line between the extremes). We take the global maximum with
    no sensitivity threshold: a front has a handful of points, not a sampled curve. With no point above the
    chord (fewer than three distinct points, a straight or convex front), it is the point closest to the utopia
    corner (best accuracy, lowest flops). Ties go to the cheaper point.
    """
    a, c = _pair(acc, flops)
    idx = front_indices(a, c)
    if idx.size == 0:
        return None
    fa, fc = a[idx], c[idx]
    span_a, span_c = fa.max() - fa.min(), fc.max() - fc.min()
    na = (fa - fa.min()) / span_a if span_a > 0 else np.zeros_like(fa)
    nc = (fc - fc.min()) / span_c if span_c > 0 else np.zeros_like(fc)
    # cheapest-first order: idx[0] is the cheapest at (0, 0), idx[-1] the most accurate at (1, 1)
    above = na - nc if span_a > 0 and span_c > 0 else np.zeros(idx.size)
    if above.max() > 1e-12:
        return int(idx[int(np.argmax(above))])
    utopia = np.hypot(nc - 0.0, na - 1.0)
    return int(idx[int(np.argmin(utopia))])


def hypervolume_curve(
    acc: ArrayLike, ratio: ArrayLike, cost: ArrayLike, eligible: Sequence[bool] | np.ndarray, ref: tuple[float, float] = (0.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Hypervolume against spent compute. Inputs are per trial in the order the trials ended; ``cost`` is what
    each trial spent (every trial, stopped and failed ones too; NaN counts as 0) and ``eligible`` says which may
    enter the front. Returns (cumulative cost after each trial, hypervolume of the eligible trials so far)."""
    a, r = _pair(acc, ratio)
    c = np.nan_to_num(np.asarray(cost, dtype=float).reshape(-1), nan=0.0)
    ok = np.asarray(eligible, dtype=bool).reshape(-1)
    if not (c.size == a.size == ok.size):
        raise ValueError("acc, ratio, cost and eligible must have the same length")
    spent = np.cumsum(c)
    hv = np.array([hypervolume(a[: k + 1][ok[: k + 1]], r[: k + 1][ok[: k + 1]], ref) for k in range(a.size)])
    return spent, hv


def cost_to_reach(spent: ArrayLike, hv: ArrayLike, target: float) -> float:
    """The compute after which a hypervolume curve first reaches ``target`` (NaN if it never does)."""
    s, h = _pair(spent, hv)
    hit = np.flatnonzero(h >= target - 1e-12)
    return float(s[hit[0]]) if hit.size else float("nan")


# ---------------------------------------------------------------- MOASHA ranking
#
# Multi-objective asynchronous successive halving, after Syne Tune's MOASHA
# (syne_tune/optimizer/schedulers/multiobjective/moasha.py and non_dominated_priority.py; Salinas et al.,
# "A multi-objective perspective on jointly tuning hardware and hyperparameters", NAS workshop ICLR 2021):
# the trials that reached a rung are ordered by non-dominated sorting, each front ordered by an epsilon-net
# (Clarkson 2005: greedy farthest-point order) seeded by its most accurate point, and a trial arriving at the
# rung goes on iff its position p (0-based) among the n recorded there satisfies p / n <= 1 / eta.
# Our choices where Syne Tune leaves it open: objectives are min-max normalised over the rung before the
# epsilon-net distances (accuracy and FLOPs differ by 12 orders of magnitude), ties break by input index, and a
# point with a NaN objective (a diverged trial) is ranked after every valid point.


def nondominated_sort(acc: ArrayLike, flops: ArrayLike) -> np.ndarray:
    """Front number of each point: 0 for the non-dominated set, 1 for the set left after removing it, ...
    Points with a NaN coordinate get one more than the last front of the valid points."""
    a, c = _pair(acc, flops)
    ranks = np.full(a.size, -1, dtype=int)
    left = np.flatnonzero(~(np.isnan(a) | np.isnan(c)))
    k = 0
    while left.size:
        mask = non_dominated(a[left], c[left])
        ranks[left[mask]] = k
        left = left[~mask]
        k += 1
    ranks[ranks < 0] = k
    return ranks


def epsilon_net_order(points: np.ndarray, first: int = 0) -> list[int]:
    """Greedy farthest-point order of ``points`` (n x d) starting at index ``first``: each next point maximises
    its Euclidean distance to the points already chosen (ties: lowest index). Spreads the picks along a front."""
    pts = np.asarray(points, dtype=float)
    n = pts.shape[0]
    if n == 0:
        return []
    order = [int(first)]
    dist = np.linalg.norm(pts - pts[first], axis=1)
    dist[first] = -np.inf
    for _ in range(n - 1):
        nxt = int(np.argmax(dist))
        order.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(pts - pts[nxt], axis=1))
        dist[order] = -np.inf
    return order


def _normalised(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    def unit(x: np.ndarray) -> np.ndarray:
        finite = x[np.isfinite(x)]
        if finite.size == 0:
            return np.zeros_like(x)
        lo, span = finite.min(), finite.max() - finite.min()
        return (x - lo) / span if span > 0 else np.zeros_like(x)

    return np.stack([unit(a), unit(c)], axis=1)


def moasha_order(acc: ArrayLike, flops: ArrayLike) -> np.ndarray:
    """Indices best first: fronts in order, each front in epsilon-net order from its most accurate point
    (ties: cheaper, then lower index); NaN points last, by index."""
    a, c = _pair(acc, flops)
    fronts = nondominated_sort(a, c)
    valid = ~(np.isnan(a) | np.isnan(c))
    norm = _normalised(np.where(valid, a, np.nan), np.where(valid, c, np.nan))
    out: list[int] = []
    for k in range(int(fronts.max()) + 1 if fronts.size else 0):
        members = np.flatnonzero((fronts == k) & valid)
        if members.size == 0:
            continue
        seed = int(np.lexsort((members, c[members], -a[members]))[0])
        out.extend(int(members[i]) for i in epsilon_net_order(norm[members], seed))
    out.extend(int(i) for i in np.flatnonzero(~valid))
    return np.asarray(out, dtype=int)


def _positions(acc: ArrayLike, flops: ArrayLike) -> np.ndarray:
    order = moasha_order(acc, flops)
    pos = np.empty(order.size, dtype=int)
    pos[order] = np.arange(order.size)
    return pos


def moasha_continues(acc: ArrayLike, flops: ArrayLike, eta: float, index: int = -1) -> bool:
    """Asynchronous rung decision: the points are every trial recorded at the rung, the one arriving now at
    ``index`` (default: last). It continues iff its position p among the n satisfies p / n <= 1 / eta; so the
    first trial at a rung always continues, as in Syne Tune and ASHA."""
    if eta <= 1:
        raise ValueError(f"eta must be > 1, got {eta}")
    pos = _positions(acc, flops)
    if pos.size == 0:
        raise ValueError("a rung decision needs at least the arriving trial")
    return bool(pos[index] / pos.size <= 1.0 / eta + 1e-12)


def moasha_top(acc: ArrayLike, flops: ArrayLike, eta: float) -> set[int]:
    """Synchronous view of the same rule: the indices whose position p satisfies p / n <= 1 / eta."""
    if eta <= 1:
        raise ValueError(f"eta must be > 1, got {eta}")
    pos = _positions(acc, flops)
    return {int(i) for i in np.flatnonzero(pos / max(pos.size, 1) <= 1.0 / eta + 1e-12)}
