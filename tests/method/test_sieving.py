"""Golden tests of circular data sieving (docs/method.md §4) on hand-sized sequences."""

from __future__ import annotations

import math

import pytest
import torch

from spfde_search.method.sieving import (
    CircularSieve,
    ForgettingTracker,
    forgetting_window,
    moved_count,
    partial_size,
    removed_count,
)


def present(tracker: ForgettingTracker, history: dict[int, list[bool]]) -> None:
    """Feed per-sample correctness sequences, one presentation of each sample per 'batch'."""
    for t in range(max(len(h) for h in history.values())):
        ids = [i for i, h in history.items() if t < len(h)]
        tracker.update(torch.tensor(ids), torch.tensor([history[i][t] for i in ids]))


def events(tracker: ForgettingTracker, want: dict[int, int]) -> None:
    """Give sample i exactly want[i] forgetting events in at least two presentations (so it has been compared and
    is ranked), ending correct (so it counts as ever correct)."""
    present(tracker, {i: [True, True] + [False, True] * c for i, c in want.items()})


def sieve_with(n: int, fraction: float, partial: list[int], queue: list[int]) -> CircularSieve:
    """A sieve in a hand-written state: nothing initially removed outside `queue` is pending."""
    s = CircularSieve(n, fraction, torch.Generator().manual_seed(0))
    pending = torch.zeros(n, dtype=torch.bool)
    pending[queue] = True
    used = torch.zeros(n, dtype=torch.bool)
    used[partial] = True
    s.load_state_dict(
        {
            "num_samples": n,
            "fraction": fraction,
            "partial": torch.tensor(sorted(partial)),
            "queue": torch.tensor(queue),
            "pending": pending,
            "used": used,
        }
    )
    return s


# ---------------------------------------------------------------- forgetting counts


def test_forgetting_counts_golden() -> None:
    t = ForgettingTracker(5)
    present(
        t,
        {
            0: [True, False, True, False],  # two correct -> wrong transitions
            1: [False, True, True],  # wrong first: no event
            2: [False, False],  # never correct
            3: [True, True, False, False, True, False],  # two events
        },
    )
    assert t.counts().tolist() == [2, 0, 0, 2, 0]
    assert t.ever_correct().tolist() == [True, True, False, True, False]


def test_one_epoch_window_keeps_last_correctness() -> None:
    """docs/method.md §4: the window slides, but the first presentation of an epoch is compared with the previous one."""
    t = ForgettingTracker(3)
    present(t, {0: [True, False], 1: [True], 2: [False]})
    assert t.counts().tolist() == [1, 0, 0] and int(t.total()) == 1
    t.next_epoch()
    assert t.counts().tolist() == [0, 0, 0] and int(t.total()) == 0
    assert t.ever_correct().tolist() == [False, False, False]
    # sample 1 was correct at its last presentation: wrong now is an event of the new epoch;
    # sample 0 was wrong last and sample 2 never correct: no event
    present(t, {0: [False], 1: [False], 2: [False]})
    assert t.counts().tolist() == [0, 1, 0]


def test_one_presentation_per_epoch_still_counts() -> None:
    """dtau = 1, one-epoch window: alternating correctness gives an event at every other epoch."""
    t = ForgettingTracker(1)
    got = []
    for ok in [True, False, True, False]:
        present(t, {0: [ok]})
        got.append(int(t.total()))
        t.next_epoch()
    assert got == [0, 1, 0, 1]


def epochs(t: ForgettingTracker, history: dict[int, list[bool]]) -> None:
    """One presentation per sample per epoch (dtau = 1), the window sliding between epochs."""
    for k in range(max(len(h) for h in history.values())):
        if k:
            t.next_epoch()
        present(t, {i: [h[k]] for i, h in history.items() if k < len(h)})


def test_window_of_three_epochs_golden() -> None:
    """Events over the last 3 epochs: sample 0 correct, wrong, correct has 1 event; sample 1 correct x3 has 0;
    sample 2 wrong x3 was never correct in the window. Later epochs drop the first ones from the window."""
    t = ForgettingTracker(3, window=3)
    epochs(t, {0: [True, False, True], 1: [True, True, True], 2: [False, False, False]})
    assert t.counts().tolist() == [1, 0, 0]
    assert t.ever_correct().tolist() == [True, True, False]
    t.next_epoch()
    present(t, {0: [True], 1: [False], 2: [True]})  # window = epochs 1..3: 0's event (epoch 1) still in
    assert t.counts().tolist() == [1, 1, 0]
    t.next_epoch()
    present(t, {0: [True], 1: [True], 2: [True]})  # window = epochs 2..4: 0's event dropped out
    assert t.counts().tolist() == [0, 1, 0] and int(t.total()) == 1


