"""The SpFDE trainer: sparse training + progressive layer freezing + circular data sieving (docs/method.md §1-5).

It knows nothing of Ray or MLflow: it yields :class:`EpochMetrics` after every epoch and can checkpoint and
resume its full state. Every random choice comes from a generator seeded by (seed, purpose, epoch), so a run
resumed from an epoch checkpoint follows exactly the same path as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import checkpoint
from .config import Config, ConfigError
from .data import DataBundle, load_data
from .device import execution_settings, resolve_device, resolve_execution
from .method.flops import FlopsPrediction, build_profile, per_sample_cost, plan_all, predict, rigl_pass_cost
from .method.plan import EpochPlan
from .method.sieving import CircularSieve, ForgettingTracker
from .method.sparsity import ALGORITHMS, Masker
from .models import build_model

__all__ = ["Trainer", "EpochMetrics", "TrainingDiverged", "resolve_device", "seeded_generator"]


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the run cannot continue."""


def seeded_generator(seed: int, purpose: str, epoch: int) -> torch.Generator:
    """A CPU generator for one purpose and epoch; crc32 (not hash()) so it is stable across processes."""
    g = torch.Generator()
    g.manual_seed(zlib.crc32(f"{seed}:{purpose}:{epoch}".encode()))
    return g


@dataclass
class EpochMetrics:
    epoch: int  # completed epochs (1-based)
    loss: float
    train_accuracy: float
    test_accuracy: float | None  # None where not evaluated: with a validation split, only the last epoch is
    train_flops: int  # cumulative, measured
    predicted_train_flops: int  # cumulative, from the config alone
    dense_train_flops: int  # whole run, dense, full set
    flops_ratio: float  # cumulative measured / whole-run dense
    density: float  # overall density of the sparse layers
    frozen_units: int
    partial_size: int
    lr: float  # learning rate of the last (never frozen) parameter group
    epoch_seconds: float
    wall_seconds: float  # cumulative training + evaluation time
    regrown_fraction: float = 0.0  # weights grown at this epoch's boundary / weights of the sparse layers
    forgetting_events: int = 0  # events in the window that ranked this boundary's sieve step (0: no sieve step)
    moved_with_events: int = 0  # samples moved out at this boundary that had >= 1 forgetting event in the window
    val_accuracy: float | None = None  # validation (data.val_size): where evaluated (train.eval_every, eval_epochs)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Trainer:
    """Runs one config. ``for m in trainer.epochs(): ...`` then ``trainer.summary()``.

    ``eval_epochs``: completed-epoch numbers (1-based, as ``EpochMetrics.epoch``) that are evaluated on top of
    ``train.eval_every`` and the last epoch, so a rung-based scheduler (ASHA) sees an accuracy at each of its
    rungs; it may also be changed later through the ``eval_epochs`` attribute (a set).

    With a validation split (``data.val_size`` > 0) those epochs evaluate validation, which is what selects, and
    the test set is evaluated once, after the last epoch, only to be reported; without one they evaluate test.
    ``test_at_end=False`` skips that one test pass (a short rung of successive halving is never reported on test).
    """

    def __init__(
        self,
        cfg: Config,
        data: DataBundle | None = None,
        step_callback: Callable[[int, int, int], None] | None = None,
        eval_epochs: Iterable[int] | None = None,
        test_at_end: bool = True,
    ) -> None:
        self.cfg = cfg
        self.test_at_end = test_at_end
        self.step_callback = step_callback
        self.eval_epochs: set[int] = set(eval_epochs or ())
        self.device = resolve_device(cfg.train.device)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.prediction: FlopsPrediction = predict(cfg)  # validates the schedule before any data is touched
        self.data = data if data is not None else load_data(cfg.data, cfg.seed, self.device)
        spec = self.data.spec
        self.profile, _ = build_profile(cfg, spec)
        plans = plan_all(cfg, self.profile, spec)
        # the epoch plan holds every boundary rule; this class only executes it (spfde_search/method/plan.py)
        self.targets, self.freeze, self.plan = plans.targets, plans.freeze, plans.run
        self.samples_per_epoch = plans.samples_per_epoch
        self.algo = ALGORITHMS.get(cfg.sparsity.algorithm)

        torch.manual_seed(cfg.seed)
        self.model = build_model(
            cfg.model.name, cfg.model.width, spec.channels, spec.num_classes, cfg.model.kwargs
        ).to(self.device)
        # auto = bf16 autocast + channels-last on CUDA and on CPUs with native bf16, else fp32 (spfde_search/device.py)
        ex = resolve_execution(cfg.train.device, cfg.train.precision, cfg.train.channels_last)
        self.channels_last, self.autocast_dtype = ex.channels_last, ex.autocast_dtype
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # what this run resolved, recorded with a search trial's config so an export reruns it exactly (execution.py)
        self.execution: dict[str, Any] = execution_settings(ex, torch.get_num_threads())

        self.masker = Masker(self.model, cfg.sparsity)
        if self.masker.targets != self.targets:
            raise RuntimeError("mask targets disagree with the FLOPs plan")  # a bug, never a user error
        if self.algo.masked:
            self.masker.init_random(seeded_generator(cfg.seed, "mask", 0))
        self.parts = [*self.model.units, self.model.head]
        self.optimizer = torch.optim.SGD(
            [{"params": list(p.parameters()), "unit": i} for i, p in enumerate(self.parts)],
            lr=cfg.train.lr,
            momentum=cfg.train.momentum,
            nesterov=cfg.train.nesterov and cfg.train.momentum > 0,
            weight_decay=cfg.train.weight_decay,
        )
        n = spec.num_train
        self.sieve = (
            CircularSieve(n, cfg.sieving.fraction, seeded_generator(cfg.seed, "sieve", 0))
            if cfg.sieving.enabled
            else None
        )
        self.tracker = ForgettingTracker(n, self.plan.forgetting_window, device=self.device)
        self.epoch = 0
        self.train_flops = 0
        self.wall_seconds = 0.0
        self.history: list[EpochMetrics] = []

    # ------------------------------------------------------------ schedule pieces

    def partial_indices(self) -> torch.Tensor:
        return self.sieve.partial if self.sieve is not None else torch.arange(self.data.spec.num_train)

    def counts(self) -> dict[str, int]:
        return {n: self.masker.count(n) for n in self.masker.targets}

    def _set_lr(self, t: float) -> float:
        tc = self.cfg.train
        lr = 0.0
        for g in self.optimizer.param_groups:
            lr = g["lr"] = self.plan.lr(g["unit"], t, tc.lr, tc.lr_min, tc.warmup_epochs)
        return lr

    def _set_frozen(self, prefix: int) -> None:
        """Frozen units: no grads (so SGD skips them: no update, no weight decay), BN statistics frozen, and
        their optimizer state dropped, so a scheme that unfreezes them starts fresh (no momentum replay)."""
        for i, part in enumerate(self.parts):
            frozen = i < prefix
            for p in part.parameters():
                p.requires_grad_(not frozen)
                if frozen:
                    p.grad = None
                    self.optimizer.state.pop(p, None)

    def _epoch_start(self, e: int) -> tuple[EpochPlan, int, dict[str, int], torch.Generator]:
        """Execute epoch e's boundary plan (see ``method/plan.py``); returns it with the weights grown, the sieve
        step's statistics (forgetting events in the window, moved-out samples that had one) and the DST generator.
        RigL's update waits for the epoch's first batch (``_rigl_update_step``). What the masks hold afterwards
        must equal the plan. The forgetting window then slides to epoch e."""
        ep = self.plan.epochs[e]
        gen = seeded_generator(self.cfg.seed, "dst", e)
        for s in ep.freeze_prunes:  # exact target before (staying) frozen
            self.masker.update_layer(s.name, s.drop, s.grow, gen, self.optimizer)
        grown = 0 if ep.rigl_pass else self._dst_steps(ep, gen, {})
        sieved = {"forgetting_events": 0, "moved_with_events": 0}
        if ep.sieve_step and self.sieve is not None:
            sieved["forgetting_events"] = int(self.tracker.total())
            step = self.sieve.step(self.tracker, seeded_generator(self.cfg.seed, "sieve", e))
            sieved["moved_with_events"] = int(step["moved_with_events"])
        self.tracker.next_epoch()
        self.masker.apply()
        if not ep.rigl_pass:
            self._check_plan(e, ep.counts, grown, ep.grown)
        else:
            self._check_plan(e, ep.pass_counts, 0, 0)
        return ep, grown, sieved, gen

    def _dst_steps(self, ep: EpochPlan, gen: torch.Generator, dense_grads: dict[str, torch.Tensor]) -> int:
        grown = 0
        for s in ep.dst_steps:
            _, g = self.masker.update_layer(s.name, s.drop, s.grow, gen, self.optimizer, dense_grads.get(s.name))
            grown += g
        return grown

    def _check_plan(self, e: int, planned: Mapping[str, int], grown: int, planned_grown: int) -> None:
        counts = self.counts()
        if counts != dict(planned) or grown != planned_grown:
            bad = sorted(n for n in counts if counts[n] != planned[n])
            raise RuntimeError(  # a bug, never a user error: the run must not drift from its FLOPs prediction
                f"epoch {e}: the masks hold a different density than the epoch plan (layers {bad}, "
                f"grown {grown} vs planned {planned_grown})"
            )

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor, prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The training loss (label smoothing included) and its gradients, nothing applied yet."""
        with self._autocast():
            out = self.model(self._prep(x), frozen_units=prefix)
            loss = F.cross_entropy(out, y, label_smoothing=self.cfg.train.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return out, loss

    def _rigl_update_step(
        self, e: int, ep: EpochPlan, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """RigL's mask-update step, as SparseRigLOptimizer does it (google-research/rigl,
        rigl/sparse_optimizers_base.py: ``compute_gradients`` takes the gradient of the training loss with respect
        to the masked weights, ``apply_gradients`` then runs the mask update *instead of* the optimizer step): the
        epoch's first training batch, under the training loss, gives the dense gradient that grows, and its step
        is not applied. Its cost (dense weight gradients) is counted by ``flops.simulate`` (docs/method.md §5)."""
        out, loss = self._forward_backward(x, y, ep.frozen_prefix)
        grads = {s.name: g for s in ep.dst_steps if (g := self.masker.weight(s.name).grad) is not None}
        grown = self._dst_steps(ep, gen, grads)
        self.optimizer.zero_grad(set_to_none=True)
        self.masker.apply()
        self._check_plan(e, ep.counts, grown, ep.grown)
        return out, loss, grown

    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    # ------------------------------------------------------------ the loop

    def epochs(self) -> Iterator[EpochMetrics]:
        """Train epoch by epoch. The step loop never reads a tensor on the host (no per-step device sync): the
        loss, correct counts and forgetting state stay on the device and are read once per epoch."""
        cfg = self.cfg
        T = cfg.train.epochs
        while self.epoch < T:
            e = self.epoch
            t0 = time.perf_counter()
            ep, grown, sieved, dst_gen = self._epoch_start(e)
            prefix = ep.frozen_prefix
            self._set_frozen(prefix)
            self.model.train()
            for part in self.parts[:prefix]:
                part.eval()
            idx = self.partial_indices()
            steps = math.ceil(len(idx) / cfg.train.batch_size)
            cost = per_sample_cost(self.profile, ep.counts, prefix)  # ep.counts == what the masks hold (checked)
            update_cost = rigl_pass_cost(self.profile, ep.pass_counts, prefix)  # RigL's update batch
            gen = seeded_generator(cfg.seed, "data", e)
            losses = torch.zeros(steps, device=self.device)
            sizes: list[int] = []
            correct = torch.zeros((), dtype=torch.long, device=self.device)
            lr = 0.0
            for i, (x, y, sid) in enumerate(self.data.train_batches(idx, cfg.train.batch_size, gen, cfg.data.augment)):
                lr = self._set_lr(e + i / steps)
                n = len(y)
                if i == 0 and ep.rigl_pass:
                    out, loss, grown = self._rigl_update_step(e, ep, x, y, dst_gen)
                    self.train_flops += n * update_cost
                else:
                    out, loss = self._forward_backward(x, y, prefix)
                    self.masker.mask_grads()
                    self.optimizer.step()
                    self.masker.apply()
                    self.train_flops += n * cost
                ok = out.detach().argmax(1) == y
                self.tracker.update(sid, ok)
                losses[i] = loss.detach()
                correct += ok.sum()
                sizes.append(n)
                if self.step_callback is not None:
                    self.step_callback(e, i + 1, steps)
            loss_host = losses.cpu()  # the epoch's one read of the step statistics
            finite = torch.isfinite(loss_host)
            if not bool(finite.all()):
                bad = int((~finite).nonzero()[0])
                raise TrainingDiverged(
                    f"training loss became {float(loss_host[bad])} at epoch {e + 1}, step {bad + 1} "
                    f"(lr {lr:.4g} at the epoch's end); lower train.lr or check the data"
                )
            seen = sum(sizes)
            loss_sum = float((loss_host * torch.tensor(sizes, dtype=loss_host.dtype)).sum())
            scheduled = ep.evaluate or (e + 1) in self.eval_epochs
            has_val = self.data.spec.num_val > 0
            val_acc = self.evaluate("val") if has_val and scheduled else None
            test_acc = self.evaluate("test") if (e + 1 == T and self.test_at_end if has_val else scheduled) else None
            self.epoch = e + 1
            dt = time.perf_counter() - t0
            self.wall_seconds += dt
            pred = self.prediction
            m = EpochMetrics(
                epoch=self.epoch,
                loss=loss_sum / max(seen, 1),
                train_accuracy=int(correct) / max(seen, 1),
                test_accuracy=test_acc,
                train_flops=self.train_flops,
                predicted_train_flops=pred.cumulative[e],
                dense_train_flops=pred.dense_train_flops,
                flops_ratio=self.train_flops / pred.dense_train_flops,
                density=self.plan.density(e),
                frozen_units=prefix,
                partial_size=len(idx),
                lr=lr,
                epoch_seconds=dt,
                wall_seconds=self.wall_seconds,
                regrown_fraction=grown / self.plan.sparse_numel if self.plan.sparse_numel else 0.0,
                forgetting_events=sieved["forgetting_events"],
                moved_with_events=sieved["moved_with_events"],
                val_accuracy=val_acc,
            )
            self.history.append(m)
            yield m

    @torch.no_grad()
    def evaluate(self, split: str = "test") -> float:
        """Accuracy on the test or validation (``"val"``) split; the correct count stays on the device until the
        end (one read)."""
        self.model.eval()
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        total = 0
        batches = self.data.val_batches if split == "val" else self.data.test_batches
        for x, y in batches(self.cfg.train.eval_batch_size):
            with self._autocast():
                out = self.model(self._prep(x))
            correct += (out.argmax(1) == y).sum()
            total += len(y)
        return int(correct) / max(total, 1)

    def fit(self) -> dict[str, Any]:
        for _ in self.epochs():
            pass
        return self.summary()

    def summary(self) -> dict[str, Any]:
        pred = self.prediction
        last = self.history[-1] if self.history else None
        sieve_only = pred.dense_train_flops - pred.saved["sparsity"] - pred.saved["sieving"]
        saved = {
            "sparsity": pred.saved["sparsity"],
            "sieving": pred.saved["sieving"],
            "freezing": sieve_only - self.train_flops if self.epoch == pred.epochs else pred.saved["freezing"],
        }
        return {
            "val_accuracy": last.val_accuracy if last else None,  # None without a validation split
            "test_accuracy": last.test_accuracy if last else None,
            "train_accuracy": last.train_accuracy if last else None,
            "loss": last.loss if last else None,
            "train_flops": self.train_flops,
            "predicted_train_flops": pred.train_flops,
            "dense_train_flops": pred.dense_train_flops,
            "flops_ratio": self.train_flops / pred.dense_train_flops,
            "saved": saved,
            "saved_fraction": {k: v / pred.dense_train_flops for k, v in saved.items()},
            "freeze_start_epoch": pred.freeze_start_epoch,
            "unit_freeze_epochs": pred.unit_freeze_epochs,
            "density": self.masker.overall_density(),
            "epochs": self.epoch,
            "wall_seconds": self.wall_seconds,
            "device": str(self.device),
            "execution": dict(self.execution),
            "config": self.cfg.to_dict(),
            # per epoch: epoch, density, regrown_fraction, forgetting_events, moved_with_events, frozen_units,
            # partial_size, lr, val_accuracy / test_accuracy (None where not evaluated), train_flops, ... (EpochMetrics;
            # `spfde train --json`)
            "history": [m.as_dict() for m in self.history],
        }

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "masks": self.masker.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sieve": self.sieve.state_dict() if self.sieve is not None else None,
            "tracker": self.tracker.state_dict(),
            "train_flops": self.train_flops,
            "wall_seconds": self.wall_seconds,
            "history": [m.as_dict() for m in self.history],
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("config") != self.cfg.to_dict():
            raise ConfigError("checkpoint was written by a different config; resume with the same config")
        self.model.load_state_dict(state["model"])
        self.masker.load_state_dict(state["masks"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.sieve is not None:
            self.sieve.load_state_dict(state["sieve"])
        self.tracker.load_state_dict(state["tracker"])
        self.epoch = int(state["epoch"])
        self.train_flops = int(state["train_flops"])
        self.wall_seconds = float(state["wall_seconds"])
        self.history = [EpochMetrics(**m) for m in state["history"]]
        torch.set_rng_state(state["torch_rng"])

    def save_checkpoint(self, directory: str | os.PathLike[str]) -> Path:
        """Atomic write of the full state; the folder keeps this one and the one before (see checkpoint.py)."""
        return checkpoint.save(self.state_dict(), directory)

    def load_checkpoint(self, directory: str | os.PathLike[str]) -> Path:
        """Resume from the folder's latest checkpoint (the previous one if the latest is damaged, with a
        warning); weights-only loading, so a crafted file cannot run code. Returns the file used."""
        state, path = checkpoint.load(directory, map_location=self.device)
        self.load_state_dict(state)
        return path

    @staticmethod
    def has_checkpoint(directory: str | os.PathLike[str]) -> bool:
        return checkpoint.exists(directory)
