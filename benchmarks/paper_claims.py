"""Issues 5, 9, 13: the paper's Table 2 structure on Fashion-MNIST and docs/method.md §6's claims at equal training FLOPs.

Resumable and spread over time: every training run is one ``spfde train`` subprocess, and each finished run is
one row appended (atomically) to ``<out>/rows.parquet`` (+ ``rows.csv``) under a stable run key (size preset, row
name, seed, ``freezing.lr_schedule``, hash of the full resolved config: precision, device, threads, data sizes...).
A rerun skips every key already there; an interrupted run loses only the runs in flight. ``--report`` regenerates
the section of ``benchmarks/RESULTS.md`` between this folder's markers from the rows, never by hand.

Sizes (``--size``):

- ``current``: the table as it has been since issue 5 (ResNet-8, 1,500 train / 1,000 test images, 10 epochs,
  Δτ = 1, 3 seeds, every epoch evaluated). Rows: the paper grid (dense; static/SET/RigL/MEST at 0.6/0.9/0.95;
  SpFDE 10+10, 20+20, 25+25 at 0.9; freezing or sieving alone 15% and 30%) and the equal-FLOPs claim rows.
- ``decisive`` (issue 13): ResNet-8, 10,000 train images, the full 10,000-image test set, 40 epochs, Δτ = 4
  (8 MEST mask updates before ``update_end``), 5 paired seeds, only the last epoch evaluated. Rows: the claim
  rows only (MEST 0.9, MEST 0.95 and the equal-FLOPs SpFDE rows). ``--calibrate`` measures this machine's
  per-sample training time and prints what the whole preset would cost.

A seed fixes the data subset, the initial mask and the sample order for every row, so each claim is a
difference paired by seed. The equal-FLOPs rows (x, y) are chosen from the FLOPs prediction
(``spfde_search.method.flops.predict``) before any training and kept in ``<out>/plan.json``; ``VERDICT_RULES``
below are printed in the section before the numbers.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "paper_claims"
PLAN_VERSION = 1
TOL = 0.02  # compared pairs are equal in training FLOPs within 2%
CLAIM1_CAP = 0.73  # claim 1: FLOPs ≤ 0.73 × MEST 0.9's
KEPT_MARGIN = 0.5  # points
LEVELS = {  # label: (what it tests, nominal FLOPs relative to MEST 0.9, or None = MEST 0.95's)
    "lo": ("claim 3 at ~15% saved", 0.85),
    "c1": ("claim 1: ≤ 0.73 × MEST 0.9", CLAIM1_CAP),
    "hi": ("claim 3 at ~30% saved", 0.70),
    "m95": ("claim 2: MEST 0.95's FLOPs", None),
}
KINDS = ("freeze-only", "sieve-only", "both")

VERDICT_RULES = [
    "Each comparison is paired by seed: d_s = accuracy(A, seed s) − accuracy(B, seed s) in points; shown are the "
    "mean of d_s ± its standard error (sd/√n), the 95% Student-t interval (n − 1 degrees of freedom) and a 95% "
    "bootstrap percentile interval over seeds (10,000 resamples, fixed RNG). Verdicts use the t interval; "
    "with fewer than 2 paired seeds a verdict is 'undecided (n < 2)'.",
    f"**kept** (B's accuracy kept by A): the interval of the drop B − A includes 0 or lies below it, and the mean "
    f"drop is under {KEPT_MARGIN} points; **not kept**: the whole interval of the drop lies above 0; "
    "**undecided**: otherwise (no significant drop, but a mean drop too large to call kept).",
    "**more accurate** (A than B): the whole interval of A − B lies above 0; **less accurate**: below 0; "
    "**no difference detected**: the interval includes 0 (its width says what the size can resolve).",
    f"Claim 1: among the SpFDE rows at ≤ {CLAIM1_CAP} × MEST 0.9's FLOPs (within 2% below it), the one with the "
    "highest mean accuracy is compared with MEST 0.9 by the kept rule at a Bonferroni-widened interval "
    "(level 1 − 0.05/k for k candidates) to pay for picking the best. Supported = kept.",
    "Claim 2: 'both' (freezing + sieving, x ≈ y) at MEST 0.95's FLOPs vs MEST 0.95, more-accurate rule. "
    "Supported = more accurate; contradicted = less accurate.",
    "Claim 3: (a) at ~15% saved, freezing-only and sieving-only are each kept vs MEST 0.9 (supported = both "
    "kept; contradicted = either not kept); (b) at ~30% saved, sieving-only is more accurate than freezing-only; "
    "(c) at both levels 'both' is more accurate than each single technique (supported = all four more accurate; "
    "contradicted = any less accurate).",
    "Each claim is judged separately for each freezing.lr_schedule. The claim-3 levels are the freezing-only "
    "savings this schedule can reach nearest to 15% and 30% (freezing saves in whole Δτ steps); sieving-only and "
    "'both' are matched to them. Rows are chosen from the FLOPs prediction before training; nothing is re-chosen "
    "after the numbers.",
]


@dataclass(frozen=True)
class Preset:
    model: str
    train_subset: int | None
    test_subset: int | None
    epochs: int
    update_interval: int
    seeds: int
    eval_every: int | None  # None: every epoch (the trainer's default)
    rows: str  # all | claims
    data: dict[str, Any] = field(default_factory=dict)


PRESETS = {
    "current": Preset("resnet8", 1500, 1000, 10, 1, 3, None, "all"),
    "decisive": Preset("resnet8", 10_000, None, 40, 4, 5, 40, "claims"),
    # seconds: a tiny synthetic set, two seeds, three rows; every path of the resumable runner and the report
    "smoke": Preset("resnet8", None, None, 4, 1, 2, 4, "smoke",
                    {"data.name": "synthetic", "data.synthetic_train": 128, "data.synthetic_test": 64,
                     "data.synthetic_size": 16}),
}
SMOKE_ROWS = ("mest 0.9", "sieve-only [lo]", "both [lo]")


@dataclass(frozen=True)
class Row:
    name: str
    group: str  # dense | dst | spfde | freeze_only | sieve_only | matched
    algorithm: str
    sparsity: float
    x: float = 0.0
    y: float = 0.0
    overrides: dict[str, Any] = field(default_factory=dict)
    level: str = ""  # matched rows: LEVELS key
    kind: str = ""  # matched rows: KINDS

    @property
    def lr_schedule(self) -> str:
        return str(self.overrides.get("freezing.lr_schedule", "per_unit"))

    def config_overrides(self) -> dict[str, Any]:
        return {"sparsity.algorithm": self.algorithm, "sparsity.ratio": self.sparsity,
                "freezing.target_flops_reduction": self.x, "sieving.fraction": self.y, **self.overrides}


def with_schedules(rows: list[Row], lr_schedules: Sequence[str]) -> list[Row]:
    """Every schedule after the first repeats the freezing rows with ``freezing.lr_schedule`` set to it (the
    rows without freezing do not depend on it)."""
    out = list(rows)
    for sched in lr_schedules[1:]:
        out += [Row(f"{r.name} ({sched} LR)", r.group, r.algorithm, r.sparsity, r.x, r.y,
                    {**r.overrides, "freezing.lr_schedule": sched}, r.level, r.kind) for r in rows if r.x > 0]
    if lr_schedules and lr_schedules[0] != "per_unit":
        out = [Row(r.name, r.group, r.algorithm, r.sparsity, r.x, r.y,
                   {"freezing.lr_schedule": lr_schedules[0], **r.overrides}, r.level, r.kind) if r.x > 0 else r
               for r in out]
    return out


def grid_rows(sparsities: list[float], spfde_sparsities: list[float], combos: list[tuple[float, float]],
              singles: list[float], algorithms: Sequence[str]) -> list[Row]:
    rows = [Row("dense", "dense", "dense", 0.0)]
    for s in sparsities:
        for alg in algorithms:
            rows.append(Row(f"{alg} {s:g}", "dst", alg, s))
    for s in spfde_sparsities:
        for x, y in combos:
            rows.append(Row(f"SpFDE {x:.0%}+{y:.0%} @ {s:g}", "spfde", "mest", s, x, y))
    for v in singles:
        rows.append(Row(f"freeze {v:.0%} @ 0.9", "freeze_only", "mest", 0.9, x=v))
        rows.append(Row(f"sieve {v:.0%} @ 0.9", "sieve_only", "mest", 0.9, y=v))
    return rows


def matched_name(kind: str, level: str) -> str:
    return f"{kind} [{level}]"


# ---------------------------------------------------------------- arguments and the base config


def parse_args(argv: list[str] | None = None) -> Any:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--size", choices=["current", "decisive"], default="current", help="size preset (see the docstring)")
    p.add_argument("--rows", choices=["all", "claims", "grid"], default=None,
                   help="row set: grid (paper table), claims (equal-FLOPs rows), all; default per size")
    p.add_argument("--report", action="store_true", help="regenerate the RESULTS.md section from the rows; train nothing")
    p.add_argument("--calibrate", action="store_true",
                   help="measure per-sample training time here and print what this size's full table costs; train nothing else")
    p.add_argument("--model", default=None)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--test-subset", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--update-interval", type=int, default=None, help="Δτ")
    p.add_argument("--seeds", type=int, default=None, help="paired seeds 0..n-1 (default per size)")
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.6, 0.9, 0.95])
    p.add_argument("--spfde-sparsities", type=float, nargs="+", default=[0.9])
    p.add_argument("--singles", type=float, nargs="*", default=[0.15, 0.3],
                   help="grid: freezing-alone and sieving-alone fractions at 0.9")
    p.add_argument("--workers", type=int, default=None, help="concurrent runs; default 2 (CPU), 8 (CUDA)")
    p.add_argument("--algorithms", nargs="+", default=["static", "set", "rigl", "mest"],
                   choices=["static", "set", "rigl", "mest"], help="grid DST rows per sparsity")
    p.add_argument("--only", nargs="+", default=None, metavar="ROW", help="run only these rows, by name (e.g. 'mest 0.9')")
    p.add_argument("--fp32", action="store_true",
                   help="train.precision=fp32, channels_last=off (what precision=auto meant on CPU before issue 8)")
    p.add_argument("--lr-schedules", nargs="+", default=["per_unit", "global"], choices=["per_unit", "global"],
                   help="freezing.lr_schedule values; the first is the table's, later ones repeat the freezing rows")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run on CPU")
    p.add_argument("--nice", type=int, default=10, help="niceness of each training subprocess")
    p.add_argument("--time-budget-min", type=float, default=None, help="stop launching new runs after this")
    p.add_argument("--retry-failed", action="store_true", help="rerun rows recorded as FAILED (default: keep them)")
    p.add_argument("--before", type=Path, default=None,
                   help="runs.csv of an earlier table to pair with (default for --size current: the 2026-11-26 table)")
    a = p.parse_args(argv)
    a.size_label = "smoke" if a.smoke_test else a.size
    pre = PRESETS[a.size_label]
    a.preset = pre
    for k in ("model", "train_subset", "test_subset", "epochs", "update_interval", "seeds"):
        if getattr(a, k) is None:
            setattr(a, k, getattr(pre, k))
    a.rows = a.rows or pre.rows
    a.workers = a.workers or (8 if a.device == "cuda" else 2)
    a.combos = [(0.1, 0.1), (0.2, 0.2), (0.25, 0.25)]
    if a.before is None and a.size_label == "current":
        old = C.BENCH_DIR / "results" / NAME / "runs.csv"
        a.before = old if old.exists() else None
    if a.seeds < 1 or a.workers < 1:
        p.error("--seeds and --workers must be at least 1")
    return a


def base_config(a: Any) -> Any:
    pinned: dict[str, Any] = {"train.precision": "fp32", "train.channels_last": "off"} if a.fp32 else {}
    if a.preset.eval_every:
        pinned["train.eval_every"] = a.preset.eval_every
    return C.fmnist_config(a.train_subset, a.test_subset, a.epochs, a.device, a.threads if a.device == "cpu" else None,
                           **{"model.name": a.model, "train.update_interval": a.update_interval, **a.preset.data,
                              **pinned})


def config_hash(cfg: Any) -> str:
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_hash() -> str:
    """Hash of the trainer's sources (recorded per row, so a report can say when rows span code versions)."""
    pkg = C.REPO_ROOT / "spfde_search"
    files = sorted([*pkg.glob("*.py"), *(pkg / "method").glob("*.py"), *(pkg / "data").glob("*.py")])
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def git_head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=C.REPO_ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# ---------------------------------------------------------------- choosing x, y at equal FLOPs (before training)


