"""How long does one suggestion of the budget space (``--space budget``) take? Per suggestion: Optuna's ``ask``,
the define-by-run space (the sampler's choices, then ``sparsity.ratio`` solved from the FLOPs predictor, the
freezing start epoch with it) and ``tell``, timed in this process (wall and process CPU time) with the random
sampler (the solver alone, in effect), TPE (multivariate, grouped: what ``--sampler auto`` picks) and GP
(qLogEHVI). Synthetic objective values are told (accuracy rising with the log of the ratio, plus noise), so the
model-based samplers model something. Also timed once: building the space (``resolve_space``: the reachable range
and probing every parameter), which a search pays once before Ray starts.

Target (issue 21): well under a second per suggestion.
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

CONFIGS = ["configs/demo_search.yaml", "configs/paper_resnet32_cifar100.yaml"]
SAMPLERS = ["random", "tpe", "gp"]


def run_arm(space: Any, sampler_name: str, n: int, seed: int) -> list[dict[str, Any]]:
    import optuna

    from search_spaces import TARGET
    from spfde_search.search.optuna_search import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space.fn.solver.cache.clear()  # every arm solves its own splits (the arms' start-up draws coincide)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(sampler_name, seed, space, n))
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        w0, c0 = time.perf_counter(), time.process_time()
        trial = study.ask()
        space.fn(trial)
        target = trial.params[TARGET]
        study.tell(trial, [0.6 + 0.05 * math.log(target) + rng.gauss(0, 0.01), target])
        rows.append({"sampler": sampler_name, "suggestion": i, "wall_seconds": time.perf_counter() - w0,
                     "cpu_seconds": time.process_time() - c0})
    return rows


def main() -> None:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--suggestions", type=int, default=12, help="suggestions per sampler and config")
    args = p.parse_args()
    C.nice_self(0)
    n = 4 if args.smoke_test else args.suggestions
    configs = CONFIGS[:1] if args.smoke_test else CONFIGS
    out = C.output_dir("budget_suggest", args)
    info = C.machine_info("cpu")
    import optuna

    from search_spaces import resolve_space
    from spfde_search.config import load_config

    rows: list[dict[str, Any]] = []
    table = []
    for path in configs:
        base = load_config(C.REPO_ROOT / path)
        w0, c0 = time.perf_counter(), time.process_time()
        space = resolve_space("budget", base)
        build = {"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0}
        print(f"{path}: {space.note}; built in {build['wall']:.2f} s wall, {build['cpu']:.2f} s CPU", flush=True)
        for name in SAMPLERS:
            got = [{**r, "config": path} for r in run_arm(space, name, n, seed=0)]
            rows += got
            table.append([f"`{path}`", name, C.spread(r["wall_seconds"] for r in got).fmt(".3f", unit=" s"),
                          C.spread(r["cpu_seconds"] for r in got).fmt(".3f", unit=" s"),
                          f"{max(r['wall_seconds'] for r in got):.3f} s"])
            print(f"  {name}: median {table[-1][2]}", flush=True)
        rows.append({"config": path, "sampler": "(build the space)", "suggestion": -1, "wall_seconds": build["wall"],
                     "cpu_seconds": build["cpu"]})
        table.append([f"`{path}`", "build the space (once)", f"{build['wall']:.2f} s", f"{build['cpu']:.2f} s", "-"])
    C.save_rows(rows, out, "budget_suggest")
    body = C.md_table(["config", "sampler", "wall per suggestion", "CPU per suggestion", "slowest (wall)"], table)
    body += (f"\n\n- {n} suggestions per sampler and config (ask + the space + tell), Optuna {optuna.__version__}; "
             "GP's first suggestions are its random start-up trials, its later ones fit the GP (the slowest rows).")
    print(body)
    if C.should_append(args):
        C.append_section(args.results_md, "Budget space: time per suggestion (ask + solve + tell)", info, body +
                         "\n- Raw rows: `benchmarks/results/budget_suggest/budget_suggest.csv`.")


if __name__ == "__main__":
    sys.exit(main())
