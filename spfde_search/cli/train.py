"""``spfde train`` and ``spfde flops``: one run of the trainer, and its cost predicted from the config alone."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

import typer

from ..config import Config, ConfigError, load_config, parse_overrides
from .app import app, make_console

QUICKSTART = Path(__file__).resolve().parent.parent / "presets" / "quickstart.yaml"

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config (default: the built-in quickstart preset)")
SetOpt = typer.Option(None, "--set", "-s", help="override a config field: --set sparsity.ratio=0.95 (repeatable)")


def fail(message: str, code: int = 2) -> NoReturn:
    """One clear message on stderr, no traceback."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def resolve_config(config: Path | None, sets: list[str] | None, quiet: bool = False) -> Config:
    try:
        overrides = parse_overrides(sets or [])
        if config is not None:
            return load_config(config, overrides)
        return quickstart_config(overrides, quiet)
    except ConfigError as e:
        fail(str(e))


def quickstart_config(overrides: dict[str, Any], quiet: bool = False) -> Config:
    """The built-in preset plus overrides. Its subset sizes are Fashion-MNIST's: another data.name drops them."""
    from ..config import apply_overrides, parse_config_yaml

    base = parse_config_yaml(QUICKSTART.read_text())
    note = f"using the built-in quickstart config ({QUICKSTART.name}); pass --config FILE to change"
    if overrides.get("data.name", "fashion_mnist") != "fashion_mnist":
        base["data"] = {}
        note += "; its Fashion-MNIST subset sizes are dropped for data.name=" + str(overrides["data.name"])
    cfg = Config.parse(apply_overrides(base, overrides))  # bad input: the error line alone, no note before it
    if not quiet:
        typer.echo(note, err=True)
    return cfg


def human(n: float) -> str:
    for unit, div in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if abs(n) >= div:
            return f"{n / div:.3f} {unit}FLOPs"
    return f"{n:.0f} FLOPs"


def write_json(path: Path | None, data: dict[str, Any]) -> bool:
    """``--json PATH`` writes the JSON there; ``--json -`` prints it on stdout (True: keep stdout for it)."""
    if path is None:
        return False
    text = json.dumps(data, indent=2, default=str)
    if str(path) == "-":
        typer.echo(text)
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return False


@app.command()
def flops(
    config: Path | None = ConfigOpt,
    set_: list[str] | None = SetOpt,
    json_out: Path | None = typer.Option(None, "--json", metavar="PATH", help="write the prediction as JSON to PATH ('-': stdout, table to stderr)"),
) -> None:
    """Predict training FLOPs, the freezing schedule and memory from the config alone (no data, no training)."""
    from rich.console import Console
    from rich.table import Table

    from ..method.flops import predict

    cfg = resolve_config(config, set_)
    try:
        p = predict(cfg)
    except ConfigError as e:
        fail(str(e))
    d = p.to_dict()
    d["config"] = cfg.to_dict()
    to_stdout = write_json(json_out, d)
    # what is counted, exactly (docs/method.md §5): "3 x fwd" was 0.1% off, autograd computes no image gradient
    t = Table(title=f"{cfg.model.name} (width {cfg.model.width}) on {cfg.data.name}: predicted training FLOPs",
              caption="step = forward + weight gradients + input gradients (none for the image); FLOPs = 2 x MACs "
                      "of conv and linear layers. Evaluation is forward passes at the densities held, reported "
                      "apart: never in training FLOPs.", caption_justify="left")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_row("dense forward / sample", human(p.dense_forward_per_sample))
    t.add_row("dense training step / sample", human(p.dense_step_per_sample))
    t.add_row("dense training (step x N x T)", f"{p.dense_train_flops:,} ({human(p.dense_train_flops)})")
    t.add_row("this schedule", f"{p.train_flops:,} ({human(p.train_flops)})")
    t.add_row("ratio to dense", f"{p.flops_ratio:.4f}")
    for k in ("sparsity", "freezing", "sieving"):
        t.add_row(f"saved by {k}", f"{human(p.saved[k])} ({p.saved_fraction[k]:.1%} of dense)")
    t.add_row("freezing saving vs no freezing", f"{p.freezing_saving_achieved:.1%} (target {cfg.freezing.target_flops_reduction:.0%})")
    t.add_row("freeze start epoch (T_frz)", str(p.freeze_start_epoch))
    t.add_row("unit freeze epochs", ", ".join("-" if e is None else str(e) for e in p.unit_freeze_epochs))
    t.add_row("samples / epoch", f"{p.samples_per_epoch:,} of {p.num_train:,}")
    t.add_row("evaluation: validation passes", human(p.eval_flops.get("validation", 0)))
    t.add_row("evaluation: test passes", human(p.eval_flops.get("test", 0)))
    mem = p.memory
    t.add_row(f"memory estimate (batch {mem['batch_size']}, fp32)",
              f"{mem['total_bytes'] / 2**20:.1f} MiB; {mem['total_bytes_max_frozen'] / 2**20:.1f} MiB when most frozen")
    Console(stderr=to_stdout).print(t)
    if p.batch_warning:
        typer.echo(f"warning: {p.batch_warning}", err=True)


