"""Issue 5 §3: do freezing and sieving turn their FLOPs saving into wall-clock saving (and does sparsity)?

For freezing targets x = 0/10/20/30% (sieving off) and sieve fractions y = 0/10/20/30% (freezing off) on the
product's default sparse setting (MEST, 90% sparsity), plus the dense model: full training runs, repeats
interleaved round-robin (rotated each repeat), every run paired with the x=0, y=0 run of the same repeat.
Reported per run: time saved / FLOPs saved (1.0 = the FLOPs saving becomes time one to one); per epoch: for
epochs with k frozen units, epoch time ratio against the epoch FLOPs ratio. Sparsity is applied as masks on dense
kernels, so its FLOPs saving is not expected to show up as time (the paper's claim says the same for GPUs).

CPU: ResNet-8 on a Fashion-MNIST subset, batch 128, 8 epochs. ``--device cuda``: ResNet-20 on 10,000 Fashion-MNIST
images, 20 epochs (ResNet-20 has 7 freezable units: at Δτ = 1 a 30% freezing target needs about 20 epochs), batch
128 and 512, 2 repeats (bf16 autocast + channels_last via train.precision=auto).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "wallclock"


def parse_args(argv: list[str] | None = None) -> Any:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="default resnet8 on CPU, resnet20 on CUDA")
    p.add_argument("--train-subset", type=int, default=None, help="default 1000 on CPU, 10000 on CUDA")
    p.add_argument("--epochs", type=int, default=None, help="default 8 on CPU, 20 on CUDA")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default 128 on CPU, 128 512 on CUDA")
    p.add_argument("--repeats", type=int, default=None, help="default 3 on CPU, 2 on CUDA")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1 on CPU: shared machine)")
    p.add_argument("--no-dense", action="store_true", help="skip the dense-model comparison")
    a = p.parse_args(argv)
    cuda = a.device == "cuda"
    a.model = a.model or ("resnet20" if cuda else "resnet8")
    a.batch_sizes = a.batch_sizes or ([128, 512] if cuda else [128])
    if a.threads is None and not cuda:
        a.threads = 1
    if a.smoke_test:
        a.train_subset, a.epochs, a.repeats, a.batch_sizes = 128, 5, 1, [64]
    else:
        a.train_subset = a.train_subset or (10000 if cuda else 1000)
        a.epochs = a.epochs or (20 if cuda else 8)
        a.repeats = a.repeats or (2 if cuda else 3)
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if C.cuda_missing(a.device):
        return 0
    info = C.machine_info(a.device)
    out = C.output_dir(NAME, a)
    print(f"{NAME}: results to {out}")
    t0 = time.perf_counter()
    xs = [0.1, 0.3] if a.smoke_test else [0.1, 0.2, 0.3]
    ys = [0.2] if a.smoke_test else [0.1, 0.2, 0.3]
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for bs in a.batch_sizes:
        base = C.fmnist_config(a.train_subset, 10, a.epochs, a.device, a.threads,
                               **{"model.name": a.model, "train.batch_size": bs, "sparsity.algorithm": "mest",
                                  "sparsity.ratio": a.sparsity})
        variants, skip = C.feasible_variants(base, xs, ys)
        skipped += skip
        if not a.no_dense:
            variants.append(("dense", {"sparsity.algorithm": "dense", "sparsity.ratio": 0.0,
                                       "freezing.target_flops_reduction": 0.0, "sieving.fraction": 0.0}))
        rows += C.timed_schedules(base, variants, a.repeats, print, label=f"mest {a.sparsity:g} {a.model}")
    C.save_rows(rows, out, "epochs")
    summary = C.saving_summary(rows)
    summary_cpu = C.saving_summary(rows, metric="epoch_cpu_seconds")
    per_k = C.per_epoch_frozen(rows)
    per_k_cpu = C.per_epoch_frozen(rows, metric="epoch_cpu_seconds")
    C.save_rows([{**C.spread_columns(s), "metric": "wall"} for s in summary]
                + [{**C.spread_columns(s), "metric": "cpu"} for s in summary_cpu], out, "summary")
    C.save_rows([{**C.spread_columns(s), "metric": "wall"} for s in per_k]
                + [{**C.spread_columns(s), "metric": "cpu"} for s in per_k_cpu], out, "per_epoch_frozen")
    what = f"{a.model}, MEST {a.sparsity:g}, {a.train_subset or 'all'} images, {a.epochs} epochs, {a.device}"
    C.plot_savings(summary, out / "wallclock.png", what + " (wall clock)")
    C.plot_savings(summary_cpu, out / "wallclock_cpu.png", what + " (process CPU time)", clock="CPU time")
    elapsed = time.perf_counter() - t0
    for s, c in zip(summary, summary_cpu, strict=True):
        print(f"b{s['batch_size']} {s['variant']}: FLOPs saved {s['flops_saved'].fmt('.3f')}, "
              f"wall saved {s['time_saved'].fmt('.3f')}, ratio {s['ratio'].fmt('.2f')}; "
              f"CPU saved {c['time_saved'].fmt('.3f')}, ratio {c['ratio'].fmt('.2f')}")
    print(f"done in {elapsed:.0f} s")
    if not C.should_append(a):
        return 0

    fz = [s for s in summary if s["y"] == 0 and s["x"] > 0]
    sv = [s for s in summary if s["y"] > 0]
    dn = [s for s in summary if s["variant"] == "dense"]
    fz_c = [s for s in summary_cpu if s["y"] == 0 and s["x"] > 0]
    sv_c = [s for s in summary_cpu if s["y"] > 0]
    dn_c = [s for s in summary_cpu if s["variant"] == "dense"]
    cpu_k = {(p["batch_size"], p["frozen_units"]): p for p in per_k_cpu}
    body = [
        f"Setting: {a.model}, MEST at {a.sparsity:g} sparsity (masks on dense kernels), "
        f"{a.train_subset or 'all'} Fashion-MNIST training images, {a.epochs} epochs, Δτ = 1, batch "
        f"{'/'.join(map(str, a.batch_sizes))}, device {a.device}, torch threads {a.threads or 'default'}; "
        f"{a.repeats} interleaved repeats; evaluation on 10 test images per epoch (negligible). Savings are paired "
        "with the x=0, y=0 run of the same repeat. 'run' = the whole training run; FLOPs are the trainer's measured "
        "training FLOPs. For the `dense` row the 'FLOPs saved' is negative: it shows what sparsity saves (dense "
        "costs more FLOPs) against what it saves in time. 'CPU time' is this process's CPU time (one torch thread): "
        "it counts the work done and is far less disturbed by other users' load than the wall clock.",
        "",
        C.saving_table_md(summary, summary_cpu),
        "",
        "Per epoch, epochs with k frozen units against the same epoch of the baseline run:",
        "",
        C.md_table(["batch", "frozen units k", "epoch FLOPs ratio", "epoch wall-time ratio", "epoch CPU-time ratio"],
                   [[p["batch_size"], p["frozen_units"], p["flops_ratio"].fmt(".3f"), p["time_ratio"].fmt(".3f"),
                     cpu_k[(p["batch_size"], p["frozen_units"])]["time_ratio"].fmt(".3f")] for p in per_k]),
        "",
    ]

    def verdict(items: list[dict[str, Any]], what: str, clock: str) -> str:
        if not items:
            return f"- {what}: not measured."
        rs = [s["ratio"].median for s in items]
        lo, hi = min(rs), max(rs)
        word = ("close to linear (0.8–1.2)" if lo >= 0.8 and hi <= 1.2 else
                "more than linear: time saved exceeds FLOPs saved" if lo > 1.2 else
                "linear or better" if lo >= 0.8 else "below linear" if hi < 0.8 else "mixed / noisy")
        return f"- {what}, by {clock}: time saved / FLOPs saved ranges {lo:.2f}–{hi:.2f} (medians per setting) — {word}."

    body.append(verdict(fz_c, "Freezing", "CPU time"))
    body.append(verdict(sv_c, "Sieving", "CPU time"))
    body.append(verdict(fz, "Freezing", "wall clock"))
    body.append(verdict(sv, "Sieving", "wall clock"))
    if dn and dn_c:
        d, dc = dn[0], dn_c[0]
        body.append(
            f"- Sparsity: the dense run costs {-d['flops_saved'].median:.0%} more training FLOPs than MEST "
            f"{a.sparsity:g}, yet its CPU time differs by {-dc['time_saved'].median:+.0%} and its wall time by "
            f"{-d['time_saved'].median:+.0%} (medians; negative = the dense run is faster): masked sparse training on dense kernels does not turn its FLOPs saving into time on "
            "this device (the paper says the same for GPUs).")
    if skipped:
        body.append("- Skipped as infeasible at this schedule length: " + "; ".join(skipped))
    body += [f"- Raw rows and plot: `{C.rel_path(out)}` (epochs.*, summary.*, per_epoch_frozen.*, wallclock.png). "
             f"Total {elapsed:.0f} s.",
             "- GPU figures (batch 128 and 512): not measured (no GPU machine was lent to this session); "
             "run `python benchmarks/wallclock.py --device cuda` on one." if a.device == "cpu" else ""]
    C.append_section(a.results_md, f"Wall-clock vs FLOPs saving of freezing and sieving ({a.device})", info,
                     "\n".join(body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
