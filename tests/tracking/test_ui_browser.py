"""``spfde ui`` in headless Chromium: the printed trial-runs URL opens the search's trial runs (MLflow 3's
model-training view, not the GenAI overview) as named rows with the sampled parameters, accuracies, training FLOPs
and ``pareto`` as columns; the printed chart URL opens on the accuracy vs log10 training FLOPs scatter of every
trial; the parent run lists its trials, and ``pareto_front.html`` renders inside MLflow's artifact viewer. The page
checks are ``spfde_search.tracking.screenshots``'s (which takes the docs' screenshots of a real search); here they
run on hand-made records in a temporary folder. Screenshots go to ``$SPFDE_TEST_ARTIFACTS`` (default
``/tmp/spfde-test-artifacts/``; look at them).

One search, one ``spfde ui`` and one Chromium serve every test of the module: MLflow's pages are hash routes, so
moving between them does not reload its 10 MB of JavaScript. Every wait is on a condition in the page.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_tracking_support import ARTIFACTS, make_records, stop_group

from spfde_search.tracking import Tracker
from spfde_search.tracking.browser import TIMEOUT, Browser, BrowserMissing, painted
from spfde_search.tracking.screenshots import scatter_traces, serve, wait_columns, wait_trial_rows

pytestmark = [pytest.mark.mlflow, pytest.mark.browser, pytest.mark.slow]

SAMPLED = ["freezing.target_flops_reduction", "sieving.fraction", "sparsity.ratio"]  # make_records' params
COLUMNS = [*SAMPLED, "test_accuracy", "train_flops", "flops_ratio", "pareto"]


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
    proc, urls = serve(uri, "ui-search", root)
    try:
        yield {"uri": uri, "records": recs, "tracker": t, **urls}
    finally:
        stop_group(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        b = Browser(size=(1920, 1000))  # wide: ag-grid renders only the columns in view
    except BrowserMissing as e:
        pytest.skip(str(e))
    try:
        yield b
    finally:
        b.close()


def _links(browser: Browser) -> list[str]:
    return list(browser.js("[...document.querySelectorAll('a')].map(a => a.textContent)") or [])


def test_runs_url_opens_the_search_trials_with_sampled_params_accuracy_flops_and_pareto_columns(served, browser):
    """The printed runs URL is a saved view (``tracking/views.py``): the search's trial runs as rows of their own
    (not collapsed under the parent), named for what they are, cheapest first, with the sampled parameters,
    test_accuracy, train_flops, flops_ratio and pareto as columns."""
    url = served["runs"]
    assert url.startswith("http://127.0.0.1:") and "/#/experiments/" in url and "viewStateShareKey=" in url
    browser.goto(url)
    wait_trial_rows(browser, [r.trial_id for r in served["records"]])
    headers = wait_columns(browser, COLUMNS)
    text = browser.text()
    for genai in ("Detect Issues", "Token Usage", "No data available for the selected time range"):
        assert genai not in text, genai  # the GenAI overview
    assert "Model training" in text and "ui-search" not in [a.strip() for a in _links(browser)]  # no parent row
    assert "mest s0.95 · t1" in [a.strip() for a in _links(browser)]  # named for what it is (wording.run_name)
    # the values are in the table: the frontier's trials are tagged pareto=true, their accuracy is shown
    front = [r for r in served["records"] if r.trial_id in ("t0", "t1", "t3", "t4")]
    assert all(f"{r.final['test_accuracy']}" in text or f"{r.final['test_accuracy']:.2f}" in text for r in front)
    assert "true" in text and "false" in text
    assert "loss" not in headers and "density" not in headers  # the other ~90 columns stay hidden
    assert painted(browser, ARTIFACTS / "ui_trial_runs.png", 0.02) > 0.02, headers
    from mlflow import MlflowClient

    exp = MlflowClient(served["uri"]).get_experiment(served["tracker"].experiment_id)
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"


def test_chart_url_opens_on_accuracy_vs_log_training_flops_of_every_trial(served, browser):
    """The printed chart URL (the runs view, ``compareRunsMode=CHART``) opens on a scatter chart: every trial with
    an accuracy is one point at (log10 training FLOPs, test accuracy), named for its run (``views.py``: MLflow's
    scatter has no log axis, so the x axis is the logged ``log10_train_flops``)."""
    done = {r.trial_id: r for r in served["records"] if r.final}
    browser.goto(served["chart"])
    traces = scatter_traces(browser, len(done))
    trace = next(t for t in traces if len(t["x"]) >= len(done))
    assert (trace["xtitle"], trace["ytitle"]) == ("log10_train_flops", "test_accuracy"), traces
    points = {name.rsplit(" · ", 1)[-1]: (x, y) for name, x, y in zip(trace["names"], trace["x"], trace["y"],
                                                                      strict=True)}
    assert set(points) == set(done), points
    for tid, r in done.items():  # each trial's own accuracy and training FLOPs (the flops_ratio x 1e12 dense)
        x, y = points[tid]
        assert y == pytest.approx(r.final["test_accuracy"]) and x == pytest.approx(math.log10(r.final["train_flops"]))
        assert r.final["flops_ratio"] == pytest.approx(10 ** x / r.final["dense_train_flops"])
    assert "Accuracy vs training FLOPs" in browser.text()
    assert painted(browser, ARTIFACTS / "ui_chart_view.png", 0.02) > 0.02


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

    shown = painted(browser, ARTIFACTS / "ui_artifact_pareto_front_html.png", 0.05, clip=box)
    assert shown > 0.05, "the frontier page is blank inside MLflow's artifact viewer"
    browser.screenshot(ARTIFACTS / "ui_artifact_view.png")
