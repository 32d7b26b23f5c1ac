"""The rung maths of ``--fidelity schedule`` (spfde_search/search/rungs.py): rung lengths, the shrink rule and the
promotion rule on hand-made rungs, and the rung book's bookkeeping. The shrink rule is also checked against a real
training run: the FLOPs the predictor gives a shrunk config are the FLOPs the trainer measures."""

from __future__ import annotations

import json
import math

import pytest

from spfde_search.config import Config, apply_overrides
from spfde_search.method.flops import predict
from spfde_search.search.rungs import (
    HalvingBook,
    grace_from_fraction,
    promotable,
    rung_lengths,
    scale_epochs,
    shrink,
)
from tests.conftest import TRAINER_SYNTHETIC

# ---------------------------------------------------------------- rung lengths


@pytest.mark.parametrize(("epochs", "m", "eta", "want"), [
    (40, 5, 2, [5, 10, 20, 40]),
    (40, 10, 2, [10, 20, 40]),
    (40, 5, 3, [5, 15, 40]),
    (6, 2, 2, [2, 4, 6]),
    (6, 2, 3, [2, 6]),
    (1, 1, 2, [1]),       # one epoch: one rung, the full schedule
    (10, 3, 2, [3, 6, 10]),
    (9, 1, 1.5, [1, 2, 3, 5, 8, 9]),  # rounded half up, repeats dropped
])
def test_rung_lengths(epochs: int, m: int, eta: float, want: list[int]) -> None:
    assert rung_lengths(epochs, m, eta) == want


def test_rung_lengths_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="grace period"):
        rung_lengths(10, 0, 2)
    with pytest.raises(ValueError, match="reduction factor"):
        rung_lengths(10, 1, 1)


def test_grace_from_fraction() -> None:
    assert grace_from_fraction(40, 0.25) == 10
    assert grace_from_fraction(6, 0.25) == 2  # 1.5 half up
    assert grace_from_fraction(2, 0.25) == 1  # never below one epoch
    with pytest.raises(ValueError):
        grace_from_fraction(40, 0)


def test_scale_epochs_rounds_half_up_with_a_floor() -> None:
    assert [scale_epochs(v, 1 / 8, 1) for v in (1, 2, 3, 4, 5, 12)] == [1, 1, 1, 1, 1, 2]  # Δτ collapses at E/8
    assert scale_epochs(5, 0.5) == 3 and scale_epochs(3, 0.5) == 2  # 2.5 -> 3, 1.5 -> 2 (not to even)
    assert scale_epochs(1, 0.25, 0) == 0


# ---------------------------------------------------------------- the shrink rule


def _cfg(**dotted: object) -> dict:
    return Config.parse(apply_overrides(TRAINER_SYNTHETIC, {"train.epochs": 8, "train.update_interval": 4,
                                                            **dotted})).to_dict()


def test_shrink_scales_epoch_fields_and_keeps_fractions() -> None:
    full = _cfg(**{"train.warmup_epochs": 2, "sieving.fraction": 0.2, "sieving.window": 4,
                   "sparsity.update_end": 0.75, "freezing.scheme": "single_shot_resume", "freezing.start_epoch": 4,
                   "freezing.resume_epochs": 2, "freezing.units": 1})
    s = shrink(full, 4)
    c = s.config
    assert c["train"]["epochs"] == 4
    assert c["train"]["update_interval"] == 2 and c["train"]["warmup_epochs"] == 1
    assert c["sieving"]["window"] == 2 and c["freezing"]["start_epoch"] == 2 and c["freezing"]["resume_epochs"] == 1
    assert c["sieving"]["fraction"] == 0.2 and c["sparsity"]["update_end"] == 0.75 and c["freezing"]["units"] == 1
    assert not s.capped and full["train"]["epochs"] == 8  # the input is left alone


def test_shrink_to_the_full_length_is_the_identity() -> None:
    full = _cfg(**{"sieving.fraction": 0.1})
    s = shrink(full, 8)
    assert s.config == full and not s.capped
    assert s.train_flops == pytest.approx(float(predict(Config.parse(full)).train_flops))


def test_shrink_caps_an_unreachable_freezing_target() -> None:
    # at 8 epochs with Δτ 1 this target is reachable; at 2 epochs (Δτ 1 still) far less can be frozen
    full = _cfg(**{"train.update_interval": 1})
    from search_spaces import max_freezing_saving

    top = max_freezing_saving(full)
    full = apply_overrides(full, {"freezing.target_flops_reduction": round(0.95 * top, 6)})
    s = shrink(full, 2)
    reach = max_freezing_saving(apply_overrides(full, {"train.epochs": 2}))
    assert s.capped and s.capped_from == pytest.approx(round(0.95 * top, 6))
    assert s.config["freezing"]["target_flops_reduction"] <= reach + 1e-6
    assert s.config["freezing"]["target_flops_reduction"] == pytest.approx(math.floor(reach * 1e6) / 1e6)
    predict(Config.parse(s.config))  # it runs


def test_shrink_refuses_a_longer_schedule() -> None:
    with pytest.raises(ValueError, match="1 <= epochs <= 8"):
        shrink(_cfg(), 9)


