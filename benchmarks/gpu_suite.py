"""One command for a CUDA machine (issue 8 §4): the GPU defaults end to end, in under 8 minutes, one table.

Parts (each reuses the script that owns the question; nothing is re-implemented here):

1. Short MEST / RigL / SET training (sparsity 0.9) with the GPU defaults — ``train.precision=auto`` and
   ``train.channels_last=auto`` (bf16 autocast + channels-last on CUDA, spfde_search/device.py) and the data
   bundle resident on the device: images / s per epoch, final test accuracy (full test set), FLOPs ratio.
2. Trainer vs a plain PyTorch loop, one epoch each, interleaved (``trainer_vs_plain.part_a``).
3. Wall-clock vs FLOPs saving of freezing and sieving at batch 128 and 512 (``_common.timed_schedules``, as
   ``wallclock.py``; MEST 0.9).
4. Trials per hour with 1 / 2 / 4 / 8 concurrent trainer processes on the one GPU (``packing.run_level``; plain
   processes: the GPU machine has no Ray).

``--budget-min`` (default 8) is checked between parts: a part that would start past it is reported as
"skipped: over budget", never estimated. Without CUDA (and without ``--smoke-test``) it prints
"not measured: no CUDA device" and exits 0. ``--smoke-test`` runs every part at toy sizes on CPU (numbers
meaningless; it keeps the code honest; ``tests/test_benchmarks.py`` runs it).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import packing  # noqa: E402
import trainer_vs_plain  # noqa: E402

NAME = "gpu_suite"


def parse_args(argv: list[str] | None = None) -> Any:
    p = C.base_parser(__doc__.splitlines()[0])
    p.set_defaults(device="cuda")
    p.add_argument("--budget-min", type=float, default=8.0, help="parts starting past this are skipped")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--algo-epochs", type=int, default=3, help="part 1 epochs (full Fashion-MNIST)")
    p.add_argument("--savings-subset", type=int, default=10000)
    p.add_argument("--savings-epochs", type=int, default=20, help="part 3 (a 20-30%% freezing target needs ~20)")
    p.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    a = p.parse_args(argv)
    if a.smoke_test:
        a.device, a.model, a.algo_epochs, a.savings_subset, a.savings_epochs, a.levels = "cpu", "resnet8", 2, 128, 5, [1]
    return a


def part_algorithms(a: Any, log: Any) -> list[list[Any]]:
    import torch

    from spfde_search.data import load_data
    from spfde_search.trainer import Trainer

    train, test = (256, 100) if a.smoke_test else (None, None)
    threads = 1 if a.device == "cpu" else None
    rows = []
    bundle = None
    for algo in ("mest", "rigl", "set"):
        cfg = C.fmnist_config(train, test, a.algo_epochs, a.device, threads,
                              **{"model.name": a.model, "sparsity.algorithm": algo, "sparsity.ratio": 0.9,
                                 "train.eval_every": a.algo_epochs})
        bundle = bundle or load_data(cfg.data, cfg.seed, torch.device(a.device))  # device-resident, shared
        tr = Trainer(cfg, data=bundle)
        speeds, last = [], None
        for m in tr.epochs():
            C.sync(tr.device)
            speeds.append(m.partial_size / m.epoch_seconds)
            last = m
        assert last is not None
        s = C.spread(speeds[1:] or speeds)  # the first epoch carries kernel selection and allocator warm-up
        detail = (f"{a.model}, {bundle.spec.num_train} images × {a.algo_epochs} epochs, "
                  f"{'bf16' if tr.autocast_dtype is not None else 'fp32'}"
                  f"{' + channels-last' if tr.channels_last else ''}; accuracy {last.test_accuracy:.4f} "
                  f"({bundle.spec.num_test} test images), FLOPs ratio {last.flops_ratio:.3f}")
        rows.append([f"1. {algo.upper()} 0.9 training", f"{s.median:,.0f} images/s (epochs 2+, min–max "
                     f"{s.lo:,.0f}–{s.hi:,.0f})", detail])
        log(f"{algo}: {rows[-1][1]}; {detail}")
    return rows


def part_trainer_vs_plain(a: Any, log: Any) -> list[list[Any]]:
    argv = ["--device", a.device, "--model", a.model, "--repeats", "3", "--skip-savings"]
    if a.smoke_test:
        argv.append("--smoke-test")
    ta = trainer_vs_plain.parse_args(argv)
    rows = trainer_vs_plain.part_a(ta, log)
    r = C.spread(row["ratio"] for row in rows)
    return [["2. Trainer / plain loop (epoch wall time)", r.fmt(".3f"),
             f"{a.model} dense, {rows[0]['images']} images, batch {rows[0]['batch_size']}, "
             f"autocast {rows[0]['autocast']}, channels_last {rows[0]['channels_last']}"]]


def part_savings(a: Any, log: Any) -> list[list[Any]]:
    threads = 1 if a.device == "cpu" else None
    xs, ys = ([0.1], [0.2]) if a.smoke_test else ([0.2, 0.3], [0.2, 0.3])
    batches = [64, 128] if a.smoke_test else [128, 512]
    out = []
    for bs in batches:
        base = C.fmnist_config(a.savings_subset, 10, a.savings_epochs, a.device, threads,
                               **{"model.name": a.model, "train.batch_size": bs, "sparsity.algorithm": "mest",
                                  "sparsity.ratio": 0.9})
        variants, skipped = C.feasible_variants(base, xs, ys, log)
        out += [[f"3. batch {bs} {s.split(' ')[0]}", "skipped: infeasible", s[:160]] for s in skipped]
        rows = C.timed_schedules(base, variants, 1 if a.smoke_test else 2, log, label=f"b{bs}")
        for s in C.saving_summary(rows):
            if s["variant"] == "x0_y0":
                continue
            out.append([f"3. batch {bs} {s['variant']}: wall saved / FLOPs saved", s["ratio"].fmt(".2f"),
                        f"FLOPs saved {s['flops_saved'].fmt('.1f', 100, '%')}, wall saved "
                        f"{s['time_saved'].fmt('.1f', 100, '%')}"])
    return out


def part_packing(a: Any, log: Any, out_dir: Path) -> list[list[Any]]:
    argv = ["--device", a.device, "--model", a.model, "--levels", *map(str, a.levels)]
    if a.smoke_test:
        argv.append("--smoke-test")
    pa = packing.parse_args(argv)
    rows, base = [], None
    for level in pa.levels:
        r = packing.run_level(pa, level, out_dir / "packing")
        base = base or r["trials_per_hour"]
        log(f"packing {level}: {r['trials_per_hour']:.1f} trials/hour")
        rows.append([f"4. packing: {level} process(es)", f"{r['trials_per_hour']:.1f} trials/hour "
                     f"({r['trials_per_hour'] / base:.2f}× one)" if base else "–",
                     f"{r['trials_ok']} ok / {r['trials_failed']} failed, {r['wall_seconds']:.1f} s wall, "
                     f"{pa.model} {pa.epochs} epochs"])
    return rows


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("not measured: no CUDA device (run `python benchmarks/gpu_suite.py` on a machine with CUDA)")
            return 0
    out = C.output_dir(NAME, a)
    info = C.machine_info(a.device)
    t0 = time.perf_counter()
    table: list[list[Any]] = []
    parts = [("1. training", lambda: part_algorithms(a, print)),
             ("2. trainer vs plain", lambda: part_trainer_vs_plain(a, print)),
             ("3. savings", lambda: part_savings(a, print)),
             ("4. packing", lambda: part_packing(a, print, out))]
    for name, run in parts:
        spent = (time.perf_counter() - t0) / 60
        if spent > a.budget_min:
            table.append([name, "skipped: over budget", f"{spent:.1f} min spent of {a.budget_min:g}"])
            continue
        t = time.perf_counter()
        table += run()
        print(f"{name}: {time.perf_counter() - t:.0f} s", flush=True)
    total = time.perf_counter() - t0
    md = C.md_table(["measurement", "value", "detail"], table)
    md += f"\n\nTotal {total / 60:.1f} min on {info.get('gpu') or a.device}."
    (out / "gpu_suite.md").write_text(md + "\n")
    C.save_rows([{"measurement": r[0], "value": r[1], "detail": r[2]} for r in table], out, "gpu_suite")
    print(md)
    print(f"table written to {out / 'gpu_suite.md'}")
    if C.should_append(a):
        C.append_section(a.results_md, f"GPU suite ({info.get('gpu') or a.device})", info, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