_PREDICTIONS: dict[str, Any] = {}


def predict_cached(cfg: Any) -> Any:
    """``predict`` once per config up to the seed (a seed changes which samples, not how many)."""
    from spfde_search.method.flops import predict

    key = config_hash(cfg.with_overrides({"seed": 0}))
    if key not in _PREDICTIONS:
        _PREDICTIONS[key] = predict(cfg)
    return _PREDICTIONS[key]


def _ratio(base: Any, ov: dict[str, Any], ref: int) -> float:
    return int(predict_cached(base.with_overrides(ov)).train_flops) / ref


def _solve_y(base: Any, ov: dict[str, Any], ref: int, target: float, cap: bool) -> tuple[float, float]:
    """Sieve fraction y that brings the run ``ov`` (+ sieving) to ``target`` × ref (≤ target when ``cap``).
    FLOPs are nearly proportional to the kept samples, so a few fixed-point steps converge."""
    aim = target * (1 - 0.002) if cap else target
    r0 = _ratio(base, {**ov, "sieving.fraction": 0.0}, ref)
    y = max(0.0, 1 - aim / r0)
    r = r0
    for _ in range(8):
        y = min(max(round(y, 4), 0.0), 0.95)
        r = _ratio(base, {**ov, "sieving.fraction": y}, ref)
        if abs(r / aim - 1) < 0.002 and (not cap or r <= target):
            break
        y = 1 - (1 - y) * aim / r
    for _ in range(40):  # the freeze plan moves in steps as y changes: creep up until under the cap
        if not cap or r <= target:
            break
        y = round(y + 0.0025, 4)
        r = _ratio(base, {**ov, "sieving.fraction": y}, ref)
    return y, r


