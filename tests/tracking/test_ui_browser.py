"""``spfde ui`` in headless Chromium: the printed experiment URL opens the trial runs table (MLflow 3's
model-training view, not the GenAI overview), the parent run lists its trials, and ``pareto_front.html``
renders inside MLflow's artifact viewer. Screenshots go to ``$SPFDE_TEST_ARTIFACTS`` (default ``/tmp/spfde-test-artifacts/``; look at them).

Chromium is driven over its DevTools pipe (``--remote-debugging-pipe``: JSON messages on fds 3/4), so a test can
wait on a condition in the page, click, and capture a screenshot without a websocket library or a fixed sleep.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_tracking_support import ARTIFACTS, SPFDE, free_port, make_records, stop_group

from spfde_search.tracking import Tracker

pytestmark = [pytest.mark.mlflow, pytest.mark.browser, pytest.mark.slow]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe"]
TIMEOUT = 240.0  # generous: a busy 2-core machine (load 15 seen) renders MLflow's UI slowly


class Browser:
    """One headless Chromium page, commanded over the DevTools pipe."""

    def __init__(self, size: tuple[int, int] = (1500, 1000)) -> None:
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if exe is None:
            pytest.skip("chromium is not installed")
        self.profile = tempfile.TemporaryDirectory()
        to_chrome_r, self._to_chrome_w = os.pipe()
        self._from_chrome_r, from_chrome_w = os.pipe()

        def fds() -> None:  # the child reads commands on fd 3 and writes answers on fd 4
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={self.profile.name}",
                                      f"--window-size={size[0]},{size[1]}", "about:blank"],
                                     preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self._iframe_sessions: dict[str, str] = {}
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.call("Page.enable", page=True)
        self.call("Runtime.enable", page=True)
        # out-of-process iframes (MLflow's sandboxed artifact viewer) become sessions of their own
        self.call("Target.setAutoAttach", page=True, autoAttach=True, waitForDebuggerOnStart=False, flatten=True)

    def _message(self) -> dict[str, Any]:
        while b"\0" not in self._buf:
            chunk = os.read(self._from_chrome_r, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, page: bool = False, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if page or session:
            msg["sessionId"] = session or self.session
        os.write(self._to_chrome_w, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._message()
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return dict(m.get("result", {}))
            if m.get("method") == "Target.attachedToTarget":
                self.events.append(m)

    def goto(self, url: str) -> None:
        self.call("Page.navigate", page=True, url=url)

    def js(self, expression: str) -> Any:
        r = self.call("Runtime.evaluate", page=True, expression=expression, returnByValue=True, awaitPromise=True)
        return r.get("result", {}).get("value")

    def wait(self, expression: str, what: str, timeout: float = TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; page text: "
                             f"{(self.js('document.body && document.body.innerText') or '')[:1500]}")

    def text(self) -> str:
        return str(self.js("document.body.innerText") or "")

    def screenshot(self, path: Path, clip: dict[str, float] | None = None) -> bytes:
        params: dict[str, Any] = {"format": "png"}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        data = base64.b64decode(self.call("Page.captureScreenshot", page=True, **params)["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data

    def iframe_texts(self) -> list[str]:
        """``document.body.innerText`` of every iframe in the page, wherever Chromium put it.

        An out-of-process iframe (MLflow's sandboxed artifact viewer, usually) is a target of its own: it is
        found with ``Target.getTargets`` on every call, not only from the auto-attach events, so an event that
        came while nothing was listening cannot hide it. An in-process iframe is reached through an isolated
        world in its frame, which a sandboxed frame's opaque origin does not block."""
        for t in self.call("Target.getTargets")["targetInfos"]:
            if t.get("type") == "iframe" and t["targetId"] not in self._iframe_sessions:
                try:
                    self._iframe_sessions[t["targetId"]] = self.call(
                        "Target.attachToTarget", targetId=t["targetId"], flatten=True)["sessionId"]
                except RuntimeError:  # gone between the two calls
                    continue
        for ev in self.events:
            info = ev["params"]["targetInfo"]
            if info.get("type") == "iframe":
                self._iframe_sessions.setdefault(info["targetId"], ev["params"]["sessionId"])
        out = []
        for session in list(self._iframe_sessions.values()):
            try:
                r = self.call("Runtime.evaluate", session=session, returnByValue=True,
                              expression="document.body ? document.body.innerText : ''")
            except RuntimeError:  # detached (the viewer re-rendered)
                continue
            out.append(str(r.get("result", {}).get("value") or ""))
        for frame_id in self._child_frames(self.call("Page.getFrameTree", page=True)["frameTree"]):
            try:
                ctx = self.call("Page.createIsolatedWorld", page=True, frameId=frame_id)["executionContextId"]
                r = self.call("Runtime.evaluate", page=True, contextId=ctx, returnByValue=True,
                              expression="document.body ? document.body.innerText : ''")
            except RuntimeError:  # the frame navigated away meanwhile
                continue
            out.append(str(r.get("result", {}).get("value") or ""))
        return out

    def frames(self) -> str:
        """What a failure message needs: the page's targets and frames, by type and URL."""
        targets = [f"{t['type']}:{t.get('url', '')[:80]}" for t in self.call("Target.getTargets")["targetInfos"]]

        def walk(node: dict[str, Any], depth: int = 0) -> list[str]:
            rows = ["  " * depth + node["frame"].get("url", "")[:80]]
            for child in node.get("childFrames", []):
                rows += walk(child, depth + 1)
            return rows

        return f"targets {targets}; frames {walk(self.call('Page.getFrameTree', page=True)['frameTree'])}"

    @staticmethod
    def _child_frames(node: dict[str, Any]) -> list[str]:
        ids = []
        for child in node.get("childFrames", []):
            ids.append(child["frame"]["id"])
            ids += Browser._child_frames(child)
        return ids

    def close(self) -> None:
        try:
            self.call("Browser.close")
            self.proc.wait(15)
        except Exception:  # noqa: BLE001 - already gone
            self.proc.kill()
        os.close(self._to_chrome_w)
        os.close(self._from_chrome_r)
        self.profile.cleanup()


def _non_blank(png: bytes) -> float:
    """Share of pixels that differ from the most common colour (0: a blank page)."""
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(io.BytesIO(png), format="png")[..., :3]
    flat = (img.reshape(-1, 3) * 255).astype(np.uint8)
    _, counts = np.unique(flat, axis=0, return_counts=True)
    return float(1.0 - counts.max() / counts.sum())


def _painted(browser: Any, path: Path, share: float, clip: Callable[[], dict[str, float] | None] | None = None) -> float:
    """Screenshot until more than ``share`` of the pixels differ from the most common colour (a page's text is in
    the DOM before it paints: once seen blank on a loaded CI machine); the last share seen, kept at ``path``."""
    shown, deadline = 0.0, time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        shown = _non_blank(browser.screenshot(path, clip=clip() if clip is not None else None))
        if shown > share:
            break
        time.sleep(0.5)
    return shown


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A synced search 'ui-search' and `spfde ui` serving its store; the URLs it printed."""
    root = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    recs = make_records()
    t = Tracker(uri, "spfde-resnet8-fashion_mnist", "ui-search")
    t.sync(recs, {"name": "ui-search", "space": "smoke", "sampler": "tpe", "seed": 0, "num_samples": len(recs),
                  "base_config": recs[0].config, "flops_budget_absolute": 4e11, "dense_train_flops": 1e12},
           close=True)
    port = free_port()
    proc = subprocess.Popen([*SPFDE, "ui", "--tracking-uri", uri, "--port", str(port)], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        urls: dict[str, str] = {}
        lines: list[str] = []
        deadline = time.monotonic() + 300  # `spfde ui` itself waits up to 90 s for the server
        while "front" not in urls and time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                if proc.poll() is not None:
                    break
                continue
            lines.append(line)
            if m := re.search(r"trial runs of search ui-search: (\S+)", line):
                urls["experiment"] = m.group(1)
            elif m := re.search(r"frontier plot of search ui-search: (\S+)", line):
                urls["front"] = m.group(1)
            elif m := re.search(r"^search ui-search: (\S+/runs/[0-9a-f]+\S*)", line):
                urls["parent"] = m.group(1)
        assert set(urls) == {"experiment", "parent", "front"}, "".join(lines)
        yield {"uri": uri, "records": recs, "tracker": t, "port": port, **urls}
    finally:
        stop_group(proc)


# the link texts of the page, and whether one names trial ``i``: a trial run is named for what it is and ends with
# its trial id (``mest s0.93 f0.20 y0.25 · c435e8cc``, wording.run_name)
_RUN_LINKS = ("const t = [...document.querySelectorAll('a')].map(a => a.textContent.trim());"
              " const named = (t, i) => t.some(x => x === i || x.endsWith(' · ' + i));")


@pytest.fixture
def browser() -> Iterator[Browser]:
    b = Browser()
    try:
        yield b
    finally:
        b.close()


def test_experiment_url_opens_the_search_trials_with_accuracy_flops_and_pareto_columns(served, browser):
    """The printed runs URL is a saved view (``tracking/views.py``): the search's trial runs as rows of their own
    (not collapsed under the parent), cheapest first, with test_accuracy, flops_ratio and pareto as columns."""
    url = served["experiment"]
    assert url.startswith(f"http://127.0.0.1:{served['port']}/#/experiments/") and "viewStateShareKey=" in url
    browser.goto(url)
    ids = [r.trial_id for r in served["records"]]
    browser.wait(f"(() => {{ {_RUN_LINKS} return {json.dumps(ids)}.every(i => named(t, i)); }})()", "every trial run as a row")
    headers = browser.wait(f"(() => {{ const h = {_HEADERS}; return {json.dumps(list(COLUMNS))}.every(c => "
                           "h.includes(c)) ? h : null; })()", "the accuracy, FLOPs and pareto columns")
    text = browser.text()
    for genai in ("Detect Issues", "Token Usage", "No data available for the selected time range"):
        assert genai not in text, genai  # the GenAI overview
    assert "Model training" in text and "ui-search" not in [a.strip() for a in _links(browser)]  # no parent row
    # the values are in the table: the frontier's trials are tagged pareto=true, their accuracy is shown
    front = [r for r in served["records"] if r.trial_id in ("t0", "t1", "t3", "t4")]
    assert all(f"{r.final['test_accuracy']}" in text or f"{r.final['test_accuracy']:.2f}" in text for r in front)
    assert "true" in text and "false" in text
    # docs/ui-runs.png is a copy of this one
    assert _painted(browser, ARTIFACTS / "ui_trial_runs.png", 0.02) > 0.02, headers
    from mlflow import MlflowClient

    exp = MlflowClient(served["uri"]).get_experiment(served["tracker"].experiment_id)
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"


COLUMNS = ("test_accuracy", "flops_ratio", "pareto")
# the runs table's column headers (ag-grid), as rendered
_HEADERS = "[...document.querySelectorAll('.ag-header-cell-text, [role=columnheader]')].map(e => e.textContent.trim())"


def _links(browser: Browser) -> list[str]:
    return list(browser.js("[...document.querySelectorAll('a')].map(a => a.textContent)") or [])


def _expand_parent(browser: Browser, name: str, ids: list[str]) -> None:
    browser.wait(f"[...document.querySelectorAll('a')].some(a => a.textContent.trim() === {json.dumps(name)})",
                 "the parent run's row")
    clicked = browser.js(f"""(() => {{
        const a = [...document.querySelectorAll('a')].find(a => a.textContent.trim() === {json.dumps(name)});
        const row = a.closest('[role=row]');
        const b = row && row.querySelector('button[data-component-id*=runnamecellrenderer]');
        if (b) b.click();
        return Boolean(b);
    }})()""")
    assert clicked, "no expander on the parent run's row"
    browser.wait(f"(() => {{ {_RUN_LINKS} return {json.dumps(ids)}.every(i => named(t, i)); }})()", "every trial run in the table")


def test_chart_view_has_accuracy_and_flops_of_every_trial(served):
    """docs/tracking.md's recipe: the experiment URL, the search expanded, then the chart view
    (``compareRunsMode=CHART``) holds test_accuracy and flops_ratio for every trial run, the two axes of the
    scatter chart ("Add chart" -> "Scatter chart")."""
    ids = [r.trial_id for r in served["records"] if r.final]
    browser = Browser(size=(1500, 5000))  # tall: the chart view draws only the charts in the viewport
    try:
        _chart_view(served, browser, ids)
    finally:
        browser.close()


def _chart_view(served: dict[str, Any], browser: Browser, ids: list[str]) -> None:
    browser.goto(served["experiment"])
    browser.wait(f"(() => {{ {_RUN_LINKS} return {json.dumps(ids)}.every(i => named(t, i)); }})()", "the trial runs")
    browser.goto(served["experiment"] + "&compareRunsMode=CHART")
    for metric in ("test_accuracy", "flops_ratio"):
        browser.wait(f"{json.dumps(ids)}.every(i => document.body.innerText.includes(i + ' ({metric})'))",
                     f"{metric} of every trial in the chart view")
    assert "Add chart" in browser.text()
    assert _painted(browser, ARTIFACTS / "ui_chart_view.png", 0.02) > 0.02


def test_parent_run_page_lists_the_trials(served, browser):
    browser.goto(served["parent"])
    browser.wait("document.body.innerText.includes('Child runs')", "the parent run's child runs")
    ids = [r.trial_id for r in served["records"]]
    browser.wait(f"{json.dumps(ids)}.every(i => new RegExp('\\\\b' + i + '\\\\b').test(document.body.innerText))",
                 "every trial on the parent run page")
    text = browser.text()
    assert "ui-search" in text and "Detect Issues" not in text
    browser.screenshot(ARTIFACTS / "ui_parent_run.png")


def test_frontier_html_renders_inside_the_artifact_viewer(served, browser):
    browser.goto(served["front"])  # printed by `spfde ui`: the parent's frontier plot, one click from the runs
    rect = browser.wait("""(() => { const f = document.querySelector('iframe.mlflow-html-iframe');
        if (!f) return null; const r = f.getBoundingClientRect();
        return r.width > 200 && r.height > 200 ? {x: r.x, y: r.y, width: r.width, height: r.height} : null; })()""",
                        "the artifact viewer's iframe")
    want = ("knee", "Pareto frontier", "ui-search")
    # the page inside the sandboxed iframe: its text (DOM pierced across frames) and its pixels
    deadline = time.monotonic() + TIMEOUT
    inner, texts = "", []
    while time.monotonic() < deadline:
        texts = browser.iframe_texts()
        inner = next((t for t in texts if "Pareto frontier" in t), "")
        if all(w in inner for w in want):
            break
        time.sleep(0.5)
    assert all(w in inner for w in want), (f"iframe texts {[t[:200] for t in texts]}; {browser.frames()}; "
                                           f"page text {browser.text()[:500]}")
    assert "t0" in inner and "300.00 GFLOPs" in inner  # the knee row of the frontier table
    def box() -> dict[str, float]:  # the iframe's current box (its first one may have moved since)
        return browser.js("""(() => { const f = document.querySelector('iframe.mlflow-html-iframe'); if (!f) return null;
            const r = f.getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width, height: r.height}; })()""") \
            or rect

    shown = _painted(browser, ARTIFACTS / "ui_artifact_pareto_front_html.png", 0.05, clip=box)
    assert shown > 0.05, "the frontier page is blank inside MLflow's artifact viewer"
    browser.screenshot(ARTIFACTS / "ui_artifact_view.png")
