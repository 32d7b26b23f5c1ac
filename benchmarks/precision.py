"""CPU precision: ``train.precision=fp32`` (today's CPU default) against ``train.precision=auto`` (bf16 autocast +
channels-last on a CPU with native bf16, spfde_search/device.py), ResNet-8 and ResNet-20 on real Fashion-MNIST.

Design (the verdict rules are stated before any number is read):

- Paired seeds: for every (model, seed) both arms train from the same initialisation, data subset and batch order
  and are evaluated on the FULL 10,000-image test set; the arms run back to back in one process, their order
  alternating with the seed (interleaved), after an untimed warm-up of each arm.
- Speed: per pair, ratio = fp32 time / auto time, for the whole run (training + the final evaluation), for the
  training epochs alone (epochs before the last: the last one also evaluates) and for process CPU time. Reported
  as median with IQR and min–max over pairs. Verdict "auto >= 1.5x faster" iff the median run ratio is >= 1.5 and
  so is its minimum over pairs (a claim every pair supports, not just the median), judged separately by wall
  clock and by CPU time (on a shared machine the wall clock mostly measures the neighbours' load).
- Accuracy: mean ± std per arm over seeds, and the paired difference auto − fp32 (mean ± std, and a 95 % t
  interval). Verdict "accuracy unchanged within noise" iff that interval contains 0 or lies within ±1 point.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    append_section,
    base_parser,
    fmnist_config,
    machine_info,
    md_table,
    nice_self,
    output_dir,
    rel_path,
    save_rows,
    should_append,
    spread,
)

ARMS = {"fp32": {"train.precision": "fp32", "train.channels_last": "off"},  # what `auto` meant on CPU before
        "auto": {"train.precision": "auto", "train.channels_last": "auto"}}
# two-sided 97.5 % t quantiles by degrees of freedom (n - 1), for the paired-difference interval
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def parse() -> Any:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet8", "resnet20"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--train-images", type=int, default=8000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--algorithm", default="dense", help="sparsity.algorithm (dense, or mest at --sparsity)")
    p.add_argument("--sparsity", type=float, default=0.9)
    return p.parse_args()


def run_pair_member(cfg: Any, bundle: Any) -> dict[str, Any]:
    from spfde_search.trainer import Trainer

    tr = Trainer(cfg, data=bundle)
    epoch_wall, epoch_cpu = [], []
    c0 = time.process_time()
    t0 = time.perf_counter()
    last = None
    for m in tr.epochs():
        c1 = time.process_time()
        epoch_wall.append(m.epoch_seconds)
        epoch_cpu.append(c1 - c0)
        c0 = c1
        last = m
    assert last is not None
    return {"run_seconds": time.perf_counter() - t0, "run_cpu_seconds": sum(epoch_cpu),
            "train_epoch_seconds": epoch_wall[:-1] or epoch_wall, "train_epoch_cpu_seconds": epoch_cpu[:-1] or epoch_cpu,
            "test_accuracy": last.test_accuracy, "train_flops": tr.train_flops,
            "autocast": str(tr.autocast_dtype), "channels_last": tr.channels_last}


def main() -> None:
    args = parse()
    nice_self(0)  # the caller chooses the niceness (`nice -n 5 python benchmarks/precision.py`)
    import torch

    from spfde_search.data import load_data
    from spfde_search.device import cpu_has_native_bf16, resolve_execution

    if args.smoke_test:
        args.models, args.seeds, args.train_images, args.epochs = ["resnet8"], 2, 256, 2
    test_images = 200 if args.smoke_test else None  # None: the full 10,000-image test set
    out = output_dir("precision", args)
    info = machine_info(args.device)
    torch.set_num_threads(args.threads)
    loads: list[float] = [os.getloadavg()[0]]
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for model in args.models:
        over: dict[str, Any] = {"model.name": model, "sparsity.algorithm": args.algorithm,
                                "sparsity.ratio": 0.0 if args.algorithm == "dense" else args.sparsity,
                                "train.eval_every": args.epochs}
        base = fmnist_config(args.train_images, test_images, args.epochs, args.device, args.threads, **over)
        warm = fmnist_config(256, 200, 1, args.device, args.threads, **over)
        wbundle = load_data(warm.data, 0, torch.device(args.device))
        for name, arm in ARMS.items():  # untimed warm-up: thread pools, oneDNN kernel creation per arm
            run_pair_member(warm.with_overrides(arm), wbundle)
            print(f"[{model}] warm-up {name} done", flush=True)
        for seed in range(args.seeds):
            cfg0 = base.with_overrides({"seed": seed})
            bundle = load_data(cfg0.data, seed, torch.device(args.device))
            order = list(ARMS) if seed % 2 == 0 else list(reversed(ARMS))
            for name in order:
                r = run_pair_member(cfg0.with_overrides(ARMS[name]), bundle)
                loads.append(os.getloadavg()[0])
                rows.append({"model": model, "seed": seed, "arm": name, "order": order.index(name), **r})
                print(f"[{model}] seed {seed} {name}: {r['run_seconds']:.1f} s wall, {r['run_cpu_seconds']:.1f} s CPU, "
                      f"accuracy {r['test_accuracy']:.4f} ({r['autocast']}, channels_last={r['channels_last']})",
                      flush=True)
    total = time.perf_counter() - t_start
    import pandas as pd

    df = pd.DataFrame(rows)
    save_rows(df.assign(train_epoch_seconds=df["train_epoch_seconds"].map(lambda v: ",".join(f"{x:.3f}" for x in v)),
                        train_epoch_cpu_seconds=df["train_epoch_cpu_seconds"].map(
                            lambda v: ",".join(f"{x:.3f}" for x in v))), out, "runs")

    ex = resolve_execution(args.device, "auto", "auto")
    body, verdicts = summarise(df, args)
    print(body)
    print("\n".join(verdicts))
    print(f"total {total:.0f} s; auto here = {ex.describe()} (native bf16: {cpu_has_native_bf16()})")
    if should_append(args):
        n_test = "the full 10,000-image test set"
        setting = (f"Setting: {args.algorithm}{'' if args.algorithm == 'dense' else f' {args.sparsity}'} "
                   f"{', '.join(args.models)} on {args.train_images} real Fashion-MNIST training images, "
                   f"{args.epochs} epochs, batch 128, evaluated once at the end on {n_test}; torch threads "
                   f"{args.threads}; {args.seeds} paired seeds; arms: `train.precision=fp32` (channels-last off: "
                   f"what `auto` meant on CPU before) vs `train.precision=auto` (here: {ex.describe()}); arms "
                   "interleaved per seed (order alternating), after one untimed warm-up run of each arm. "
                   "Ratios are fp32 / auto per pair (> 1: auto is faster). 'training epochs' excludes the last "
                   "epoch (which also evaluates); 'run' includes the evaluation. CPU time is this process's "
                   "(all its threads).")
        extra = [f"- Load average (1 min) during the run: median {spread(loads).median:.1f}, min–max "
                 f"{min(loads):.1f}–{max(loads):.1f} (sampled after every run); total {total:.0f} s",
                 f"- CPU bf16 support as torch reports it: avx512_bf16={bool(torch.cpu.get_capabilities().get('avx512_bf16'))}, "
                 f"amx_bf16={bool(torch.cpu.get_capabilities().get('amx_bf16'))}"]
        append_section(args.results_md, "CPU precision: fp32 vs precision=auto (bf16 + channels-last)", info,
                       setting + "\n\n" + body + "\n\n" + "\n".join(verdicts) +
                       f"\n\n- Raw rows: `{rel_path(out)}/runs.csv`.", extra)


def summarise(df: Any, args: Any) -> tuple[str, list[str]]:
    table, verdicts = [], []
    for model, g in df.groupby("model", sort=False):
        a = g[g.arm == "fp32"].set_index("seed")
        b = g[g.arm == "auto"].set_index("seed")
        seeds = sorted(set(a.index) & set(b.index))
        run_r = [a.loc[s, "run_seconds"] / b.loc[s, "run_seconds"] for s in seeds]
        cpu_r = [a.loc[s, "run_cpu_seconds"] / b.loc[s, "run_cpu_seconds"] for s in seeds]
        ep_r = [x / y for s in seeds for x, y in zip(a.loc[s, "train_epoch_seconds"], b.loc[s, "train_epoch_seconds"],
                                                     strict=True)]
        ep_cpu_r = [x / y for s in seeds for x, y in zip(a.loc[s, "train_epoch_cpu_seconds"],
                                                         b.loc[s, "train_epoch_cpu_seconds"], strict=True)]
        diff = [100 * (b.loc[s, "test_accuracy"] - a.loc[s, "test_accuracy"]) for s in seeds]
        d = spread(diff)
        half = _T975.get(len(diff) - 1, 1.96) * d.std / math.sqrt(len(diff)) if len(diff) > 1 else float("nan")
        acc = {arm: spread(100 * g[g.arm == arm]["test_accuracy"]) for arm in ARMS}
        ep_wall = {arm: spread([x for v in g[g.arm == arm]["train_epoch_seconds"] for x in v]) for arm in ARMS}
        flops_same = bool((a.loc[seeds, "train_flops"].values == b.loc[seeds, "train_flops"].values).all())
        rr = spread(run_r)
        table.append([model, ep_wall["fp32"].fmt(".1f", unit=" s"), ep_wall["auto"].fmt(".1f", unit=" s"),
                      spread(ep_r).fmt(".2f"), spread(ep_cpu_r).fmt(".2f"), rr.fmt(".2f"), spread(cpu_r).fmt(".2f"),
                      f"{acc['fp32'].mean:.2f} ± {acc['fp32'].std:.2f}", f"{acc['auto'].mean:.2f} ± {acc['auto'].std:.2f}",
                      f"{d.mean:+.2f} ± {d.std:.2f} (95% CI {d.mean - half:+.2f} to {d.mean + half:+.2f})",
                      "yes" if flops_same else "NO"])
        cr = spread(cpu_r)
        fast, fast_cpu = rr.median >= 1.5 and rr.lo >= 1.5, cr.median >= 1.5 and cr.lo >= 1.5
        verdicts.append(f"- {model}: auto is {rr.median:.2f}x faster than fp32 per run by wall clock (median over "
                        f"{rr.n} pairs, min {rr.lo:.2f}): the >= 1.5x target is {'met' if fast else 'NOT met'} by "
                        f"wall clock; by CPU time {cr.median:.2f}x (min {cr.lo:.2f}): "
                        f"{'met' if fast_cpu else 'NOT met'}.")
        same = (d.mean - half <= 0 <= d.mean + half) or (abs(d.mean - half) <= 1 and abs(d.mean + half) <= 1)
        verdicts.append(f"- {model}: accuracy auto − fp32 = {d.mean:+.2f} points (95% CI {d.mean - half:+.2f} to "
                        f"{d.mean + half:+.2f}, n={d.n}): {'unchanged within noise' if same else 'a difference'} "
                        "by the rule above; training FLOPs identical in both arms: "
                        f"{'yes' if flops_same else 'NO'}.")
    head = ["model", "fp32 s / training epoch", "auto s / training epoch", "epoch ratio fp32/auto",
            "epoch CPU-time ratio",
            "run ratio fp32/auto (train + eval)", "CPU-time ratio (run)", "fp32 accuracy % (mean ± std)",
            "auto accuracy % (mean ± std)", "paired Δ auto − fp32 (points)", "same FLOPs"]
    return md_table(head, table), verdicts


if __name__ == "__main__":
    main()
