"""``scripts/setup.sh`` keeps apt's output in ``.venv/setup.log`` as it does pip's: a line or two on the terminal,
the log's tail on failure. Run on a copy, with stand-in ``apt-get`` / ``sudo`` / ``python`` on a bare PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[1] / "scripts" / "setup.sh"


def _stub(path: Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


def _run(tmp_path: Path, apt_fails: bool) -> subprocess.CompletedProcess:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(SETUP, repo / "scripts" / "setup.sh")
    (repo / ".venv" / "bin").mkdir(parents=True)
    _stub(repo / ".venv" / "bin" / "python", "echo 'torch 0, ray 0, optuna 0, mlflow 0'\n")
    (repo / ".venv" / ".spfde-installed").touch()  # pip's step is done (and no pyproject.toml is newer)
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("dirname", "id", "tail", "mkdir", "env"):
        found = shutil.which(tool)
        assert found, tool
        (bin_ / tool).symlink_to(found)
    _stub(bin_ / "sudo", 'exec "$@"\n')
    _stub(bin_ / "apt-get", 'for i in {1..80}; do echo "Get:$i http://deb.example apt progress line $i"; done\n'
          + ("echo E: no such package >&2; exit 100\n" if apt_fails else "exit 0\n"))
    # no chromium on this PATH: the script installs it with apt (the data set check may or may not ask too)
    env = {"PATH": str(bin_), "HOME": str(tmp_path)}
    return subprocess.run(["/bin/bash", str(repo / "scripts" / "setup.sh")], capture_output=True, text=True,
                          env=env, timeout=60, cwd=tmp_path)


@pytest.mark.skipif(not Path("/bin/bash").exists(), reason="needs bash")
def test_apt_output_goes_to_the_log_and_is_shown_only_on_failure(tmp_path):
    ok = _run(tmp_path, apt_fails=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    shown = (ok.stdout + ok.stderr).splitlines()
    assert "apt progress" not in ok.stdout + ok.stderr and len(shown) <= 3, shown
    assert shown[0].startswith("[setup] apt-get install") and "chromium" in shown[0]
    log = (tmp_path / "repo" / ".venv" / "setup.log").read_text()
    assert log.count("apt progress line") == 160  # update and install, 80 lines each
    shutil.rmtree(tmp_path / "repo")
    shutil.rmtree(tmp_path / "bin")
    bad = _run(tmp_path, apt_fails=True)
    assert bad.returncode != 0
    assert "[setup] failed: apt-get update" in bad.stderr and "E: no such package" in bad.stderr
    assert "apt progress line 80" in bad.stderr  # the log's tail, shown on failure
    assert "apt progress line 1\n" not in bad.stdout + bad.stderr  # only the tail
    assert os.path.exists(tmp_path / "repo" / ".venv" / "setup.log")
