"""A saved view per search, so ``spfde ui`` lands on the answer: the search's trial runs with the sampled parameters,
the accuracies, training FLOPs and ``pareto`` as the visible columns, and a chart view that opens on accuracy vs
training FLOPs scatters (MLflow otherwise opens the whole experiment, trials collapsed under their parent, ~90
columns, and one generated line chart per metric).

MLflow 3's experiment page restores a *shared view* from the URL parameter ``viewStateShareKey=<key>``: it reads
the experiment tag ``mlflow.sharedViewState.<key>`` (JSON, or MLflow's own compressed form), takes the search
facets from it (``searchFilter``, ``orderByKey``, ``orderByAsc``, ``startTime``, ``lifecycleFilter``, ...) and the
runs-table UI state (``EXPERIMENT_PAGE_UI_STATE_FIELDS``: ``selectedColumns``, ``runsHiddenMode``,
``compareRunCharts``, ``compareRunSections``, ``isAccordionReordered``, ...; never ``runsExpanded``/``runsPinned``/
``runsHidden``/``runsVisibilityMap``). See MLflow's ``mlflow/server/js/src/experiment-tracking/components/
experiment-page/hooks/useSharedExperimentViewState.ts``, ``models/ExperimentPageUIState.ts`` and
``components/runs-charts/runs-charts.types.ts`` (``RunsChartsScatterCardConfig``; in the installed bundle
``mlflow/server/js/build/static/js``). Columns are keyed ``params.`name```, ``metrics.`name```, ``tags.`name```
(``makeCanonicalSortKey``). Filtering on ``spfde.role = 'trial'`` leaves the parent out, so the trials are rows of
their own instead of children of a collapsed parent.

MLflow's scatter chart has no log axis (its plotly layout sets only the axis titles), so the trial runs carry
``log10_train_flops`` (``runs.py``) and the scatters use it as their x axis.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from typing import Any

__all__ = ["CHART_SECTION", "LOG_FLOPS_METRIC", "VIEW_TAG_PREFIX", "ensure_runs_view", "ensure_search_view",
           "runs_view_key", "runs_view_state", "sampled_keys"]

VIEW_TAG_PREFIX = "mlflow.sharedViewState."
LOG_FLOPS_METRIC = "log10_train_flops"
CHART_SECTION = "Accuracy vs training FLOPs"
# after the sampled parameters: what the frontier is made of, what selects (validation) before the report (test)
_METRIC_COLUMNS = ("val_accuracy", "test_accuracy", "train_flops", "flops_ratio")
# MLflow's own section names for the charts it generates per metric (kept, but collapsed under ours)
_GENERATED_SECTIONS = ("Model metrics", "System metrics")


def runs_view_key(search: str) -> str:
    """A stable, URL-safe share key per search (rewriting the view for the same search replaces it)."""
    return "spfde-" + hashlib.sha256(search.encode()).hexdigest()[:16]


def _uuid(key: str, what: str) -> str:
    """A stable id for a chart or section of the view (MLflow only needs them unique within it)."""
    return hashlib.sha256(f"{key}/{what}".encode()).hexdigest()[:20]


def _charts(key: str, accuracies: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One scatter per accuracy (validation first) against log10 training FLOPs, in a section of their own above
    MLflow's generated ones, which start collapsed."""
    section = _uuid(key, "section")
    sections = [{"uuid": section, "name": CHART_SECTION, "display": True, "isReordered": True, "deleted": False,
                 "isGenerated": False, "columns": 2, "cardHeight": 440}]  # two to a row (MLflow's default: 3)
    sections += [{"uuid": _uuid(key, name), "name": name, "display": False, "isReordered": False, "deleted": False,
                  "isGenerated": True} for name in _GENERATED_SECTIONS]
    charts = [{"uuid": _uuid(key, f"scatter/{acc}"), "type": "SCATTER", "metricSectionId": section,
               "deleted": False, "isGenerated": False, "runsCountToCompare": 500,
               "xaxis": {"key": LOG_FLOPS_METRIC, "type": "METRIC"}, "yaxis": {"key": acc, "type": "METRIC"}}
              for acc in accuracies]
    return charts, sections


