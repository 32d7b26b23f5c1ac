"""Console progress of a running search: one line per finished trial, and a status block below them.

On a terminal the status block is a ``rich.live.Live`` footer (redrawn every second): a per-trial table (trial,
status, rung/epoch, short sampled parameters, val acc, FLOPs ratio, on the front; ``trial_table``, fitted to the
terminal's width as Ray Tune's status table is) above the status line (running / pending / done / stopped / failed,
elapsed, ETA, front size, hypervolume), with each finished trial printed above it. Until the first trial reports,
the status line names the start-up phase instead of counting zeros. Elsewhere (CI, a log file) the status is a
plain line after each finished trial, so a log reads top to bottom.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..wording import display_params, json_object
from .results import _fmt_params, _num, front_hypervolume, pareto_front

_COLORS = {"COMPLETED": "green", "EARLY_STOPPED": "yellow", "FAILED": "red", "INFEASIBLE": "magenta",
           "INTERRUPTED": "yellow"}
_DONE = ("COMPLETED", "EARLY_STOPPED", "FAILED", "INFEASIBLE")


def _duration(seconds: float) -> str:
    s = int(round(max(seconds, 0.0)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


@dataclass
class TrialLine:
    """One trial's row of the live table, as far as the driver has heard (start, epoch results, its end)."""

    trial: str
    status: str = "RUNNING"
    params: str = ""
    rung: int | None = None
    epoch: int = 0
    epochs: int | None = None
    val: float = float("nan")
    ratio: float = float("nan")
    front: bool = False


_WORDS = {"RUNNING": "running", "COMPLETED": "done", "EARLY_STOPPED": "stopped", "FAILED": "failed",
          "INFEASIBLE": "infeasible", "INTERRUPTED": "interrupted", "PENDING": "pending"}
# A tie in width drops the column read least first; the trial id is never dropped.
_DROP_TIES = ("params", "rung/ep", "front", "status", "flops", "val acc")
_PARAMS_MAX = 24  # characters of the short parameter text: with the usual rows the table fits 80 columns


def short_params(params: Mapping[str, Any]) -> str:
    """``mest ratio=0.93 saving_fraction=0.2``: the sampled values worth reading (``display_params``), by the last
    part of their name, without the rung keys (the rung/ep column shows them); a text value stands alone."""
    parts = []
    for k, v in display_params(dict(params)).items():
        if k.startswith("fidelity."):
            continue
        name = k.rsplit(".", 1)[-1]
        parts.append(str(v) if isinstance(v, str) else f"{name}={v:.3g}" if isinstance(v, float) else f"{name}={v}")
    text = " ".join(parts)
    return text if len(text) <= _PARAMS_MAX else text[:_PARAMS_MAX - 1] + "…"


def _cells(r: TrialLine) -> dict[str, str]:
    ep = f"{r.epoch}/{r.epochs}" if r.epochs else (str(r.epoch) if r.epoch else "-")
    return {"trial": r.trial, "status": _WORDS.get(r.status, r.status.lower()),
            "rung/ep": ep if r.rung is None else f"r{r.rung} {ep}", "params": r.params or "-",
            "val acc": f"{r.val:.4f}" if math.isfinite(r.val) else "-",
            "flops": f"{r.ratio:.3f}x" if math.isfinite(r.ratio) else "-", "front": "*" if r.front else ""}


def trial_table(rows: list[TrialLine], width: int) -> list[str]:
    """The live table as lines of at most ``width`` characters: a header, then one line per row. Columns that do
    not fit drop widest first (ties: ``_DROP_TIES`` order), so a narrow terminal keeps trial, status and accuracy;
    two spaces between columns, numbers right-aligned."""
    if not rows:
        return []
    cells = [_cells(r) for r in rows]
    cols = list(cells[0])
    widths = {c: max(len(c), *(len(x[c]) for x in cells)) for c in cols}
    while len(cols) > 1 and sum(widths[c] for c in cols) + 2 * (len(cols) - 1) > width:
        cols.remove(max((c for c in cols if c != "trial"), key=lambda c: (widths[c], -_DROP_TIES.index(c))))
    right = {"val acc", "flops"}

    def line(vals: Mapping[str, str]) -> str:
        text = "  ".join(vals[c].rjust(widths[c]) if c in right else vals[c].ljust(widths[c]) for c in cols)
        return text.rstrip()[:width]

    return [line({c: c for c in cols}), *(line(x) for x in cells)]


