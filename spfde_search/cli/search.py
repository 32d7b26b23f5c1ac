"""``spfde search``: joint Ray Tune + Optuna search, printing the Pareto front at the end.

Heavy libraries (ray, optuna, torch) are imported inside the command, after the checks that need none of them
(``precheck.py``), so ``spfde --help`` and a typo answer fast.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, NoReturn

import typer

from ..choices import EARLY_STOPPING, FIDELITY, INITIAL_POINT_SETS, SAMPLERS
from .app import app, make_console, table_width

__all__ = ["search"]

_SAMPLERS = "tpe, nsga2, gp, random, auto"


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _interrupted(e: BaseException, s: Any) -> NoReturn:
    """SIGTERM or Ctrl-C: our one line (how to go on) and exit 128 + the signal."""
    signum = int(getattr(e, "signum", 2))
    what = "terminated (SIGTERM)" if signum == 15 else "interrupted"
    if getattr(e, "resumable", True):
        typer.echo(f"{what}; continue with `spfde search --resume {s.name} --storage-path {s.resolved_storage()}`",
                   err=True)
    else:  # stopped before search.json was written: nothing under the name to resume
        typer.echo(f"{what} while starting, before anything was recorded; run the same command again", err=True)
    raise typer.Exit(128 + signum) from None


def _given(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


@app.command("search")
def search(
    space: str = typer.Option(None, "--space", metavar="NAME|FILE", help="built-in space (joint, budget, paper, smoke) or a YAML file (default: joint)"),
    budget_range: tuple[float, float] = typer.Option(
        None, "--budget-range", metavar="LOW HIGH",
        help="--space budget: range of target training-FLOPs ratios, sampled log-uniformly (default: 0.025 0.45, "
        "clipped to what the base config reaches)"),
    config: Path = typer.Option(None, "--config", "-c", metavar="FILE", help="base config YAML (default: the built-in quickstart preset)"),
    set_: list[str] = typer.Option(None, "--set", "-s", metavar="PATH=VALUE",
                                 help="base config override, e.g. -s train.epochs=2 (repeatable)"),
    num_samples: int = typer.Option(None, "--num-samples", "-n", help="trials to run (default: 16)"),
    sampler: str = typer.Option(None, "--sampler", metavar="|".join(SAMPLERS), help=f"Optuna sampler: {_SAMPLERS} (default: auto)"),
    seed: int = typer.Option(None, "--seed", help="sampler seed (default: 0)"),
    max_concurrent: int = typer.Option(None, "--max-concurrent", help="trials running at once (default: 2)"),
    cpus_per_trial: float = typer.Option(None, "--cpus-per-trial", help="CPUs reserved per trial (default: 1)"),
    gpus_per_trial: float = typer.Option(None, "--gpus-per-trial", help="GPUs per trial, fractional allowed (default: 0)"),
    flops_budget: str = typer.Option(
        None, "--flops-budget", help="max training FLOPs: ratio of dense (0.3, 0.3x, 30%) or absolute (2.5e12, 800G)"
    ),
    initial: str = typer.Option(None, "--initial", metavar="|".join(INITIAL_POINT_SETS), help="seed the sampler with known points: paper"),
    early_stopping: str = typer.Option(None, "--early-stopping", metavar="|".join(EARLY_STOPPING), help="none, asha (on validation accuracy) or moasha (multi-objective: accuracy at the rung and predicted FLOPs) (default: none)"),
    fidelity: str = typer.Option(None, "--fidelity", metavar="|".join(FIDELITY),
                                 help="schedule: successive halving over complete schedules of growing length (rungs "
                                 "m, m*eta, ..., train.epochs); -n counts full-length trials (default: none)"),
    grace_period: int = typer.Option(None, "--grace-period", help="first rung: ASHA/MOASHA epoch r, rungs at r*eta^k "
                                     "(default: 1); --fidelity schedule: epochs of the shortest schedule (default: "
                                     "a quarter of train.epochs)"),
    reduction_factor: int = typer.Option(None, "--reduction-factor", help="reduction factor eta: the top 1/eta of a rung go on (default: 2)"),
    max_compute: str = typer.Option(None, "--max-compute", metavar="BUDGET",
                                    help="stop proposing trials once the next would pass this total training FLOPs "
                                    "of all trials: 16x (times one full-length dense trial), 2.5e14 or 250T"),
    address: str = typer.Option(None, "--address", help="join an existing Ray cluster (host:port or auto) (default: embedded)"),
    connect_timeout: float = typer.Option(None, "--connect-timeout", metavar="SECONDS",
                                          help="how long --address may take to answer before the search gives up "
                                          "(default: 30)"),
    storage_path: str = typer.Option(None, "--storage-path", help="results root: local path or pyarrow URI (s3://...) (default: runs/search)"),
    name: str = typer.Option(None, "--name", metavar="NAME",
                              help="search name (folder under the storage path) (default: search-<space>-<time>)"),
    resume: str = typer.Option(None, "--resume", metavar="NAME",
                               help="resume the search NAME after a crash; with -n N, extend a finished search to N "
                               "trials in total"),
    study_storage: str = typer.Option(None, "--study-storage", metavar="URL",
                                      help="database URL for the search's Optuna study (default: sqlite "
                                      "<search folder>/optuna.db; none for a URI --storage-path)"),
    num_cpus: int = typer.Option(None, "--num-cpus", help="CPUs of the embedded Ray (default: all)"),
    ship_code: bool = typer.Option(None, "--ship-code/--no-ship-code",
                                   help="upload this checkout's code to the cluster (default: no)"),
    ship_user_code: bool = typer.Option(None, "--ship-user-code/--no-ship-user-code",
                                        help="upload the modules behind model.name / data.name import paths to "
                                        "every Ray worker, unless installed (default: yes; docs/own_model.md)"),
    tracking_uri: str = typer.Option(
        None, "--tracking-uri",
        help="MLflow store: sqlite:///path/mlflow.db or http://host:port of an `mlflow server`; 'none' turns "
        "tracking off (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)",
    ),
    experiment: str = typer.Option(None, "--experiment", help="MLflow experiment (default: spfde-<model>-<data set>)"),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="more output (-v: trial starts and epochs, -vv: worker logs)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="only the final front"),
) -> None:
    """Search sparsity x freezing x sieving for the Pareto front of validation accuracy vs training FLOPs (test
    accuracy reported beside it; the base config's data.val_size, default min(5000, test set))."""
    from .precheck import PrecheckError, check_search_options

    try:  # typos answer before torch, Optuna and Ray are imported (cli/precheck.py)
        check_search_options(space=space, sampler=sampler, early_stopping=early_stopping, initial=initial,
                             fidelity=fidelity)
    except PrecheckError as e:
        _fail(str(e))
    from ..config import ConfigError, load_config, parse_overrides
    from ..plots import brief, chance_accuracy, chance_warning, format_flops, selection_note
    from ..search import (
        DEFAULT_STORAGE,
        SearchError,
        SearchSettings,
        StorageFull,
        drive_search,
        experiment_uri,
        finished_meta,
        front_table,
        load_settings,
        load_trials,
        prepare,
        selected_on,
    )
    from ..search.halving import counted_trials
    from ..search.progress import quiet_library_noise
    from ..search.rebuild import counted
    from ..tracking import callbacks_for, describe_tracking, tracking_settings
    from .train import quickstart_config

    quiet_library_noise(0 if quiet else 1 + verbose)
    console = make_console()
    options = _given({
        "space": space, "budget_range": tuple(budget_range) if budget_range else None, "num_samples": num_samples, "sampler": sampler, "seed": seed,
        "max_concurrent": max_concurrent, "cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial,
        "flops_budget": flops_budget, "initial": initial, "early_stopping": early_stopping,
        "grace_period": grace_period, "reduction_factor": reduction_factor, "address": address,
        "fidelity": fidelity, "max_compute": max_compute,
        "num_cpus": num_cpus, "ship_code": ship_code, "ship_user_code": ship_user_code,
        "connect_timeout": connect_timeout, "study_storage": study_storage,
    })
    extending = 0  # --resume NAME -n N of a finished search: the trials it has (search/study.py)
    try:
        overrides = parse_overrides(set_ or [])
        given_base = None
        if config is not None:
            given_base = load_config(config, overrides).to_dict()
        elif overrides:
            given_base = quickstart_config(overrides, quiet=True).to_dict()
        if resume is not None:
            if name is not None and name != resume:
                _fail(f"--name {name!r} and --resume {resume!r} differ; --resume takes the search's name")
            settings = load_settings(resume, storage_path or DEFAULT_STORAGE)
            stored = settings.model_dump()
            done = finished_meta(experiment_uri(storage_path or settings.storage_path, settings.name))
            for k, v in options.items():
                if k in ("address", "connect_timeout"):
                    continue  # the cluster may have moved after a crash
                if k == "num_samples" and done is not None:
                    continue  # -n on a finished search extends it (checked below)
                if stored.get(k) != v and k == "num_samples":
                    _fail(f"-n {v}: search {resume!r} has not finished (-n {stored.get(k)}); resume it first with "
                          f"--resume {resume} and no -n, then extend it with --resume {resume} -n {v}")
                if stored.get(k) != v:
                    _fail(f"--{k.replace('_', '-')} {v!r} differs from the original search ({stored.get(k)!r}); "
                          f"resume with the original arguments or none")
            if given_base is not None and (given_base.get("data") or {}).get("val_size") is None:
                # unset: the search resolved it when it started (search/prepare.py); compare the rest
                given_base["data"]["val_size"] = (settings.base_config.get("data") or {}).get("val_size")
            if given_base is not None and given_base != settings.base_config:
                _fail("--config/--set give a different base config than the original search; resume with the "
                      "original arguments or none")
            if "address" in options:
                settings.address = options["address"]
            if "connect_timeout" in options:
                settings.connect_timeout = options["connect_timeout"]
            if storage_path is not None:
                settings.storage_path = storage_path
            if done is not None and "num_samples" in options:
                from ..search.study import extension

                settings.num_samples = options["num_samples"]
                table = load_trials(f"{experiment_uri(settings.storage_path, settings.name)}/trials.parquet")
                if extension(done, settings, counted_trials(counted(table), settings)):
                    done, extending = None, counted_trials(counted(table), settings)  # a new Tuner continues it
            if done is not None:
                counts = ", ".join(f"{k} {n}" for k, n in sorted((done.get("counts") or {}).items()))
                typer.echo(f"search {settings.name} already finished ({done.get('finished', '?')}; "
                           f"{sum((done.get('counts') or {}).values())} trials: {counts}); nothing to resume. "
                           f"See `spfde pareto {settings.name}`")
                return
            if tracking_uri is not None or experiment is not None or settings.tracking is None:
                old = settings.tracking or {}
                settings.tracking = tracking_settings(
                    tracking_uri or old.get("uri"), experiment or old.get("experiment"), settings.base_config
                )
        else:
            base = given_base if given_base is not None else quickstart_config({}, quiet=True).to_dict()
            sp = options.get("space", "joint")
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            settings = SearchSettings(
                name=name or f"search-{Path(sp).stem}-{stamp}",
                config_path=str(config) if config is not None else None,
                overrides=overrides,
                base_config=base,
                storage_path=storage_path or DEFAULT_STORAGE,
                tracking=tracking_settings(tracking_uri, experiment, base),
                **{k: v for k, v in options.items() if v is not None},
            )
        prep = prepare(settings, resume=resume is not None)
    except (SearchError, ConfigError) as e:
        _fail(str(e))
        return
    except ValueError as e:  # pydantic: a bad choice (sampler, early stopping, ...)
        _fail(_pydantic_message(e))
        return
    s = prep.settings
    v = 0 if quiet else 1 + verbose
    if prep.budget is not None and (warn_budget := prep.budget.warning()):
        typer.echo(f"warning: {warn_budget}", err=True)
    if s.address:  # a dead cluster is one error line, before the banner that says we are joining it
        from ..search.driver import starting
        from ..search.runtime import check_address

        try:
            with starting(s.name, lambda: False):  # nothing is written before it
                check_address(s.address, s.connect_timeout)
        except SearchError as e:
            _fail(str(e))
        except KeyboardInterrupt as e:  # StartInterrupted: SIGTERM or Ctrl-C while the cluster was asked
            _interrupted(e, s)
        prep.address_checked = True
    if v:
        from ..search.optuna_search import resolve_sampler

        chosen, why = resolve_sampler(s.sampler, prep.space, s.num_samples)
        sampler_text = f"auto -> {chosen} ({why})" if s.sampler == "auto" else chosen
        budget = f", budget {prep.budget.describe()}" if prep.budget else ""
        console.print(
            f"[bold]{'extending' if extending else 'resuming' if resume else 'search'}[/bold] {s.name}: space {s.space} "
            f"({len(prep.space.distributions)} parameters), sampler {sampler_text}, {s.num_samples} trials"
            f"{f' ({extending} done, the sampler warm-started with them)' if extending else ''}, "
            f"{s.max_concurrent} at once{budget}; "
            f"{'cluster ' + s.address if s.address else 'embedded Ray'}; results in {s.resolved_storage()}/{s.name}",
            highlight=False,
        )
        if prep.space.note:
            console.print(f"space {s.space}: {prep.space.note}", highlight=False)
        if s.fidelity == "schedule":
            from ..search.halving import resolve_grace
            from ..search.rungs import rung_lengths

            t = prep.base.train.epochs
            rungs = rung_lengths(t, resolve_grace(s.grace_period, t), s.reduction_factor)
            cap = f"; stops proposing past {prep.max_compute:.4g} training FLOPs" if prep.max_compute else ""
            console.print(f"successive halving over schedule length: rungs of {', '.join(map(str, rungs))} epochs, "
                          f"the top 1/{s.reduction_factor} of each going up; {s.num_samples} trials = full-length "
                          f"ones{cap}", highlight=False)
        console.print(describe_tracking(s), highlight=False)
        nval = prep.base.data.val_size or 0
        console.print(f"selecting on validation accuracy ({nval} images, data.val_size); test accuracy is measured "
                      "once per trial and only reported" if nval else "warning: no validation split (data.val_size "
                      "0): selecting on TEST accuracy, so the front is optimistically biased", highlight=False)
    try:
        out = drive_search(s, resume=resume is not None, console=console, verbose=v, prepared=prep, callbacks=callbacks_for(s))
    except StorageFull as e:  # not bad input: the disk filled up (or went read-only) under a running search
        _fail(str(e), code=1)
        return
    except SearchError as e:
        _fail(str(e))
        return
    except KeyboardInterrupt as e:  # SearchInterrupted (Ray saved the state; search.json says interrupted), a 2nd Ctrl-C
        _interrupted(e, s)
    if out.already_finished:  # drive_search found it finished after all (another driver finished it meanwhile)
        console.print(f"search {s.name} already finished ({out.already_finished}); nothing to resume", highlight=False)
        return
    counts = ", ".join(f"{k} {n}" for k, n in sorted(out.table["status"].value_counts().items()))
    console.print(f"{len(out.table)} trials ({counts}) in {out.wall_seconds:.0f} s; hypervolume {out.hypervolume:.4f}",
                  highlight=False)
    if out.cost:
        c = out.cost
        console.print(f"search cost: {format_flops(c['train_flops'])} of training over all trials (stopped and failed included), "
                      f"{c['trial_seconds']:.0f} trial-seconds, {c['wall_seconds']:.0f} wall seconds; "
                      f"{c.get('infeasible_skipped', 0)} predicted-infeasible points and {c.get('duplicates_skipped', 0)} "
                      "duplicates of a trained run skipped untrained", highlight=False,
                      soft_wrap=True)  # one line for grep and logs; the terminal wraps it
    if out.stop_reason:
        console.print(f"stopped early: {out.stop_reason}", style="yellow", highlight=False)
    if out.front.empty:
        console.print("no completed full-budget trial: the Pareto front is empty", style="yellow")
    else:
        console.print(front_table(out.front, f"Pareto front of {s.name} (hypervolume {out.hypervolume:.4f})",
                                  base=s.base_config, width=table_width(console)))
    done = out.table[out.table["status"] == "COMPLETED"]
    metric = selected_on(out.table)
    warn = chance_warning(done[metric].max() if len(done) else None,
                          chance_accuracy((s.base_config.get("data") or {}).get("name")))
    if warn:
        console.print(f"warning: {warn}", style="bold yellow", highlight=False)
    if selection_note(out.table):
        console.print(f"warning: {selection_note(out.table)}", style="bold yellow", highlight=False)
    console.print(f"trials table: {out.path}/trials.parquet", highlight=False)
    if len(out.table) and not out.table["status"].isin(["COMPLETED", "EARLY_STOPPED"]).any() \
            and (out.table["status"] == "FAILED").any():
        first = out.table[out.table["status"] == "FAILED"]["error"].iloc[0]
        _fail(f"every trial failed (first: {brief(first)}); see `spfde pareto {s.name} --all` and the trial "
              f"folders under {out.path}", code=1)


def _pydantic_message(e: ValueError) -> str:
    try:
        from pydantic import ValidationError

        if isinstance(e, ValidationError):
            parts = []
            for err in e.errors():
                loc = ".".join(str(p) for p in err["loc"])
                got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
                parts.append(f"--{loc.replace('_', '-')}: {err['msg']}{got}")
            return "; ".join(parts)
    except ImportError:  # pragma: no cover
        pass
    return str(e)


def main() -> None:  # pragma: no cover - `python -m spfde_search.cli.search`
    app(prog_name="spfde")


if __name__ == "__main__":  # pragma: no cover
    main()