def runs_view_state(search: str, metric_keys: Iterable[str] = (), param_keys: Iterable[str] = ()) -> dict[str, Any]:
    """The shared view: the search's trial runs, cheapest first; columns: the sampled parameters (``param_keys``:
    config paths), ``val_accuracy`` (when the runs hold it), ``test_accuracy``, ``train_flops``, ``flops_ratio``,
    ``pareto``; charts: accuracy vs log10 training FLOPs for every trial run (``runsHiddenMode`` SHOW_ALL: MLflow
    otherwise charts the first 10 runs only)."""
    q = search.replace("'", "\\'")
    metrics = set(metric_keys)
    shown = [k for k in _METRIC_COLUMNS if k != "val_accuracy" or k in metrics]
    accuracies = [k for k in shown if k.endswith("accuracy")]
    charts, sections = _charts(runs_view_key(search), accuracies)
    return {
        "searchFilter": f"tags.`spfde.search` = '{q}' and tags.`spfde.role` = 'trial'",
        "orderByKey": "metrics.`flops_ratio`",
        "orderByAsc": True,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "selectedColumns": ([f"params.`{k}`" for k in sorted(set(param_keys))] + [f"metrics.`{k}`" for k in shown]
                            + ["tags.`pareto`"]),
        "viewMaximized": False,
        "runListHidden": False,
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": charts,
        "compareRunSections": sections,
        "isAccordionReordered": True,
        "hideEmptyCharts": True,
    }


def sampled_keys(tag_values: Iterable[str | None]) -> list[str]:
    """The config paths a search sampled, from its trial runs' ``spfde.sampled`` tags (JSON objects); the
    successive-halving bookkeeping (``fidelity.*``) is not a parameter of the schedule."""
    keys: set[str] = set()
    for raw in tag_values:
        try:
            value = json.loads(raw or "{}")
        except ValueError:
            continue
        if isinstance(value, dict):
            keys.update(str(k) for k in value if not str(k).startswith("fidelity."))
    return sorted(keys)


def ensure_runs_view(client: Any, experiment_id: str, search: str, metric_keys: Iterable[str] = (),
                     param_keys: Iterable[str] = ()) -> str:
    """Write (or refresh) the search's shared view on its experiment; returns the share key for the URL."""
    key = runs_view_key(search)
    client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + key,
                              json.dumps(runs_view_state(search, metric_keys, param_keys), sort_keys=True))
    return key


def ensure_search_view(client: Any, parent: Any) -> str:
    """The shared view of the search whose parent run is ``parent``, from what its trial runs hold: their metrics,
    their sampled parameters. A trial logged before ``log10_train_flops`` existed gets it now (from its final
    ``train_flops``, at the step of its last epoch), so the scatters of an older search are not empty."""
    search = str(parent.data.tags.get("spfde.search"))
    exp, run = parent.info.experiment_id, parent.info.run_id
    trials = client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{run}'", max_results=5000)
    for t in trials:
        flops = t.data.metrics.get("train_flops")
        if flops and flops > 0 and LOG_FLOPS_METRIC not in t.data.metrics \
                and t.data.tags.get("spfde.final_logged") == "true":
            step = int(t.data.tags.get("spfde.epochs_logged") or 0)
            client.log_metric(t.info.run_id, LOG_FLOPS_METRIC, math.log10(flops), step=step)
            t.data.metrics[LOG_FLOPS_METRIC] = math.log10(flops)
    metrics = {k for t in trials for k in t.data.metrics}
    params = {k for t in trials for k in t.data.params}  # an auxiliary parameter (search_spaces) is none
    sampled = [k for k in sampled_keys(t.data.tags.get("spfde.sampled") for t in trials) if k in params]
    return ensure_runs_view(client, exp, search, metrics, sampled)
