"""The session guard in ``conftest.py``: what ``checkout_state`` sees in a throw-away git checkout."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import checkout_state


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"})


def test_guard_sees_new_and_rewritten_ignored_files_but_not_caches(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / ".gitignore").write_text("mlflow.db\n/runs/\n__pycache__/\n")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "init")
    (repo / "mlflow.db").write_bytes(b"the user's own store")
    before = checkout_state(repo)
    assert before is not None and set(before) == {"mlflow.db"}
    (repo / "__pycache__").mkdir()
    (repo / "__pycache__" / "a.pyc").write_bytes(b"x")
    (repo / "a.py").write_text("x = 2\n")  # a tracked file edited meanwhile: not the guard's business
    assert checkout_state(repo) == before
    (repo / "runs" / "search").mkdir(parents=True)
    (repo / "runs" / "search" / "t.json").write_text("{}")
    (repo / "mlflow.db").write_bytes(b"the user's own store + a test search")
    after = checkout_state(repo)
    assert after is not None
    assert sorted(p for p, v in after.items() if before.get(p) != v) == ["mlflow.db", "runs/"]
    (tmp_path / "plain").mkdir()
    assert checkout_state(tmp_path / "plain") is None  # not a git checkout: nothing to guard
