"""A saved runs-table view per search, so ``spfde ui`` lands on the search's trial runs with the accuracy columns,
``flops_ratio`` and ``pareto`` visible (MLflow otherwise opens the whole experiment, trials collapsed under their
parent, no metric columns).

MLflow 3's experiment page restores a *shared view* from the URL parameter ``viewStateShareKey=<key>``: it reads
the experiment tag ``mlflow.sharedViewState.<key>`` (JSON, or MLflow's own compressed form), takes the search
facets from it (``searchFilter``, ``orderByKey``, ``orderByAsc``, ``startTime``, ``lifecycleFilter``, ...) and the
runs-table UI state (``selectedColumns``, ``viewMaximized``, ...; never ``runsExpanded``/``runsPinned``/
``runsHidden``). See MLflow's ``mlflow/server/js/src/experiment-tracking/components/experiment-page/hooks/
useSharedExperimentViewState.ts`` and ``models/ExperimentPageUIState.ts`` (the installed bundle:
``mlflow/server/js/build/static/js``, ``EXPERIMENT_PAGE_UI_STATE_FIELDS`` and ``viewStateShareKey``). Columns are
keyed ``metrics.`name```, ``tags.`name``` (``makeCanonicalSortKey``). Filtering on ``spfde.role = 'trial'`` leaves
the parent out, so the trials are rows of their own instead of children of a collapsed parent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

__all__ = ["VIEW_TAG_PREFIX", "ensure_runs_view", "runs_view_key", "runs_view_state"]

VIEW_TAG_PREFIX = "mlflow.sharedViewState."
# always shown, cheapest first: what the frontier is made of (accuracy columns are added from the runs' metrics)
_COLUMNS = ("metrics.`flops_ratio`", "tags.`pareto`")


def runs_view_key(search: str) -> str:
    """A stable, URL-safe share key per search (rewriting the view for the same search replaces it)."""
    return "spfde-" + hashlib.sha256(search.encode()).hexdigest()[:16]


def runs_view_state(search: str, metric_keys: Iterable[str] = ()) -> dict[str, Any]:
    """The shared view: the search's trial runs, cheapest first, with every ``*accuracy`` metric the runs hold
    (``test_accuracy`` always), ``flops_ratio`` and ``pareto`` as columns (few, so all fit beside the run names)."""
    q = search.replace("'", "\\'")
    accuracy = sorted({"test_accuracy", *(k for k in metric_keys if k.endswith("accuracy"))},
                      key=lambda k: (k != "val_accuracy", k != "test_accuracy", k))  # what selects first
    return {
        "searchFilter": f"tags.`spfde.search` = '{q}' and tags.`spfde.role` = 'trial'",
        "orderByKey": "metrics.`flops_ratio`",
        "orderByAsc": True,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "selectedColumns": [f"metrics.`{k}`" for k in accuracy] + list(_COLUMNS),
        "viewMaximized": False,
        "runListHidden": False,
    }


def ensure_runs_view(client: Any, experiment_id: str, search: str, metric_keys: Iterable[str] = ()) -> str:
    """Write (or refresh) the search's shared view on its experiment; returns the share key for the URL."""
    key = runs_view_key(search)
    client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + key,
                              json.dumps(runs_view_state(search, metric_keys), sort_keys=True))
    return key
