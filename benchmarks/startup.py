"""How fast does ``spfde flops`` answer? Each arm runs in a fresh interpreter, arms interleaved (round-robin, order
rotated per repeat); the child's CPU time (``RUSAGE_CHILDREN``, which other users' load barely inflates) and wall
clock are recorded, with ``python -c "import torch"`` as the reference floor in the same run.

Arms: ``import torch``; the FLOPs profile built the old way (model on the ``meta`` device: its shape checks and
batch-norm decomposition import sympy and ``torch._dynamo``) and the current way (one batch-1 CPU pass, what
``method/flops.py`` does); the whole ``spfde flops --config configs/paper_resnet32_cifar100.yaml``. Reported:
medians with spreads, the ratios to ``import torch``, and which heavy modules each arm loaded. This replaces the
duration that ``tests/method/test_flops.py`` used to assert (no test asserts a duration).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

CONFIG = "configs/paper_resnet32_cifar100.yaml"
HEAVY = ("torch._dynamo", "sympy", "torchvision", "ray", "mlflow")
_REPORT = f"import sys, json; print('MODULES', json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
_PROFILE = """
import torch
from spfde_search.config import load_config
from spfde_search.method import flops as F
from spfde_search.models import create_model
cfg = load_config({cfg!r})
spec = F.dataset_spec(cfg.data)
with torch.device({device!r}), F._skip_init():
    model = create_model(cfg.model.name, cfg.model.width, spec.channels, spec.num_classes)
F.profile_model(model, (spec.channels, spec.image_size, spec.image_size), F.sparse_layers(model, cfg.sparsity))
"""


def arms(config: str) -> dict[str, list[str]]:
    py = [sys.executable, "-c"]
    return {
        "import torch": [*py, "import torch\n" + _REPORT],
        "profile on meta (before)": [*py, _PROFILE.format(cfg=config, device="meta") + _REPORT],
        "profile on cpu (now)": [*py, _PROFILE.format(cfg=config, device="cpu") + _REPORT],
        "spfde flops": [*py, f"import sys; sys.argv = ['spfde', 'flops', '--config', {config!r}]\n"
                        f"from spfde_search.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n{_REPORT}"
                        ],
    }


def timed(cmd: list[str]) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=C.REPO_ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    mods = [ln for ln in r.stdout.splitlines() if ln.startswith("MODULES ")]
    return {"wall_seconds": wall, "cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "heavy_modules": ",".join(json.loads(mods[-1][8:])) if mods else "?"}


def main() -> None:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    C.nice_self(0)
    repeats = 1 if args.smoke_test else args.repeats
    out = C.output_dir("startup", args)
    info = C.machine_info("cpu")
    todo = arms(CONFIG)
    names = list(todo)
    rows = []
    for r in range(repeats):
        for i in range(len(names)):
            name = names[(i + r) % len(names)]
            row = {"arm": name, "repeat": r, **timed(todo[name])}
            rows.append(row)
            print(f"repeat {r + 1}/{repeats} {name}: {row['cpu_seconds']:.2f} s CPU, {row['wall_seconds']:.2f} s wall "
                  f"[{row['heavy_modules']}]", flush=True)
    C.save_rows(rows, out, "startup")
    ref = {r["repeat"]: r for r in rows if r["arm"] == "import torch"}
    table = []
    for name in names:
        g = [r for r in rows if r["arm"] == name]
        cpu_ratio = C.spread(r["cpu_seconds"] / ref[r["repeat"]]["cpu_seconds"] for r in g)
        table.append([name, C.spread(r["cpu_seconds"] for r in g).fmt(".2f", unit=" s"),
                      C.spread(r["wall_seconds"] for r in g).fmt(".2f", unit=" s"), cpu_ratio.fmt(".2f"),
                      g[-1]["heavy_modules"] or "none"])
    meta = {r["repeat"]: r for r in rows if r["arm"] == "profile on meta (before)"}
    now = [r["cpu_seconds"] / meta[r["repeat"]]["cpu_seconds"] for r in rows if r["arm"] == "profile on cpu (now)"]
    body = C.md_table(["arm (fresh interpreter)", "CPU seconds", "wall seconds", "CPU / `import torch` (paired)",
                     "heavy modules loaded"], table)
    body += (f"\n\n- Profile on CPU / profile on meta, CPU time per repeat: {C.spread(now).fmt('.2f')} — the CPU pass "
             "avoids importing sympy and torch._dynamo. `spfde flops` above includes pydantic, typer/rich and the "
             "schedule solver on top of torch.")
    print(body)
    if C.should_append(args):
        C.append_section(args.results_md, "`spfde flops` start-up (fresh interpreters, interleaved)", info,
                       f"Config `{CONFIG}`, OMP_NUM_THREADS=1, {repeats} interleaved repeats.\n\n" + body +
                       "\n- Raw rows: `benchmarks/results/startup/startup.csv`.")


if __name__ == "__main__":
    sys.exit(main())
