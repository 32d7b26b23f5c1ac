"""Docs that stand alone (issue 33): nothing in a clone cites a file only the authors' machines have, and the
pages agree with the tests on the numbers they quote.

The method and its numbers live in docs/method.md, the plain-PyTorch reference measurements in docs/anchors.md;
both are in the repository, so every citation can point there.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_layering import AIM_MODULE_LINES, MAX_MODULE_LINES

ROOT = Path(__file__).resolve().parent.parent
# The check, verbatim. Written with escapes, so this file does not match its own pattern.
OUTSIDE_NOTES = r"\.\./shared|SPFDE\.md|ANCHORS\.md"
WHERE = ["README.md", "docs/", "spfde_search/", "search_spaces/", "trainables/", "tests/", "benchmarks/"]


@pytest.mark.skipif(shutil.which("grep") is None, reason="needs grep")
def test_nothing_cites_notes_outside_the_repository() -> None:
    out = subprocess.run(["grep", "-rnE", OUTSIDE_NOTES, *WHERE], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 1, f"cite docs/method.md or docs/anchors.md instead:\n{out.stdout}{out.stderr}"


def test_the_pattern_finds_what_it_should(tmp_path: Path) -> None:
    """The grep above must be able to fail: each form it hunts is caught in a throw-away file."""
    dot = "."  # the samples are assembled, so this file does not hold them literally
    for line in (f"see {dot}{dot}/shared/notes", f"(SPFDE{dot}md §3)", f"ANCHORS{dot}md in the notes"):
        (tmp_path / "x.md").write_text(line + "\n")
        out = subprocess.run(["grep", "-rnE", OUTSIDE_NOTES, str(tmp_path)], capture_output=True, text=True)
        assert out.returncode == 0, line


def test_cited_method_sections_exist() -> None:
    """Code cites ``docs/method.md §N``; every such N is a heading of that page."""
    page = (ROOT / "docs" / "method.md").read_text()
    headed = set(re.findall(r"^### §(\d+) ", page, flags=re.M))
    cited: dict[str, list[str]] = {}
    for folder in ("spfde_search", "search_spaces", "trainables", "tests", "benchmarks", "docs", "configs"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".py", ".md", ".yaml"}:
                for n in re.findall(r"docs/method\.md §(\d+)", path.read_text()):
                    cited.setdefault(n, []).append(str(path.relative_to(ROOT)))
    assert cited, "nothing cites docs/method.md by section: this test would prove nothing"
    missing = {n: where for n, where in cited.items() if n not in headed}
    assert not missing, f"docs/method.md has no section for {missing}"
    assert (ROOT / "docs" / "anchors.md").is_file()


@pytest.mark.parametrize("page", ["README.md", "docs/architecture.md"])
def test_pages_quote_the_module_size_limits_the_test_applies(page: str) -> None:
    text = " ".join((ROOT / page).read_text().split())  # line breaks as spaces
    assert f"~{AIM_MODULE_LINES} lines" in text and f"past {MAX_MODULE_LINES}" in text, page
