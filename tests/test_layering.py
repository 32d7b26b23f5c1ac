"""The trainer knows nothing of Ray or MLflow (STYLE.md): importing and running the core pulls in neither."""

from __future__ import annotations

import subprocess
import sys


def heavy_modules_after(code: str, roots: tuple[str, ...]) -> str:
    """Run ``code`` in a fresh interpreter; return the loaded modules under ``roots``, comma-separated."""
    probe = code + f"\nprint(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {roots!r})))\n"
    out = subprocess.run([sys.executable, "-c", "import sys\n" + probe], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def test_core_imports_neither_ray_nor_mlflow() -> None:
    code = (
        "import spfde_search.trainer, spfde_search.flops, spfde_search.config, spfde_search.data\n"
        "import spfde_search.sparsity, spfde_search.freezing, spfde_search.sieving, spfde_search.pareto\n"
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
    bad = heavy_modules_after(code, ("ray", "mlflow"))
    assert bad == "", f"`spfde flops` imported: {bad}"
