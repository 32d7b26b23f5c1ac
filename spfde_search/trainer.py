"""The SpFDE trainer: sparse training + progressive layer freezing + circular data sieving (SPFDE.md §1-5).

It knows nothing of Ray or MLflow: it yields :class:`EpochMetrics` after every epoch and can checkpoint and
resume its full state. Every random choice comes from a generator seeded by (seed, purpose, epoch), so a run
resumed from an epoch checkpoint follows exactly the same path as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .config import Config, ConfigError
from .data import DataBundle, load_data
from .flops import FlopsPrediction, build_profile, per_sample_cost, plan_all, predict, rigl_pass_cost
from .freezing import cosine_lr
from .models import create_model
from .sieving import CircularSieve, ForgettingTracker
from .sparsity import ALGORITHMS, Masker

__all__ = ["Trainer", "EpochMetrics", "TrainingDiverged", "resolve_device", "seeded_generator"]

CHECKPOINT_FILE = "trainer.pt"


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the run cannot continue."""


def seeded_generator(seed: int, purpose: str, epoch: int) -> torch.Generator:
    """A CPU generator for one purpose and epoch; crc32 (not hash()) so it is stable across processes."""
    g = torch.Generator()
    g.manual_seed(zlib.crc32(f"{seed}:{purpose}:{epoch}".encode()))
    return g


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class EpochMetrics:
    epoch: int  # completed epochs (1-based)
    loss: float
    train_accuracy: float
    test_accuracy: float
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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Trainer:
    """Runs one config. ``for m in trainer.epochs(): ...`` then ``trainer.summary()``."""

    def __init__(
        self,
        cfg: Config,
        data: DataBundle | None = None,
        step_callback: Callable[[int, int, int], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.step_callback = step_callback
        self.device = resolve_device(cfg.train.device)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.prediction: FlopsPrediction = predict(cfg)  # validates the schedule before any data is touched
        self.data = data if data is not None else load_data(cfg.data, cfg.seed, self.device)
        spec = self.data.spec
        self.profile, _ = build_profile(cfg, spec)
        self.targets, self.dst, self.plan, self.samples_per_epoch = plan_all(cfg, self.profile, spec)
        self.algo = ALGORITHMS.get(cfg.sparsity.algorithm)

        torch.manual_seed(cfg.seed)
        self.model = create_model(cfg.model.name, cfg.model.width, spec.channels, spec.num_classes).to(self.device)
        cuda = self.device.type == "cuda"
        self.channels_last = cfg.train.channels_last == "on" or (cfg.train.channels_last == "auto" and cuda)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and cuda)
        self.autocast_dtype = torch.bfloat16 if bf16 else None

        self.masker = Masker(self.model, cfg.sparsity)
        if self.masker.targets != self.targets:
            raise RuntimeError("mask targets disagree with the FLOPs plan")  # a bug, never a user error
        if self.algo.masked:
            self.masker.init_random(seeded_generator(cfg.seed, "mask", 0))
        self.unit_of = {r.name: r.unit for r in self.masker.layers}
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
        self.tracker = ForgettingTracker(n, device=self.device)
        self.epoch = 0
        self.train_flops = 0
        self.wall_seconds = 0.0
        self.history: list[EpochMetrics] = []

    # ------------------------------------------------------------ schedule pieces

    def partial_indices(self) -> torch.Tensor:
        return self.sieve.partial if self.sieve is not None else torch.arange(self.data.spec.num_train)

    def counts(self) -> dict[str, int]:
        return {n: self.masker.count(n) for n in self.masker.targets}

    def _lr(self, group_unit: int, t: float) -> float:
        tc = self.cfg.train
        if self.plan.enabled and self.plan.scheme == "single_shot_resume" and t >= self.plan.epochs - self.plan.resume_epochs:
            return self.plan.resume_lr
        return cosine_lr(t, self.plan.lr_horizon(group_unit), tc.lr, tc.lr_min, tc.warmup_epochs)

    def _set_lr(self, t: float) -> float:
        lr = 0.0
        for g in self.optimizer.param_groups:
            lr = g["lr"] = self._lr(g["unit"], t)
        return lr

    def _set_frozen(self, prefix: int) -> None:
        """Frozen units: no grads (so SGD skips them: no update, no weight decay), BN statistics frozen."""
        for i, part in enumerate(self.parts):
            frozen = i < prefix
            for p in part.parameters():
                p.requires_grad_(not frozen)
                if frozen:
                    p.grad = None

    def _epoch_start(self, e: int) -> int:
        """Boundary actions before epoch e, in the order ``flops.simulate`` assumes. Returns the frozen prefix."""
        prefix = self.plan.frozen_prefix(e)
        for name in self.masker.targets:
            if self.unit_of[name] < prefix:
                self.masker.prune_to_target(name, self.optimizer)  # exact target before (staying) frozen
        if e > 0 and self.dst.is_update(e):
            dense_grads = self._rigl_dense_grads(e, prefix) if self.algo.needs_dense_grad else {}
            gen = seeded_generator(self.cfg.seed, "dst", e)
            for name, n_target in self.targets.items():
                if self.unit_of[name] < prefix:
                    continue
                numel = self.masker.weight(name).numel()
                n_cur = self.masker.count(name)
                held = self.dst.held_after_update(e, n_target, numel)
                k = self.dst.drop_count(e, n_target, n_cur, numel)
                n_drop = n_cur - (n_target - k)
                self.masker.update_layer(name, n_drop, held - (n_target - k), gen, self.optimizer, dense_grads.get(name))
        elif e > 0 and e % self.dst.interval == 0:
            for name in self.masker.targets:
                self.masker.prune_to_target(name, self.optimizer)  # EM&S last phase: back to the exact target
        if self.sieve is not None and e > 0 and e % self.cfg.train.update_interval == 0:
            self.sieve.step(self.tracker, seeded_generator(self.cfg.seed, "sieve", e))
            self.tracker.reset()
        self.masker.apply()
        return prefix

    def _rigl_dense_grads(self, e: int, prefix: int) -> dict[str, torch.Tensor]:
        """RigL grows by the dense gradient of one batch; its cost is counted (SPFDE.md §5)."""
        idx = self.partial_indices()
        gen = seeded_generator(self.cfg.seed, "rigl", e)
        x, y, _ = next(iter(self.data.train_batches(idx, self.cfg.train.batch_size, gen, self.cfg.data.augment)))
        self._set_frozen(prefix)
        bns = [m for m in self.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        saved = [m.momentum for m in bns]
        for m in bns:
            m.momentum = 0.0  # running statistics untouched by this scoring pass
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        with self._autocast():
            loss = F.cross_entropy(self.model(self._prep(x), frozen_units=prefix), y)
        loss.backward()
        grads = {}
        for name in self.targets:
            g = self.masker.weight(name).grad
            if g is not None and self.unit_of[name] >= prefix:
                grads[name] = g.detach().clone()
        self.model.zero_grad(set_to_none=True)
        for m, mom in zip(bns, saved, strict=False):
            m.momentum = mom
        self.train_flops += len(y) * rigl_pass_cost(self.profile, self.counts(), prefix)
        return grads

    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    # ------------------------------------------------------------ the loop

    def epochs(self) -> Iterator[EpochMetrics]:
        cfg = self.cfg
        T = cfg.train.epochs
        while self.epoch < T:
            e = self.epoch
            t0 = time.perf_counter()
            prefix = self._epoch_start(e)
            self._set_frozen(prefix)
            self.model.train()
            for part in self.parts[:prefix]:
                part.eval()
            idx = self.partial_indices()
            steps = math.ceil(len(idx) / cfg.train.batch_size)
            cost = per_sample_cost(self.profile, self.counts(), prefix)
            gen = seeded_generator(cfg.seed, "data", e)
            loss_sum = 0.0
            correct = seen = 0
            lr = 0.0
            for i, (x, y, sid) in enumerate(self.data.train_batches(idx, cfg.train.batch_size, gen, cfg.data.augment)):
                lr = self._set_lr(e + i / steps)
                with self._autocast():
                    out = self.model(self._prep(x), frozen_units=prefix)
                    loss = F.cross_entropy(out, y, label_smoothing=cfg.train.label_smoothing)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"training loss became {loss.item()} at epoch {e + 1}, step {i + 1} "
                        f"(lr {lr:.4g}); lower train.lr or check the data"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.masker.mask_grads()
                self.optimizer.step()
                self.masker.apply()
                ok = out.detach().argmax(1) == y
                self.tracker.update(sid, ok)
                n = len(y)
                self.train_flops += n * cost
                loss_sum += loss.item() * n
                correct += int(ok.sum())
                seen += n
                if self.step_callback is not None:
                    self.step_callback(e, i + 1, steps)
            test_acc = self.evaluate()
            self.epoch = e + 1
            dt = time.perf_counter() - t0
            self.wall_seconds += dt
            pred = self.prediction
            m = EpochMetrics(
                epoch=self.epoch,
                loss=loss_sum / max(seen, 1),
                train_accuracy=correct / max(seen, 1),
                test_accuracy=test_acc,
                train_flops=self.train_flops,
                predicted_train_flops=pred.cumulative[e],
                dense_train_flops=pred.dense_train_flops,
                flops_ratio=self.train_flops / pred.dense_train_flops,
                density=self.masker.overall_density(),
                frozen_units=prefix,
                partial_size=len(idx),
                lr=lr,
                epoch_seconds=dt,
                wall_seconds=self.wall_seconds,
            )
            self.history.append(m)
            yield m

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        correct = total = 0
        for x, y in self.data.test_batches(self.cfg.train.eval_batch_size):
            with self._autocast():
                out = self.model(self._prep(x))
            correct += int((out.argmax(1) == y).sum())
            total += len(y)
        return correct / max(total, 1)

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
            "config": self.cfg.to_dict(),
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
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / (CHECKPOINT_FILE + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, d / CHECKPOINT_FILE)  # atomic: a crash never leaves a half-written checkpoint
        return d / CHECKPOINT_FILE

    def load_checkpoint(self, directory: str | os.PathLike[str]) -> None:
        path = Path(directory) / CHECKPOINT_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no trainer checkpoint at {path}")
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=False))

    @staticmethod
    def has_checkpoint(directory: str | os.PathLike[str]) -> bool:
        return (Path(directory) / CHECKPOINT_FILE).is_file()