def make_plan(base: Any, log: Any = print) -> dict[str, Any]:
    """The equal-FLOPs rows: for each level, freezing-only / sieving-only / both (x ≈ y), with the predicted
    FLOPs ratio to MEST 0.9. Freezing saves in whole-Δτ steps, so freezing-only exists at a level only where a
    step lands within 2% (claim 3's levels are set to those steps)."""
    from spfde_search.config import ConfigError

    m9 = predict_cached(base.with_overrides({"sparsity.algorithm": "mest", "sparsity.ratio": 0.9})).train_flops
    m95 = predict_cached(base.with_overrides({"sparsity.algorithm": "mest", "sparsity.ratio": 0.95})).train_flops
    mest9 = {"sparsity.algorithm": "mest", "sparsity.ratio": 0.9}
    steps: dict[float, float] = {}  # FLOPs ratio of freezing-only -> smallest target x reaching it
    for i in range(1, 61):
        x = i / 100
        try:
            r = round(_ratio(base, {**mest9, "freezing.target_flops_reduction": x}, m9), 5)
        except ConfigError:
            break
        steps.setdefault(r, x)
    log(f"plan: freezing-only steps (FLOPs / MEST 0.9 ← target x): {sorted(steps.items())}")
    levels: dict[str, Any] = {}
    for lv, (what, nominal) in LEVELS.items():
        target = m95 / m9 if nominal is None else nominal
        cap = lv == "c1"
        if lv in ("lo", "hi") and steps:  # claim 3: the reachable freezing step nearest the nominal saving
            target = min(steps, key=lambda r: abs(r - nominal))  # type: ignore[operator]
        rows: dict[str, Any] = {}
        fit = [r for r in steps if abs(r / target - 1) <= TOL and (not cap or r <= target)]
        if fit:
            r = min(fit, key=lambda r: abs(r / target - 1))
            rows["freeze-only"] = {"x": steps[r], "y": 0.0, "ratio": r}
        y, r = _solve_y(base, mest9, m9, target, cap)
        rows["sieve-only"] = {"x": 0.0, "y": y, "ratio": r}
        balanced = 1 - math.sqrt(target)  # x ≈ y: the freezing step nearest the balanced saving, sieving the rest
        under = [s for s in steps if s > target * (1 + TOL)]
        if under:
            s = min(under, key=lambda s: abs((1 - s) - balanced))
            x = steps[s]
            y, r = _solve_y(base, {**mest9, "freezing.target_flops_reduction": x}, m9, target, cap)
            rows["both"] = {"x": x, "y": y, "ratio": r}
        for v in rows.values():
            v["ok"] = abs(v["ratio"] / target - 1) <= TOL and (not cap or v["ratio"] <= target)
        levels[lv] = {"what": what, "target": target, "rows": rows}
        log(f"plan: {lv} ({what}) target {target:.4f}: " + ", ".join(
            f"{k} x={v['x']:.3f} y={v['y']:.4f} → {v['ratio']:.4f}{'' if v['ok'] else ' (NOT within 2%)'}"
            for k, v in rows.items()))
    return {"version": PLAN_VERSION, "mest09_flops": m9, "mest095_flops": m95, "freeze_steps": sorted(steps.items()),
            "levels": levels, "made_at": _now()}


def load_plan(a: Any, base: Any, out: Path) -> dict[str, Any]:
    """The plan for this base config, from ``<out>/plan.json`` when made before (so reruns never re-choose)."""
    path = out / "plan.json"
    plans = json.loads(path.read_text()) if path.exists() else {}
    key = f"{config_hash(base)}:v{PLAN_VERSION}"
    if key not in plans:
        print("choosing the equal-FLOPs rows from the FLOPs prediction (once per base config) ...", flush=True)
        plans[key] = make_plan(base)
        _atomic_write(path, json.dumps(plans, indent=1))
    return dict(plans[key])


def matched_rows(plan: dict[str, Any]) -> list[Row]:
    rows = []
    for lv, info in plan["levels"].items():
        for kind in KINDS:
            v = info["rows"].get(kind)
            if v is None or not v["ok"]:
                continue
            rows.append(Row(matched_name(kind, lv), "matched", "mest", 0.9, v["x"], v["y"], {}, lv, kind))
    return rows


def all_rows(a: Any, plan: dict[str, Any]) -> list[Row]:
    """Grid rows (in the old table's order), then the claim rows; both LR schedules."""
    mest = [Row("mest 0.9", "dst", "mest", 0.9), Row("mest 0.95", "dst", "mest", 0.95)]
    grid = grid_rows(a.sparsities, a.spfde_sparsities, a.combos, a.singles, a.algorithms)
    claims = matched_rows(plan)
    if a.rows == "grid":
        rows = grid
    elif a.rows in ("claims", "smoke"):
        rows = mest + claims
    else:
        names = {r.name for r in grid}
        rows = grid + [r for r in mest if r.name not in names] + claims
    rows = with_schedules(rows, a.lr_schedules)
    if a.rows == "smoke":
        rows = [r for r in rows if r.name in SMOKE_ROWS]
    return rows


