"""Golden tests for spfde_search.pareto (hand-sized sets with the exact expected answers)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spfde_search.pareto import front_indices, hypervolume, knee_point, non_dominated


def test_non_dominated_golden():
    acc = [0.90, 0.85, 0.80, 0.92, 0.70, 0.85]
    flops = [10.0, 5.0, 6.0, 20.0, 1.0, 5.0]
    # (0.80, 6) is dominated by (0.85, 5); the two identical (0.85, 5) are both kept
    assert non_dominated(acc, flops).tolist() == [True, True, False, True, True, True]


def test_non_dominated_ties_and_equal_cost():
    # equal flops: only the best accuracy survives; equal accuracy: only the cheapest survives
    assert non_dominated([0.5, 0.6, 0.6], [3.0, 3.0, 3.0]).tolist() == [False, True, True]
    assert non_dominated([0.7, 0.7], [1.0, 2.0]).tolist() == [True, False]


def test_non_dominated_nan_and_empty():
    assert non_dominated([], []).tolist() == []
    assert non_dominated([float("nan"), 0.5, 0.4], [1.0, float("nan"), 2.0]).tolist() == [False, False, True]


def test_non_dominated_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = rng.integers(0, 6, 30) / 5
        c = rng.integers(0, 6, 30).astype(float)
        brute = [not any((a[j] >= a[i] and c[j] <= c[i] and (a[j] > a[i] or c[j] < c[i])) for j in range(30))
                 for i in range(30)]
        assert non_dominated(a, c).tolist() == brute


def test_front_indices_order():
    assert front_indices([0.9, 0.8, 0.95, 0.5], [3.0, 2.0, 4.0, 2.5]).tolist() == [1, 0, 2]


def test_hypervolume_golden():
    # front (ratio, acc): (0.2, 0.5), (0.5, 0.8); ref (0, 1): 0.3*0.5 + 0.5*0.8 = 0.55
    assert hypervolume([0.5, 0.8], [0.2, 0.5]) == pytest.approx(0.55)
    # a dominated point changes nothing; a point beyond the reference adds nothing
    assert hypervolume([0.5, 0.8, 0.4, 0.99], [0.2, 0.5, 0.6, 1.2]) == pytest.approx(0.55)
    assert hypervolume([1.0], [0.0]) == pytest.approx(1.0)
    assert hypervolume([], []) == 0.0
    assert hypervolume([0.5], [0.5], ref=(0.5, 1.0)) == 0.0
    assert hypervolume([0.6], [0.5], ref=(0.5, 1.0)) == pytest.approx(0.05)


def test_knee_golden():
    # front with a clear elbow at (flops 2, acc 0.9)
    acc = [0.5, 0.9, 0.95, 0.3]
    flops = [1.0, 2.0, 10.0, 5.0]
    assert knee_point(acc, flops) == 1
    assert knee_point([0.7], [3.0]) == 0
    assert knee_point([], []) is None
    # two points: equally far from utopia after normalising -> the cheaper one
    assert knee_point([0.8, 1.0], [0.0, 1.0]) == 0
    # three collinear points: no knee by distance -> closest to utopia, the middle one
    assert knee_point([0.0, 0.5, 1.0], [0.0, 0.5, 1.0]) == 1
    assert math.isfinite(hypervolume([0.0, 0.5, 1.0], [0.0, 0.5, 1.0]))
