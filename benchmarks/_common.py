"""Shared plumbing of the benchmark scripts: arguments, machine facts, result files, RESULTS.md sections,
summary statistics, and the timed-schedule runner used by ``trainer_vs_plain.py`` and ``wallclock.py``.

Conventions (every script follows them):

- ``--smoke-test``: tiny sizes, seconds; results go to a temporary directory (or ``--out``) and RESULTS.md is
  never touched.
- A real run writes raw rows as Parquet *and* CSV plus PNG plots into ``benchmarks/results/<name>/`` (or
  ``--out``) and appends one dated section to ``benchmarks/RESULTS.md`` (or ``--results-md``) with the machine,
  versions, the exact command, medians with spreads, and plain statements.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_MD = BENCH_DIR / "RESULTS.md"
NO_GPU_NOTE = "GPU: not measured (no GPU machine was lent to this session)"


# ---------------------------------------------------------------- arguments and output places


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--smoke-test", action="store_true", help="tiny sizes, seconds; writes to a temp dir, not RESULTS.md")
    p.add_argument("--out", type=Path, default=None, help="result folder (default benchmarks/results/<name>/)")
    p.add_argument("--results-md", type=Path, default=RESULTS_MD, help="where a real run appends its section")
    p.add_argument("--no-append", action="store_true", help="do not append to RESULTS.md (real sizes, e.g. a dry run)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="training device")
    return p


def output_dir(name: str, args: argparse.Namespace) -> Path:
    if args.out is not None:
        d = Path(args.out)
    elif args.smoke_test:
        d = Path(tempfile.mkdtemp(prefix=f"spfde-bench-{name}-"))
    else:
        d = BENCH_DIR / "results" / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def should_append(args: argparse.Namespace) -> bool:
    return not args.smoke_test and not args.no_append


def cuda_missing(device: str) -> bool:
    """True (after saying so) when a CUDA run was asked for on a machine without a CUDA device."""
    if device != "cuda":
        return False
    import torch

    if torch.cuda.is_available():
        return False
    print("not measured: --device cuda but no CUDA device is visible")
    return True


def spfde_exe() -> list[str]:
    """The `spfde` command of this interpreter's environment (or `python -m spfde_search.cli`)."""
    exe = Path(sys.executable).parent / "spfde"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("spfde")
    return [found] if found else [sys.executable, "-m", "spfde_search.cli"]


