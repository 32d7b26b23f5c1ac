"""Ray plumbing of a search: starting or joining Ray, the resourced trainable, the ASHA / MOASHA scheduler, trial folder
names and attaching callbacks to a Tuner. Ray is imported on use."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from search_spaces import AUXILIARY
from spfde_search.choices import is_import_path
from spfde_search.user_code import local_modules
from trainables import TrialSetup

from .prepare import Prepared
from .sessions import end_dead_session, record_session, session_dir
from .settings import SearchError, SearchSettings, experiment_uri


def _init_ray(settings: SearchSettings, log_to_driver: bool = False, space: Mapping[str, Any] | None = None) -> bool:
    """Join ``settings.address`` or start a new embedded local Ray. Returns True if we started it. ``space``: the
    search space's distributions, whose ``model.name`` / ``data.name`` choices are shipped as the base's are."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": log_to_driver}
    runtime_env: dict[str, Any] = {}
    if settings.ship_code:
        package = Path(__file__).resolve().parent.parent  # spfde_search/
        root = package.parent
        import search_spaces
        import trainables

        mods = [str(package), str(Path(search_spaces.__file__).parent), str(Path(trainables.__file__).parent)]
        runtime_env = {"py_modules": mods, "env_vars": {"SPFDE_CODE_ROOT": str(root)}}
    user = shipped_user_code(settings, space)
    if user:  # the user's model / data modules (import paths), on the embedded Ray and on a cluster
        runtime_env["py_modules"] = [*runtime_env.get("py_modules", []), *user]
    if runtime_env:
        kwargs["runtime_env"] = runtime_env
    if settings.address:
        ray.init(address=settings.address, **kwargs)
    else:  # embedded: always a new local instance, never a cluster named by RAY_ADDRESS or a stale
        # ray_current_cluster file of an earlier `ray start` (joining is only ever --address)
        uri = experiment_uri(settings.storage_path, settings.name)
        end_dead_session(uri)  # a killed driver's agents outlive it by a minute (search/sessions.py)
        ray.init(
            address="local",
            num_cpus=settings.num_cpus or os.cpu_count() or 1,
            object_store_memory=200 * 1024**2,
            **kwargs,
        )
        record_session(uri, session_dir(ray.nodes()))
    return True


def shipped_user_code(settings: SearchSettings, space: Mapping[str, Any] | None = None) -> list[str]:
    """The local folders / files behind the import paths of ``model.name`` and ``data.name`` that go to every
    worker as ``runtime_env`` ``py_modules`` (``--ship-user-code``, on by default; installed packages are not
    shipped: ``user_code.local_modules``): the base config's, and every choice of a space (its distributions by
    config path) that samples these fields, since a trial may get any of them."""
    if not settings.ship_user_code:
        return []
    return local_modules(user_import_paths(settings.base_config, space or {}))


def user_import_paths(base: Mapping[str, Any], space: Mapping[str, Any]) -> list[str]:
    """The import paths (``module:callable``) a trial of this search may resolve: ``model.name`` / ``data.name``
    of the base config and the categorical choices of a space that samples them (a YAML space's
    ``model.name: {type: categorical, choices: [mypkg.nets:a, resnet8]}``), in order, without repeats."""
    names = [str(base.get(sec, {}).get("name", "")) for sec in ("model", "data")]
    for path in ("model.name", "data.name"):
        names += [str(c) for c in getattr(space.get(path), "choices", ())]
    return list(dict.fromkeys(n for n in names if is_import_path(n)))


def check_address(address: str, timeout: float) -> str:
    """``--address`` must answer before anything is written or Ray is asked to join it: ``ray.init`` on an
    address with no cluster retries forever. Returns the ``host:port`` it checked; SearchError (one line naming
    the address as given, how long it waited and how to check it) when no cluster is found or it does not answer
    within ``timeout`` seconds. Ray rewrites a loopback address to this node's own IP (where its GCS listens), so
    that is where we connect, but the message names what the user typed. ``ray://`` (client mode) is refused
    later, in ``_set_callbacks``."""
    if address.startswith("ray://"):
        return address
    from ray._private import services

    hint = f"check it with `ray status --address {address}`, or leave --address out for an embedded Ray"
    try:
        target = services.canonicalize_bootstrap_address(address)
    except Exception as e:  # noqa: BLE001 - a malformed address, a host that does not resolve
        raise SearchError(f"--address {address}: {e}; {hint}") from None
    if target is None:  # "auto" with no `ray start` on this machine and no RAY_ADDRESS
        raise SearchError(f"--address {address}: no running Ray cluster found on this machine; {hint}")
    host, _, port = target.rpartition(":")
    t0 = time.monotonic()
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as e:
        waited = time.monotonic() - t0
        if isinstance(e, TimeoutError):
            why = f"no answer within {timeout:g} s, --connect-timeout"
        else:
            why = f"{(getattr(e, 'strerror', None) or str(e)).lower()} after {waited:.1f} s"
        where = "there" if address != "auto" else f"at {target}"  # auto: the address Ray found is news
        raise SearchError(f"--address {address}: no Ray cluster answers {where} ({why}); {hint}") from None
    _check_token(address, target)
    return target


