"""Golden tests for spfde_search.pareto (hand-sized sets with the exact expected answers)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spfde_search.pareto import (
    above_chance,
    cost_to_reach,
    epsilon_net_order,
    front_indices,
    hypervolume,
    hypervolume_curve,
    knee_point,
    moasha_continues,
    moasha_order,
    moasha_top,
    non_dominated,
    nondominated_sort,
)


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


def test_knee_is_the_point_farthest_above_the_chord():
    """Kneedle's rule, not the largest absolute distance: a point far *below* the chord joining the cheapest and
    the most accurate point is a poor trade-off and never the knee (issue 24: the knee was 0.6275 at 0.092x
    dense while 0.6985 at 0.096x was on the front)."""
    ratio = [0.05, 0.092, 0.096, 0.20, 0.25]
    acc = [0.62, 0.6275, 0.6985, 0.80, 0.92]
    # normalised (flops, acc): (0, 0), (0.21, 0.025) far below, (0.23, 0.26) just above, (0.75, 0.60) below, (1, 1)
    assert knee_point(acc, ratio) == 2
    # the same front in absolute FLOPs (linear normalisation: the scale does not matter) and in shuffled order
    dense = 3.1e12
    assert knee_point(acc, [r * dense for r in ratio]) == 2
    order = [4, 0, 3, 2, 1]
    assert knee_point([acc[i] for i in order], [ratio[i] for i in order]) == order.index(2)
    # two points above: the farther one wins, however close the other is to the cheap end
    assert knee_point([0.0, 0.30, 0.70, 1.0], [0.0, 0.10, 0.40, 1.0]) == 2  # 0.20 above vs 0.30 above
    # no point above the chord (a convex front): closest to the utopia corner, not the farthest below
    assert knee_point([0.0, 0.3, 0.5, 1.0], [0.0, 0.6, 0.9, 1.0]) == 1


# ---------------------------------------------------------------- MOASHA ranking


def test_nondominated_sort_golden():
    # fronts: {0: (0.9, 4), (0.8, 2), (0.6, 1)}, {1: (0.85, 5), (0.7, 3)}, {2: (0.65, 6)}; NaN last (3)
    acc = [0.9, 0.8, 0.6, 0.85, 0.7, 0.65, float("nan")]
    flops = [4.0, 2.0, 1.0, 5.0, 3.0, 6.0, 1.0]
    assert nondominated_sort(acc, flops).tolist() == [0, 0, 0, 1, 1, 2, 3]
    assert nondominated_sort([], []).tolist() == []


def test_epsilon_net_order_golden():
    # points on a line at 0, 1, 2, 10: from 0 the farthest is 10; then 2 (min distance 2 to {0, 10}) before 1 (1)
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [10.0, 0.0]])
    assert epsilon_net_order(pts, 0) == [0, 3, 2, 1]
    assert epsilon_net_order(pts, 3) == [3, 0, 2, 1]  # from 10: 0 is farthest; 2 and 1 then by min distance 2 vs 1
    assert epsilon_net_order(np.zeros((0, 2)), 0) == []
    # identical points: ties go to the lowest index
    assert epsilon_net_order(np.zeros((3, 2)), 1) == [1, 0, 2]


def test_moasha_order_golden():
    # front 0: A(0.9, 10) B(0.5, 1) C(0.7, 5)  (normalised over the rung: A(1, 1) B(0, 0) C(0.5, 4/9))
    # front 1: D(0.6, 6)
    # front 0 starts at its most accurate point A; B is farthest from A; C last. Then D.
    acc = [0.9, 0.5, 0.7, 0.6]
    flops = [10.0, 1.0, 5.0, 6.0]
    assert moasha_order(acc, flops).tolist() == [0, 1, 2, 3]
    # a diverged trial (NaN accuracy) is ranked after every valid trial
    assert moasha_order([float("nan"), 0.5, 0.6], [1.0, 2.0, 3.0]).tolist() == [2, 1, 0]


def test_moasha_continues_golden():
    # the first trial at a rung always continues
    assert moasha_continues([0.1], [100.0], eta=3)
    # eta 2, two trials: the second is at position 1 of 2 -> 1/2 <= 1/2 continues (Syne Tune's rule)
    assert moasha_continues([0.9, 0.5], [1.0, 2.0], eta=2)
    # eta 3, three trials: a dominated arrival sits at position 2 of 3 -> stops
    assert not moasha_continues([0.9, 0.8, 0.5], [1.0, 2.0, 3.0], eta=3)
    # ... but a cheap arrival on the front is kept even though its accuracy is the worst (the point of MOASHA)
    assert moasha_continues([0.9, 0.8, 0.5], [5.0, 6.0, 1.0], eta=3)
    # (by accuracy alone, as ASHA ranks, that arrival is last and would stop)
    # index selects which recorded trial is the arriving one
    assert not moasha_continues([0.5, 0.9, 0.8], [3.0, 1.0, 2.0], eta=3, index=0)
    with pytest.raises(ValueError):
        moasha_continues([0.5], [1.0], eta=1)


def test_moasha_top_golden():
    # a hand-made rung of 6 trials, eta 3: positions p with p/6 <= 1/3 -> p in {0, 1, 2}
    # front 0: (0.9, 9) (0.6, 1) (0.8, 4); front 1: (0.7, 5) (0.55, 2); front 2: (0.5, 8)
    acc = [0.7, 0.9, 0.5, 0.6, 0.55, 0.8]
    flops = [5.0, 9.0, 8.0, 1.0, 2.0, 4.0]
    assert nondominated_sort(acc, flops).tolist() == [1, 0, 2, 0, 1, 0]
    assert moasha_top(acc, flops, eta=3) == {1, 3, 5}
    assert moasha_top(acc, flops, eta=2) == {1, 3, 5, 0}  # p/6 <= 1/2 -> p <= 3: front 1 starts at its best (0.7, 5)
    assert moasha_top([], [], eta=2) == set()


def test_hypervolume_curve_and_cost_to_reach():
    # trials in end order: a completed (0.5, 0.2) costing 2, an early-stopped one costing 1 (never on the front),
    # a failed one with NaN cost, then a completed (0.8, 0.5) costing 3
    spent, hv = hypervolume_curve([0.5, 0.9, float("nan"), 0.8], [0.2, 0.1, float("nan"), 0.5],
                                  [2.0, 1.0, float("nan"), 3.0], [True, False, False, True])
    assert spent.tolist() == [2.0, 3.0, 3.0, 6.0]
    assert hv == pytest.approx([0.4, 0.4, 0.4, 0.55])
    assert cost_to_reach(spent, hv, 0.5) == 6.0
    assert cost_to_reach(spent, hv, 0.4) == 2.0
    assert math.isnan(cost_to_reach(spent, hv, 0.6))


def test_above_chance_is_strictly_above_chance_plus_margin():
    acc = [0.10, 0.105, 0.11, 0.111, 0.5, float("nan")]
    assert above_chance(acc, 0.1, margin=0.01).tolist() == [False, False, False, True, True, False]
    # per-point chance; unknown chance (NaN / None) lets a finite accuracy through
    assert above_chance([0.3, 0.3, 0.02], [0.5, float("nan"), 0.01], margin=0.0).tolist() == [False, True, True]
    assert above_chance([0.0, float("nan")], None).tolist() == [True, False]


def test_selection_metric_is_validation_when_any_trial_has_one():
    from spfde_search.pareto import selection_metric

    assert selection_metric([float("nan"), 0.7, None]) == "val_accuracy"
    # no validation split (data.val_size 0) or a search from before validation: test selects, and says so
    assert selection_metric([float("nan"), None]) == "test_accuracy"
    assert selection_metric(None) == "test_accuracy"
    assert selection_metric([True, "x"]) == "test_accuracy"


def test_best_within_a_budget():
    from spfde_search.pareto import best_within

    acc = [0.80, 0.90, 0.85, 0.90, float("nan")]
    ratio = [0.04, 0.15, 0.08, 0.12, 0.01]
    assert best_within(acc, ratio, 0.05) == 0
    assert best_within(acc, ratio, 0.1) == 2
    assert best_within(acc, ratio, 0.2) == 3  # a tie on accuracy goes to the cheaper schedule
    assert best_within(acc, ratio, 0.03) is None  # the NaN point never answers