def rel_path(p: Path) -> str:
    """A path relative to the repository root where it lies inside it (what RESULTS.md quotes), else as given."""
    try:
        return str(p.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(p)


def command_line() -> str:
    """The command as typed, relative to the repository root (what RESULTS.md quotes)."""
    argv = list(sys.argv)
    with contextlib.suppress(ValueError):
        argv[0] = str(Path(argv[0]).resolve().relative_to(REPO_ROOT))
    return "python " + " ".join(shlex.quote(a) for a in argv)


# ---------------------------------------------------------------- machine facts


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    info = {}
    for line in out.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info[k.strip()] = v.strip()
    return info


def _version(mod: Any) -> str:
    v = getattr(mod, "__version__", None)
    if v:
        return str(v)
    try:
        from importlib.metadata import version

        return version("spfde-search")
    except Exception:
        return "unknown"


def machine_info(device: str = "cpu") -> dict[str, Any]:
    import torch

    import spfde_search

    cpu = _lscpu()
    info: dict[str, Any] = {
        "cpu_model": cpu.get("Model name", platform.processor() or "unknown"),
        "cpu_cores": cpu.get("CPU(s)", str(os.cpu_count())),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "spfde_search": _version(spfde_search),
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": os.getloadavg(),
        "gpu": None,
    }
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def machine_lines(info: Mapping[str, Any]) -> list[str]:
    la = info.get("loadavg_start")
    la_end = os.getloadavg()
    lines = [
        f"- Machine: {info['cpu_model']}, {info['cpu_cores']} CPU cores (shared with other users; load average "
        f"{la[0]:.1f} at start, {la_end[0]:.1f} at end)" if la else f"- Machine: {info['cpu_model']}, {info['cpu_cores']} cores",
        f"- Versions: python {info['python']}, torch {info['torch']}, spfde_search {info['spfde_search']}",
    ]
    lines.append(f"- GPU: {info['gpu']} (CUDA {info.get('cuda')})" if info.get("gpu") else f"- {NO_GPU_NOTE}")
    return lines


# ---------------------------------------------------------------- statistics and formatting


@dataclass(frozen=True)
class Spread:
    n: int
    median: float
    q1: float
    q3: float
    lo: float
    hi: float
    mean: float
    std: float

    def fmt(self, spec: str = ".3f", scale: float = 1.0, unit: str = "") -> str:
        f = lambda v: format(v * scale, spec)  # noqa: E731
        if self.n == 1:
            return f"{f(self.median)}{unit} (n=1)"
        return f"{f(self.median)}{unit} (IQR {f(self.q1)}–{f(self.q3)}, min–max {f(self.lo)}–{f(self.hi)}, n={self.n})"


def spread(values: Iterable[float]) -> Spread:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        nan = float("nan")
        return Spread(0, nan, nan, nan, nan, nan, nan, nan)
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return Spread(int(v.size), float(med), float(q1), float(q3), float(v.min()), float(v.max()), float(v.mean()), std)


def t_halfwidth(d: Any, level: float = 0.95) -> float:
    """Half-width of the ``level`` t interval of the mean of ``d`` (n >= 2): one formula for every paired verdict."""
    from scipy import stats

    d = np.asarray(d, dtype=float)
    return float(stats.t.ppf(0.5 + level / 2, d.size - 1)) * float(d.std(ddof=1)) / math.sqrt(d.size)


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# ---------------------------------------------------------------- result files


def save_rows(rows: Sequence[Mapping[str, Any]] | Any, out: Path, stem: str) -> Path:
    """Write a list of dicts (or a DataFrame) as <stem>.parquet and <stem>.csv; returns the parquet path."""
    import pandas as pd

    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    df.to_csv(out / f"{stem}.csv", index=False)
    with contextlib.suppress(ImportError, ValueError, TypeError):  # columns pyarrow cannot type: keep the CSV
        df.to_parquet(out / f"{stem}.parquet", index=False)
    return out / f"{stem}.parquet"


def plt_figure(*args: Any, **kw: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kw)


def append_section(path: Path, title: str, info: Mapping[str, Any], body: str, extra_lines: Sequence[str] = ()) -> None:
    """Append '## <date> — title' with machine, versions, command, then the body."""
    now = _dt.datetime.now().astimezone()
    lines = [f"## {now:%Y-%m-%d %H:%M %Z} — {title}", ""]
    lines += machine_lines(info)
    lines += list(extra_lines)
    lines += ["- Command (from the repository root):", "", "```", command_line(), "```", "", body.rstrip(), "", ""]
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text("# Benchmark results\n\nDated sections appended by the scripts in `benchmarks/` (see README.md "
                        "there). Newest at the bottom. Every number says how it was measured.\n\n")
    with path.open("a") as f:
        f.write(text)
    print(f"appended a section to {path}")


# ---------------------------------------------------------------- configs


def fmnist_config(train: int | None, test: int | None, epochs: int, device: str, threads: int | None,
                  **overrides: Any) -> Any:
    """ResNet-8-on-Fashion-MNIST style base config (configs/spfde_fmnist_cpu.yaml recipe) plus dotted overrides."""
    from spfde_search.config import Config

    cfg = Config.parse({
        "seed": 0,
        "model": {"name": "resnet8", "width": 1},
        "data": {"name": "fashion_mnist", "train_subset": train, "test_subset": test},
        "train": {"epochs": epochs, "batch_size": 128, "lr": 0.1, "weight_decay": 0.0005, "update_interval": 1,
                  "device": device, "threads": threads},
        "sparsity": {"algorithm": "mest", "ratio": 0.9},
    })
    return cfg.with_overrides(overrides) if overrides else cfg


def sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------- timed schedules (freezing / sieving vs time)


def runnable_points(space_name: str, base: Any, n: int, seed: int) -> list[dict[str, Any]]:
    """The first ``n`` distinct points of a built-in space, drawn at random, that the trainable would run (both arms
    of a paired benchmark must train them)."""
    from search_spaces import resolve_space, sample_random
    from trainables import assess

    space = resolve_space(space_name, base)
    points: list[dict[str, Any]] = []
    for t in sample_random(space.fn, 200, seed=seed):
        if assess(t.params, base.to_dict()).feasible and t.params not in points:
            points.append(t.params)
        if len(points) == n:
            break
    return points


def schedule_variants(xs: Sequence[float], ys: Sequence[float]) -> list[tuple[str, dict[str, Any]]]:
    """Baseline (x=0, y=0), freezing alone at each x > 0, sieving alone at each y > 0."""
    out: list[tuple[str, dict[str, Any]]] = [("x0_y0", {"freezing.target_flops_reduction": 0.0, "sieving.fraction": 0.0})]
    out += [(f"x{round(x * 100)}_y0", {"freezing.target_flops_reduction": x, "sieving.fraction": 0.0}) for x in xs if x > 0]
    out += [(f"x0_y{round(y * 100)}", {"freezing.target_flops_reduction": 0.0, "sieving.fraction": y}) for y in ys if y > 0]
    return out


def feasible_variants(base: Any, xs: Sequence[float], ys: Sequence[float],
                      log: Callable[[str], None] = print) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """``schedule_variants`` minus those whose freezing target this schedule cannot reach (said, not run)."""
    from spfde_search.config import ConfigError
    from spfde_search.method.flops import predict

    variants, skipped = [], []
    for name, ov in schedule_variants(xs, ys):
        try:
            predict(base.with_overrides(dict(ov)))
            variants.append((name, dict(ov)))
        except ConfigError as e:  # an infeasible freezing target at this size: say so, run the rest
            skipped.append(f"{name} (batch {base.train.batch_size}): {e}")
            log(f"skipping {name}: {e}")
    return variants, skipped


def timed_schedules(
    base: Any,
    variants: Sequence[tuple[str, Mapping[str, Any]]],
    repeats: int,
    log: Callable[[str], None] = print,
    label: str = "",
) -> list[dict[str, Any]]:
    """Run every variant ``repeats`` times, interleaved (round-robin, rotated each repeat), on one shared data
    bundle; one row per (variant, repeat, epoch) with the epoch's training seconds and measured FLOPs.

    Evaluation runs on ``data.test_subset`` images only (set it small: 10) so epoch time is training time.
    One untimed warm-up epoch of the baseline runs first (allocator, thread pools).
    """
    from spfde_search.data import load_data
    from spfde_search.device import resolve_device
    from spfde_search.trainer import Trainer

    device = resolve_device(base.train.device)
    if base.train.threads:
        import torch

        torch.set_num_threads(base.train.threads)
    bundle = load_data(base.data, base.seed, device)
    warm = Trainer(base.with_overrides({**variants[0][1], "train.epochs": 1}), data=bundle)
    for _ in warm.epochs():
        pass
    rows: list[dict[str, Any]] = []
    n = len(variants)
    for r in range(repeats):
        order = [variants[(i + r) % n] for i in range(n)]
        for name, ov in order:
            cfg = base.with_overrides(dict(ov))
            trainer = Trainer(cfg, data=bundle)
            prev = 0
            t_run = time.perf_counter()
            c_prev = time.process_time()
            for m in trainer.epochs():
                sync(device)
                c_now = time.process_time()
                rows.append({
                    "label": label, "variant": name, "repeat": r, "epoch": m.epoch,
                    "x": cfg.freezing.target_flops_reduction, "y": cfg.sieving.fraction,
                    "algorithm": cfg.sparsity.algorithm, "sparsity": cfg.sparsity.ratio,
                    "batch_size": cfg.train.batch_size,
                    "epoch_seconds": m.epoch_seconds, "epoch_cpu_seconds": c_now - c_prev,
                    "epoch_flops": m.train_flops - prev,
                    "frozen_units": m.frozen_units, "partial_size": m.partial_size,
                    "run_flops": None, "freezing_saving_achieved": trainer.prediction.freezing_saving_achieved,
                })
                prev = m.train_flops
                c_prev = time.process_time()
            dt = time.perf_counter() - t_run
            for row in rows[-cfg.train.epochs:]:
                row["run_flops"] = trainer.train_flops
            log(f"  [{label}] repeat {r + 1}/{repeats} {name}: {dt:.1f} s, {trainer.train_flops / 1e9:.2f} GFLOPs")
    return rows


def saving_summary(rows: Sequence[Mapping[str, Any]], baseline: str = "x0_y0",
                   metric: str = "epoch_seconds") -> list[dict[str, Any]]:
    """Per variant: time saved and FLOPs saved relative to the baseline of the *same repeat* (paired), per run,
    and their ratio (time saved / FLOPs saved). ``metric``: ``epoch_seconds`` (wall clock) or
    ``epoch_cpu_seconds`` (this process's CPU time: with one torch thread it measures the work done and is far
    less disturbed by other users' load than wall clock). Returns one dict per (label, batch size, variant)."""
    import pandas as pd

    df = pd.DataFrame(list(rows))
    out = []
    for (label, bs), g in df.groupby(["label", "batch_size"], sort=False):
        runs = g.groupby(["variant", "repeat"], sort=False).agg(
            seconds=(metric, "sum"), flops=("run_flops", "first"),
            x=("x", "first"), y=("y", "first"), achieved=("freezing_saving_achieved", "first")).reset_index()
        base = runs[runs.variant == baseline].set_index("repeat")
        for v, gv in runs.groupby("variant", sort=False):
            ts, fs, rat = [], [], []
            for _, row in gv.iterrows():
                if row["repeat"] not in base.index:
                    continue
                b = base.loc[row["repeat"]]
                t_saved = 1 - row["seconds"] / b["seconds"]
                f_saved = 1 - row["flops"] / b["flops"]
                ts.append(t_saved)
                fs.append(f_saved)
                if abs(f_saved) > 1e-9:
                    rat.append(t_saved / f_saved)
            out.append({
                "label": label, "batch_size": bs, "variant": v, "x": float(gv.x.iloc[0]), "y": float(gv.y.iloc[0]),
                "freezing_saving_achieved": float(gv.achieved.iloc[0]),
                "run_seconds": spread(gv["seconds"]), "flops_saved": spread(fs), "time_saved": spread(ts),
                "ratio": spread(rat),
            })
    return out


def per_epoch_frozen(rows: Sequence[Mapping[str, Any]], baseline: str = "x0_y0",
                     metric: str = "epoch_seconds") -> list[dict[str, Any]]:
    """Epoch-level view of freezing: every freezing-run epoch with k frozen units against the baseline's same
    epoch of the same repeat: time ratio and FLOPs ratio, grouped by k."""
    import pandas as pd

    df = pd.DataFrame(list(rows))
    out = []
    for (label, bs), g in df.groupby(["label", "batch_size"], sort=False):
        base = g[g.variant == baseline].set_index(["repeat", "epoch"])
        frz = g[(g.y == 0) & (g.x > 0)]  # freezing-alone runs only (not the baseline, not a dense comparison)
        by_k: dict[int, tuple[list[float], list[float]]] = {}
        for _, row in frz.iterrows():
            key = (row["repeat"], row["epoch"])
            if key not in base.index:
                continue
            b = base.loc[key]
            tr, fr = by_k.setdefault(int(row["frozen_units"]), ([], []))
            tr.append(row[metric] / b[metric])
            fr.append(row["epoch_flops"] / b["epoch_flops"])
        for k in sorted(by_k):
            tr, fr = by_k[k]
            out.append({"label": label, "batch_size": bs, "frozen_units": k, "time_ratio": spread(tr),
                        "flops_ratio": spread(fr)})
    return out


def spread_columns(d: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten Spread values into <key>_median/_q1/_q3/_min/_max/_n columns (for Parquet/CSV)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Spread):
            out.update({f"{k}_median": v.median, f"{k}_q1": v.q1, f"{k}_q3": v.q3, f"{k}_min": v.lo,
                        f"{k}_max": v.hi, f"{k}_n": v.n})
        else:
            out[k] = v
    return out


def saving_table_md(wall: Sequence[Mapping[str, Any]], cpu: Sequence[Mapping[str, Any]] | None = None) -> str:
    """One row per variant: FLOPs saved, wall-clock saved and its ratio, and (if given) CPU time saved and ratio."""
    by_key = {(s["label"], s["batch_size"], s["variant"]): s for s in (cpu or [])}
    rows = []
    for s in wall:
        if s["variant"] == "x0_y0":
            continue
        row = [s["label"], s["batch_size"], s["variant"], f"{s['x']:.0%}", f"{s['y']:.0%}",
               s["flops_saved"].fmt(".1f", 100, "%"), s["time_saved"].fmt(".1f", 100, "%"), s["ratio"].fmt(".2f")]
        if cpu is not None:
            c = by_key.get((s["label"], s["batch_size"], s["variant"]))
            row += [c["time_saved"].fmt(".1f", 100, "%"), c["ratio"].fmt(".2f")] if c else ["–", "–"]
        rows.append(row)
    head = ["setting", "batch", "variant", "x (freeze target)", "y (sieve)", "FLOPs saved (run)",
            "wall-clock saved (run)", "wall saved / FLOPs saved"]
    if cpu is not None:
        head += ["CPU time saved (run)", "CPU saved / FLOPs saved"]
    return md_table(head, rows)


def plot_savings(summary: Sequence[Mapping[str, Any]], path: Path, title: str, clock: str = "wall-clock") -> None:
    """Time saved against FLOPs saved per variant (the dense comparison, with negative FLOPs saved, is left out:
    it is in the tables)."""
    fig, ax = plt_figure(figsize=(6, 5))
    lim = 0.05
    for s in summary:
        if s["variant"] == "x0_y0" or s["flops_saved"].median < 0:
            continue
        f, t = s["flops_saved"], s["time_saved"]
        marker = "o" if s["y"] == 0 else "s"
        ax.errorbar(f.median, t.median, yerr=[[t.median - t.lo], [t.hi - t.median]], fmt=marker, capsize=3,
                    label=f"{s['label']} b{s['batch_size']} {s['variant']}")
        lim = max(lim, f.median, t.hi)
    ax.plot([0, lim * 1.1], [0, lim * 1.1], "k--", lw=1, label="time saved = FLOPs saved")
    ax.set_xlabel("training FLOPs saved (fraction of the x=0, y=0 run)")
    ax.set_ylabel(f"{clock} saved (median, bars min–max)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def nice_self(level: int = 10) -> None:
    """Lower this process's priority (the machine is shared); ignore failures."""
    with contextlib.suppress(OSError):
        os.nice(level)
