"""``spfde ui``: the MLflow UI on the project's SQLite store, opened in headless Chromium at the printed parent-run
URL; the page must list the search's runs. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import html
import re
import subprocess
import time

import pytest
from test_tracking_support import ARTIFACTS, REPO, SPFDE, chromium, free_port, make_records, stop_group

from spfde_search.tracking import Tracker

pytestmark = [pytest.mark.mlflow, pytest.mark.browser, pytest.mark.slow]


def _text(dom: str) -> str:
    dom = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))


def test_spfde_ui_serves_the_parent_run_with_its_trials(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recs = make_records()
    t = Tracker(uri, "spfde-resnet8-fashion_mnist", "ui-search")
    t.sync(recs, {"name": "ui-search", "space": "smoke", "sampler": "tpe", "seed": 0, "num_samples": len(recs)},
           close=True)
    port = free_port()
    proc = subprocess.Popen([*SPFDE, "ui", "ui-search", "--tracking-uri", uri, "--port", str(port)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        url, lines, deadline = None, [], time.monotonic() + 150
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                if proc.poll() is not None:
                    break
                continue
            lines.append(line)
            m = re.search(r"(http://127\.0\.0\.1:\d+/#/experiments/\d+/runs/[0-9a-f]+)", line)
            if m:
                url = m.group(1)
        assert url is not None, "".join(lines)
        assert url.startswith(f"http://127.0.0.1:{port}/") and url.endswith(t.parent_run_id)
        dom = chromium(url, screenshot=ARTIFACTS / "ui_parent_run.png")
        text = _text(dom)
        assert "ui-search" in text
        assert "Child runs" in text, text[:2000]
        for r in recs:  # every trial run is listed on the parent run's page
            assert re.search(rf"\b{r.trial_id}\b", text), r.trial_id
        assert "spfde.search" in text and "search.sampler" in text
        assert (ARTIFACTS / "ui_parent_run.png").stat().st_size > 10_000
    finally:
        stop_group(proc)
    assert proc.returncode is not None