# ---------------------------------------------------------------- the row file


ROWS_FILE = "rows.parquet"


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_rows(out: Path) -> list[dict[str, Any]]:
    import pandas as pd

    path = out / ROWS_FILE
    if not path.exists():
        return []
    df = pd.read_parquet(path)
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in df.to_dict("records")]


def append_row(out: Path, row: dict[str, Any]) -> None:
    """Add (or replace, same run key) one row: rewrite rows.parquet to a temporary file and rename it over the
    old one, so a kill at any moment leaves the previous or the new file, never a torn one."""
    import pandas as pd

    rows = [r for r in read_rows(out) if r["run_key"] != row["run_key"]] + [row]
    df = pd.DataFrame(rows)
    tmp = out / (ROWS_FILE + ".tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, out / ROWS_FILE)
    df.to_csv(out / "rows.csv.tmp", index=False)
    os.replace(out / "rows.csv.tmp", out / "rows.csv")


@contextlib.contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """One writer per result folder: a second concurrent run would train the same keys twice."""
    f = (out / ".lock").open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        print(f"error: another paper_claims run is writing to {out} ({f.read().strip()}); wait for it or stop it "
              "first", file=sys.stderr)
        raise SystemExit(2) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} since {_now()}")
    f.flush()
    try:
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


# ---------------------------------------------------------------- running


@dataclass
class Job:
    row: Row
    seed: int
    cfg: Any
    key: str
    chash: str
    dir: Path
    code: str = ""  # trainer source hash when the run was launched


def run_key(size: str, row: Row, seed: int, chash: str) -> str:
    return f"{size}|{row.name}|s{seed}|{row.lr_schedule}|{chash}"


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s.replace("%", "").replace("+", "p").replace("@", "at")).strip("_")


def jobs_for(a: Any, base: Any, rows: list[Row], out: Path) -> tuple[list[Job], list[tuple[Row, int, str]]]:
    """One job per (row, seed), seed-major within each block of rows (grid, then claims) so that a partial
    table has every row of a block at the same n as far as possible; plus the configs that cannot run."""
    from spfde_search.config import ConfigError

    jobs, bad = [], []
    blocks = [[r for r in rows if r.group != "matched"], [r for r in rows if r.group == "matched"]]
    for block in blocks:
        for seed in range(a.seeds):
            for row in block:
                try:
                    cfg = base.with_overrides({**row.config_overrides(), "seed": seed})
                    if row.x > 0:
                        predict_cached(cfg)  # an infeasible freezing target raises here, before any training
                except ConfigError as e:
                    bad.append((row, seed, str(e)))
                    continue
                h = config_hash(cfg)
                jobs.append(Job(row, seed, cfg, run_key(a.size_label, row, seed, h), h,
                                out / "runs" / f"{_slug(row.name)}_s{seed}_{h[:10]}"))
    return jobs, bad


def _row_record(a: Any, job: Job, status: str, code: str, head: str, **kw: Any) -> dict[str, Any]:
    r = job.row
    rec: dict[str, Any] = {
        "run_key": job.key, "size": a.size_label, "name": r.name, "group": r.group, "level": r.level, "kind": r.kind,
        "algorithm": r.algorithm, "sparsity": r.sparsity, "x": r.x, "y": r.y, "lr_schedule": r.lr_schedule,
        "seed": job.seed, "config_hash": job.chash, "code_hash": code, "git_head": head, "status": status,
        "test_accuracy": None, "train_flops": None, "predicted_train_flops": None, "dense_train_flops": None,
        "flops_ratio": None, "freezing_saving_achieved": None, "freeze_start_epoch": None, "saved_sparsity": None,
        "saved_freezing": None, "saved_sieving": None, "wall_seconds": None, "cpu_seconds": None,
        "load_at_start": None, "finished_at": _now(), "error": "",
    }
    rec.update(kw)
    return rec


def _from_summary(a: Any, job: Job, code: str, head: str, **kw: Any) -> dict[str, Any]:
    s = json.loads((job.dir / "summary.json").read_text())
    pred = json.loads((job.dir / "prediction.json").read_text())
    return _row_record(
        a, job, "COMPLETED", code, head, test_accuracy=s["test_accuracy"], train_flops=s["train_flops"],
        predicted_train_flops=s["predicted_train_flops"], dense_train_flops=s["dense_train_flops"],
        flops_ratio=s["flops_ratio"], freezing_saving_achieved=pred.get("freezing_saving_achieved"),
        freeze_start_epoch=s["freeze_start_epoch"], saved_sparsity=s["saved_fraction"]["sparsity"],
        saved_freezing=s["saved_fraction"]["freezing"], saved_sieving=s["saved_fraction"]["sieving"],
        wall_seconds=s["wall_seconds"], **kw)


def _read(path: Path) -> str:
    return path.read_text().strip() if path.exists() else "unknown"