class _Progress:
    """Trial lines and the status block (Ray's own tables are switched off). ``close()`` ends the live block."""

    def __init__(self, console: Any, total: int, verbose: int, *, live: bool | None = None,
                 full_epochs: int | None = None) -> None:
        self.console = console
        self.total = total
        self.full_epochs = full_epochs  # --fidelity schedule: only trials of this many epochs count toward total
        self.rung_trials = 0
        self.verbose = verbose
        self.t0 = time.monotonic()
        self.running: set[str] = set()
        self.counts: dict[str, int] = {}
        self.done_this_run = 0  # finished by this driver (the ETA's rate; a resumed search starts with some done)
        self.front_size = 0
        self.hv = 0.0
        self.rows: dict[str, TrialLine] = {}  # the live table's rows, in start order
        self.max_rows = 12  # running trials first, then the latest finished; the rest are counted
        self._live: Any = None
        on_terminal = bool(getattr(console, "is_terminal", False))
        if verbose > 0 and console is not None and (on_terminal if live is None else live):
            from rich.live import Live

            self._live = Live(self, console=console, refresh_per_second=1, transient=True,
                              redirect_stdout=True, redirect_stderr=True)
            self._live.start()

    # ---- the status block

    def status_text(self) -> str:
        """``running 2, pending 5, done 1 of 8 (completed 1, stopped 0, failed 0, infeasible 0); elapsed 40s,
        ETA ~3m10s; front size 1, hypervolume 0.2500``."""
        c = self.counts
        done = sum(c.get(k, 0) for k in _DONE) - self.rung_trials
        pending = max(self.total - done - len(self.running), 0)
        elapsed = time.monotonic() - self.t0
        rate = self.done_this_run if self.full_epochs is None else done  # halving: full-length trials only
        if rate and done < self.total:
            eta = f"ETA ~{_duration(elapsed / rate * (self.total - done))}"
        else:
            eta = "ETA after the first trial" if done < self.total else "ETA -"
        return (f"running {len(self.running)}, pending {pending}, done {done} of {self.total} (completed "
                f"{c.get('COMPLETED', 0)}, stopped {c.get('EARLY_STOPPED', 0)}, failed {c.get('FAILED', 0)}, "
                f"infeasible {c.get('INFEASIBLE', 0)})"
                + (f", {self.rung_trials} shorter rung trials" if self.full_epochs is not None else "")
                + f"; elapsed {_duration(elapsed)}, {eta}; "
                f"front size {self.front_size}, hypervolume {self.hv:.4f}")

    def phase(self) -> str:
        """The start-up phase while no trial has reported an epoch: Ray starting its workers, then trials loading
        their data and building their models (the first epoch's result ends it); '' after that."""
        if self.counts or any(r.epoch or r.status != "RUNNING" for r in self.rows.values()):
            return ""
        return "preparing data…" if self.rows else "starting Ray…"

    def shown_rows(self) -> list[TrialLine]:
        """Running trials first (in start order), then the finished ones, latest first, at most ``max_rows``."""
        rows = list(self.rows.values())
        running = [r for r in rows if r.status == "RUNNING"]
        return (running + [r for r in reversed(rows) if r.status != "RUNNING"])[:self.max_rows]

    def __rich_console__(self, console: Any, options: Any) -> Any:  # redrawn by Live every second
        from rich.text import Text

        shown = self.shown_rows()
        lines = trial_table(shown, options.max_width)
        for i, text in enumerate(lines):
            style = "bold" if i == 0 else _COLORS.get(shown[i - 1].status, "")
            yield Text(text, style=style, no_wrap=True, overflow="ellipsis")
        if len(self.rows) > len(shown):
            yield Text(f"… {len(self.rows) - len(shown)} more trials", style="dim")
        phase = self.phase()
        elapsed = f"; elapsed {_duration(time.monotonic() - self.t0)}"
        yield Text.assemble(("search ", "bold"), phase + elapsed[1:] if phase else self.status_text())

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    # ---- events

    def _print(self, msg: str) -> None:
        if self.console is not None and self.verbose > 0:
            self.console.print(msg, highlight=False, soft_wrap=True)

    def started(self, trial: Any) -> None:
        self.running.add(str(trial.trial_id))
        config = dict(trial.config or {})
        rung, epochs = config.get("fidelity.rung"), config.get("fidelity.epochs")
        self.rows[str(trial.trial_id)] = TrialLine(
            str(trial.trial_id), params=short_params(config), rung=None if rung is None else int(rung),
            epochs=None if epochs is None else int(epochs))
        if self.verbose >= 2:
            self._print(f"[dim]start[/dim] {trial.trial_id}  {_fmt_params(trial.config or {})}")

    def epoch(self, trial: Any, r: Mapping[str, Any]) -> None:
        self.running.add(str(trial.trial_id))
        row = self.rows.setdefault(str(trial.trial_id), TrialLine(str(trial.trial_id)))
        row.status, row.epoch = "RUNNING", int(r.get("epoch") or 0)
        row.epochs = int(r["epochs_total"]) if r.get("epochs_total") else row.epochs
        row.val, row.ratio = _num(r, "val_accuracy"), _num(r, "flops_ratio")
        if self.verbose >= 2 and not r.get("infeasible"):
            self._print(
                f"[dim]  {trial.trial_id} epoch {r.get('epoch')}/{r.get('epochs_total')} "
                f"{_accuracies(r)} loss {_num(r, 'loss'):.4f}[/dim]"
            )

    def finished(self, table: pd.DataFrame, trial_id: str) -> None:
        from ..plots import brief, format_flops, format_params

        self.running.discard(str(trial_id))
        self.done_this_run += 1
        self.counts = {str(k): int(v) for k, v in table["status"].value_counts().items()}
        rung = ""
        if self.full_epochs is not None and "param.fidelity.epochs" in table:
            e = table["param.fidelity.epochs"].astype(float)
            self.rung_trials = int((table["status"].isin(_DONE) & (e < self.full_epochs)).sum())
            this = table[table["trial_id"] == trial_id]
            if len(this) and this["param.fidelity.rung"].notna().iloc[0]:
                rung = f" rung {int(this['param.fidelity.rung'].iloc[0])} ({int(e[this.index[0]])} ep)"
        done = sum(self.counts.get(k, 0) for k in _DONE) - self.rung_trials
        front = pareto_front(table)
        self.front_size, self.hv = len(front), front_hypervolume(front)
        row = table[table["trial_id"] == trial_id].iloc[0]
        self._table_rows(table, row, set(front["trial_id"].astype(str)))
        st = str(row["status"])
        color = _COLORS.get(st, "white")
        if st in ("COMPLETED", "EARLY_STOPPED"):
            detail = (f"{_accuracies(row)}  {format_flops(row['train_flops'])} "
                      f"({row['flops_ratio']:.3f}x dense)  {row['epochs_completed']} ep  {row['wall_seconds']:.1f}s")
        else:
            detail = brief(row["error"], 240)
        params = format_params(json.loads(row["params"]))
        self._print(f"[{done}/{self.total}] {trial_id}{rung} [{color}]{st}[/{color}]  {detail}"
                    + (f"\n      {params}" if params else ""))
        if self._live is None:
            self._print(f"[dim]  search: {self.status_text()}[/dim]")


    def _table_rows(self, table: pd.DataFrame, row: Any, front: set[str]) -> None:
        """The finished trial's row from its ``trials.parquet`` row; every row's place on the front."""
        tid = str(row["trial_id"])
        line = self.rows.pop(tid, None) or TrialLine(tid, params=short_params(json_object(row["params"])))
        ep = _num(row, "epochs_completed")
        line.status, line.epoch = str(row["status"]), int(ep) if math.isfinite(ep) else line.epoch
        line.val, line.ratio = _num(row, "val_accuracy"), _num(row, "flops_ratio")
        if "param.fidelity.rung" in table and pd.notna(row["param.fidelity.rung"]):
            line.rung, line.epochs = int(row["param.fidelity.rung"]), int(row["param.fidelity.epochs"])
        self.rows[tid] = line  # last in order: the latest finished
        for r in self.rows.values():
            r.front = r.trial in front


