"""The layering of issue 10, checked two ways: statically (every ``import`` in the source, parsed with ``ast``,
including imports inside functions) and at run time (what importing the core actually loads).

- ``spfde_search/method/``, ``spfde_search/data/``, ``spfde_search/models/``, ``trainer.py``, ``config.py``,
  ``user_code.py`` and ``choices.py`` know nothing of Ray, Optuna or MLflow (docs/architecture.md);
- ``spfde_search/search/`` reaches the MLflow adapter only through the ``spfde_search.tracking`` package's public
  names, never its modules;
- no module of ``spfde_search``, ``search_spaces`` or ``trainables`` imports a private name (``_x``) or a private
  module from outside its own package (``trainables`` once reached into ``spfde_search.search.settings._fs``: the
  storage helpers now live in the public ``spfde_search.storage``, below both);
- no import cycles among those modules, counting imports inside functions and the packages above each imported
  module (Python runs their ``__init__`` first): ``tracking/sync.py`` and ``tracking/tracker.py`` once imported
  each other, and ``trainables`` -> ``spfde_search.search`` -> ``trainables`` was dodged with a lazy import;
- no module of the package grows past ~500 lines (a split is due then; the test fails past ``MAX_MODULE_LINES``).
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "spfde_search"
HEAVY = {"ray", "optuna", "mlflow"}
OURS = ("spfde_search", "search_spaces", "trainables")


def heavy_modules_after(code: str, roots: tuple[str, ...]) -> str:
    """Run ``code`` in a fresh interpreter; return the loaded modules under ``roots``, comma-separated."""
    probe = code + f"\nprint(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {roots!r})))\n"
    out = subprocess.run([sys.executable, "-c", "import sys\n" + probe], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def module_name(path: Path, root: Path = PKG.parent) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path = PKG.parent) -> list[tuple[str, list[str], int]]:
    """(absolute module, imported names, line) for every import statement of a file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    mod = module_name(path, root)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: list[tuple[str, list[str], int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, [a.name for a in node.names], node.lineno))
    return out


def our_modules(root: Path = PKG.parent, packages: tuple[str, ...] = OURS) -> dict[str, Path]:
    """Dotted name -> file of every module of our packages under ``root``."""
    return {module_name(p, root): p for d in packages for p in sorted((root / d).rglob("*.py"))}


def _package_of(mod: str, mods: dict[str, Path]) -> str:
    return mod if mods[mod].name == "__init__.py" else mod.rpartition(".")[0]


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def _longest_known(target: str, mods: dict[str, Path]) -> str | None:
    parts = target.split(".")
    while parts and ".".join(parts) not in mods:
        parts.pop()
    return ".".join(parts) or None


def loaded_by(target: str, names: list[str], mods: dict[str, Path]) -> set[str]:
    """Our modules an import statement loads: the imported module (or the submodules named), and every package
    above them, whose ``__init__`` Python runs first."""
    base = _longest_known(target, mods)
    if base is None:
        return set()
    subs = {f"{base}.{n}" for n in names if f"{base}.{n}" in mods}
    hit = subs | ({base} if not names or len(subs) < len(names) else set())
    out: set[str] = set()
    for m in hit:
        parts = m.split(".")
        out |= {".".join(parts[:k]) for k in range(1, len(parts) + 1)} & set(mods)
    return out


def import_graph(root: Path = PKG.parent, packages: tuple[str, ...] = OURS) -> dict[str, set[str]]:
    """Module -> our modules it imports (anywhere in the file). A module's own enclosing packages are left out:
    they are already being imported when it runs (a package's ``__init__`` importing its submodules is normal)."""
    mods = our_modules(root, packages)
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        parts = mod.split(".")
        own = {".".join(parts[:k]) for k in range(1, len(parts) + 1)}
        graph[mod] = set()
        for target, names, _ in imports(path, root):
            graph[mod] |= loaded_by(target, names, mods) - own
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def private_cross_package_imports(root: Path = PKG.parent, packages: tuple[str, ...] = OURS) -> list[str]:
    """``file:line imports ...`` for every private name or private module imported from another package."""
    mods = our_modules(root, packages)
    bad = []
    for mod, path in mods.items():
        for target, names, ln in imports(path, root):
            base = _longest_known(target, mods)
            if base is None or _package_of(base, mods) == _package_of(mod, mods):
                continue
            where = f"{path.relative_to(root)}:{ln}"
            if any(_is_private(p) for p in target.split(".")):
                bad.append(f"{where} imports from the private module {target}")
            elif private := [n for n in names if _is_private(n)]:
                bad.append(f"{where} imports {', '.join(private)} from {target}")
    return bad


def pure_files() -> list[Path]:
    core = [p for d in ("method", "data", "models") for p in sorted((PKG / d).rglob("*.py"))]
    return core + [PKG / "trainer.py", PKG / "config.py", PKG / "user_code.py", PKG / "choices.py"]


def test_the_checker_sees_relative_lazy_and_aliased_imports(tmp_path: Path) -> None:
    """The static check would catch what it is meant to catch (a check that sees nothing passes vacuously)."""
    f = tmp_path / "spfde_search" / "search" / "probe.py"
    f.parent.mkdir(parents=True)
    f.write_text("def f():\n    from ..tracking.store import Store\n    import ray.tune as t\n    return Store, t\n")
    got = {(m, tuple(n)) for m, n, _ in imports(f, tmp_path)}
    assert ("spfde_search.tracking.store", ("Store",)) in got and ("ray.tune", ()) in got