def run_jobs(a: Any, jobs: list[Job], out: Path) -> dict[str, int]:
    """Run the jobs whose key has no row yet, ``a.workers`` at a time; each finished one is appended at once."""
    from spfde_search.config_export import config_to_yaml

    done = {r["run_key"]: r["status"] for r in read_rows(out)}
    todo = [j for j in jobs if j.key not in done or (a.retry_failed and done[j.key] == "FAILED")]
    counts = {"done_before": len(jobs) - len(todo), "recovered": 0, "ran": 0, "failed": 0, "not_started": 0}
    print(f"{len(jobs)} runs in this table: {counts['done_before']} already in {out / ROWS_FILE} (skipped), "
          f"{len(todo)} to run, {a.workers} at a time", flush=True)
    head = git_head()
    nice = ["nice", "-n", str(a.nice)] if shutil.which("nice") and a.nice else []
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    running: list[tuple[Job, subprocess.Popen[bytes], float, float, Any]] = []
    t0 = time.perf_counter()

    def stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, stop)
    try:
        pending = list(todo)
        while pending or running:
            over = a.time_budget_min is not None and time.perf_counter() - t0 > 60 * a.time_budget_min
            while pending and len(running) < a.workers and not over:
                job = pending.pop(0)
                job.dir.mkdir(parents=True, exist_ok=True)
                text = config_to_yaml(job.cfg, header=f"paper_claims {a.size_label}: {job.row.name}, seed {job.seed}")
                cfg_file = job.dir / "config.yaml"
                if (job.dir / "summary.json").exists() and cfg_file.exists() and cfg_file.read_text() == text:
                    # finished before its row was written (killed in between): take it, do not retrain
                    append_row(out, _from_summary(a, job, _read(job.dir / "code_hash"), head,
                                                    error="recovered from summary.json"))
                    counts["recovered"] += 1
                    continue
                (job.dir / "summary.json").unlink(missing_ok=True)
                cfg_file.write_text(text)
                job.code = code_hash()
                (job.dir / "code_hash").write_text(job.code)
                pred = predict_cached(job.cfg).to_dict()
                (job.dir / "prediction.json").write_text(json.dumps(pred, default=str))
                log = (job.dir / "train.log").open("wb")
                cmd = [*nice, *C.spfde_exe(), "train", "--config", str(cfg_file), "--json", str(job.dir / "summary.json")]
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
                running.append((job, proc, time.perf_counter(), os.getloadavg()[0], log))
            if over and pending:
                counts["not_started"] = len(pending)
                print(f"time budget reached: {len(pending)} runs not started (a rerun continues with them)")
                pending = []
            still = []
            for item in running:
                job, proc, ts, load, log = item
                pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid == 0:
                    still.append(item)
                    continue
                proc.returncode = os.waitstatus_to_exitcode(status)
                log.close()
                cpu = ru.ru_utime + ru.ru_stime
                if proc.returncode == 0 and (job.dir / "summary.json").exists():
                    rec = _from_summary(a, job, job.code, head, cpu_seconds=cpu, load_at_start=load)
                    counts["ran"] += 1
                else:
                    tail = (job.dir / "train.log").read_text(errors="replace")[-500:]
                    rec = _row_record(a, job, "FAILED", job.code, head, cpu_seconds=cpu, load_at_start=load, error=tail)
                    counts["failed"] += 1
                append_row(out, rec)
                n_done = sum(counts[k] for k in ("ran", "failed", "recovered"))
                acc = rec["test_accuracy"]
                print(f"[{n_done}/{len(todo)}] {job.row.name} seed {job.seed}: {rec['status']}"
                      f"{f' acc {acc:.4f}' if acc is not None else ''} ({time.perf_counter() - ts:.0f} s wall, "
                      f"{cpu:.0f} s CPU; {(time.perf_counter() - t0) / 60:.1f} min elapsed)", flush=True)
            running = still
            if running:
                time.sleep(0.5)
    except KeyboardInterrupt:
        print(f"interrupted: stopping {len(running)} run(s) in flight; their rows are not written (a rerun "
              "redoes them), every finished row is kept", flush=True)
        for _job, proc, _ts, _load, _log in running:
            proc.terminate()
        for _job, proc, _ts, _load, log in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            log.close()
        raise
    finally:
        signal.signal(signal.SIGTERM, old)
    print("runs: " + ", ".join(f"{k} {v}" for k, v in counts.items()), flush=True)
    return counts


# ---------------------------------------------------------------- statistics


@dataclass
class Stat:
    name: str
    n: int
    mean: float  # points
    std: float
    flops: float | None
    ratio: float | None
    achieved_x: float | None
    seeds: dict[int, float]  # seed -> accuracy in points


def row_stats(recs: list[dict[str, Any]], rows: list[Row]) -> dict[str, Stat]:
    import numpy as np

    out = {}
    for row in rows:
        rs = [r for r in recs if r["name"] == row.name and r["status"] == "COMPLETED"]
        if not rs:
            continue
        acc = np.array([100 * r["test_accuracy"] for r in rs])
        out[row.name] = Stat(row.name, len(rs), float(acc.mean()), float(acc.std(ddof=1)) if len(rs) > 1 else math.nan,
                             float(np.mean([r["train_flops"] for r in rs])), float(np.mean([r["flops_ratio"] for r in rs])),
                             rs[0]["freezing_saving_achieved"], {int(r["seed"]): 100 * r["test_accuracy"] for r in rs})
    return out


@dataclass
class Paired:
    n: int
    mean: float
    se: float
    lo: float
    hi: float
    boot_lo: float
    boot_hi: float
    level: float

    def fmt(self) -> str:
        if self.n == 0:
            return "no paired seeds"
        if self.n == 1:
            return f"{self.mean:+.2f} (n=1, no interval)"
        return (f"{self.mean:+.2f} ± {self.se:.2f} (t {self.level:.1%} [{self.lo:+.2f}, {self.hi:+.2f}], bootstrap 95% "
                f"[{self.boot_lo:+.2f}, {self.boot_hi:+.2f}], n={self.n})")


def paired(a: Stat, b: Stat, level: float = 0.95) -> Paired:
    """a − b over the seeds both have, in points."""
    import numpy as np

    seeds = sorted(set(a.seeds) & set(b.seeds))
    d = np.array([a.seeds[s] - b.seeds[s] for s in seeds])
    nan = math.nan
    if d.size == 0:
        return Paired(0, nan, nan, nan, nan, nan, nan, level)
    if d.size == 1:
        return Paired(1, float(d[0]), nan, nan, nan, nan, nan, level)
    se = float(d.std(ddof=1) / math.sqrt(d.size))
    h = C.t_halfwidth(d, level)
    rng = np.random.default_rng(0)
    boots = d[rng.integers(0, d.size, size=(10_000, d.size))].mean(axis=1)
    return Paired(int(d.size), float(d.mean()), se, float(d.mean() - h), float(d.mean() + h),
                  float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)), level)


def kept(p: Paired) -> str:
    """p = A − B (A keeps B's accuracy?): the rule of VERDICT_RULES, on the drop B − A = −p."""
    if p.n < 2:
        return "undecided (n < 2)"
    drop_lo, drop_mean = -p.hi, -p.mean
    if drop_lo > 0:
        return "not kept"
    return "kept" if drop_mean < KEPT_MARGIN else "undecided"


def more_accurate(p: Paired) -> str:
    if p.n < 2:
        return "undecided (n < 2)"
    return "more accurate" if p.lo > 0 else "less accurate" if p.hi < 0 else "no difference detected"


# ---------------------------------------------------------------- the report


def _pair_line(a: Stat, b: Stat, p: Paired, verdict: str) -> list[Any]:
    fr = a.flops / b.flops if a.flops and b.flops else math.nan
    return [a.name, b.name, f"{a.flops:.3e}", f"{b.flops:.3e}", f"{fr:.3f}", p.fmt(), f"**{verdict}**"]


