"""Typos answer before the heavy imports (issue 24 item 6): each bad name or flag fails with one ``error:`` line
while torch, Ray, MLflow and Optuna are still not loaded (checked in a fresh interpreter), and the name lists
checked up front agree with the registry and the settings model they stand for."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import get_args

import pytest
import test_tracking_support as support

HEAVY = ("torch", "ray", "mlflow", "optuna")
synced_store = support.synced_store

_PROBE = """
import json, sys
sys.argv = ["spfde", *json.loads(sys.argv[1])]
from spfde_search.cli import main
code = 0
try:
    main()
except SystemExit as e:
    code = e.code
print("HEAVY " + json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
sys.exit(code)
"""


def run_cli(args: list[str], cwd) -> tuple[int, list[str], list[str]]:
    """(exit code, stderr lines, heavy modules loaded when the command ended) in a fresh interpreter."""
    r = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=HEAVY), json.dumps(args)], cwd=cwd,
                       capture_output=True, text=True, timeout=300)
    heavy = [ln for ln in r.stdout.splitlines() if ln.startswith("HEAVY ")]
    assert heavy, r.stdout + r.stderr
    return r.returncode, [ln for ln in r.stderr.splitlines() if ln.strip()], json.loads(heavy[-1][6:])


@pytest.mark.parametrize("args, match", [
    (["search", "--space", "nosuch"], "unknown search space 'nosuch'; built-in spaces: joint, budget, paper, smoke"),
    (["search", "--space", "missing.yaml"], "space file 'missing.yaml' does not exist"),
    (["search", "--sampler", "tpee"], "--sampler 'tpee' is not one of auto, tpe, nsga2, gp, random; did you mean 'tpe'?"),
    (["search", "--space", "budgett"], "unknown search space 'budgett'; did you mean 'budget'? built-in spaces:"),
    (["search", "--early-stopping", "hyperband"], "--early-stopping 'hyperband' is not one of none, asha, moasha"),
    (["search", "--early-stopping", "mosha"], "is not one of none, asha, moasha; did you mean 'moasha'?"),
    (["search", "--initial", "papr"], "--initial 'papr' is not one of paper"),
    (["pareto", "nosuch"], "no MLflow store at"),
    (["export", "nosuch"], "no MLflow store at"),
])
def test_typos_fail_before_any_heavy_import(tmp_path, args, match):
    code, err, heavy = run_cli(args, tmp_path)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and match in err[0], err
    assert heavy == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


@pytest.mark.mlflow
def test_unknown_search_in_a_store_fails_before_mlflow_loads(synced_store, tmp_path):
    code, err, heavy = run_cli(["pareto", "s2", "--tracking-uri", synced_store["uri"]], tmp_path)
    assert code == 2 and len(err) == 1 and "no search named 's2'" in err[0] and "recorded: s1" in err[0], err
    assert heavy == []
    code, err, heavy = run_cli(["export", "s2", "--tracking-uri", synced_store["uri"], "--out", str(tmp_path / "o")],
                               tmp_path)
    assert code == 2 and "no search named 's2'" in err[0] and heavy == []


@pytest.mark.mlflow
def test_a_recorded_search_passes_the_precheck(synced_store):
    from spfde_search.cli.precheck import check_recorded_search

    check_recorded_search(synced_store["uri"], "s1")  # known: no error, MLflow answers the rest
    check_recorded_search(synced_store["uri"], None)


def test_the_lists_checked_up_front_are_the_registry_and_the_settings():
    from search_spaces import SPACES
    from spfde_search.choices import BUILTIN_SPACES, EARLY_STOPPING, INITIAL_POINT_SETS, SAMPLERS
    from spfde_search.search import SearchSettings

    assert set(SPACES.names()) == set(BUILTIN_SPACES)
    fields = SearchSettings.model_fields
    assert get_args(fields["sampler"].annotation) == SAMPLERS
    assert get_args(fields["early_stopping"].annotation) == EARLY_STOPPING
    assert get_args(get_args(fields["initial"].annotation)[0]) == INITIAL_POINT_SETS


def test_help_shows_the_choices_in_the_metavar():
    """``--sampler`` and ``--early-stopping`` say their choices where ``--space`` says NAME|FILE, not ``<str>``."""
    from typer.testing import CliRunner

    from spfde_search.choices import EARLY_STOPPING, SAMPLERS
    from spfde_search.cli import app

    out = CliRunner().invoke(app, ["search", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"}).output
    for flag, choices in (("--sampler", SAMPLERS), ("--early-stopping", EARLY_STOPPING)):
        line = next(ln for ln in out.splitlines() if flag in ln)
        assert "|".join(choices) in line and "<str>" not in line, line


def test_the_model_and_data_names_the_config_accepts_are_the_registries():
    """choices.py names the built-in models and data sets without importing torch; they must be what the
    MODELS / DATASETS registries hold (imagefolder scans a folder and is not a registry entry)."""
    from spfde_search.choices import BUILTIN_DATA, TORCHVISION_MODELS, name_problem
    from spfde_search.data import DATASETS
    from spfde_search.models import MODELS

    assert set(MODELS.names()) == set(TORCHVISION_MODELS)
    assert set(DATASETS.names()) | {"imagefolder"} == set(BUILTIN_DATA)
    assert all(name_problem("model.name", n) is None for n in MODELS.names())
    assert name_problem("model.name", "resnet9") and name_problem("data.name", "cifar11")
