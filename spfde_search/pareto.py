"""Pareto sets of accuracy (maximised) vs training FLOPs (minimised): non-dominated mask, 2-D hypervolume, knee.

Pure numpy, no Ray/MLflow: the search driver, the CLI and the tracking module all call these.

Conventions (golden-tested in ``tests/test_pareto.py``):

- Point *j dominates i* when ``acc[j] >= acc[i]`` and ``flops[j] <= flops[i]`` with at least one strict.
  Identical points do not dominate each other, so duplicates on the front are all kept.
- A point with a NaN coordinate is never on the front and dominates nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["non_dominated", "front_indices", "hypervolume", "knee_point"]

ArrayLike = Sequence[float] | np.ndarray


def _pair(acc: ArrayLike, cost: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(acc, dtype=float).reshape(-1)
    c = np.asarray(cost, dtype=float).reshape(-1)
    if a.shape != c.shape:
        raise ValueError(f"acc and flops must have the same length, got {a.size} and {c.size}")
    return a, c


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

    Both axes are normalised to [0, 1] over the front; the knee is the front point farthest from the straight
    line joining the front's two extremes (cheapest and most accurate). With fewer than three distinct front
    points, or a flat front, it is the point closest to the utopia corner (best accuracy, lowest flops).
    Ties go to the cheaper point.
    """
    a, c = _pair(acc, flops)
    idx = front_indices(a, c)
    if idx.size == 0:
        return None
    fa, fc = a[idx], c[idx]
    span_a, span_c = fa.max() - fa.min(), fc.max() - fc.min()
    na = (fa - fa.min()) / span_a if span_a > 0 else np.zeros_like(fa)
    nc = (fc - fc.min()) / span_c if span_c > 0 else np.zeros_like(fc)
    # cheapest-first order: idx[0] is the cheapest, idx[-1] the most accurate
    dist = np.zeros(idx.size)
    if idx.size >= 3 and span_a > 0 and span_c > 0:
        p0 = np.array([nc[0], na[0]])
        p1 = np.array([nc[-1], na[-1]])
        d = p1 - p0
        norm = float(np.hypot(d[0], d[1]))
        pts = np.stack([nc, na], axis=1) - p0
        dist = np.abs(d[0] * pts[:, 1] - d[1] * pts[:, 0]) / norm
    if dist.max() > 1e-12:
        return int(idx[int(np.argmax(dist))])
    utopia = np.hypot(nc - 0.0, na - 1.0)
    return int(idx[int(np.argmin(utopia))])