def test_window_default_and_dtau_1_ranking() -> None:
    """Issue 22: at dtau = 1 a one-epoch window ranks by "wrong at the last pass" only, so a sample that
    was correct, wrong, correct ties with one correct x3. The default window W = max(dtau, 3) tells them
    apart: the steady sample leaves first, every seed."""
    assert forgetting_window(None, 1) == forgetting_window(0, 1) == 3
    assert forgetting_window(None, 5) == 5 and forgetting_window(2, 5) == 2
    history = {0: [True, False, True], 1: [True, True, True], 2: [False, False, False]}
    for seed in range(10):
        s = sieve_with(4, 0.25, partial=[0, 1, 2], queue=[3])  # m = round(0.75) = 1
        t = ForgettingTracker(4, window=forgetting_window(None, 1))
        epochs(t, history)
        stats = s.step(t, torch.Generator().manual_seed(seed))
        assert s.queue.tolist() == [1] and stats["moved_with_events"] == 0
    # the old rule (one-epoch window): samples 0 and 1 tie, so the seed decides
    left = set()
    for seed in range(10):
        s = sieve_with(4, 0.25, partial=[0, 1, 2], queue=[3])
        t = ForgettingTracker(4, window=1)
        epochs(t, history)
        s.step(t, torch.Generator().manual_seed(seed))
        left.add(s.queue.tolist()[0])
    assert left == {0, 1}


def test_moved_with_events_counts_leavers_with_an_event() -> None:
    s = sieve_with(10, 0.3, partial=[0, 1, 2, 3, 4, 5, 6], queue=[9, 8, 7])
    t = ForgettingTracker(10)
    events(t, {0: 3, 1: 0, 2: 1, 3: 2, 4: 5, 5: 4})  # m = 2: 1 (0 events) and 2 (1 event) leave
    assert s.step(t, torch.Generator().manual_seed(0))["moved_with_events"] == 1


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window"):
        ForgettingTracker(3, window=0)


def test_tracker_batches_in_any_order_and_mismatch() -> None:
    t = ForgettingTracker(4)
    t.update(torch.tensor([3, 0]), torch.tensor([True, True]))
    t.update(torch.tensor([0, 3]), torch.tensor([False, True]))
    assert t.counts().tolist() == [1, 0, 0, 0]
    with pytest.raises(ValueError, match="length"):
        t.update(torch.tensor([0, 1]), torch.tensor([True]))


def test_tracker_state_dict_round_trip() -> None:
    """The window's ring of epochs and its position come back exactly (plain tensors and ints: weights_only)."""
    a = ForgettingTracker(3, window=2)
    present(a, {0: [True], 1: [True, False], 2: [False]})
    a.next_epoch()
    present(a, {0: [True]})
    b = ForgettingTracker(3, window=2)
    b.load_state_dict(a.state_dict())
    for t in (a, b):
        present(t, {0: [False], 2: [True, False]})
        assert t.counts().tolist() == [1, 1, 1]
        t.next_epoch()  # epoch 0 (sample 1's event) leaves the window
        assert t.counts().tolist() == [1, 0, 1]
    assert all(isinstance(v, (int, torch.Tensor)) for v in a.state_dict().values())
    with pytest.raises(ValueError, match="samples"):
        ForgettingTracker(4, window=2).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="window"):
        ForgettingTracker(3, window=3).load_state_dict(a.state_dict())


# ---------------------------------------------------------------- sizes


def test_sizes() -> None:
    assert removed_count(100, 0.3) == 30 and partial_size(100, 0.3) == 70
    assert removed_count(100, 0.0) == 0 and partial_size(100, 0.0) == 100
    assert moved_count(70, 0.3, 30) == 21
    assert moved_count(70, 0.3, 5) == 5  # capped at the queue
    assert moved_count(12, 0.04, 1) == 1  # at least one while the queue is non-empty
    assert moved_count(12, 0.04, 0) == 0
    with pytest.raises(ValueError, match="fraction=1"):
        removed_count(10, 1.0)


