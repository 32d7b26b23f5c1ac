"""The trainer knows nothing of Ray or MLflow (STYLE.md): importing and running the core pulls in neither."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_neither_ray_nor_mlflow() -> None:
    code = (
        "import sys\n"
        "import spfde_search.trainer, spfde_search.flops, spfde_search.config, spfde_search.data\n"
        "import spfde_search.sparsity, spfde_search.freezing, spfde_search.sieving, spfde_search.pareto\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow', 'optuna'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"core modules imported: {out}"


def test_cli_flops_does_not_import_ray_or_mlflow() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from spfde_search.cli import app\n"
        "r = CliRunner().invoke(app, ['flops', '--set', 'model.name=resnet8'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"`spfde flops` imported: {out}"
