"""Issue 5 §4 (GPU only): trials per hour with 1, 2, 4, 8 trainer processes sharing one GPU.

Each trial is one ``spfde train`` subprocess (default: ResNet-20, full Fashion-MNIST, MEST 0.9 with SpFDE 20%+20%,
a few epochs, bf16 autocast + channels_last via train.precision=auto). For each packing level P, P identical trials
(different seeds) start together; trials/hour = P / (wall time until the last finishes) × 3600. The GPU machine
has no Ray, so packing is plain concurrent processes (what a Ray Tune search with fractional GPUs would do).

Without a CUDA device it prints and records "not measured: no CUDA device" and exits 0. ``--smoke-test`` runs the
same process-packing logic on CPU with 1 and 2 tiny processes, to keep the code honest (numbers meaningless).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "packing"


def parse_args(argv: list[str] | None = None) -> Any:
    p = C.base_parser(__doc__.splitlines()[0])
    p.set_defaults(device="cuda")
    p.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8], help="processes sharing the GPU")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-subset", type=int, default=None, help="default: full Fashion-MNIST")
    a = p.parse_args(argv)
    if a.smoke_test:
        a.device, a.levels, a.model, a.epochs, a.train_subset = "cpu", [1, 2], "resnet8", 1, 128
    return a


def trial_config(a: Any, seed: int) -> Any:
    test = 100 if a.smoke_test else None
    return C.fmnist_config(a.train_subset, test, a.epochs, a.device, 1 if a.device == "cpu" else None,
                           **{"seed": seed, "model.name": a.model, "train.batch_size": a.batch_size,
                              "freezing.target_flops_reduction": 0.0 if a.epochs < 4 else 0.2,
                              "sieving.fraction": 0.2})


def run_level(a: Any, level: int, out: Path) -> dict[str, Any]:
    """Start `level` trials at once and wait for all; one record with the wall time and per-trial times."""
    from spfde_search.config_export import config_to_yaml

    d = out / f"level_{level}"
    d.mkdir(parents=True, exist_ok=True)
    env = {**os.environ}
    if a.device == "cpu":
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs = []
    t0 = time.perf_counter()
    for i in range(level):
        cfg = trial_config(a, seed=i)
        (d / f"trial{i}.yaml").write_text(config_to_yaml(cfg))
        log = (d / f"trial{i}.log").open("wb")
        cmd = [*C.spfde_exe(), "train", "--config", str(d / f"trial{i}.yaml"), "--json", str(d / f"trial{i}.json")]
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    codes = []
    for p, log in procs:
        codes.append(p.wait())
        log.close()
    wall = time.perf_counter() - t0
    trial_walls = []
    for i in range(level):
        f = d / f"trial{i}.json"
        trial_walls.append(json.loads(f.read_text())["wall_seconds"] if f.exists() else None)
    ok = sum(1 for c in codes if c == 0)
    return {"level": level, "trials_ok": ok, "trials_failed": level - ok, "wall_seconds": wall,
            "trials_per_hour": 3600 * ok / wall if wall > 0 else float("nan"),
            "trial_train_seconds_max": max((t for t in trial_walls if t is not None), default=None),
            "device": a.device, "model": a.model, "epochs": a.epochs, "batch_size": a.batch_size}


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            msg = "not measured: no CUDA device"
            print(msg)
            if C.should_append(a):
                info = C.machine_info("cpu")
                C.append_section(a.results_md, "Trials per hour with processes packed on one GPU", info,
                                 f"- {msg} (no GPU machine was lent to this session). Run "
                                 "`python benchmarks/packing.py` on a CUDA machine; packing there uses concurrent "
                                 "processes because the GPU machine has no Ray.")
            return 0
    info = C.machine_info(a.device)
    out = C.output_dir(NAME, a)
    print(f"{NAME}: levels {a.levels} on {a.device}; results to {out}")
    rows = []
    for level in a.levels:
        r = run_level(a, level, out)
        rows.append(r)
        print(f"{level} process(es): {r['trials_ok']} ok, {r['wall_seconds']:.1f} s wall, "
              f"{r['trials_per_hour']:.1f} trials/hour")
    C.save_rows(rows, out, "packing")
    fig, ax = C.plt_figure(figsize=(5, 4))
    ax.plot([r["level"] for r in rows], [r["trials_per_hour"] for r in rows], "o-")
    ax.set_xlabel("trainer processes sharing the device")
    ax.set_ylabel("trials per hour")
    ax.set_xscale("log", base=2)
    ax.set_title(f"{a.model}, {a.epochs} epochs, batch {a.batch_size}, {info.get('gpu') or a.device}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "packing.png", dpi=120)
    failed = sum(r["trials_failed"] for r in rows)
    if failed:
        print(f"{failed} trial(s) failed; see the logs under {out}")
    if not C.should_append(a):
        return 1 if failed else 0
    base = rows[0]["trials_per_hour"]
    body = [
        f"Each trial: `spfde train`, {a.model}, Fashion-MNIST {a.train_subset or 'full'}, {a.epochs} epochs, batch "
        f"{a.batch_size}, MEST 0.9 + sieving 20%, train.precision=auto. P trials start together as concurrent "
        "processes (the GPU machine has no Ray); trials/hour = P / wall × 3600.",
        "",
        C.md_table(["processes", "wall s", "trials / hour", "speed-up vs 1"],
                   [[r["level"], f"{r['wall_seconds']:.1f}", f"{r['trials_per_hour']:.1f}",
                     f"{r['trials_per_hour'] / base:.2f}×"] for r in rows]),
        "",
        f"- One repeat per level. Raw rows: `{out}`.",
    ]
    C.append_section(a.results_md, f"Trials per hour with processes packed on one GPU ({a.device})", info, "\n".join(body))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