def _accuracies(r: Mapping[str, Any]) -> str:
    """``val 0.8123 test 0.8050`` (what selects first; ``-`` where not evaluated), or ``test ...`` alone for a
    search without a validation split."""
    val, test = _num(r, "val_accuracy"), _num(r, "test_accuracy")
    t = f"test {test:.4f}" if math.isfinite(test) else "test -"
    return f"val {val:.4f} {t}" if math.isfinite(val) else t


# Messages a user cannot act on, by logger, with the verbosity from which they show (default 1; -v 2; -vv 3).
_NOISY_LOGGERS = {
    # "Token authentication is enabled/disabled ...": Ray's own set-up, not ours to act on; worker-log level
    "ray._private.authentication.authentication_token_setup": 3,
    "mlflow.store.db.utils": 2,  # "Creating initial MLflow database tables...", "Updating database tables"
    "alembic.runtime.migration": 2,  # the schema migrations behind it
}


class _NoRestoreHint:
    """Drops Ray Tune's "Resume experiment with: Tuner.restore(path=..., trainable=...)" after SIGTERM / Ctrl-C:
    a user of ``spfde`` resumes with ``spfde search --resume NAME``, the line the driver prints itself."""

    def filter(self, record: object) -> bool:
        import logging

        return not (isinstance(record, logging.LogRecord) and "Tuner.restore(" in record.getMessage())


_RESTORE_HINT = _NoRestoreHint()


def quiet_library_noise(verbose: int) -> None:
    """Raise the noisy libraries' loggers to ERROR below the verbosity they show from (the default verbosity is
    1), and drop Ray Tune's ``Tuner.restore`` hint at every verbosity."""
    import logging

    for name, shown_from in _NOISY_LOGGERS.items():
        logging.getLogger(name).setLevel(logging.NOTSET if verbose >= shown_from else logging.ERROR)
    tune = logging.getLogger("ray.tune.tune")
    if _RESTORE_HINT not in tune.filters:
        tune.addFilter(_RESTORE_HINT)
