"""Issue 5 §1: the structure of the paper's Table 2 on Fashion-MNIST, and whether it supports SPFDE.md §6's claims.

Rows: dense; static, SET, RigL, MEST at sparsity 0.6/0.9/0.95; SpFDE x%+y% (10+10, 20+20, 25+25) at 0.9
(``--spfde-sparsities 0.6 0.9 0.95`` for the others); freezing alone and sieving alone at 0.9 (15% and 30%) for
the third claim. Each row runs ``--seeds`` seeds; reported: test accuracy mean ± std (sample std over seeds) and
training FLOPs (measured by the trainer, absolute and as a ratio to dense training of the same schedule).

Every run is one ``spfde train --config <yaml> --json <summary>`` subprocess (``nice -n 10``, one torch thread on
CPU), ``--workers`` at a time. Finished runs are kept: re-running the command resumes (``--fresh`` to redo).
Seeds are run seed-major (all rows at seed 0, then seed 1, ...) so a ``--time-budget-min`` cut leaves every
row with the same number of seeds as far as possible.

CPU size: ResNet-8, 1,500 training / 1,000 test images, 10 epochs, Δτ = 1 (~25 min on 2 shared cores).
GPU size (``--device cuda``): ResNet-20 on full Fashion-MNIST, 40 epochs, Δτ = 2 (so that freezing 30% alone is
feasible for ResNet-20's 7 freezable units), 8 runs packed on the GPU as concurrent processes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "paper_claims"


@dataclass(frozen=True)
class Row:
    name: str
    group: str  # dense | dst | spfde | freeze_only | sieve_only
    algorithm: str
    sparsity: float
    x: float = 0.0
    y: float = 0.0
    overrides: dict[str, Any] = field(default_factory=dict)

    def config_overrides(self) -> dict[str, Any]:
        return {"sparsity.algorithm": self.algorithm, "sparsity.ratio": self.sparsity,
                "freezing.target_flops_reduction": self.x, "sieving.fraction": self.y, **self.overrides}


def table_rows(sparsities: list[float], spfde_sparsities: list[float], combos: list[tuple[float, float]],
               singles: list[float]) -> list[Row]:
    rows = [Row("dense", "dense", "dense", 0.0)]
    for s in sparsities:
        for alg in ("static", "set", "rigl", "mest"):
            rows.append(Row(f"{alg} {s:g}", "dst", alg, s))
    for s in spfde_sparsities:
        for x, y in combos:
            rows.append(Row(f"SpFDE {x:.0%}+{y:.0%} @ {s:g}", "spfde", "mest", s, x, y))
    for v in singles:
        rows.append(Row(f"freeze {v:.0%} @ 0.9", "freeze_only", "mest", 0.9, x=v))
        rows.append(Row(f"sieve {v:.0%} @ 0.9", "sieve_only", "mest", 0.9, y=v))
    return rows


def parse_args(argv: list[str] | None = None) -> Any:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="default resnet8 (CPU), resnet20 (CUDA)")
    p.add_argument("--train-subset", type=int, default=None, help="default 1500 (CPU), full set (CUDA)")
    p.add_argument("--test-subset", type=int, default=None, help="default 1000 (CPU), full set (CUDA)")
    p.add_argument("--epochs", type=int, default=None, help="default 10 (CPU), 40 (CUDA)")
    p.add_argument("--update-interval", type=int, default=None, help="Δτ; default 1 (CPU), 2 (CUDA)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.6, 0.9, 0.95])
    p.add_argument("--spfde-sparsities", type=float, nargs="+", default=[0.9])
    p.add_argument("--singles", type=float, nargs="*", default=[0.15, 0.3],
                   help="freezing-alone and sieving-alone fractions at 0.9 (claim 3)")
    p.add_argument("--workers", type=int, default=None, help="concurrent runs; default 2 (CPU), 8 (CUDA)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run on CPU")
    p.add_argument("--time-budget-min", type=float, default=None, help="stop launching new runs after this")
    p.add_argument("--fresh", action="store_true", help="ignore finished runs in the output folder")
    a = p.parse_args(argv)
    cuda = a.device == "cuda"
    if a.smoke_test:
        a.model, a.train_subset, a.test_subset, a.epochs, a.update_interval = "resnet8", 256, 100, 4, 1
        a.seeds, a.sparsities, a.spfde_sparsities, a.singles, a.workers = 1, [0.9], [0.9], [], 2
    a.model = a.model or ("resnet20" if cuda else "resnet8")
    if not cuda:
        a.train_subset = a.train_subset or 1500
        a.test_subset = a.test_subset or 1000
    a.epochs = a.epochs or (40 if cuda else 10)
    a.update_interval = a.update_interval or (2 if cuda else 1)
    a.workers = a.workers or (8 if cuda else 2)
    a.combos = [(0.1, 0.1)] if a.smoke_test else [(0.1, 0.1), (0.2, 0.2), (0.25, 0.25)]
    return a


def base_config(a: Any) -> Any:
    return C.fmnist_config(a.train_subset, a.test_subset, a.epochs, a.device, a.threads if a.device == "cpu" else None,
                           **{"model.name": a.model, "train.update_interval": a.update_interval})


def run_all(a: Any, rows: list[Row], out: Path) -> list[dict[str, Any]]:
    """Launch every (row, seed) as a subprocess, ``a.workers`` at a time; returns one record per run."""
    from spfde_search.config import ConfigError, config_to_yaml
    from spfde_search.flops import predict

    base = base_config(a)
    runs_dir = out / "runs"
    runs_dir.mkdir(exist_ok=True)
    jobs: list[tuple[Row, int, Path]] = []
    records: list[dict[str, Any]] = []
    for seed in range(a.seeds):
        for row in rows:
            tag = f"{row.name.replace(' ', '_').replace('%', '').replace('+', 'p').replace('@', 'at')}_s{seed}"
            d = runs_dir / tag
            d.mkdir(exist_ok=True)
            cfg_ov = {**row.config_overrides(), "seed": seed}
            try:
                cfg = base.with_overrides(cfg_ov)
                pred = predict(cfg)
            except ConfigError as e:
                records.append(_record(row, seed, "INFEASIBLE", error=str(e)))
                continue
            (d / "config.yaml").write_text(config_to_yaml(cfg, header=f"paper_claims: {row.name}, seed {seed}"))
            (d / "prediction.json").write_text(json.dumps(pred.to_dict(), default=str))
            if a.fresh and (d / "summary.json").exists():
                (d / "summary.json").unlink()
            jobs.append((row, seed, d))
    t0 = time.perf_counter()
    running: list[tuple[Row, int, Path, subprocess.Popen[bytes], float, Any]] = []
    pending = list(jobs)
    nice = ["nice", "-n", "10"] if shutil.which("nice") else []
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    total = len(pending)
    done = 0
    while pending or running:
        budget_over = a.time_budget_min is not None and time.perf_counter() - t0 > 60 * a.time_budget_min
        while pending and len(running) < a.workers and not budget_over:
            row, seed, d = pending.pop(0)
            if (d / "summary.json").exists():
                records.append(_from_summary(row, seed, d))
                done += 1
                continue
            log = (d / "train.log").open("wb")
            cmd = [*nice, *C.spfde_exe(), "train", "--config", str(d / "config.yaml"), "--json", str(d / "summary.json")]
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((row, seed, d, proc, time.perf_counter(), log))
        if budget_over and pending:
            for row, seed, _d in pending:
                records.append(_record(row, seed, "NOT_RUN", error="time budget reached"))
            pending = []
        still = []
        for item in running:
            row, seed, d, proc, ts, log = item
            if proc.poll() is None:
                still.append(item)
                continue
            log.close()
            done += 1
            if proc.returncode == 0 and (d / "summary.json").exists():
                rec = _from_summary(row, seed, d)
            else:
                tail = (d / "train.log").read_text(errors="replace")[-500:]
                rec = _record(row, seed, "FAILED", error=tail)
            records.append(rec)
            print(f"[{done}/{total}] {row.name} seed {seed}: {rec['status']} acc {rec.get('test_accuracy')} "
                  f"ratio {rec.get('flops_ratio')} ({time.perf_counter() - ts:.0f} s; "
                  f"{time.perf_counter() - t0:.0f} s elapsed)", flush=True)
        running = still
        if running:
            time.sleep(0.5)
    return records


def _record(row: Row, seed: int, status: str, **kw: Any) -> dict[str, Any]:
    return {"name": row.name, "group": row.group, "algorithm": row.algorithm, "sparsity": row.sparsity,
            "x": row.x, "y": row.y, "seed": seed, "status": status, "test_accuracy": None, "train_flops": None,
            "predicted_train_flops": None, "dense_train_flops": None, "flops_ratio": None, "wall_seconds": None,
            "freeze_start_epoch": None, "saved_sparsity": None, "saved_freezing": None, "saved_sieving": None,
            "freezing_saving_achieved": None, "error": "", **kw}


def _from_summary(row: Row, seed: int, d: Path) -> dict[str, Any]:
    s = json.loads((d / "summary.json").read_text())
    pred = json.loads((d / "prediction.json").read_text()) if (d / "prediction.json").exists() else {}
    return _record(
        row, seed, "COMPLETED", test_accuracy=s["test_accuracy"], train_flops=s["train_flops"],
        predicted_train_flops=s["predicted_train_flops"], dense_train_flops=s["dense_train_flops"],
        flops_ratio=s["flops_ratio"], wall_seconds=s["wall_seconds"], freeze_start_epoch=s["freeze_start_epoch"],
        saved_sparsity=s["saved_fraction"]["sparsity"], saved_freezing=s["saved_fraction"]["freezing"],
        saved_sieving=s["saved_fraction"]["sieving"],
        freezing_saving_achieved=pred.get("freezing_saving_achieved"),
    )


# ---------------------------------------------------------------- the table and the claims


@dataclass
class Agg:
    name: str
    group: str
    sparsity: float
    x: float
    y: float
    n: int
    acc_mean: float
    acc_std: float
    flops: float
    ratio: float
    achieved_x: float | None
    wall: float

    @property
    def se(self) -> float:
        return self.acc_std / math.sqrt(self.n) if self.n > 1 else float("nan")


def aggregate(records: list[dict[str, Any]], rows: list[Row]) -> dict[str, Agg]:
    import numpy as np

    out: dict[str, Agg] = {}
    for row in rows:
        rs = [r for r in records if r["name"] == row.name and r["status"] == "COMPLETED"]
        if not rs:
            continue
        acc = np.array([r["test_accuracy"] for r in rs], dtype=float)
        out[row.name] = Agg(
            row.name, row.group, row.sparsity, row.x, row.y, len(rs), float(acc.mean()),
            float(acc.std(ddof=1)) if len(rs) > 1 else float("nan"),
            float(np.mean([r["train_flops"] for r in rs])), float(np.mean([r["flops_ratio"] for r in rs])),
            rs[0].get("freezing_saving_achieved"), float(np.median([r["wall_seconds"] for r in rs])),
        )
    return out


def _diff(a: Agg, b: Agg) -> tuple[float, float]:
    """Mean accuracy difference a - b in points and its standard error (Welch), in points."""
    se = math.sqrt((a.acc_std**2 / a.n if a.n > 1 else 0) + (b.acc_std**2 / b.n if b.n > 1 else 0))
    return 100 * (a.acc_mean - b.acc_mean), 100 * se


def _keeps(a: Agg, b: Agg) -> tuple[bool, str]:
    """'keeps the accuracy of b': mean drop no larger than 2 standard errors of the difference (or 0.3 points
    if the error cannot be estimated)."""
    d, se = _diff(a, b)
    tol = 2 * se if se > 0 and math.isfinite(se) else 0.3
    return d >= -tol, f"{d:+.2f} ± {se:.2f} points (difference ± its standard error)"


def claims(agg: dict[str, Agg]) -> list[str]:
    out = []
    mest9, mest95 = agg.get("mest 0.9"), agg.get("mest 0.95")
    s20, s25 = agg.get("SpFDE 20%+20% @ 0.9"), agg.get("SpFDE 25%+25% @ 0.9")

    # claim 1
    if mest9 and s20:
        ok, txt = _keeps(s20, mest9)
        saved = 1 - s20.flops / mest9.flops
        out.append(
            f"1. *At 90% SpFDE 20%+20% keeps MEST's accuracy with 27% fewer training FLOPs.* Ours: SpFDE 20%+20% vs "
            f"MEST 0.9: accuracy {txt}, training FLOPs {saved:.0%} fewer. "
            + ("**Supported**" if ok else "**Not supported**")
            + " (criterion: mean accuracy drop ≤ 2 standard errors of the difference)"
            + (f"; our FLOPs saving ({saved:.0%}) differs from the paper's 27%: here the two savings compound — "
               f"sieving trains on {1 - s20.y:.0%} of the samples and freezing saves {s20.achieved_x:.1%} of what is "
               f"left (target 20%, T_frz rounded down to whole Δτ), 1 − {1 - s20.y:.2f} × {1 - s20.achieved_x:.3f} = "
               f"{1 - (1 - s20.y) * (1 - s20.achieved_x):.0%} of MEST's sparse training FLOPs — so the paper's '20%+20%' "
               "cannot mean these compounding fractions of one base, or its 27% counts something else."
               if s20.achieved_x and abs(saved - 0.27) > 0.03 else ".")
        )
    else:
        out.append("1. SpFDE 20%+20% vs MEST 0.9: not measured (rows missing).")
    # claim 2
    if mest95 and s25:
        d, se = _diff(s25, mest95)
        fr = s25.flops / mest95.flops
        equal = abs(fr - 1) <= 0.05
        cheaper_or_equal = fr <= 1.05
        tol = 2 * se if se > 0 else 0.0
        if cheaper_or_equal and d > tol:
            verdict = "**Supported** (more accurate beyond 2 standard errors at no more FLOPs)"
        elif cheaper_or_equal and d > 0:
            verdict = "**Direction agrees, within noise** (gain not larger than 2 standard errors)"
        elif cheaper_or_equal and d > -tol:
            verdict = "**Not supported**: no accuracy gain (difference within noise, direction opposite)"
        else:
            verdict = "**Not supported**"
        out.append(
            f"2. *SpFDE 25%+25% at 90% costs the same FLOPs as MEST at 95% and is 0.66 points more accurate.* Ours: "
            f"FLOPs ratio SpFDE/MEST-0.95 = {fr:.2f} ("
            + ("about equal" if equal else "SpFDE cheaper: not the paper's equal-FLOPs comparison" if fr < 1
               else "SpFDE dearer: not the paper's equal-FLOPs comparison")
            + f"), accuracy SpFDE − MEST-0.95 = {d:+.2f} ± {se:.2f} points. {verdict}.")
    else:
        out.append("2. SpFDE 25%+25% vs MEST 0.95: not measured (rows missing).")
    # claim 3
    parts = []
    f15, v15 = agg.get("freeze 15% @ 0.9"), agg.get("sieve 15% @ 0.9")
    f30, v30 = agg.get("freeze 30% @ 0.9"), agg.get("sieve 30% @ 0.9")
    if mest9 and f15 and v15:
        okf, tf = _keeps(f15, mest9)
        oks, ts = _keeps(v15, mest9)
        parts.append(
            f"(a) saving ~15% by one technique alone costs no accuracy: freezing 15% (achieved "
            f"{f15.achieved_x:.0%} of the sparse run's FLOPs) {tf} → {'kept' if okf else 'NOT kept'}; sieving 15% "
            f"{ts} → {'kept' if oks else 'NOT kept'}. "
            + ("**Supported**" if okf and oks else "**Partly supported**" if okf or oks else "**Not supported**")
            + " (kept = mean drop ≤ 2 standard errors of the difference).")
    if f30 and v30:
        d, se = _diff(v30, f30)
        parts.append(
            f"(b) at 30% sieving keeps more accuracy than freezing: sieve 30% − freeze 30% = {d:+.2f} ± {se:.2f} "
            f"points (freezing 30% achieves {f30.achieved_x:.0%} and costs ratio {f30.ratio:.4f} vs sieving's "
            f"{v30.ratio:.4f}, so not equal FLOPs). "
            + ("**Supported**" if d > 2 * se else "**Direction agrees, within noise**" if d > 0 else
               "**Not supported** (difference within noise, direction opposite)" if d > -2 * se else
               "**Not supported** (freezing keeps more accuracy)"))
    combos = [g for g in agg.values() if g.group == "spfde" and g.sparsity == 0.9]
    singles = [g for g in agg.values() if g.group in ("freeze_only", "sieve_only")]
    if combos and singles:
        beaten = []
        for s in singles:
            cheaper = [c for c in combos if c.flops <= s.flops]
            if not cheaper:
                beaten.append(f"{s.name}: no combined point at ≤ its FLOPs")
                continue
            best = max(cheaper, key=lambda c: c.acc_mean)
            d, se = _diff(best, s)
            beaten.append(f"{s.name} (ratio {s.ratio:.4f}) vs {best.name} (ratio {best.ratio:.4f}): {d:+.2f} ± {se:.2f}")
        wins = sum(1 for b in beaten if "±" in b and not b.split(": ")[-1].startswith("-"))
        parts.append(
            "(c) combining beats either alone at equal FLOPs — for each single-technique run, the best combined run "
            "at no more FLOPs, accuracy difference (combined − single): " + "; ".join(beaten)
            + f". Combined at ≤ FLOPs is at least as accurate in {wins} of {len(beaten)} comparisons. "
            + ("**Supported**" if wins == len(beaten) else "**Partly supported**" if 2 * wins >= len(beaten)
               else "**Not supported**")
            + " (single differences are mostly within 2 standard errors at 3 seeds)."
        )
    out.append("3. *Up to 15% saving by either alone costs no accuracy; at 30–35% sieving keeps more accuracy than "
               "freezing; combining both beats either alone.* " + (" ".join(parts) if parts else "not measured."))
    out.append("4. *Freezing and sieving give almost linear wall-clock speed-ups; sparsity on GPUs does not.* Not "
               "tested by this table; see the wall-clock sections (benchmarks/wallclock.py).")
    return out


def plot(agg: dict[str, Agg], path: Path, title: str) -> None:
    fig, ax = C.plt_figure(figsize=(7, 5))
    markers = {"dense": "*", "dst": "o", "spfde": "D", "freeze_only": "^", "sieve_only": "v"}
    for g in agg.values():
        ax.errorbar(g.ratio, 100 * g.acc_mean, yerr=100 * g.acc_std if math.isfinite(g.acc_std) else None,
                    fmt=markers[g.group], capsize=2, ms=6)
        ax.annotate(g.name, (g.ratio, 100 * g.acc_mean), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs / dense training FLOPs (log)")
    ax.set_ylabel("test accuracy % (mean ± std over seeds)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if C.cuda_missing(a.device):
        return 0
    info = C.machine_info(a.device)
    out = C.output_dir(NAME, a)
    rows = table_rows(a.sparsities, a.spfde_sparsities, a.combos, a.singles)
    if a.smoke_test:  # dense, one DST row, one SpFDE row: every code path, seconds
        rows = [r for r in rows if r.name in ("dense", "mest 0.9") or r.group == "spfde"]
    print(f"{NAME}: {len(rows)} rows x {a.seeds} seeds, {a.workers} at a time; results to {out}")
    t0 = time.perf_counter()
    records = run_all(a, rows, out)
    elapsed = time.perf_counter() - t0
    C.save_rows(records, out, "runs")
    agg = aggregate(records, rows)
    table = [{"name": g.name, "group": g.group, "sparsity": g.sparsity, "x": g.x, "y": g.y, "n": g.n,
              "acc_mean": g.acc_mean, "acc_std": g.acc_std, "train_flops": g.flops, "flops_ratio": g.ratio,
              "freezing_saving_achieved": g.achieved_x, "wall_seconds_median": g.wall} for g in agg.values()]
    C.save_rows(table, out, "table")
    title = (f"{a.model}, Fashion-MNIST {a.train_subset or 'all'}/{a.test_subset or 'all'}, {a.epochs} epochs, "
             f"Δτ={a.update_interval}, {a.device}")
    if agg:
        plot(agg, out / "table.png", title)
    for g in agg.values():
        print(f"{g.name:24s} n={g.n} acc {100 * g.acc_mean:.2f} ± {100 * g.acc_std:.2f}  ratio {g.ratio:.4f}")
    statements = claims(agg)
    print("\n".join(statements))
    print(f"done in {elapsed:.0f} s")
    if not C.should_append(a):
        return 0
    bad = [r for r in records if r["status"] != "COMPLETED"]
    md_rows = []
    for row in rows:
        g = agg.get(row.name)
        if g is None:
            st = {r["status"] for r in records if r["name"] == row.name}
            md_rows.append([row.name, "–", "–", "–", "–", "/".join(sorted(st))])
            continue
        ach = f"{g.achieved_x:.1%}" if g.achieved_x else ""
        md_rows.append([row.name, g.n, f"{100 * g.acc_mean:.2f} ± {100 * g.acc_std:.2f}",
                        f"{g.flops:.3e}", f"{g.ratio:.4f}", ach])
    body = [
        f"Setting: {title}; batch 128, SGD momentum 0.9, lr 0.1 cosine, weight decay 5e-4, uniform sparsity (stem, "
        f"1×1 shortcuts, classifier dense), MEST soft bound defaults. {a.seeds} seeds per row (seed also picks the "
        f"data subset), {a.workers} runs at a time as `nice -n 10 spfde train` subprocesses with "
        f"{a.threads} torch thread(s) each. Accuracy: mean ± sample std over seeds on the {a.test_subset or 'full'}-"
        "image test subset (the binomial noise of one evaluation alone is about ±1 point at this size). FLOPs: the "
        "trainer's measured training FLOPs (mean over seeds) and the ratio to dense training of the same schedule.",
        "",
        C.md_table(["row", "n", "test acc % (mean ± std)", "training FLOPs", "ratio to dense",
                    "freezing saving achieved (vs same run unfrozen)"], md_rows),
        "",
        "Claims of SPFDE.md §6 against this table (CIFAR-100/ResNet-32 claims, tested here on a much smaller "
        "model and data set, so a mismatch says 'not reproduced at this size', not 'false'):",
        "",
        *[f"- {s}" for s in statements],
    ]
    if bad:
        body += ["", f"- {len(bad)} run(s) did not complete: " + ", ".join(
            f"{r['name']} seed {r['seed']} ({r['status']})" for r in bad[:20])]
    body += ["", f"- Raw rows: `{C.rel_path(out)}/runs.parquet` (+ .csv), aggregated `table.*`, plot `table.png`, per-run "
             f"configs/logs under `runs/`. Wall time {elapsed / 60:.1f} min.",
             "- GPU size (ResNet-20, full Fashion-MNIST, 40 epochs, 8 runs packed per GPU): not measured (no GPU machine "
             "was lent to this session); run `python benchmarks/paper_claims.py --device cuda` on one."
             if a.device == "cpu" else ""]
    C.append_section(a.results_md, f"Paper Table 2 structure on Fashion-MNIST ({a.device})", info, "\n".join(body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
