"""Circular data sieving (SPFDE.md §4): forgetting counts and the removed-set queue.

Why a queue: sieving drops the easiest samples of the partial set every Δτ epochs, but a sample judged
easy once may be forgotten later, so removed samples go round a FIFO queue and come back in turn. Every
sample is therefore used at least once, and the partial set (hence the per-epoch FLOPs) keeps a constant
size, which is what lets the FLOPs predictor count sieving from the config alone.

Difficulty is the number of forgetting events (correct -> wrong between consecutive presentations) within
the current interval, read from the training forward pass, so it costs no extra FLOPs. The last correctness
of each sample survives the interval reset, so an interval's first presentation is compared with the
previous interval's last. Pure torch: no model code here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["CircularSieve", "ForgettingTracker", "moved_count", "partial_size", "removed_count"]


def removed_count(num_samples: int, fraction: float) -> int:
    """Initial size of the removed queue: round(y·N) (Python's round, half to even)."""
    _check_fraction(fraction)
    return round(fraction * num_samples)


def partial_size(num_samples: int, fraction: float) -> int:
    """Samples trained on per epoch with sieving fraction y: N − round(y·N), constant over the run."""
    return num_samples - removed_count(num_samples, fraction)


def moved_count(partial: int, fraction: float, queue: int) -> int:
    """m for one sieving step: round(y·|partial|) capped at the queue length.

    At least 1 while the queue is non-empty (ours): with a tiny y·|partial| < 0.5 the queue would
    otherwise never turn and its samples would never be used, against "every sample used at least once".
    """
    if queue <= 0 or fraction <= 0:
        return 0
    return min(max(round(fraction * partial), 1), queue)


def _check_fraction(fraction: float) -> None:
    if not 0 <= fraction < 1:
        raise ValueError(f"sieving fraction must be in [0, 1), got fraction={fraction}")


class ForgettingTracker:
    """Per-sample forgetting events within the current interval (Toneva et al.'s count, per interval).

    ``update`` is called with each training batch's sample ids and per-sample correctness. Ids within one
    call are assumed distinct (one presentation per sample per batch, as ``DataBundle.train_batches`` gives).
    State lives on `device` (default CPU) so a GPU trainer can keep it there without a sync per batch.
    """

    def __init__(self, num_samples: int, device: torch.device | str | None = None) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got num_samples={num_samples}")
        self.num_samples = num_samples
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._counts = torch.zeros(num_samples, dtype=torch.long, device=self.device)
        self._seen = torch.zeros(num_samples, dtype=torch.bool, device=self.device)  # presented before
        self._prev = torch.zeros(
            num_samples, dtype=torch.bool, device=self.device
        )  # correct at last presentation
        self._ever = torch.zeros(num_samples, dtype=torch.bool, device=self.device)

    def update(self, idx: Tensor, correct: Tensor) -> None:
        """Record one presentation of each sample in `idx`; correct→wrong since its last one is an event."""
        idx = idx.reshape(-1).to(device=self.device, dtype=torch.long)
        correct = correct.reshape(-1).to(device=self.device, dtype=torch.bool)
        if idx.shape != correct.shape:
            raise ValueError(f"idx and correct differ in length: {idx.numel()} vs {correct.numel()}")
        forgot = self._seen[idx] & self._prev[idx] & ~correct
        self._counts.index_add_(0, idx, forgot.long())
        self._prev[idx] = correct
        self._seen[idx] = True
        self._ever[idx] |= correct

    def counts(self) -> Tensor:
        """Forgetting events per sample in this interval (long, on the tracker's device)."""
        return self._counts.clone()

    def ever_correct(self) -> Tensor:
        """Whether each sample was classified correctly at least once in this interval."""
        return self._ever.clone()

    def reset(self) -> None:
        """Start a new interval: counts and "ever correct" restart, but each sample's last correctness is kept,
        so its first presentation of the new interval is compared with its last one of the previous interval
        (SPFDE.md §4, ours): without that, Δτ = 1 gives every sample 0 events and sieving becomes random."""
        self._counts.zero_()
        self._ever.zero_()

    def total(self) -> Tensor:
        """Forgetting events of this interval summed over all samples (a 0-d tensor on the tracker's device)."""
        return self._counts.sum()

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "counts": self._counts.cpu().clone(),
            "seen": self._seen.cpu().clone(),
            "prev": self._prev.cpu().clone(),
            "ever": self._ever.cpu().clone(),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if int(d["num_samples"]) != self.num_samples:
            raise ValueError(f"state is for {d['num_samples']} samples, this tracker has {self.num_samples}")
        self._counts = d["counts"].to(device=self.device, dtype=torch.long).clone()
        self._seen = d["seen"].to(device=self.device, dtype=torch.bool).clone()
        self._prev = d["prev"].to(device=self.device, dtype=torch.bool).clone()
        self._ever = d["ever"].to(device=self.device, dtype=torch.bool).clone()


class CircularSieve:
    """The partial set and the circular queue of removed samples (SPFDE.md §4).

    Start: a random round(y·N) samples form the queue (in random order); the rest is the partial set.
    ``step`` (every Δτ epochs): the m easiest partial samples go to the queue's tail (easiest first) and
    m samples come from its head, so |partial| is constant. Easiest = fewest forgetting events; samples
    never classified correctly in the interval count as hardest (ours); ties are broken at random (ours).
    Once every initially removed sample has come back once, the queue is shuffled after each step.
    All randomness comes from the generators passed in; the state is CPU tensors.
    """

    def __init__(self, num_samples: int, fraction: float, generator: torch.Generator) -> None:
        _check_fraction(fraction)
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got num_samples={num_samples}")
        self.num_samples = num_samples
        self.fraction = fraction
        n_removed = removed_count(num_samples, fraction)
        perm = torch.randperm(num_samples, generator=generator)
        self.queue: Tensor = perm[:n_removed].clone()
        self.partial: Tensor = torch.sort(perm[n_removed:]).values
        self._pending = torch.zeros(num_samples, dtype=torch.bool)  # initially removed, not yet taken back
        self._pending[self.queue] = True
        self._used = torch.zeros(num_samples, dtype=torch.bool)
        self._used[self.partial] = True

    @property
    def all_returned(self) -> bool:
        """Every initially removed sample has been taken back into the partial set at least once."""
        return not bool(self._pending.any())

    def step(self, tracker: ForgettingTracker, generator: torch.Generator) -> dict[str, Any]:
        """One sieving update from this interval's forgetting counts; the caller resets the tracker after."""
        if tracker.num_samples != self.num_samples:
            raise ValueError(f"tracker has {tracker.num_samples} samples, sieve has {self.num_samples}")
        m = moved_count(self.partial.numel(), self.fraction, self.queue.numel())
        if m == 0:
            return {
                "moved_out": 0,
                "moved_in": 0,
                "all_returned": self.all_returned,
                "partial_size": self.partial.numel(),
            }
        counts = tracker.counts().cpu()[self.partial]
        never = ~tracker.ever_correct().cpu()[self.partial]
        hardest = int(counts.max()) + 1 if counts.numel() else 1
        score = torch.where(never, torch.full_like(counts, hardest), counts)
        tie = torch.randperm(self.partial.numel(), generator=generator)  # random order, then a stable sort
        order = tie[torch.sort(score[tie], stable=True).indices]
        out_pos = order[:m]
        outgoing = self.partial[out_pos]
        incoming = self.queue[:m]
        keep = torch.ones(self.partial.numel(), dtype=torch.bool)
        keep[out_pos] = False
        self.partial = torch.sort(torch.cat([self.partial[keep], incoming])).values
        self.queue = torch.cat([self.queue[m:], outgoing])
        self._pending[incoming] = False
        self._used[incoming] = True
        returned = self.all_returned
        if returned:
            self.queue = self.queue[torch.randperm(self.queue.numel(), generator=generator)]
        return {"moved_out": m, "moved_in": m, "all_returned": returned, "partial_size": self.partial.numel()}

    def used_at_least_once(self) -> Tensor:
        """Bool per sample: has been in the partial set at some point."""
        return self._used.clone()

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "fraction": self.fraction,
            "partial": self.partial.clone(),
            "queue": self.queue.clone(),
            "pending": self._pending.clone(),
            "used": self._used.clone(),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if int(d["num_samples"]) != self.num_samples or float(d["fraction"]) != self.fraction:
            raise ValueError(
                f"state is for num_samples={d['num_samples']}, fraction={d['fraction']}; "
                f"this sieve has num_samples={self.num_samples}, fraction={self.fraction}"
            )
        self.partial = d["partial"].to(dtype=torch.long, device="cpu").clone()
        self.queue = d["queue"].to(dtype=torch.long, device="cpu").clone()
        self._pending = d["pending"].to(dtype=torch.bool, device="cpu").clone()
        self._used = d["used"].to(dtype=torch.bool, device="cpu").clone()