def test_the_cycle_and_privacy_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """A lazy two-module cycle, a cycle through a package's ``__init__``, and a private reach across packages."""
    files = {
        "spfde_search/__init__.py": "",
        "spfde_search/tracking/__init__.py": "from .tracker import Tracker\n",
        "spfde_search/tracking/tracker.py": "class Tracker:\n    def sync(self):\n        from .sync import f\n",
        "spfde_search/tracking/sync.py": "def f():\n    from .tracker import Tracker\n    return Tracker\n",
        "spfde_search/search/__init__.py": "from trainables import t\n",
        "spfde_search/search/settings.py": "def _fs():\n    pass\n",
        "trainables/__init__.py": "from ._state import t\n",
        "trainables/_state.py": "def t():\n    from spfde_search.search.settings import _fs\n",
        "search_spaces/__init__.py": "from ._base import _probe\n",
        "search_spaces/_base.py": "def _probe():\n    pass\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    cycles = import_cycles(import_graph(tmp_path))
    assert ["spfde_search.tracking.sync", "spfde_search.tracking.tracker"] in cycles
    assert any({"trainables._state", "spfde_search.search"} <= set(c) for c in cycles)  # via search/__init__
    bad = private_cross_package_imports(tmp_path)
    assert bad == ["trainables/_state.py:2 imports _fs from spfde_search.search.settings"]  # its own package: fine


def test_no_private_imports_across_packages() -> None:
    bad = private_cross_package_imports()
    assert not bad, "import the public name (re-export it, or move the helper below both):\n" + "\n".join(bad)


# distribution name -> import name, where they differ
_IMPORT_NAME = {"pyyaml": "yaml"}
# declared for a library that imports them only lazily, with who needs them (pyproject.toml says why)
_NEEDED_BY = {"scipy": "optuna.samplers.GPSampler", "greenlet": "optuna.samplers.GPSampler"}


def test_every_declared_dependency_is_imported() -> None:
    """pyproject.toml's dependencies are all used by our packages (plotly once sat there unused: the frontier's
    HTML page is hand-written, 70 KB instead of plotly's 4.6 MB)."""
    import re

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    deps = tomllib.loads((PKG.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower() for d in deps}
    used = {m.split(".")[0] for p in our_modules().values() for m, _, _ in imports(p)}
    unused = sorted(n for n in names - _NEEDED_BY.keys() if _IMPORT_NAME.get(n, n.replace("-", "_")) not in used)
    assert _NEEDED_BY.keys() <= names, "a lazily needed dependency is no longer declared: drop it from _NEEDED_BY"
    for user in set(_NEEDED_BY.values()):  # the library that needs them is still there
        module, attr = user.rsplit(".", 1)
        assert hasattr(importlib.import_module(module), attr), user
    assert not unused, f"declared in pyproject.toml but imported nowhere: {unused}"


def test_no_import_cycles() -> None:
    cycles = import_cycles(import_graph())
    assert not cycles, f"modules that import each other (directly, lazily or through a package): {cycles}"


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(PKG)))
def test_method_data_trainer_and_config_import_no_ray_optuna_or_mlflow(path: Path) -> None:
    bad = [f"line {ln}: {m}" for m, _, ln in imports(path) if m.split(".")[0] in HEAVY]
    assert not bad, f"{path.relative_to(PKG)} imports {bad}"


def test_search_reaches_tracking_only_through_its_package_interface() -> None:
    import spfde_search.tracking as tracking

    public = set(tracking.__all__)
    bad = []
    for path in sorted((PKG / "search").rglob("*.py")):
        for m, names, ln in imports(path):
            where = f"{path.relative_to(PKG)}:{ln}"
            if m.startswith("spfde_search.tracking."):
                bad.append(f"{where} imports the module {m}")
            elif m == "spfde_search.tracking":
                bad += [f"{where} imports {n}, not in tracking.__all__" for n in names if n not in public]
    assert not bad, "\n".join(bad)


# Modules over the limit that issue 10 did not split (reported to the lead), each with the reason.
KNOWN_LARGE: dict[str, str] = {}
# ~500 lines is the aim README.md and docs/architecture.md state; this is where the test fails (tests/test_docs.py
# checks that both pages quote these two numbers).
AIM_MODULE_LINES = 500
MAX_MODULE_LINES = 550


def test_no_module_is_over_about_500_lines() -> None:
    sizes = {str(p.relative_to(PKG)): len(p.read_text().splitlines()) for p in PKG.rglob("*.py")}
    sizes = {k: v for k, v in sizes.items() if k not in KNOWN_LARGE}
    big = {k: v for k, v in sizes.items() if v > MAX_MODULE_LINES}
    assert not big, f"split these by responsibility (docs/architecture.md): {big}"


def test_core_imports_neither_ray_nor_mlflow() -> None:
    code = (
        "import spfde_search.trainer, spfde_search.method.flops, spfde_search.config, spfde_search.data\n"
        "import spfde_search.method.sparsity, spfde_search.method.freezing, spfde_search.method.sieving, spfde_search.pareto\n"
    )
    bad = heavy_modules_after(code, ("ray", "mlflow", "optuna"))
    assert bad == "", f"core modules imported: {bad}"


def test_cli_flops_does_not_import_ray_or_mlflow() -> None:
    code = (
        "from typer.testing import CliRunner\n"
        "from spfde_search.cli import app\n"
        "r = CliRunner().invoke(app, ['flops', '--set', 'model.name=resnet8'])\n"
        "assert r.exit_code == 0, r.output\n"
    )
    # sympy comes with torch._dynamo and the meta device's shape checks: the prediction needs neither (~1.5 s)
    bad = heavy_modules_after(code, ("ray", "mlflow", "sympy"))
    assert bad == "", f"`spfde flops` imported: {bad}"