def test_initial_state() -> None:
    s = CircularSieve(100, 0.3, torch.Generator().manual_seed(1))
    assert s.queue.numel() == 30 and s.partial.numel() == 70
    assert torch.equal(s.partial, torch.sort(s.partial).values)
    assert sorted(torch.cat([s.queue, s.partial]).tolist()) == list(range(100))
    assert s.used_at_least_once().sum() == 70
    # queue order is random, not sorted; and seeded
    assert s.queue.tolist() != sorted(s.queue.tolist())
    assert torch.equal(s.queue, CircularSieve(100, 0.3, torch.Generator().manual_seed(1)).queue)


# ---------------------------------------------------------------- steps


def test_fifo_golden() -> None:
    s = sieve_with(10, 0.3, partial=[0, 1, 2, 3, 4, 5, 6], queue=[9, 8, 7])
    t = ForgettingTracker(10)
    events(t, {0: 3, 1: 0, 2: 1, 3: 2, 4: 5, 5: 4})  # 6 never correct
    stats = s.step(t, torch.Generator().manual_seed(0))
    # m = round(0.3 * 7) = 2: easiest are 1 (0 events) then 2 (1 event); 9 and 8 come from the head
    assert stats == {"moved_out": 2, "moved_in": 2, "moved_with_events": 1, "all_returned": False, "partial_size": 7}
    assert s.partial.tolist() == [0, 3, 4, 5, 6, 8, 9]
    assert s.queue.tolist() == [7, 1, 2]  # exact FIFO order: not shuffled yet

    t.next_epoch()
    events(t, {0: 0, 3: 1, 4: 2, 5: 3, 6: 4, 8: 5, 9: 6})
    stats = s.step(t, torch.Generator().manual_seed(0))
    # easiest 0 and 3 out; 7 (the last initially removed) and 1 in -> all returned -> queue shuffled
    assert stats["all_returned"] is True
    assert s.partial.tolist() == [1, 4, 5, 6, 7, 8, 9]
    assert sorted(s.queue.tolist()) == [0, 2, 3]
    assert s.used_at_least_once().all()