PAIR_HEAD = ["A", "B", "FLOPs A", "FLOPs B", "A / B", "A − B, points (mean ± SE, intervals)", "verdict"]


def claims_md(st: dict[str, Stat], plan: dict[str, Any], schedules: Sequence[str]) -> list[str]:
    """The three claims, per LR schedule, as the rules of VERDICT_RULES say."""
    out: list[str] = []
    m9, m95 = st.get("mest 0.9"), st.get("mest 0.95")
    for i, sched in enumerate(schedules):
        suffix = "" if i == 0 else f" ({sched} LR)"

        def get(kind: str, lv: str, sfx: str = suffix) -> Stat | None:
            name = matched_name(kind, lv) + ("" if kind == "sieve-only" else sfx)
            return st.get(name)

        lines: list[list[Any]] = []
        verdicts: list[str] = []
        # claim 1
        cands = [s for s in (get(k, "c1") for k in KINDS) if s is not None]
        if m9 and cands:
            best = max(cands, key=lambda s: s.mean)
            lvl = 1 - 0.05 / len(cands)
            p = paired(best, m9, lvl)
            v = kept(p)
            lines.append(_pair_line(best, m9, p, v))
            verdicts.append(f"claim 1: best of {len(cands)} ({', '.join(c.name for c in cands)}) = {best.name}: {v} → "
                            + ("**supported**" if v == "kept" else "**not supported**" if v == "not kept" else "**undecided**"))
        else:
            verdicts.append("claim 1: not run yet (MEST 0.9 or the rows at ≤ 0.73 × its FLOPs missing)")
        # claim 2
        b95 = get("both", "m95")
        if m95 and b95:
            p = paired(b95, m95)
            v = more_accurate(p)
            lines.append(_pair_line(b95, m95, p, v))
            verdicts.append(f"claim 2: {v} → " + ("**supported**" if v == "more accurate" else "**contradicted**"
                                                  if v == "less accurate" else "**not shown**"))
        else:
            verdicts.append("claim 2: not run yet")
        # claim 3
        parts = []
        f_lo, s_lo = get("freeze-only", "lo"), get("sieve-only", "lo")
        if m9 and f_lo and s_lo:
            vs = []
            for s in (f_lo, s_lo):
                p = paired(s, m9)
                vs.append(kept(p))
                lines.append(_pair_line(s, m9, p, vs[-1]))
            parts.append("(a) " + ("**supported**" if all(v == "kept" for v in vs) else "**contradicted**"
                                   if "not kept" in vs else "**undecided**"))
        else:
            parts.append("(a) not run yet")
        f_hi, s_hi = get("freeze-only", "hi"), get("sieve-only", "hi")
        if f_hi and s_hi:
            p = paired(s_hi, f_hi)
            v = more_accurate(p)
            lines.append(_pair_line(s_hi, f_hi, p, v))
            parts.append("(b) " + ("**supported**" if v == "more accurate" else "**contradicted**" if v == "less accurate"
                                   else "**not shown**"))
        else:
            parts.append("(b) not run yet")
        cs = []
        for lv in ("lo", "hi"):
            both = get("both", lv)
            for single in (get("freeze-only", lv), get("sieve-only", lv)):
                if both and single:
                    p = paired(both, single)
                    cs.append(more_accurate(p))
                    lines.append(_pair_line(both, single, p, cs[-1]))
        if len(cs) == 4:
            parts.append("(c) " + ("**supported**" if all(v == "more accurate" for v in cs) else "**contradicted**"
                                   if "less accurate" in cs else "**not shown**"))
        else:
            parts.append(f"(c) not run yet ({len(cs)} of 4 comparisons have rows)")
        verdicts.append("claim 3: " + "; ".join(parts))
        out += [f"**freezing.lr_schedule = {sched}** (rows without freezing are shared by both schedules)", ""]
        out += [f"- {v}" for v in verdicts]
        if lines:
            out += ["", C.md_table(PAIR_HEAD, lines)]
        out.append("")
    return out


def plan_md(plan: dict[str, Any], st: dict[str, Stat]) -> str:
    m9 = plan["mest09_flops"]
    rows = []
    for lv, info in plan["levels"].items():
        for kind in KINDS:
            v = info["rows"].get(kind)
            if v is None:
                rows.append([lv, info["what"], f"{info['target']:.4f}", kind, "–", "–", "no freezing step fits", "–", "–"])
                continue
            s = st.get(matched_name(kind, lv))
            meas = f"{s.flops / m9:.4f}" if s and s.flops else "–"
            rows.append([lv, info["what"], f"{info['target']:.4f}", kind, f"{v['x']:.3f}", f"{v['y']:.4f}",
                         f"{v['ratio']:.4f}" + ("" if v["ok"] else " (not within 2%: not run)"), meas,
                         f"{v['ratio'] * m9:.3e}"])
    return C.md_table(["level", "tests", "target FLOPs / MEST 0.9", "row", "x (freezing target)", "y (sieve)",
                       "predicted FLOPs / MEST 0.9", "measured (mean over seeds)", "predicted FLOPs"], rows)


def _ms(s: Stat) -> str:
    return f"{s.mean:.2f}" + (f" ± {s.std:.2f}" if math.isfinite(s.std) else "") + f" (n={s.n})"


def before_md(st: dict[str, Stat], before: Path | None) -> list[str]:
    """The same grid rows of an earlier table, paired by seed (issue 9's before/after)."""
    import pandas as pd

    if before is None or not before.exists():
        return []
    old = pd.read_csv(before)
    old = old[old["status"] == "COMPLETED"]
    lines = []
    for name, g in old.groupby("name", sort=False):
        s = st.get(str(name))
        if s is None:
            continue
        b = Stat(str(name), len(g), float(100 * g.test_accuracy.mean()), float(100 * g.test_accuracy.std(ddof=1)),
                 None, None, None, {int(r.seed): 100 * r.test_accuracy for r in g.itertuples()})
        p = paired(s, b)
        lines.append([name, _ms(b), _ms(s), p.fmt(), more_accurate(p)])
    if not lines:
        return []
    return ["", f"Before/after: the same rows in `{C.rel_path(before)}` (an earlier trainer; same sizes and seeds, "
            "so paired on the seeds both have):", "",
            C.md_table(["row", "before (mean ± std)", "now (mean ± std)", "now − before, points", "rule"], lines)]


