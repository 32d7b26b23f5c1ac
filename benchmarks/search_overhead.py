"""Ray Tune + Optuna overhead per trial, against running the trainer directly on the same configs.

    python benchmarks/search_overhead.py                 # 4 configs, real Fashion-MNIST subset, ResNet-8, 2 epochs
    python benchmarks/search_overhead.py --smoke-test    # 2 configs, synthetic data, 1 epoch (CI)

Both arms run in this one process, one after the other, with the same CPUs: first every config through
``Trainer`` directly (model, data and epochs, no checkpoints), then the same configs as a search (embedded
Ray, one trial at a time with all CPUs, the configs enqueued as the sampler's first points, a checkpoint per
epoch as the trainable always does). Per-trial overhead = the driver-observed trial time (start callback ->
end callback) minus the direct time of the same config. The fixed cost (Ray start, space probing, shutdown)
is the search's total wall time minus the sum of its trial times. Reported as median and spread (min..max,
and the interquartile range), with the machine and versions.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import append_section, base_parser, machine_info, output_dir, runnable_points, should_append  # noqa: E402

from search_spaces import trial_config  # noqa: E402
from spfde_search.config import load_config  # noqa: E402


def stats(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs, dtype=float)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median": float(med), "min": float(a.min()), "max": float(a.max()), "iqr": float(q3 - q1), "n": int(a.size)}


def fmt(s: dict[str, float]) -> str:
    return f"{s['median']:7.2f} s  (min {s['min']:.2f}, max {s['max']:.2f}, IQR {s['iqr']:.2f}, n={s['n']})"


def main() -> None:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--configs", type=int, default=4, help="number of configs (trials) per arm")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs for each arm (Ray trial gets all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    info = machine_info(args.device)
    if args.smoke_test:
        args.configs, args.epochs = 2, 1
        overrides = {"data.name": "synthetic", "train.epochs": 1, "train.update_interval": 1}
    else:
        overrides = {"data.name": "fashion_mnist", "data.train_subset": 1000, "data.test_subset": 500,
                     "model.name": "resnet8", "train.epochs": args.epochs, "train.batch_size": 128,
                     "train.update_interval": 1}
    overrides["train.threads"] = args.cpus
    base = load_config(None, overrides)
    points = runnable_points("smoke", base, args.configs, args.seed)

    import torch

    from spfde_search.trainer import Trainer

    direct: list[float] = []
    for p in points:
        t0 = time.perf_counter()
        tr = Trainer(trial_config(base, p))
        for _ in tr.epochs():
            pass
        direct.append(time.perf_counter() - t0)
        print(f"direct  {json.dumps(p)}  {direct[-1]:.2f} s", flush=True)

    from spfde_search.search import SearchSettings, drive_search, prepare

    with tempfile.TemporaryDirectory(prefix="spfde-bench-") as d:
        settings = SearchSettings(name="overhead", space="smoke", base_config=base.to_dict(), num_samples=len(points),
                                  sampler="random", seed=args.seed, max_concurrent=1, cpus_per_trial=args.cpus,
                                  num_cpus=args.cpus, storage_path=d)
        t0 = time.perf_counter()
        prep = prepare(settings)
        prep.points = points
        out = drive_search(settings, prepared=prep, verbose=0)
        total = time.perf_counter() - t0
    table = out.table.set_index("params")
    searched, overhead, trainer_side = [], [], []
    for p, dt in zip(points, direct, strict=False):
        row = table.loc[json.dumps(p, sort_keys=True)]
        trial = float(row["finished_at"] - row["started_at"])
        searched.append(trial)
        overhead.append(trial - dt)
        trainer_side.append(float(row["wall_seconds"]))
        print(f"search  {json.dumps(p)}  {trial:.2f} s  (trainer's own epochs {row['wall_seconds']:.2f} s)", flush=True)
    fixed = total - sum(searched)
    import optuna
    import ray

    result = {
        "what": "Ray Tune + Optuna overhead per trial vs the trainer run directly (same configs, same process)",
        "configs": points,
        "base_overrides": overrides,
        "direct_s": stats(direct),
        "search_trial_s": stats(searched),
        "trainer_epochs_in_search_s": stats(trainer_side),
        "overhead_per_trial_s": stats(overhead),
        "fixed_overhead_s": fixed,
        "search_total_s": total,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": {"ray": ray.__version__, "optuna": optuna.__version__, "torch": torch.__version__},
    }
    print()
    print(f"direct trainer per trial   {fmt(result['direct_s'])}")
    print(f"search trial (driver view) {fmt(result['search_trial_s'])}")
    print(f"overhead per trial         {fmt(result['overhead_per_trial_s'])}")
    print(f"fixed search overhead      {fixed:7.2f} s  (Ray start/stop, space probing; total {total:.1f} s)")
    out_dir = output_dir("search_overhead", args)
    (out_dir / "overhead.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out_dir / 'overhead.json'}")
    if should_append(args):
        body = "\n".join([
            f"Setting: {len(points)} configs of the `smoke` space (ResNet-8, 1,000 Fashion-MNIST training / 500 test "
            f"images, {args.epochs} epochs, Δτ = 1, batch 128), each run once through `Trainer` directly and once as a "
            f"trial of a search (embedded Ray, random sampler with the same configs enqueued, one trial at a time, "
            f"{args.cpus} CPUs, a checkpoint per epoch), in this one process, direct arm first.",
            "",
            "| quantity | seconds |",
            "|---|---|",
            f"| trainer run directly, per config | {fmt(result['direct_s']).strip()} |",
            f"| same config as a search trial (driver view: start -> end) | {fmt(result['search_trial_s']).strip()} |",
            f"| overhead per trial (trial − direct, paired) | {fmt(result['overhead_per_trial_s']).strip()} |",
            f"| fixed search overhead (Ray start/stop, space probing) | {fixed:.2f} (total search {total:.1f} s) |",
            "",
            f"- Versions: ray {ray.__version__}, optuna {optuna.__version__}.",
            f"- Raw numbers: `{out_dir.relative_to(Path(__file__).resolve().parent.parent) if out_dir.is_relative_to(Path(__file__).resolve().parent.parent) else out_dir}/overhead.json`.",
        ])
        append_section(args.results_md, "Ray Tune + Optuna overhead per trial vs the trainer alone (cpu)",
                       info, body)


if __name__ == "__main__":
    main()
