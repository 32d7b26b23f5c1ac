"""How fast does ``spfde flops`` answer? Each arm runs in a fresh interpreter, arms interleaved (round-robin, order
rotated per repeat); the child's CPU time (``RUSAGE_CHILDREN``, which other users' load barely inflates) and wall
clock are recorded, with ``python -c "import torch"`` as the reference floor in the same run.

Arms: ``import torch``; the FLOPs profile built the old way (model on the ``meta`` device: its shape checks and
batch-norm decomposition import sympy and ``torch._dynamo``) and the current way (one batch-1 CPU pass, what
``method/flops.py`` does); the whole ``spfde flops --config configs/paper_resnet32_cifar100.yaml``. Reported:
medians with spreads, the ratios to ``import torch``, and which heavy modules each arm loaded. This replaces the
duration that ``tests/method/test_flops.py`` used to assert (no test asserts a duration).

Group ``typos`` (issue 24): how fast a typo answers. Each bad command (``search --space nosuch``, ``search --sampler
tpee``, ``pareto nosuch``) runs side by side on the code *before* the up-front checks (``--before REV``, a git
revision extracted with ``git archive``) and on this checkout, in an empty working directory; reported per command:
CPU and wall medians, the paired now / before CPU ratio, and which of torch, optuna, ray, mlflow each loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
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


# typo commands (group "typos"): each must end with one `error:` line and exit code 2
TYPOS = {
    "search --space nosuch": ["search", "--space", "nosuch"],
    "search --sampler tpee": ["search", "--sampler", "tpee"],
    "pareto nosuch": ["pareto", "nosuch"],
}
TYPO_HEAVY = ("torch", "optuna", "ray", "mlflow")
BEFORE_REV = "88a704b"  # main before the up-front checks (spfde_search/cli/precheck.py)
_TYPO = ("import sys, json\nsys.argv = ['spfde', *json.loads(sys.argv[1])]\nfrom spfde_search.cli import main\n"
         "code = 0\ntry:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
         f"print('MODULES', json.dumps(sorted(m for m in {TYPO_HEAVY!r} if m in sys.modules)))\nsys.exit(code)")


def typo_arms(before_tree: Path | None) -> dict[str, tuple[list[str], dict[str, str]]]:
    """(command, extra environment) per arm: each typo on the old tree (PYTHONPATH) and on this checkout."""
    out: dict[str, tuple[list[str], dict[str, str]]] = {}
    for name, argv in TYPOS.items():
        cmd = [sys.executable, "-c", _TYPO, json.dumps(argv)]
        if before_tree is not None:
            out[f"{name} (before)"] = (cmd, {"PYTHONPATH": str(before_tree)})
        out[f"{name} (now)"] = (cmd, {"PYTHONPATH": str(C.REPO_ROOT)})
    return out


def extract_tree(rev: str, into: Path) -> Path | None:
    """The packages at git revision ``rev`` under ``into`` (None, after saying why, when git cannot give them)."""
    try:
        tar = subprocess.run(["git", "-C", str(C.REPO_ROOT), "archive", rev, "spfde_search", "search_spaces",
                              "trainables"], capture_output=True, check=True, timeout=120).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=tar, check=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        print(f"not measured: the 'before' arms need git revision {rev} ({e})")
        return None
    return into


def timed(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
          codes: tuple[int, ...] = (0,)) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd or C.REPO_ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode not in codes:
        raise RuntimeError(r.stderr[-2000:])
    mods = [ln for ln in r.stdout.splitlines() if ln.startswith("MODULES ")]
    return {"wall_seconds": wall, "cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "heavy_modules": ",".join(json.loads(mods[-1][8:])) if mods else "?"}


def main() -> None:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--group", choices=["all", "flops", "typos"], default="all", help="which arms to run")
    p.add_argument("--before", default=BEFORE_REV, help="git revision of the 'before' typo arms")
    args = p.parse_args()
    C.nice_self(0)
    repeats = 1 if args.smoke_test else args.repeats
    out = C.output_dir("startup", args)
    info = C.machine_info("cpu")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="spfde-startup-") as tmp:
        todo: dict[str, tuple[list[str], dict[str, str]]] = {}
        if args.group in ("all", "flops"):
            todo.update({k: (v, {}) for k, v in arms(CONFIG).items()})
        if args.group in ("all", "typos"):
            (Path(tmp) / "before").mkdir()
            (Path(tmp) / "cwd").mkdir()  # empty: no ./mlflow.db, nothing of the user's is read
            todo.update(typo_arms(extract_tree(args.before, Path(tmp) / "before")))
        names = list(todo)
        for r in range(repeats):
            for i in range(len(names)):
                name = names[(i + r) % len(names)]
                cmd, env = todo[name]
                typo = name.rsplit(" (", 1)[0] in TYPOS  # "profile on cpu (now)" is a flops arm
                row = {"arm": name, "repeat": r, **timed(cmd, Path(tmp) / "cwd" if typo else None, env,
                                                         (2,) if typo else (0,))}
                rows.append(row)
                print(f"repeat {r + 1}/{repeats} {name}: {row['cpu_seconds']:.2f} s CPU, {row['wall_seconds']:.2f} s "
                      f"wall [{row['heavy_modules']}]", flush=True)
    C.save_rows(rows, out, "startup")
    sections = []
    if args.group in ("all", "flops"):
        sections.append(("`spfde flops` start-up (fresh interpreters, interleaved)",
                         f"Config `{CONFIG}`, OMP_NUM_THREADS=1, {repeats} interleaved repeats.\n\n"
                         + flops_body(rows, list(arms(CONFIG)))))
    if args.group in ("all", "typos"):
        sections.append(("how fast a typo answers: before and after the up-front checks (fresh interpreters, "
                         "interleaved)", f"Before = git revision `{args.before}`, now = this checkout; an empty "
                         f"working directory; OMP_NUM_THREADS=1, {repeats} interleaved repeats.\n\n"
                         + typos_body(rows)))
    for title, body in sections:
        print(body)
        if C.should_append(args):
            raw = out / "startup.csv"
            with contextlib.suppress(ValueError):
                raw = raw.resolve().relative_to(C.REPO_ROOT)
            C.append_section(args.results_md, title, info, body + f"\n\n- Raw rows: `{raw}`.")


def flops_body(rows: list[dict[str, Any]], names: list[str]) -> str:
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
    return body + (f"\n\n- Profile on CPU / profile on meta, CPU time per repeat: {C.spread(now).fmt('.2f')} — the CPU "
                   "pass avoids importing sympy and torch._dynamo. `spfde flops` above includes pydantic, typer/rich "
                   "and the schedule solver on top of torch.")


def typos_body(rows: list[dict[str, Any]]) -> str:
    table = []
    for cmd in TYPOS:
        by = {side: {r["repeat"]: r for r in rows if r["arm"] == f"{cmd} ({side})"} for side in ("before", "now")}
        ratio = C.spread(by["now"][k]["cpu_seconds"] / by["before"][k]["cpu_seconds"]
                         for k in by["now"] if k in by["before"])
        cells = []
        for side in ("before", "now"):
            g = list(by[side].values())
            cells += [C.spread(r["cpu_seconds"] for r in g).fmt(".2f", unit=" s") if g else "-",
                      C.spread(r["wall_seconds"] for r in g).fmt(".2f", unit=" s") if g else "-",
                      (g[-1]["heavy_modules"] or "none") if g else "-"]
        table.append([f"`spfde {cmd}`", *cells, ratio.fmt(".3f") if by["before"] else "-"])
    return C.md_table(["command (exits 2)", "CPU before", "wall before", "heavy before", "CPU now", "wall now",
                       "heavy now", "CPU now / before (paired)"], table) + (
        "\n\n- CPU time is the measure: on a shared machine the wall time mostly waits for a core. Before, each typo "
        "was answered after importing the heavy modules listed; now none of them is loaded (cli/precheck.py).")

if __name__ == "__main__":
    sys.exit(main())