@app.command()
def train(
    config: Path | None = ConfigOpt,
    set_: list[str] | None = SetOpt,
    json_out: Path | None = typer.Option(None, "--json", metavar="PATH", help="write the run summary as JSON to PATH ('-': stdout, table to stderr)"),
    checkpoint_dir: Path | None = typer.Option(None, "--checkpoint-dir", help="save the full state after every epoch"),
    resume: bool = typer.Option(False, "--resume", help="continue from the checkpoint in --checkpoint-dir"),
) -> None:
    """Train one config (sparse training + layer freezing + data sieving) and report accuracy and FLOPs."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from ..checkpoint import CheckpointError, CheckpointFallbackWarning
    from ..trainer import Trainer, TrainingDiverged

    cfg = resolve_config(config, set_)
    if resume and checkpoint_dir is None:
        fail("--resume needs --checkpoint-dir DIR (where the checkpoint was written)")
    console = make_console(stderr=True)  # a log written to a file keeps one line per epoch
    progress = Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not sys.stderr.isatty(),
    )
    task = progress.add_task("train", total=None, epoch=0, epochs=cfg.train.epochs, info="")

    def on_step(e: int, i: int, steps: int) -> None:
        progress.update(task, completed=i, total=steps, epoch=e + 1)

    from ..device import machine_execution
    from ..execution import PATHS, differences

    # before the trainer sets its threads: what this machine resolves by itself, told when the config differs
    configured = {p: getattr(cfg.train, p.split(".", 1)[1]) for p in PATHS}
    for line in differences(configured, machine_execution()):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    try:
        trainer = Trainer(cfg, step_callback=on_step)
        if trainer.prediction.batch_warning:  # before any epoch: a whole run at one step an epoch is rarely meant
            console.print(f"warning: {trainer.prediction.batch_warning}", markup=False, highlight=False, soft_wrap=True)
        if resume:
            assert checkpoint_dir is not None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", CheckpointFallbackWarning)
                trainer.load_checkpoint(checkpoint_dir)
            for w in caught:  # a damaged latest checkpoint: say which file was skipped and which one resumed
                console.print(f"warning: {w.message}", markup=False, highlight=False, soft_wrap=True)
            console.print(f"resumed from {checkpoint_dir} at epoch {trainer.epoch}")
        with progress:
            for m in trainer.epochs():
                test = "-" if m.test_accuracy is None else f"{m.test_accuracy:.2%}"  # train.eval_every
                if m.val_accuracy is not None or trainer.data.spec.num_val:  # data.val_size: val, test at the end
                    test = f"{'-' if m.val_accuracy is None else format(m.val_accuracy, '.2%')}  test {test}"
                    label = "val"
                else:
                    label = "test"
                msg = (
                    f"epoch {m.epoch}/{cfg.train.epochs}  loss {m.loss:.4f}  train {m.train_accuracy:.2%}  "
                    f"{label} {test}  flops {human(m.train_flops)} (ratio {m.flops_ratio:.4f})  "
                    f"density {m.density:.3f}  regrown {m.regrown_fraction:.4f}  frozen {m.frozen_units}  "
                    f"partial {m.partial_size}  {m.epoch_seconds:.1f}s"
                )
                progress.update(task, info=f"{label} {test}")
                console.print(msg)
                if checkpoint_dir is not None:
                    trainer.save_checkpoint(checkpoint_dir)
    except (ConfigError, FileNotFoundError, TrainingDiverged, CheckpointError) as e:
        fail(str(e))
    s = trainer.summary()
    to_stdout = write_json(json_out, s)
    t = Table(title="SpFDE run summary")
    t.add_column("metric")
    t.add_column("value", justify="right")
    if s.get("val_accuracy") is not None:
        t.add_row("validation accuracy", f"{s['val_accuracy']:.4f}")
    t.add_row("test accuracy", f"{s['test_accuracy']:.4f}")
    t.add_row("training FLOPs (measured)", f"{s['train_flops']:,} ({human(s['train_flops'])})")
    t.add_row("training FLOPs (predicted)", f"{s['predicted_train_flops']:,}")
    t.add_row("dense training FLOPs", f"{s['dense_train_flops']:,}")
    t.add_row("ratio to dense", f"{s['flops_ratio']:.4f}")
    for k, v in s["saved"].items():
        t.add_row(f"saved by {k}", f"{human(v)} ({s['saved_fraction'][k]:.1%})")
    t.add_row("freeze start epoch", str(s["freeze_start_epoch"]))
    t.add_row("epochs / wall time", f"{s['epochs']} / {s['wall_seconds']:.1f} s on {s['device']}")
    Console(stderr=to_stdout).print(t)
