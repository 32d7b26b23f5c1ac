"""``python -m spfde_search.tracking.screenshots`` (``make ui-screenshots``): the docs' screenshots of a real search.

It runs a small real search (the smoke space, ResNet-8 on 1,000 Fashion-MNIST images, 2 epochs) into a temporary
folder, serves it with ``spfde ui``, opens the two URLs ``spfde ui`` prints in headless Chromium (``browser.py``)
and writes ``docs/ui-runs.png`` (the trial runs table) and ``docs/ui-chart.png`` (the chart view's accuracy vs
training FLOPs scatter). The page checks here are the ones ``tests/tracking/test_ui_browser.py`` makes on its own
search in its temporary folder: every trial run a named row, the sampled parameters among the columns, every
trial a point of the scatter. The test suite never runs this command (it writes into the checkout).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .browser import TIMEOUT, Browser, painted

__all__ = ["SPFDE", "column_headers", "main", "scatter_traces", "serve", "wait_columns", "wait_trial_rows"]

SPFDE = [sys.executable, "-m", "spfde_search.cli"]
DOCS = Path(__file__).resolve().parents[2] / "docs"

# the runs table's column headers (ag-grid), as rendered
_HEADERS = "[...document.querySelectorAll('.ag-header-cell-text, [role=columnheader]')].map(e => e.textContent.trim())"
# a trial run is named for what it is and ends with its trial id (``mest s0.93 f0.20 y0.25 · c435e8cc``)
_NAMED = ("(ids => { const t = [...document.querySelectorAll('a')].map(a => a.textContent.trim());"
          " return ids.every(i => t.some(x => x === i || x.endsWith(' · ' + i))); })")
# every plotly scatter trace drawn on the page: its axis titles, points and the run names of its points
_SCATTERS = """(() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(gd => (gd.data || [])
    .filter(t => t.type === 'scatter' && t.mode === 'markers')
    .map(t => ({xtitle: String(gd.layout && gd.layout.xaxis && (gd.layout.xaxis.title && gd.layout.xaxis.title.text
                  || gd.layout.xaxis.title) || ''),
                ytitle: String(gd.layout && gd.layout.yaxis && (gd.layout.yaxis.title && gd.layout.yaxis.title.text
                  || gd.layout.yaxis.title) || ''),
                x: [...(t.x || [])], y: [...(t.y || [])], names: (t.customdata || []).map(c => String(c[1])),
                drawn: gd.querySelectorAll('.scatterlayer path.point').length}))))()"""


def wait_trial_rows(browser: Browser, ids: list[str], timeout: float = TIMEOUT) -> None:
    """Until every trial id names a row (a link) of the runs table."""
    browser.wait(f"{_NAMED}({json.dumps(ids)})", "every trial run as a named row", timeout)


def column_headers(browser: Browser) -> list[str]:
    return list(browser.js(_HEADERS) or [])


def wait_columns(browser: Browser, columns: list[str], timeout: float = TIMEOUT) -> list[str]:
    """Until every one of ``columns`` is a rendered column header; the headers."""
    return list(browser.wait(f"(() => {{ const h = {_HEADERS}; return {json.dumps(columns)}.every(c => "
                             "h.includes(c)) ? h : null; })()", f"the columns {columns}", timeout))


def scatter_traces(browser: Browser, points: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """Until a scatter chart has drawn ``points`` points (a trial with no training FLOPs or accuracy is none);
    every scatter trace on the page (``_SCATTERS``)."""
    return list(browser.wait(f"(() => {{ const s = {_SCATTERS}; return s.some(t => t.drawn >= {points} && "
                             f"t.x.length >= {points}) ? s : null; }})()", f"a scatter chart of {points} points",
                             timeout))


def serve(uri: str, name: str, cwd: Path, timeout: float = 300.0) -> tuple[subprocess.Popen, dict[str, str]]:
    """``spfde ui NAME`` on a free port; the process and the URLs it printed (``runs``, ``chart``, ``parent``,
    ``front``). The caller stops the process (its own session: ``os.killpg``)."""
    proc = subprocess.Popen([*SPFDE, "ui", name, "--tracking-uri", uri, "--port", "0"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    patterns = {"runs": rf"^trial runs of search {re.escape(name)}: (\S+)",
                "chart": rf"^accuracy vs training FLOPs of search {re.escape(name)}: (\S+)",
                "parent": rf"^search {re.escape(name)}: (\S+)",
                "front": rf"^frontier plot of search {re.escape(name)}: (\S+)"}
    urls: dict[str, str] = {}
    lines: list[str] = []
    deadline = time.monotonic() + timeout  # `spfde ui` itself waits up to 90 s for the server
    while len(urls) < len(patterns) and time.monotonic() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line)
        for key, pattern in patterns.items():
            if m := re.search(pattern, line):
                urls[key] = m.group(1)
    if len(urls) < len(patterns):
        _stop(proc)
        raise RuntimeError("spfde ui printed no URLs:\n" + "".join(lines))
    return proc, urls


def _stop(proc: subprocess.Popen) -> None:
    import os
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _search(root: Path, name: str, uri: str, trials: int) -> list[str]:
    """The small real search; its trial ids."""
    cmd = [*SPFDE, "search", "--space", "smoke", "--num-samples", str(trials), "--max-concurrent", "2",
           "--name", name, "--storage-path", str(root / "runs"), "--tracking-uri", uri, "--quiet",
           "--set", "data.train_subset=1000", "--set", "data.test_subset=500", "--set", "train.epochs=2",
           "--set", "train.update_interval=1"]
    print(f"running a {trials}-trial search into {root} ...", file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=root, check=True)
    from mlflow import MlflowClient

    runs = MlflowClient(uri).search_runs(
        [e.experiment_id for e in MlflowClient(uri).search_experiments()],
        filter_string=f"tags.`spfde.search` = '{name}' and tags.`spfde.role` = 'trial'")
    return [str(r.data.tags["spfde.trial_id"]) for r in runs]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spfde_search.tracking.screenshots", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DOCS, help="folder for ui-runs.png and ui-chart.png (default: docs/)")
    ap.add_argument("--trials", type=int, default=6, help="trials of the search (default: 6)")
    ap.add_argument("--keep", action="store_true", help="keep the search's temporary folder (its path is printed)")
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="spfde-ui-screenshots-")
    root, name = Path(tmp), "ui-demo"
    uri = f"sqlite:///{root / 'mlflow.db'}"
    ids = _search(root, name, uri, args.trials)
    proc, urls = serve(uri, name, root)
    try:
        browser = Browser(size=(1920, 1000))  # ag-grid renders only the columns in view
        try:
            browser.goto(urls["runs"])
            wait_trial_rows(browser, ids)
            # MLflow 3.17's assistant panel takes a quarter of the page: closed for the picture (if it is open)
            browser.js("(b => b && b.click())(document.querySelector("
                       "'[data-component-id*=\"assistant.chat_panel.close\"]'))")
            wait_columns(browser, ["sparsity.ratio", "val_accuracy", "train_flops", "pareto"])
            painted(browser, args.out / "ui-runs.png", 0.02)
            browser.goto(urls["chart"])
            scatter_traces(browser, len(ids))
            painted(browser, args.out / "ui-chart.png", 0.02)
        finally:
            browser.close()
    finally:
        _stop(proc)
        if args.keep:
            print(f"the search and its MLflow store: {root}", file=sys.stderr)
        else:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    print(f"wrote {args.out / 'ui-runs.png'} and {args.out / 'ui-chart.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
