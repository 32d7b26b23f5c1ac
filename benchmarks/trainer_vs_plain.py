"""Issue 2: is our Trainer as fast as a plain PyTorch loop, and does freezing/sieving save wall-clock?

Part A — overhead: one training epoch of ``Trainer`` (dense: no masks, no freezing, no sieving) against a plain
PyTorch loop (forward, cross-entropy, zero_grad, backward, SGD step) on the same architecture, the same data
bundle and batches (``DataBundle.train_batches``, same augmentation), the same batch size, device and precision
(bf16 autocast + channels_last on CUDA as the trainer's ``auto``), in the same process, repeats interleaved
(order alternates). Reported: per-repeat ratio trainer time / plain time.

Part B — savings: full short runs of the *dense* model with freezing alone (x = 0/10/20/30%) and sieving alone
(y = 0/10/20/30%), repeats interleaved; time saved / FLOPs saved, paired with the baseline of the same repeat.

CPU: ResNet-8 on a Fashion-MNIST subset. ``--device cuda``: ResNet-20, batch 128; Part A on full Fashion-MNIST,
Part B on 10,000 images for 20 epochs (a 30% freezing target on ResNet-20's 7 units needs about 20 epochs).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "trainer_vs_plain"


def parse_args(argv: list[str] | None = None) -> Any:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="default resnet8 on CPU, resnet20 on CUDA")
    p.add_argument("--train-subset", type=int, default=None, help="default 3000 on CPU, full set on CUDA")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5, help="Part A: timed epochs per loop (after one warm-up each)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1 on CPU: the machine is shared)")
    p.add_argument("--savings-subset", type=int, default=None, help="Part B training subset (default 1000 CPU, 10000 CUDA)")
    p.add_argument("--savings-epochs", type=int, default=None, help="Part B epochs (default 8 CPU, 20 CUDA)")
    p.add_argument("--savings-repeats", type=int, default=2)
    p.add_argument("--skip-savings", action="store_true", help="Part A only")
    a = p.parse_args(argv)
    cuda = a.device == "cuda"
    if a.threads is None and not cuda:
        a.threads = 1
    a.model = a.model or ("resnet20" if cuda else "resnet8")
    if a.smoke_test:
        a.train_subset, a.repeats, a.savings_subset, a.savings_epochs, a.savings_repeats = 256, 2, 128, 5, 1
    else:
        a.train_subset = a.train_subset or (None if cuda else 3000)
        a.savings_subset = a.savings_subset or (10000 if cuda else 1000)
        a.savings_epochs = a.savings_epochs or (20 if cuda else 8)
    return a


def plain_epoch(model: Any, opt: Any, bundle: Any, idx: Any, batch_size: int, gen: Any, augment: bool,
                autocast_dtype: Any, channels_last: bool, device: Any) -> float:
    """What a user would write: forward, loss, zero_grad, backward, step. Returns the summed loss."""
    import torch
    import torch.nn.functional as F

    model.train()
    total = torch.zeros((), device=device)
    for x, y, _ in bundle.train_batches(idx, batch_size, gen, augment):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if autocast_dtype is not None:
            with torch.autocast(device.type, dtype=autocast_dtype):
                loss = F.cross_entropy(model(x), y)
        else:
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach()
    return float(total)


def part_a(a: Any, log: Any) -> list[dict[str, Any]]:
    import torch

    from spfde_search.data import load_data
    from spfde_search.models import create_model
    from spfde_search.trainer import Trainer, seeded_generator

    cfg = C.fmnist_config(a.train_subset, 10, a.repeats + 1, a.device, a.threads,
                          **{"model.name": a.model, "train.batch_size": a.batch_size,
                             "sparsity.algorithm": "dense", "sparsity.ratio": 0.0})
    trainer_bundle = load_data(cfg.data, cfg.seed, torch.device(a.device))
    trainer = Trainer(cfg, data=trainer_bundle)
    device = trainer.device
    spec = trainer_bundle.spec
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model.name, cfg.model.width, spec.channels, spec.num_classes).to(device)
    if trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=cfg.train.momentum,
                          weight_decay=cfg.train.weight_decay)  # lr 0.01: constant, the value does not matter for time
    idx = torch.arange(spec.num_train)
    it = trainer.epochs()

    def run_trainer() -> tuple[float, float]:
        C.sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        next(it)
        C.sync(device)
        return time.perf_counter() - t0, time.process_time() - c0

    def run_plain(e: int) -> tuple[float, float]:
        C.sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        plain_epoch(model, opt, trainer_bundle, idx, cfg.train.batch_size, seeded_generator(cfg.seed, "data", e),
                    cfg.data.augment, trainer.autocast_dtype, trainer.channels_last, device)
        C.sync(device)
        return time.perf_counter() - t0, time.process_time() - c0

    (w_t, _), (w_p, _) = run_trainer(), run_plain(0)
    log(f"warm-up: trainer {w_t:.2f} s, plain {w_p:.2f} s")
    rows = []
    for r in range(a.repeats):
        if r % 2 == 0:
            tt, ct = run_trainer()
            tp, cp = run_plain(r + 1)
        else:
            tp, cp = run_plain(r + 1)
            tt, ct = run_trainer()
        rows.append({"repeat": r, "order": "trainer_first" if r % 2 == 0 else "plain_first", "trainer_seconds": tt,
                     "plain_seconds": tp, "ratio": tt / tp, "trainer_cpu_seconds": ct, "plain_cpu_seconds": cp,
                     "cpu_ratio": ct / cp, "images": spec.num_train,
                     "model": cfg.model.name, "batch_size": cfg.train.batch_size, "device": str(device),
                     "autocast": str(trainer.autocast_dtype), "channels_last": trainer.channels_last})
        log(f"repeat {r + 1}/{a.repeats}: trainer {tt:.2f} s, plain {tp:.2f} s, ratio {tt / tp:.3f}; "
            f"CPU ratio {ct / cp:.3f}")
    return rows


def part_b(a: Any, log: Any) -> list[dict[str, Any]]:
    base = C.fmnist_config(a.savings_subset, 10, a.savings_epochs, a.device, a.threads,
                           **{"model.name": a.model, "train.batch_size": a.batch_size,
                              "sparsity.algorithm": "dense", "sparsity.ratio": 0.0})
    xs = [0.1] if a.smoke_test else [0.1, 0.2, 0.3]
    ys = [0.2] if a.smoke_test else [0.1, 0.2, 0.3]
    variants, _ = C.feasible_variants(base, xs, ys, log)
    return C.timed_schedules(base, variants, a.savings_repeats, log, label=f"dense {a.model}")


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if C.cuda_missing(a.device):
        return 0
    info = C.machine_info(a.device)
    out = C.output_dir(NAME, a)
    log = print
    log(f"{NAME}: results to {out}")
    t_start = time.perf_counter()
    rows_a = part_a(a, log)
    C.save_rows(rows_a, out, "epoch_overhead")
    ratio = C.spread(r["ratio"] for r in rows_a)
    tt = C.spread(r["trainer_seconds"] for r in rows_a)
    tp = C.spread(r["plain_seconds"] for r in rows_a)
    cratio = C.spread(r["cpu_ratio"] for r in rows_a)
    ct = C.spread(r["trainer_cpu_seconds"] for r in rows_a)
    cp = C.spread(r["plain_cpu_seconds"] for r in rows_a)
    log(f"trainer / plain epoch time: {ratio.fmt('.3f')}; CPU time: {cratio.fmt('.3f')}")

    summary: list[dict[str, Any]] = []
    summary_cpu: list[dict[str, Any]] = []
    per_k: list[dict[str, Any]] = []
    per_k_cpu: list[dict[str, Any]] = []
    if not a.skip_savings:
        rows_b = part_b(a, log)
        C.save_rows(rows_b, out, "savings_epochs")
        summary = C.saving_summary(rows_b)
        summary_cpu = C.saving_summary(rows_b, metric="epoch_cpu_seconds")
        per_k = C.per_epoch_frozen(rows_b)
        per_k_cpu = C.per_epoch_frozen(rows_b, metric="epoch_cpu_seconds")
        C.save_rows([{**C.spread_columns(s), "metric": "wall"} for s in summary]
                    + [{**C.spread_columns(s), "metric": "cpu"} for s in summary_cpu], out, "savings_summary")
        what = f"dense {a.model}, {a.savings_subset or 'all'} images, {a.savings_epochs} epochs, {a.device}"
        C.plot_savings(summary, out / "savings.png", what + " (wall clock)")
        C.plot_savings(summary_cpu, out / "savings_cpu.png", what + " (process CPU time)", clock="CPU time")
        for s, c in zip(summary, summary_cpu, strict=True):
            log(f"{s['variant']}: FLOPs saved {s['flops_saved'].fmt('.3f')}, wall saved {s['time_saved'].fmt('.3f')}, "
                f"CPU saved {c['time_saved'].fmt('.3f')}")

    # plot of Part A
    fig, ax = C.plt_figure(figsize=(5, 4))
    ax.plot([r["repeat"] for r in rows_a], [r["trainer_seconds"] for r in rows_a], "o-", label="Trainer (dense)")
    ax.plot([r["repeat"] for r in rows_a], [r["plain_seconds"] for r in rows_a], "s-", label="plain PyTorch loop")
    ax.set_xlabel("repeat (interleaved)")
    ax.set_ylabel("seconds per training epoch")
    ax.set_title(f"{a.model}, {rows_a[0]['images']} images, batch {a.batch_size}, {a.device}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "epoch_overhead.png", dpi=120)
    elapsed = time.perf_counter() - t_start
    log(f"done in {elapsed:.0f} s")

    if not C.should_append(a):
        return 0
    img = rows_a[0]["images"]
    def verdict(sp: C.Spread, what: str) -> str:
        if sp.median <= 1.05:
            return f"by {what} the Trainer is within 5% of the plain loop (median ratio {sp.median:.3f})"
        return (f"by {what} the Trainer is {100 * (sp.median - 1):.0f}% slower than the plain loop (median ratio "
                f"{sp.median:.3f}, min–max {sp.lo:.3f}–{sp.hi:.3f})")
    body = [
        f"Part A — one training epoch, {a.model} dense (no masks), {img} Fashion-MNIST images, batch {a.batch_size}, "
        f"device {a.device}, torch threads {a.threads or 'default'}; {a.repeats} interleaved repeats after one warm-up "
        "epoch each; the Trainer's per-epoch evaluation runs on 10 test images (negligible).",
        "",
        C.md_table(["loop", "wall seconds / epoch", "images / s (median)", "process CPU seconds / epoch"], [
            ["Trainer", tt.fmt(".2f"), f"{img / tt.median:.0f}", ct.fmt(".2f")],
            ["plain PyTorch", tp.fmt(".2f"), f"{img / tp.median:.0f}", cp.fmt(".2f")],
            ["ratio Trainer / plain (per repeat)", ratio.fmt(".3f"), "", cratio.fmt(".3f")],
        ]),
        "",
        f"- Statement: {verdict(ratio, 'wall clock')}; {verdict(cratio, 'process CPU time')}. With one torch thread "
        "the CPU time counts the work this process did and is much less disturbed by the other users' load than "
        "the wall clock is.",
    ]
    if summary:
        body += [
            "",
            f"Part B — wall-clock saving of freezing and sieving on the dense {a.model}: "
            f"{a.savings_subset or 'all'} training images, {a.savings_epochs} epochs, Δτ = 1, "
            f"{a.savings_repeats} interleaved repeats; each run paired with the x=0, y=0 run of the same repeat. "
            "FLOPs are the trainer's measured training FLOPs. Freezing targets are whole-run targets; the "
            "schedule solver rounds T_frz down, so achieved FLOPs savings exceed the targets.",
            "",
            C.saving_table_md(summary, summary_cpu),
            "",
        ]
        for s, c in zip(summary, summary_cpu, strict=True):
            if s["variant"] == "x0_y0":
                continue
            body.append(f"- {s['variant']}: saved / FLOPs saved = {s['ratio'].median:.2f} by wall clock, "
                        f"{c['ratio'].median:.2f} by CPU time (medians): " + _word(c["ratio"].median) + " by CPU time.")
        if per_k:
            cpu_k = {p["frozen_units"]: p for p in per_k_cpu}
            body += ["", "Per epoch with k frozen units (freezing runs against the baseline's same epoch):", "",
                     C.md_table(["frozen units k", "epoch FLOPs ratio", "epoch wall-time ratio", "epoch CPU-time ratio"],
                                [[p["frozen_units"], p["flops_ratio"].fmt(".3f"), p["time_ratio"].fmt(".3f"),
                                  cpu_k[p["frozen_units"]]["time_ratio"].fmt(".3f")] for p in per_k])]
    body += ["", f"- Raw rows and plots: `{C.rel_path(out)}` (epoch_overhead.*, savings_*.*). Total {elapsed:.0f} s.",
             f"- {C.NO_GPU_NOTE}." if a.device == "cpu" else ""]
    C.append_section(a.results_md, f"Trainer vs plain PyTorch loop ({a.device})", info, "\n".join(body))
    return 0


def _word(r: float) -> str:
    return "near-linear" if 0.8 <= r <= 1.2 else "clearly sub-linear" if r < 0.8 else "more than linear"


if __name__ == "__main__":
    raise SystemExit(main())