def schedule_md(st: dict[str, Stat], rows: list[Row], schedules: Sequence[str]) -> list[str]:
    lines = []
    for r in rows:
        if r.group == "matched" or r.x <= 0 or " LR)" not in r.name:
            continue
        g, base = st.get(r.name), st.get(r.name.rsplit(" (", 1)[0])
        if g and base:
            p = paired(g, base)
            lines.append([r.name, base.name, p.fmt(), more_accurate(p)])
    if not lines:
        return []
    return ["", f"LR schedule, paper grid rows ({schedules[-1]} − {schedules[0]}, same x and y, paired):", "",
            C.md_table(["row", "vs", "difference, points", "rule"], lines)]


def calibration_lines(out: Path) -> list[str]:
    path = out / "calibration.json"
    if not path.exists():
        return []
    c = json.loads(path.read_text())
    return [f"- Cost of the whole table (calibrated {c['at']}, load {c['load']:.1f}): "
            + "; ".join(f"{k}: {v['cpu_per_sample_ms']:.3f} ms CPU per training sample → {v['total_cpu_h']:.1f} CPU-hours "
                        f"for {c['runs']} runs, ≈ {v['total_cpu_h'] / c['workers']:.1f} h on {c['workers']} idle cores"
                        for k, v in c["precisions"].items())]


def report(a: Any, base: Any, rows: list[Row], plan: dict[str, Any], out: Path, md: Path) -> str:
    """Rebuild this folder's RESULTS.md section from rows.parquet (only rows whose key this table expects)."""
    jobs, bad = jobs_for(a, base, rows, out)
    expected = {j.key for j in jobs}
    recs_all = read_rows(out)
    recs = [r for r in recs_all if r["run_key"] in expected]
    other = len(recs_all) - len(recs)
    st = row_stats(recs, rows)
    title = (f"{a.model}, Fashion-MNIST " if "data.name" not in a.preset.data else f"{a.model}, synthetic ")
    sizes = ((a.preset.data["data.synthetic_train"], a.preset.data["data.synthetic_test"]) if "data.name" in a.preset.data
             else (a.train_subset or "all 60,000", a.test_subset or "all 10,000"))
    title += (f"{sizes[0]} train / {sizes[1]} test images, {a.epochs} epochs, "
              f"Δτ = {a.update_interval}, {a.device}, "
              + ("fp32, contiguous layout" if a.fp32 else f"train.precision={base.train.precision}, "
                 f"channels_last={base.train.channels_last} (auto: bf16 autocast where the CPU has native bf16)"))
    table = []
    for row in rows:
        s = st.get(row.name)
        failed = [r for r in recs if r["name"] == row.name and r["status"] == "FAILED"]
        n_txt = f"{s.n if s else 0}/{a.seeds}" + (f" ({len(failed)} failed)" if failed else "")
        if s is None:
            table.append([row.name, row.lr_schedule if row.x > 0 else "–", f"{row.x:g}", f"{row.y:g}", n_txt,
                          "not run yet", "–", "–", "–"])
            continue
        ach = f"{s.achieved_x:.1%}" if s.achieved_x else ""
        std = f" ± {s.std:.2f}" if math.isfinite(s.std) else ""
        table.append([row.name, row.lr_schedule if row.x > 0 else "–", f"{row.x:g}", f"{row.y:g}", n_txt,
                      f"{s.mean:.2f}{std}", f"{s.flops:.3e}", f"{s.ratio:.4f}", ach])
    have = {r["run_key"] for r in recs}
    gaps: dict[str, list[int]] = {}
    for j in jobs:
        if j.key not in have:
            gaps.setdefault(j.row.name, []).append(j.seed)
    missing = [f"{n} seed{'s' if len(v) > 1 else ''} {', '.join(map(str, v))}" for n, v in gaps.items()]
    n_missing = sum(len(v) for v in gaps.values())
    codes = sorted({r["code_hash"] for r in recs})
    times = sorted(r["finished_at"] for r in recs)
    cpu = sum(r["cpu_seconds"] or 0 for r in recs)
    cont = C.command_line().replace(" --report", "")
    eval_txt = "only the last epoch evaluated" if a.preset.eval_every else "every epoch evaluated"
    body = [
        f"Setting: {title}; batch 128, SGD momentum 0.9, lr 0.1 cosine, weight decay 5e-4, uniform sparsity (stem, "
        f"1×1 shortcuts, classifier dense), MEST soft-bound defaults, {eval_txt}; {a.seeds} paired seeds (a seed "
        f"fixes the data subset, initial mask and sample order for every row); runs as `nice -n {a.nice} spfde "
        f"train` subprocesses, {a.threads} torch thread(s) each. Accuracy in points on the test set; FLOPs = the "
        "trainer's measured training FLOPs (mean over seeds; equal to the prediction).",
        "",
        f"- Rows: `{C.rel_path(out)}/{ROWS_FILE}` (+ .csv; per-run config, prediction, log under `runs/`), "
        f"{len(recs)} of {len(jobs)} runs done"
        + (f", first {times[0]}, last {times[-1]}" if times else "")
        + f"; {cpu / 3600:.2f} CPU-hours in the training subprocesses"
        + (f"; {other} rows of other settings in the file are not shown" if other else "") + ".",
        f"- Trainer code versions among these rows: {len(codes)} ({', '.join(codes) or '–'})"
        + (" — **rows span code versions; compare with care**" if len(codes) > 1 else "") + ".",
        *calibration_lines(out),
        "- Continue (resumable; skips done runs) and regenerate this section:",
        "",
        "```",
        cont,
        f"{cont} --report",
        "```",
        "",
        "Verdict rules (fixed before any number below was seen; also in `benchmarks/paper_claims.py`):",
        "",
        *[f"- {r}" for r in VERDICT_RULES],
        "",
        "Equal-FLOPs rows, chosen from the FLOPs prediction before training (`plan.json`; x = freezing target, "
        "y = sieve fraction; freezing-only saves in whole-Δτ steps):",
        "",
        plan_md(plan, st),
        "",
        C.md_table(["row", "LR schedule", "x", "y", "n (done/planned)", "test acc % (mean ± std)", "training FLOPs",
                    "ratio to dense", "freezing saving achieved"], table),
        "",
        "Claims of docs/method.md §6 at equal training FLOPs (CIFAR-100/ResNet-32 claims tested on Fashion-MNIST/ResNet-8):",
        "",
        *claims_md(st, plan, a.lr_schedules),
    ]
    body += schedule_md(st, rows, a.lr_schedules)
    body += before_md(st, a.before)
    if bad:
        body += ["", "- Configs that cannot run at this size (said, not run): " + "; ".join(
            f"{r.name} seed {s}: {e}" for r, s, e in bad[:6])]
    if missing:
        body += ["", f"- Not run yet ({n_missing} run{'s' if n_missing != 1 else ''}): " + "; ".join(missing)]
    if st:
        plot(st, rows, out / "table.png", title)
        body += ["", f"- Plot: `{C.rel_path(out)}/table.png` (accuracy mean ± std against training FLOPs / dense)."]
    text = "\n".join(body)
    write_section(md, f"{NAME}:{C.rel_path(out)}",
                  f"Paper claims at equal FLOPs, size `{a.size_label}` ({a.device}) — regenerated from the rows",
                  C.machine_info(a.device), text)
    return text