# how a driver joins a cluster started with RAY_AUTH_MODE=token (https://docs.ray.io/en/latest/ray-security/token-auth.html)
TOKEN_HINT = ("set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN=<token> (or a file named by "
              "RAY_AUTH_TOKEN_PATH, default ~/.ray/auth_token; `ray get-auth-token` on the head node prints it)")


def _check_token(address: str, target: str) -> None:
    """A cluster with token authentication refuses a driver without its token: ``ray.init`` then retries for
    ~20 s, logging ``InvalidAuthToken`` once a second, and ends in a 60-line traceback. One request to the GCS
    (what ``ray.init`` makes first: ``ray/_private/node.py`` ``_init_gcs_client``) with this process's auth
    settings finds that out before anything is written; its C++ warning line is kept off the terminal. Any
    other failure is left to ``ray.init`` to report."""
    from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled
    from ray._raylet import GcsClient  # type: ignore[attr-defined]  # a Cython class, no stub
    from ray.exceptions import AuthenticationError

    try:
        with _stderr_silenced():
            ensure_token_if_auth_enabled(None, create_token_if_missing=False)  # as ray.init does for an address
            GcsClient(address=target)
    except AuthenticationError:
        mode = os.environ.get("RAY_AUTH_MODE", "")
        why = ("the cluster requires a Ray auth token and RAY_AUTH_MODE=token is not set here"
               if mode.lower() != "token" else "the cluster refused this driver's Ray auth token, or none was found")
        raise SearchError(f"--address {address}: {why}; {TOKEN_HINT}") from None
    except Exception:  # noqa: BLE001 - not ours to judge: ray.init reports it
        return


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null for the block: Ray's C++ client logs there directly, not via Python."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _trainable(prep: Prepared) -> Any:
    from ray import tune

    from trainables import spfde_trainable

    s = prep.settings
    setup = TrialSetup(base=prep.base.to_dict(), budget=prep.budget, fallback_flops=prep.dense_flops,
                       experiment_uri=experiment_uri(s.storage_path, s.name), auxiliary=tuple(AUXILIARY),
                       extra={"eval_epochs": _rungs(s, prep.base.train.epochs)})
    fn = tune.with_parameters(spfde_trainable, setup=setup)
    res: dict[str, float] = {"cpu": s.cpus_per_trial}
    if s.gpus_per_trial > 0:
        res["gpu"] = s.gpus_per_trial
    return tune.with_resources(fn, res)


def _rungs(s: SearchSettings, epochs: int) -> list[int]:
    """Epochs at which an early-stopping scheduler compares trials: the trainer evaluates there even with
    ``train.eval_every`` > 1, so every rung sees an accuracy (validation, or test without a validation split)."""
    if s.early_stopping == "none":
        return []
    from .scheduler import rung_epochs

    return rung_epochs(max(epochs, 1), min(s.grace_period or 1, max(epochs, 1)), s.reduction_factor)


def _scheduler(s: SearchSettings, epochs: int, uri: str | None = None, metric: str = "val_accuracy") -> Any:
    """ASHA or MOASHA on ``metric`` (the selection accuracy, ``settings.objectives``), or None."""
    if s.early_stopping == "moasha":
        from .scheduler import RUNGS_JSON, make_moasha

        return make_moasha(max(epochs, 1), min(s.grace_period or 1, max(epochs, 1)), s.reduction_factor,
                           f"{uri}/{RUNGS_JSON}" if uri else None, metric)
    if s.early_stopping != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        # epochs, not Ray's iteration count: a trial resumes from its own state, which may be ahead of Ray's
        # checkpoint (trainables/_state.py)
        metric=metric, mode="max", time_attr="epoch", max_t=max(epochs, 1),
        grace_period=min(s.grace_period or 1, max(epochs, 1)), reduction_factor=s.reduction_factor,
    )


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def checkpoint_config() -> Any:
    """Ray keeps every checkpoint: each is only a pointer (the epoch's report, a few kB), and a deleted one is
    what a snapshot that had not reached storage yet could name (trainables/_state.py)."""
    from ray import tune

    return tune.CheckpointConfig(num_to_keep=None)


def _set_callbacks(tuner: Any, callbacks: list[Any]) -> None:
    """Callbacks are attached after the Tuner pickled its state: they need not be picklable and a resumed
    search gets the caller's fresh ones (MLflow, progress) instead of stale copies. The trials a resumed search
    starts from now on get today's checkpoint retention (``checkpoint_config``); restored ones keep their own."""
    local = getattr(tuner, "_local_tuner", None)
    if local is None:
        raise SearchError("Ray client mode (ray://) is not supported; run the search on a cluster node")
    run_config = local.get_run_config()
    run_config.callbacks = callbacks
    run_config.checkpoint_config = checkpoint_config()
