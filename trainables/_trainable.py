"""The Ray Tune function trainable: base config + the trial's sampled parameters -> ``Trainer``, one
``ray.tune.report`` per epoch with a checkpoint, resumed from ``ray.tune.get_checkpoint()``.

The trainer state is kept by the trainable itself under the search's folder (``_state.py`` says why); the
checkpoint reported to Ray is only a pointer, the epoch's metrics. A trial the driver saw end (``ended.json``) and
that Ray runs again (its snapshot predates the end) reports that end again and trains nothing; a resumed trial
reports its restored epoch first, so the scheduler decides on it again.

A point that cannot run (config rejected, impossible freezing target, over the FLOPs budget) reports once,
with ``infeasible=True`` and the reason, and returns without loading data or training. The user's model or data
code that does not import or build on this worker (``UserCodeError``: a module the worker lacks, a callable that
raises) is not the point's fault: it ends the trial as a terminal failure (``failed_metrics``), FAILED with the
error, as below. A diverging loss
(``TrainingDiverged``) ends the trial with a terminal ``diverged=True`` result carrying the message, so the
search records it FAILED and goes on, and Ray's retries (``FailureConfig``, for workers that died) never rerun it.
A state that cannot be loaded (``CheckpointError``: both saved epochs damaged) ends the same way, naming the
state folder under the search's storage. A state that cannot be *written* (disk full, read-only storage) raises
``StorageFull``: that is the search's problem, not the trial's, and the driver stops the search.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spfde_search.checkpoint import CheckpointError, copy_as_latest
from spfde_search.config import ConfigError
from spfde_search.execution import RESULT_KEY
from spfde_search.user_code import UserCodeError

from ._assess import Assessment, Budget, assess
from ._hold import hold_after_report, hold_at_start
from ._state import LAST_REPORT, TrialState, storage_full

__all__ = ["TrialSetup", "spfde_trainable", "node_identity", "infeasible_metrics", "failed_metrics"]


@dataclass
class TrialSetup:
    """What every trial shares: the base config (a dict), the budget and the FLOPs reported for points
    that cannot even be predicted (the base's dense training FLOPs)."""

    base: dict[str, Any]
    budget: Budget | None = None
    fallback_flops: float = 0.0
    checkpoint_every: int = 1
    experiment_uri: str = ""  # where trial states live (``state/<trial_id>``); "" keeps them in Ray's checkpoints
    auxiliary: tuple[str, ...] = ()  # trial parameters that are not config fields (a budget-space target): dropped
    extra: dict[str, Any] = field(default_factory=dict)


def node_identity() -> dict[str, str]:
    """Ray node id and IP of the worker running this trial (on loopback clusters the IPs coincide)."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    ip = ""
    with contextlib.suppress(Exception):  # the address the node registered with, not the default route's
        ip = next((n["NodeManagerAddress"] for n in ray.nodes() if n.get("NodeID") == node_id), "")
    return {"node_id": node_id, "node_ip": ip or ray.util.get_node_ip_address()}


def infeasible_metrics(a: Assessment) -> dict[str, Any]:
    """The single result of a point that cannot run. Accuracy 0 and the predicted (or fallback) FLOPs go to
    the sampler, together with the constraint violation that marks the point infeasible."""
    return {
        **a.report_fields(),
        "epoch": 0,
        "val_accuracy": 0.0,
        "test_accuracy": 0.0,
        "train_accuracy": 0.0,
        "loss": float("nan"),
        "train_flops": 0.0,
        "predicted_train_flops": a.run_train_flops,
        "dense_train_flops": float(a.prediction.dense_train_flops) if a.prediction is not None else float("nan"),
        "flops_ratio": a.run_flops_ratio if a.run_flops_ratio is not None else float("nan"),
        "wall_seconds": 0.0,
    }


def failed_metrics(a: Assessment, error: str, ident: dict[str, str]) -> dict[str, Any]:
    """The single, terminal result of a trial whose user code failed on this worker: ``diverged=True`` (the mark
    of a terminal failure, as for a divergence: FAILED in trials.parquet, FAIL in Optuna, never retried), never
    ``infeasible``, with the error and the worker that raised it."""
    where = ident.get("node_ip") or ident.get("node_id") or "?"
    return {**infeasible_metrics(a), **ident, "infeasible": False, "diverged": True,
            "error": f"UserCodeError: {error} (on the Ray worker at {where})"}


def spfde_trainable(config: dict[str, Any], setup: TrialSetup) -> None:
    """Ray Tune function trainable. ``config`` holds the sampled dotted-path parameters (and the auxiliary ones
    named in ``setup.auxiliary``, which are not config fields)."""
    from ray import tune

    from spfde_search.trainer import Trainer, TrainingDiverged

    ident = node_identity()
    store = TrialState(setup.experiment_uri, tune.get_context().get_trial_id()) if setup.experiment_uri else None
    hold_at_start()  # a fault test may pause a trial here; nothing otherwise
    ended = store.ended() if store is not None else None
    if ended is not None:  # it ended before the driver died, after Ray's last snapshot: the same end again
        tune.report({**ended["result"], **ident})
        return
    params = {k: v for k, v in config.items() if k not in setup.auxiliary}
    a = assess(params, setup.base, setup.budget, setup.fallback_flops)
    if a.failure:
        tune.report(failed_metrics(a, a.failure, ident))
        return
    if not a.feasible:
        tune.report({**infeasible_metrics(a), **ident})
        return
    try:
        # rung epochs of the search's early-stopping scheduler: evaluated even with train.eval_every > 1
        # a short rung of --fidelity schedule is never reported on test: only full-length trials are
        short = int(config.get("fidelity.epochs") or 0) < int(setup.base.get("train", {}).get("epochs") or 0) \
            if config.get("fidelity.epochs") is not None else False
        trainer = Trainer(a.config, eval_epochs=setup.extra.get("eval_epochs"),  # type: ignore[arg-type]
                          test_at_end=not short)
    except UserCodeError as e:  # the user's model or data failed to build here (the trainer builds them again)
        tune.report(failed_metrics(a, str(e).splitlines()[0] if str(e) else type(e).__name__, ident))
        return
    except ConfigError as e:  # the trainer's own checks (device, data options) reject the point
        a.reason, a.violation = f"trainer rejected the config: {e}", 1.0
        tune.report({**infeasible_metrics(a), **ident})
        return
    # One folder for the whole trial, so it holds the latest trainer state and the one before it: a damaged
    # latest resumes from the previous epoch (spfde_search/checkpoint.py).
    with tempfile.TemporaryDirectory(prefix="spfde-ckpt-") as work, \
            tempfile.TemporaryDirectory(prefix="spfde-restore-") as got:
        restored: dict[str, Any] = {}
        if store is None or not store.download(got):
            checkpoint = tune.get_checkpoint()  # a search from before the state store, or no store
            if checkpoint is not None:
                with checkpoint.as_directory() as d:
                    for f in Path(d).iterdir():
                        if f.is_file():
                            shutil.copyfile(f, Path(got) / f.name)
        # the execution settings this trial resolved (one thread under Ray, bf16 or not, ...): recorded with its
        # config, so an exported config reruns it exactly (spfde_search/execution.py)
        fields = {**a.report_fields(), **ident, RESULT_KEY: json.dumps(trainer.execution, sort_keys=True)}
        if Trainer.has_checkpoint(got):
            try:
                copy_as_latest(trainer.load_checkpoint(got), work)
            except CheckpointError as e:  # terminal: a retry would read the same damaged files
                where = store.uri if store is not None else "the trial's Ray checkpoint"
                tune.report({**fields, "diverged": True, "epoch": 0, "val_accuracy": 0.0, "test_accuracy": 0.0,
                             "error": f"CheckpointError: {str(e).replace(str(got), where)}"})
                return
        with contextlib.suppress(OSError, ValueError):
            restored = json.loads((Path(got) / LAST_REPORT).read_text())
        total = a.config.train.epochs  # type: ignore[union-attr]
        every = max(1, setup.checkpoint_every)
        last: dict[str, Any] = {}
        try:
            if trainer.epoch > 0 and restored.get("epoch") == trainer.epoch:
                # resumed: the restored epoch's result first, so the scheduler decides on it again (a trial MOASHA
                # had stopped there stops there, not one epoch later) and a trial restored from its final
                # checkpoint ends COMPLETED, not short
                last = {**restored, **fields}
                tune.report(last)
            for m in trainer.epochs():
                metrics = {**m.as_dict(), **fields}
                last = _report_epoch(metrics, m.epoch, total, every, trainer, work, store)
        except TrainingDiverged as e:
            # a terminal result, not an exception: Ray retries crashed workers (FailureConfig), never a divergence
            tune.report({**last, **fields, "diverged": True, "error": f"TrainingDiverged: {e}",
                         "epoch": int(last.get("epoch", 0)), "val_accuracy": 0.0, "test_accuracy": 0.0})


def _report_epoch(metrics: dict[str, Any], epoch: int, total: int, every: int, trainer: Any, work: str,
                  store: TrialState | None) -> dict[str, Any]:
    """One ``tune.report`` per epoch (non-finite floats as NaN), with a checkpoint every ``every`` epochs and at
    the last one; returns what was reported. With a store, the state goes there first and Ray's checkpoint
    holds only the report, so what Ray restores never outruns (or outlives) the state."""
    from ray import tune

    for k, v in list(metrics.items()):
        if isinstance(v, float) and not math.isfinite(v):
            metrics[k] = float("nan")
    if epoch % every == 0 or epoch == total:
        try:
            trainer.save_checkpoint(work)
            (Path(work) / LAST_REPORT).write_text(json.dumps(metrics, default=str))
            if store is not None:
                store.upload(work)
        except OSError as e:
            fatal = storage_full(e, store.uri if store is not None else work, work)
            if fatal is None:
                raise
            raise fatal from None  # the driver stops the search (search/callbacks.py): no retry, no traceback
        if store is None:  # Ray copies the folder to the trial's storage in report()
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(work))
        else:
            with tempfile.TemporaryDirectory(prefix="spfde-pointer-") as pointer:
                shutil.copyfile(Path(work) / LAST_REPORT, Path(pointer) / LAST_REPORT)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(pointer))
    else:
        tune.report(metrics)
    hold_after_report(epoch)  # the test suite's fault tests pause a trial here; nothing otherwise
    return metrics
