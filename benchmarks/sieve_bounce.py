"""Sieving: how many samples just taken back from the removed queue leave again at the next sieve step.

    nice -n 10 python benchmarks/sieve_bounce.py --before b5608f0     # Fashion-MNIST 2,000, dtau 1 and 2, 3 seeds
    python benchmarks/sieve_bounce.py --smoke-test                    # synthetic data, 1 seed, this code only (CI)

Issue 34: with the forgetting window W = max(dtau, 3) > dtau, a returned sample was ranked on its events from
before it left (or on a first presentation compared with its last one before it left) and went straight back.
Since then a returned sample is ranked only on presentations since it came back, and one not yet compared stays
(``spfde_search/method/sieving.py``). Each run trains ``Trainer`` and reads the partial set after every epoch.
At each sieve step followed by another, "returned" are the samples that came in, and the fraction of them gone
at the next step is set beside the fraction of the other partial samples that left then (the base rate).
``--before REF`` measures the code of that git commit too, in a child process over ``git archive REF``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REPO_ROOT,
    append_section,
    base_parser,
    machine_info,
    md_table,
    output_dir,
    save_rows,
    should_append,
)


def measure(over: dict[str, Any], threads: int = 1) -> dict[str, Any]:
    """One training run (the importable ``spfde_search``: this tree, or the one on PYTHONPATH): counts of returned
    samples removed again at the next sieve step, and of the other partial samples removed then."""
    from spfde_search.config import Config, apply_overrides
    from spfde_search.trainer import Trainer

    base = {"seed": 0, "model": {"name": "resnet8", "width": 1},
            "data": {"name": "fashion_mnist", "train_subset": 2000, "test_subset": 1000},
            "train": {"epochs": 10, "batch_size": 64, "lr": 0.1, "weight_decay": 5e-4, "update_interval": 1,
                      "device": "cpu", "threads": threads},
            "sieving": {"fraction": 0.2}}
    tr = Trainer(Config.parse(apply_overrides(base, over)))
    t0 = time.process_time()
    parts = []  # the partial set each epoch trained on (the sieve steps before an epoch starts)
    for _ in tr.epochs():
        parts.append(set(tr.partial_indices().tolist()))
    steps = [e for e in range(1, len(parts)) if tr.plan.epochs[e].sieve_step]
    row = {"returned": 0, "returned_removed": 0, "others": 0, "others_removed": 0, "steps": len(steps)}
    for a, b in zip(steps, steps[1:], strict=False):
        back = parts[a] - parts[a - 1]
        rest = parts[a] - back
        row["returned"] += len(back)
        row["returned_removed"] += len(back - parts[b])
        row["others"] += len(rest)
        row["others_removed"] += len(rest - parts[b])
    row["test_accuracy"] = tr.summary()["test_accuracy"]
    row["cpu_s"] = time.process_time() - t0
    return row


def measure_tree(ref: str, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``measure`` over the code of git commit ``ref`` (extracted to a temporary folder), in a child process."""
    with tempfile.TemporaryDirectory(prefix="spfde-before-") as tmp:
        blob = subprocess.run(["git", "archive", ref], cwd=REPO_ROOT, capture_output=True, check=True).stdout
        with tarfile.open(fileobj=BytesIO(blob)) as tar:
            tar.extractall(tmp, filter="data")
        code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from sieve_bounce import measure; "
                "print(json.dumps([measure(j) for j in json.loads(sys.argv[2])]))")
        env = {**os.environ, "PYTHONPATH": tmp}
        out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), json.dumps(jobs)],
                             cwd=tmp, env=env, capture_output=True, text=True, check=True).stdout
    return list(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--before", default=None, help="git commit of the old rule, measured too (e.g. b5608f0)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--dtau", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    info = machine_info("cpu")
    over: dict[str, Any] = {}
    if args.smoke_test:
        args.seeds, args.dtau, args.before = 1, [1], None
        over = {"data.name": "synthetic", "data.train_subset": None, "data.test_subset": None,
                "data.synthetic_train": 256, "data.synthetic_test": 64, "data.synthetic_size": 16, "train.epochs": 4}
    jobs = [{**over, "seed": s, "train.update_interval": d} for d in args.dtau for s in range(args.seeds)]
    arms = [("after", [measure(j) for j in jobs])]
    if args.before:
        arms.insert(0, ("before", measure_tree(args.before, jobs)))
    rows = [{"code": arm, "commit": args.before if arm == "before" else "this tree", "dtau": j["train.update_interval"],
             "seed": j["seed"], **r} for arm, rs in arms for j, r in zip(jobs, rs, strict=True)]
    out = output_dir("sieve_bounce", args)
    save_rows(rows, out, "runs")
    table = []
    for arm, _ in arms:
        for d in args.dtau:
            rs = [r for r in rows if r["code"] == arm and r["dtau"] == d]
            ret, rem = sum(r["returned"] for r in rs), sum(r["returned_removed"] for r in rs)
            oth, oth_rem = sum(r["others"] for r in rs), sum(r["others_removed"] for r in rs)
            acc = sum(r["test_accuracy"] for r in rs) / len(rs)
            table.append((arm, d, len(rs), f"{rem} / {ret} = {rem / max(ret, 1):.3f}",
                          f"{oth_rem} / {oth} = {oth_rem / max(oth, 1):.3f}", f"{acc:.4f}"))
            print(f"{arm:6s} dtau {d}: returned removed again {rem}/{ret} = {rem / max(ret, 1):.3f}; "
                  f"others {oth_rem}/{oth} = {oth_rem / max(oth, 1):.3f}; mean test accuracy {acc:.4f}")
    if should_append(args):
        body = "\n".join([
            "Setting: ResNet-8 (width 1) on 2,000 Fashion-MNIST training images (1,000 test), 10 epochs, batch 64, "
            f"sieving fraction 0.2, window W = max(Δτ, 3), seeds 0–{args.seeds - 1}, CPU, 1 torch thread. "
            "`before`: the rule of commit " f"`{args.before}` (a returned sample ranked on its whole window); "
            "`after`: ranked only on presentations since it came back, not yet compared stays. Counted over every "
            "sieve step followed by another.", "",
            md_table(["code", "Δτ", "runs", "returned samples removed at the next step", "other partial samples "
                      "removed then (base rate)", "mean test accuracy"], table), "",
            "- Before vs after per Δτ: the table. At Δτ = 1 a returned sample has been seen once by the next step "
            "(no chance to forget), so it stays and the m leavers come from the rest, at m / (|partial| − m) = "
            "0.25; at Δτ > 1 it is ranked on the comparisons since it came back (fewer than the others' W). The test "
            "accuracies of 10-epoch runs on 2,000 images are reported, not compared (3 seeds say nothing about a "
            "difference of this size)."])
        append_section(args.results_md, "Sieving: returned samples removed again at the next step (cpu)", info, body)


if __name__ == "__main__":
    main()