def test_shuffle_only_after_all_returned() -> None:
    n, y = 40, 0.25  # queue 10, partial 30, m = round(7.5) = 8: two steps bring all 10 back
    s = CircularSieve(n, y, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(4)
    t = ForgettingTracker(n)
    events(t, {i: i % 3 for i in range(n)})
    first = s.queue.clone()
    s.step(t, g)
    assert not s.all_returned
    assert s.queue[: first.numel() - 8].tolist() == first[8:].tolist()  # unshuffled FIFO
    shuffled = 0
    for _ in range(6):
        before = s.queue.clone()
        m = moved_count(s.partial.numel(), y, before.numel())
        s.step(t, g)
        assert s.all_returned
        expected = before[m:].tolist()
        shuffled += s.queue[: len(expected)].tolist() != expected
    assert shuffled >= 5


def test_never_correct_kept_as_hardest() -> None:
    s = sieve_with(8, 0.4, partial=[0, 1, 2, 3, 4], queue=[5, 6, 7])
    t = ForgettingTracker(8)
    present(t, {0: [False, False], 1: [False], 2: [True, False, True, False, True]})
    events(t, {3: 3, 4: 4})
    s.step(t, torch.Generator().manual_seed(0))  # m = 2: samples 2 (2 events) and 3 (3) leave; 0, 1 stay
    assert s.queue.tolist() == [7, 2, 3]
    assert {0, 1}.issubset(set(s.partial.tolist()))


def test_ties_random_but_seeded() -> None:
    def out(seed: int) -> list[int]:
        s = sieve_with(30, 0.3, partial=list(range(20)), queue=list(range(20, 30)))
        t = ForgettingTracker(30)
        events(t, dict.fromkeys(range(20), 1))
        s.step(t, torch.Generator().manual_seed(seed))
        return s.queue[-6:].tolist()

    assert out(0) == out(0)
    assert len({tuple(out(seed)) for seed in range(5)}) > 1


def test_partial_size_constant_and_everyone_used() -> None:
    n, y = 100, 0.3
    s = CircularSieve(n, y, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    t = ForgettingTracker(n)
    steps = math.ceil(1 / (1 - y)) + 1
    for k in range(steps):
        present(t, {i: [bool((i + k) % 2), bool(i % 3)] for i in s.partial.tolist()})
        stats = s.step(t, g)
        t.next_epoch()
        assert s.partial.numel() == 70 and s.queue.numel() == 30
        assert sorted(torch.cat([s.partial, s.queue]).tolist()) == list(range(n))
        assert stats["moved_out"] == stats["moved_in"] == 21
    assert s.all_returned
    assert s.used_at_least_once().all()


def test_fraction_zero_is_a_no_op() -> None:
    s = CircularSieve(10, 0.0, torch.Generator().manual_seed(0))
    stats = s.step(ForgettingTracker(10), torch.Generator().manual_seed(0))
    assert stats["moved_out"] == 0 and s.partial.tolist() == list(range(10)) and s.queue.numel() == 0


def test_state_dict_round_trip_gives_identical_steps() -> None:
    n, y = 50, 0.2
    a = CircularSieve(n, y, torch.Generator().manual_seed(5))
    ga = torch.Generator().manual_seed(6)
    t = ForgettingTracker(n)
    events(t, {i: i % 4 for i in range(n)})
    a.step(t, ga)

    b = CircularSieve(n, y, torch.Generator().manual_seed(99))
    b.load_state_dict(a.state_dict())
    gb = torch.Generator()
    gb.set_state(ga.get_state())
    for _ in range(4):
        assert a.step(t, ga) == b.step(t, gb)
        assert torch.equal(a.partial, b.partial) and torch.equal(a.queue, b.queue)
    assert torch.equal(a.used_at_least_once(), b.used_at_least_once())
    with pytest.raises(ValueError, match="fraction"):
        CircularSieve(n, 0.3, torch.Generator()).load_state_dict(a.state_dict())


def test_tracker_size_mismatch() -> None:
    s = CircularSieve(10, 0.3, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="tracker"):
        s.step(ForgettingTracker(11), torch.Generator())


# ---------------------------------------------------------------- returned samples (issue 34)


def test_restart_forgets_what_came_before() -> None:
    """A restarted sample keeps no events, no "correct" flag and no last presentation: its next presentation is
    not compared with the one before it left, so it has no chance to forget until a second one."""
    t = ForgettingTracker(3, window=3)
    present(t, {0: [True, False, True], 1: [True, False, True], 2: [True, True]})
    assert t.counts().tolist() == [1, 1, 0] and t.compared().tolist() == [True, True, True]
    t.restart(torch.tensor([0, 2]))
    assert t.counts().tolist() == [0, 1, 0] and t.ever_correct().tolist() == [False, True, False]
    assert t.compared().tolist() == [False, True, False]
    present(t, {0: [False], 1: [False], 2: [True]})  # 0 was correct before it left: no event now
    assert t.counts().tolist() == [0, 2, 0] and t.compared().tolist() == [False, True, False]
    present(t, {0: [True], 2: [False]})  # a second presentation: compared, and 2 forgot
    assert t.counts().tolist() == [0, 2, 1] and t.compared().tolist() == [True, True, True]


def test_just_returned_sample_stays_for_one_step() -> None:
    """Issue 34: a sample taken back at one step, seen once since and right (0 events), is not the easiest at the
    next step; a compared sample with 0 events is. Under the old rule both had 0 events and the seed chose."""
    for seed in range(10):
        s = sieve_with(6, 0.25, partial=[0, 1, 2, 3], queue=[5, 4])  # m = round(0.25 * 4) = 1
        t = ForgettingTracker(6, window=3)
        events(t, {0: 0, 1: 1, 2: 2, 3: 3})
        s.step(t, torch.Generator().manual_seed(seed))  # 0 leaves, 5 comes back
        assert s.queue.tolist() == [4, 0] and 5 in s.partial.tolist()
        t.next_epoch()
        present(t, {5: [True], 1: [True], 2: [True], 3: [True]})  # one presentation each this epoch
        s.step(t, torch.Generator().manual_seed(seed))  # 5: 0 events but not yet compared; 1: 1 event, leaves
        assert sorted(s.queue.tolist()) == [0, 1] and 5 in s.partial.tolist()  # (shuffled: all came back)


def test_fresh_samples_leave_last_when_too_few_are_compared() -> None:
    """The size of the partial set never gives way: with fewer compared samples than m, the rest of the m come
    from the fresh ones (by their own score: a never-correct one last)."""
    s = sieve_with(8, 0.5, partial=[0, 1, 2, 3], queue=[4, 5, 6, 7])  # m = 2
    t = ForgettingTracker(8)
    events(t, {0: 3})
    present(t, {1: [True], 2: [False]})  # 1 and 2: one presentation, not compared; 3 never presented
    s.step(t, torch.Generator().manual_seed(0))
    assert s.queue.tolist()[-2:][0] == 0  # the compared one first
    assert s.queue.tolist()[-1] in (1, 3) and 2 in s.partial.tolist()
