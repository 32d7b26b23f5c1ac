"""What the validation split costs `make demo`: the demo's trials with and without `data.val_size`, paired.

    nice -n 10 python benchmarks/val_overhead.py                # 8 smoke-space configs of the demo, 2 repeats
    python benchmarks/val_overhead.py --smoke-test              # 2 configs, synthetic data, 1 epoch (CI)

`make demo` is 8 trials of `configs/demo_search.yaml` (ResNet-8, 2,000 training / 1,000 test Fashion-MNIST
images, 6 epochs, evaluated every epoch) from the `smoke` space. Before validation, each trial evaluated the
1,000 test images after every epoch; now it evaluates the search's default validation split (min(5,000, the
test set) = 1,000 images drawn outside the training subset) after every epoch and the test set once at the end.
Everything else in a search (Ray, Optuna, checkpoints, MLflow) is the same in both arms, so the trials' own
cost is the difference: each config is trained by ``Trainer`` in both arms (``before``: ``data.val_size`` 0,
``after``: the search default), arms interleaved with the order alternating, one torch thread. The machine is
shared and busy, so the measure is the process's CPU time (wall clock beside it), paired per config and repeat.
Verdict rule, fixed before measuring: the validation split keeps the demo within 10 % of its old cost when the
summed CPU time of the ``after`` arm is at most 1.10x the ``before`` arm's.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    append_section,
    base_parser,
    machine_info,
    md_table,
    output_dir,
    runnable_points,
    save_rows,
    should_append,
    spread,
)

from search_spaces import trial_config  # noqa: E402
from spfde_search.config import load_config  # noqa: E402
from spfde_search.data import default_val_size  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _run(cfg, torch) -> tuple[float, float, dict]:  # type: ignore[no-untyped-def]
    from spfde_search.trainer import Trainer

    torch.set_num_threads(1)
    c0, w0 = time.process_time(), time.perf_counter()
    s = Trainer(cfg).fit()
    return time.process_time() - c0, time.perf_counter() - w0, s


def main() -> None:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--configs", type=int, default=8, help="smoke-space configs of the demo (make demo runs 8)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    info = machine_info(args.device)
    overrides = {"train.device": args.device, "train.threads": 1}
    if args.smoke_test:
        args.configs, args.repeats = 2, 1
        overrides.update({"data.name": "synthetic", "data.train_subset": 200, "data.test_subset": None,
                          "train.epochs": 1})
    base = load_config(ROOT / "configs" / "demo_search.yaml", overrides)
    val = default_val_size(base.data)
    points = runnable_points("smoke", base, args.configs, args.seed)
    import torch

    _run(trial_config(base, {**points[0], "data.val_size": val}), torch)  # warm-up (imports, data cache): untimed
    rows = []
    for rep in range(args.repeats):
        for i, p in enumerate(points):
            order = ("before", "after") if (i + rep) % 2 == 0 else ("after", "before")
            for arm in order:
                cfg = trial_config(base, {**p, "data.val_size": 0 if arm == "before" else val})
                cpu, wall, s = _run(cfg, torch)
                rows.append({"repeat": rep, "config": i, "arm": arm, "cpu_s": cpu, "wall_s": wall,
                             "val_size": cfg.data.val_size, "val_accuracy": s["val_accuracy"],
                             "test_accuracy": s["test_accuracy"], "train_flops": s["train_flops"],
                             "params": json.dumps(p, sort_keys=True)})
                print(f"repeat {rep} config {i} {arm:6s}: cpu {cpu:6.2f} s  wall {wall:6.2f} s", flush=True)
    out = output_dir("val_overhead", args)
    save_rows(rows, out, "runs")
    by = {(r["repeat"], r["config"], r["arm"]): r for r in rows}
    pairs = [(by[k[0], k[1], "after"], by[k[0], k[1], "before"]) for k in by if k[2] == "before"]
    assert all(a["train_flops"] == b["train_flops"] for a, b in pairs)  # validation outside: same training
    ratio_cpu = spread(a["cpu_s"] / b["cpu_s"] for a, b in pairs)
    ratio_wall = spread(a["wall_s"] / b["wall_s"] for a, b in pairs)
    total = sum(a["cpu_s"] for a, _ in pairs) / sum(b["cpu_s"] for _, b in pairs)
    verdict = "within 10 %" if total <= 1.10 else "NOT within 10 %"
    result = {"pairs": len(pairs), "val_size": val, "total_cpu_ratio": total, "verdict": verdict,
              "cpu_ratio": ratio_cpu.__dict__, "wall_ratio": ratio_wall.__dict__}
    (out / "val_overhead.json").write_text(json.dumps(result, indent=2, default=float))
    print(f"validation split ({val} images): summed CPU time after/before {total:.3f} ({verdict}); per pair "
          f"{ratio_cpu.fmt('.3f')}; wall {ratio_wall.fmt('.3f')}")
    if should_append(args):
        table = md_table(["arm", "CPU s per trial (median, IQR, min–max)", "wall s per trial"], [
            (arm, spread(r["cpu_s"] for r in rows if r["arm"] == arm).fmt(".2f"),
             spread(r["wall_s"] for r in rows if r["arm"] == arm).fmt(".2f")) for arm in ("before", "after")])
        body = "\n".join([
            f"Setting: {len(points)} configs of the `smoke` space on `configs/demo_search.yaml` (what `make demo` "
            f"runs), {args.repeats} repeats, each config trained by `Trainer` in both arms (`before`: "
            f"`data.val_size` 0, test evaluated every epoch; `after`: the search default, {val} validation images "
            "every epoch + the test set once), arms interleaved with alternating order, 1 torch thread. Ray, "
            "Optuna and MLflow are identical in both arms and not timed. CPU time of the process, because the "
            "machine is shared and busy (wall clock beside it).", "", table, "",
            f"- Paired ratio after/before per trial, CPU time: {ratio_cpu.fmt('.3f')}; wall: {ratio_wall.fmt('.3f')}.",
            f"- Summed CPU time after/before: **{total:.3f}** — {verdict} of the old demo (rule in the script's "
            "docstring, fixed before measuring). Training FLOPs are identical in every pair (validation lies "
            "outside the 2,000 training images)."])
        append_section(args.results_md, "Validation split: demo search time (cpu)", info, body)


if __name__ == "__main__":
    main()
