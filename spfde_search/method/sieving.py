"""Circular data sieving (docs/method.md §4): forgetting counts and the removed-set queue.

Why a queue: sieving drops the easiest samples of the partial set every Δτ epochs, but a sample judged
easy once may be forgotten later, so removed samples go round a FIFO queue and come back in turn. Every
sample is therefore used at least once, and the partial set (hence the per-epoch FLOPs) keeps a constant
size, which is what lets the FLOPs predictor count sieving from the config alone.

Difficulty is the number of forgetting events (correct -> wrong between consecutive presentations) over a
sliding window of the last W epochs (``sieving.window``, default W = max(Δτ, 3), docs/method.md §4), read from the
training forward pass, so it costs no extra FLOPs. Each sample's last correctness is kept across epochs, so the
first presentation in the window is compared with the one before it. With W = Δτ this is the paper's
per-interval count; at Δτ = 1 a one-epoch window would hold one comparison per sample and the ranking would be
exactly "wrong at the last pass".

A sample taken back from the queue starts afresh (ours, issue 34): it is ranked only on presentations since it
returned, and until it has had two of them (one chance to forget) it is ranked after every other sample, so it
stays in. Ranked on its events from before it left, or on a first presentation compared with its last one before
it left, a just-returned sample looked easy and went straight back: at Δτ = 1, 0.29 of them left again at the
next step against 0.18 of the others; now none do (at Δτ = 2 the rate stays 0.29: docs/method.md, "Data
sieving"). Pure torch: no model code here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["CircularSieve", "ForgettingTracker", "forgetting_window", "moved_count", "partial_size", "removed_count"]


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


def forgetting_window(window: int | None, interval: int) -> int:
    """W, the epochs whose forgetting events rank the samples: ``sieving.window`` if set (> 0), else max(Δτ, 3)
    (docs/method.md §4, ours): an update at every epoch still sees 3 presentations per sample."""
    return window if window else max(interval, 3)


def _check_fraction(fraction: float) -> None:
    if not 0 <= fraction < 1:
        raise ValueError(f"sieving fraction must be in [0, 1), got fraction={fraction}")


class ForgettingTracker:
    """Per-sample forgetting events over a sliding window of the last ``window`` epochs (Toneva et al.'s count).

    ``update`` is called with each training batch's sample ids and per-sample correctness; ``next_epoch`` at
    the start of every epoch slides the window (the oldest epoch's events and "correct" flags drop out). Ids
    within one call are assumed distinct (one presentation per sample per batch, as ``DataBundle.train_batches``
    gives). Each sample's last correctness is never dropped, so its first presentation of an epoch is compared
    with its previous one. State lives on `device` (default CPU) so a GPU trainer can keep it there without a
    sync per batch: one ring slot of events and one of "correct at least once" per epoch of the window.
    """

    def __init__(self, num_samples: int, window: int = 1, device: torch.device | str | None = None) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got num_samples={num_samples}")
        if window < 1:
            raise ValueError(f"window must be >= 1 epoch, got window={window}")
        self.num_samples = num_samples
        self.window = window
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._slot = 0  # ring slot of the current epoch
        self._events = torch.zeros(window, num_samples, dtype=torch.int32, device=self.device)
        self._correct = torch.zeros(window, num_samples, dtype=torch.bool, device=self.device)
        self._seen = torch.zeros(num_samples, dtype=torch.bool, device=self.device)  # presented before
        self._prev = torch.zeros(num_samples, dtype=torch.bool, device=self.device)  # correct at last presentation
        self._compared = torch.zeros(num_samples, dtype=torch.bool, device=self.device)  # could forget since restart

    def update(self, idx: Tensor, correct: Tensor) -> None:
        """Record one presentation of each sample in `idx`; correct→wrong since its last one is an event."""
        idx = idx.reshape(-1).to(device=self.device, dtype=torch.long)
        correct = correct.reshape(-1).to(device=self.device, dtype=torch.bool)
        if idx.shape != correct.shape:
            raise ValueError(f"idx and correct differ in length: {idx.numel()} vs {correct.numel()}")
        seen = self._seen[idx]
        forgot = seen & self._prev[idx] & ~correct
        self._events[self._slot].index_add_(0, idx, forgot.int())
        self._compared[idx] |= seen
        self._prev[idx] = correct
        self._seen[idx] = True
        self._correct[self._slot, idx] |= correct

    def restart(self, idx: Tensor) -> None:
        """Forget everything about the samples in `idx` (taken back from the removed queue): their events and
        "correct" flags in the window, and their last presentation, so the next one is not compared with it."""
        idx = idx.reshape(-1).to(device=self.device, dtype=torch.long)
        self._events[:, idx] = 0
        self._correct[:, idx] = False
        self._seen[idx] = False
        self._prev[idx] = False
        self._compared[idx] = False

    def compared(self) -> Tensor:
        """Whether each sample has had a presentation compared with a previous one since it (re)started: only
        then can it have a forgetting event, so only then is it ranked on them."""
        return self._compared.clone()

    def next_epoch(self) -> None:
        """Slide the window by one epoch: the oldest epoch's slot is cleared and becomes the current one."""
        self._slot = (self._slot + 1) % self.window
        self._events[self._slot].zero_()
        self._correct[self._slot].zero_()

    def counts(self) -> Tensor:
        """Forgetting events per sample in the window (long, on the tracker's device)."""
        return self._events.sum(0, dtype=torch.long)

    def ever_correct(self) -> Tensor:
        """Whether each sample was classified correctly at least once in the window."""
        return self._correct.any(0)

    def total(self) -> Tensor:
        """Forgetting events in the window summed over all samples (a 0-d tensor on the tracker's device)."""
        return self._events.sum(dtype=torch.long)

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "window": self.window,
            "slot": self._slot,
            "events": self._events.cpu().clone(),
            "correct": self._correct.cpu().clone(),
            "seen": self._seen.cpu().clone(),
            "prev": self._prev.cpu().clone(),
            "compared": self._compared.cpu().clone(),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if int(d["num_samples"]) != self.num_samples or int(d.get("window", 0)) != self.window:
            raise ValueError(
                f"state is for {d['num_samples']} samples and window {d.get('window')}; this tracker has "
                f"{self.num_samples} samples and window {self.window}"
            )
        self._slot = int(d["slot"])
        self._events = d["events"].to(device=self.device, dtype=torch.int32).clone()
        self._correct = d["correct"].to(device=self.device, dtype=torch.bool).clone()
        self._seen = d["seen"].to(device=self.device, dtype=torch.bool).clone()
        self._prev = d["prev"].to(device=self.device, dtype=torch.bool).clone()
        # a state from before "compared" existed: every sample presented before counted as comparable
        self._compared = d.get("compared", d["seen"]).to(device=self.device, dtype=torch.bool).clone()


class CircularSieve:
    """The partial set and the circular queue of removed samples (docs/method.md §4).

    Start: a random round(y·N) samples form the queue (in random order); the rest is the partial set.
    ``step`` (every Δτ epochs): the m easiest partial samples go to the queue's tail (easiest first) and
    m samples come from its head, so |partial| is constant. Easiest = fewest forgetting events in the
    tracker's window; samples never classified correctly in it count as hardest (ours); ties are broken at
    random (ours). The samples coming in restart in the tracker, and a sample not yet compared since it
    (re)started is ranked after all the others (ours): it stays unless fewer than m others are left.
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
        """One sieving update from the forgetting counts of the tracker's window. The result says how many
        samples moved and how many of those leaving had at least one event in the window
        (``moved_with_events``: 0 means the ranking among them came from ties and "never correct" alone)."""
        if tracker.num_samples != self.num_samples:
            raise ValueError(f"tracker has {tracker.num_samples} samples, sieve has {self.num_samples}")
        m = moved_count(self.partial.numel(), self.fraction, self.queue.numel())
        if m == 0:
            return {
                "moved_out": 0,
                "moved_in": 0,
                "moved_with_events": 0,
                "all_returned": self.all_returned,
                "partial_size": self.partial.numel(),
            }
        counts = tracker.counts().cpu()[self.partial]
        never = ~tracker.ever_correct().cpu()[self.partial]
        fresh = ~tracker.compared().cpu()[self.partial]
        hardest = int(counts.max()) + 1 if counts.numel() else 1
        score = torch.where(never, torch.full_like(counts, hardest), counts)  # in [0, hardest]
        score = score + fresh.long() * (hardest + 1)  # not yet compared: after every compared sample
        tie = torch.randperm(self.partial.numel(), generator=generator)  # random order, then a stable sort
        order = tie[torch.sort(score[tie], stable=True).indices]
        out_pos = order[:m]
        with_events = int((counts[out_pos] > 0).sum())
        outgoing = self.partial[out_pos]
        incoming = self.queue[:m]
        keep = torch.ones(self.partial.numel(), dtype=torch.bool)
        keep[out_pos] = False
        self.partial = torch.sort(torch.cat([self.partial[keep], incoming])).values
        self.queue = torch.cat([self.queue[m:], outgoing])
        self._pending[incoming] = False
        self._used[incoming] = True
        tracker.restart(incoming)
        returned = self.all_returned
        if returned:
            self.queue = self.queue[torch.randperm(self.queue.numel(), generator=generator)]
        return {
            "moved_out": m,
            "moved_in": m,
            "moved_with_events": with_events,
            "all_returned": returned,
            "partial_size": self.partial.numel(),
        }

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