@pytest.mark.parametrize("dotted", [
    {"sparsity.algorithm": "rigl", "sparsity.ratio": 0.8, "sieving.fraction": 0.2},
    {"sparsity.algorithm": "mest", "sparsity.ratio": 0.9, "freezing.target_flops_reduction": 0.1},
])
def test_a_shrunk_config_trains_the_flops_it_predicts(dotted: dict) -> None:
    from spfde_search.trainer import Trainer

    full = _cfg(**{**dotted, "train.update_interval": 2})
    s = shrink(full, 4)
    trainer = Trainer(Config.parse(s.config))
    for _ in trainer.epochs():
        pass
    assert trainer.train_flops == pytest.approx(s.train_flops, rel=1e-9)


# ---------------------------------------------------------------- promotion


def test_fewer_results_than_eta_promote_nobody() -> None:
    assert promotable([0.9], [1.0], [False], 2) == []
    assert promotable([0.9, 0.8], [1.0, 1.0], [False, False], 3) == []


def test_top_of_a_rung_by_fronts_then_epsilon_net() -> None:
    # (acc, flops): 0 and 1 are non-dominated (1 is cheaper), 2 is dominated by 0, 3 by everyone
    acc, flops = [0.90, 0.85, 0.88, 0.70], [4.0, 1.0, 5.0, 6.0]
    assert promotable(acc, flops, [False] * 4, 2) == [0, 1]  # top 2 of 4: the first front, most accurate first
    assert promotable(acc, flops, [True, False, False, False], 2) == [1]  # 0 went up already
    assert promotable(acc, flops, [False] * 4, 4) == [0]


def test_ties_and_duplicate_points() -> None:
    # two identical points: both non-dominated; the ε-net starts at the lower index and the twin comes next
    assert promotable([0.8, 0.8, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0], [False] * 4, 2) == [0, 1]
    # equal accuracy, different cost: the cheaper dominates
    assert promotable([0.8, 0.8, 0.1, 0.1], [2.0, 1.0, 3.0, 3.0], [False] * 4, 4) == [1]


def test_a_failed_result_counts_but_never_goes_up() -> None:
    nan = float("nan")
    assert promotable([nan, nan, 0.5], [1.0, 1.0, 2.0], [False] * 3, 1.5) == [2]
    assert promotable([nan, nan], [1.0, 1.0], [False, False], 2) == []


# ---------------------------------------------------------------- the book


def test_book_runs_asha_top_down_and_counts_full_length_trials() -> None:
    book = HalvingBook([2, 4, 8], 2.0)
    for i, (acc, flops) in enumerate([(0.5, 1.0), (0.7, 2.0), (0.6, 3.0), (0.4, 4.0)]):
        c = book.add_config({"x": i}, flops)
        book.start(f"t{i}", c, 0)
        book.finish(f"t{i}", acc)
        if i == 0:
            assert book.next_job() is None  # one result, η 2: nobody yet
    job = book.next_job()
    assert job == (1, 1)  # top 2 of 4 at rung 0 by (acc, cost): configs 0 and 1 are the first front, 1 the most accurate
    book.start("p1", *job)
    assert book.next_job() == (0, 1)
    book.start("p0", 0, 1)
    assert book.next_job() is None  # rung 0's top 2 went up; rung 1 is running
    book.finish("p0", 0.55)
    book.finish("p1", 0.75)
    assert book.next_job() == (1, 2)  # the better of rung 1 goes to the full schedule
    book.start("f1", 1, 2)
    assert book.full_count() == 1
    book.finish("f1", None, ok=False)
    assert book.full_count() == 0  # a failed full-length trial does not count toward -n
    book.finish("f1", 0.9)  # a repeated end after a restart changes nothing
    assert book.trials["f1"]["state"] == "failed"


def test_book_round_trips_through_json_and_requeues_lost_trials() -> None:
    book = HalvingBook([2, 8], 2.0)
    for i in range(3):
        book.add_config({"x": i}, float(i + 1))
    book.start("a", 0, 0)
    book.finish("a", 0.5)
    book.start("b", 1, 0)
    book.start("c", 2, 0)
    back = HalvingBook.from_json(json.loads(json.dumps(book.to_json())))
    assert back.to_json() == json.loads(json.dumps(book.to_json()))
    back.requeue(["c", "a"])  # "a" had ended: it stays; "c" was running: its (config, rung) runs again
    assert "a" in back.trials and "c" not in back.trials
    assert back.next_job() == (2, 0)
    assert back.started(2, 0) is False


def test_a_job_given_up_is_never_offered_again_and_counts_nowhere() -> None:
    book = HalvingBook([1, 2], 2.0)
    for i, acc in enumerate([0.9, 0.5]):
        book.add_config({"x": i}, 1.0 + i)
        book.start(f"t{i}", i, 0)
        book.finish(f"t{i}", acc)
    job = book.next_job()
    assert job == (0, 1)
    book.give_up(*job)  # past --max-compute
    assert book.next_job() is None and book.full_count() == 0
    back = HalvingBook.from_json(json.loads(json.dumps(book.to_json())))
    assert back.given_up == [(0, 1)] and back.next_job() is None