def plot(st: dict[str, Stat], rows: list[Row], path: Path, title: str) -> None:
    fig, ax = C.plt_figure(figsize=(7, 5))
    markers = {"dense": "*", "dst": "o", "spfde": "D", "freeze_only": "^", "sieve_only": "v", "matched": "s"}
    for row in rows:
        g = st.get(row.name)
        if g is None or g.ratio is None:
            continue
        ax.errorbar(g.ratio, g.mean, yerr=g.std if math.isfinite(g.std) else None, fmt=markers[row.group],
                    capsize=2, ms=5)
        ax.annotate(g.name, (g.ratio, g.mean), fontsize=5, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs / dense training FLOPs (log)")
    ax.set_ylabel("test accuracy % (mean ± std over seeds)")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_section(md: Path, marker: str, title: str, info: dict[str, Any], body: str) -> None:
    """Replace the text between this marker pair in ``md`` (or append the pair): the section is regenerated,
    the rest of the file is left as it is."""
    begin, end = f"<!-- {marker} begin (generated by --report; do not edit) -->", f"<!-- {marker} end -->"
    now = _dt.datetime.now().astimezone()
    lines = [begin, f"## {now:%Y-%m-%d %H:%M %Z} — {title}", "", *C.machine_lines(info),
             "- Command (from the repository root):", "", "```", C.command_line(), "```", "", body.rstrip(), "", end]
    section = "\n".join(lines)
    text = md.read_text() if md.exists() else "# Benchmark results\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    md.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(md, text)
    print(f"wrote the section '{marker}' of {md}")


# ---------------------------------------------------------------- calibration


def calibrate(a: Any, base: Any, jobs: list[Job], out: Path) -> dict[str, Any]:
    """CPU time per training sample of MEST 0.9 at this size's model and batch (one warm-up epoch, one timed
    epoch on 2,560 images, in this process with the configured torch threads), scaled to every planned run:
    samples per epoch × epochs × (1 − freezing saving), plus one 10,000-image evaluation per evaluated epoch at
    a third of a training step. CPU time, not wall time: on a shared machine it is the work, not the wait."""
    import torch

    from spfde_search.trainer import Trainer

    if a.threads:
        torch.set_num_threads(a.threads)
    C.nice_self(a.nice)
    res: dict[str, Any] = {}
    variants = {"fp32": {"train.precision": "fp32", "train.channels_last": "off"}, "auto": {}}
    for label, ov in variants.items():
        cfg = base.with_overrides({"sparsity.algorithm": "mest", "sparsity.ratio": 0.9, "data.train_subset": 2560,
                                   "data.test_subset": 100, "train.epochs": 2, "train.eval_every": 2, **ov})
        trainer = Trainer(cfg)
        c0 = time.process_time()
        per = []
        for m in trainer.epochs():
            c1 = time.process_time()
            per.append((c1 - c0, m.epoch_seconds))
            c0 = c1
        cpu_s, wall_s = per[-1]
        ms = 1000 * cpu_s / 2560
        total = 0.0
        for j in jobs:
            p = predict_cached(j.cfg)
            evals = j.cfg.train.epochs // (j.cfg.train.eval_every or 1)
            n_test = j.cfg.data.test_subset or 10_000
            total += ms / 1000 * (p.samples_per_epoch * p.epochs * (1 - p.freezing_saving_achieved) + evals * n_test / 3)
            total += 4.0  # start-up of one `spfde train` (import, data, profile)
        res[label] = {"cpu_per_sample_ms": ms, "wall_per_sample_ms": 1000 * wall_s / 2560,
                      "resolved_precision": str(getattr(trainer, "precision", "")), "total_cpu_h": total / 3600}
        print(f"calibration {label}: {ms:.3f} ms CPU ({1000 * wall_s / 2560:.3f} ms wall) per training sample; "
              f"{len(jobs)} runs of size {a.size_label}: {total / 3600:.1f} CPU-hours, ≈ {total / 3600 / a.workers:.1f} h "
              f"with {a.workers} runs at a time on idle cores", flush=True)
    c = {"at": _now(), "load": os.getloadavg()[0], "runs": len(jobs), "workers": a.workers, "precisions": res}
    _atomic_write(out / "calibration.json", json.dumps(c, indent=1))
    return c


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if C.cuda_missing(a.device):
        return 0
    out = C.output_dir(NAME if a.smoke_test else f"{NAME}_{a.size}", a)
    base = base_config(a)
    plan = load_plan(a, base, out)
    rows = all_rows(a, plan)
    if a.only:
        unknown = sorted(set(a.only) - {r.name for r in rows})
        if unknown:
            print(f"error: unknown --only rows {unknown}; rows are: {[r.name for r in rows]}", file=sys.stderr)
            return 2
        rows = [r for r in rows if r.name in a.only]
    md = out / "RESULTS.md" if a.smoke_test else a.results_md
    if a.report:
        print(report(a, base, rows, plan, out, md))
        return 0
    jobs, bad = jobs_for(a, base, rows, out)
    for r, s, e in bad:
        print(f"cannot run {r.name} seed {s}: {e}")
    if a.calibrate:
        calibrate(a, base, jobs, out)
        return 0
    print(f"{NAME} ({a.size_label}): {len(rows)} rows x {a.seeds} seeds; rows in {out / ROWS_FILE}", flush=True)
    with folder_lock(out):
        try:
            run_jobs(a, jobs, out)
        except KeyboardInterrupt:
            return 130
    if a.smoke_test or not a.no_append:
        report(a, base, rows, plan, out, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
