"""Reading a search back from MLflow: its parent run, one row per trial run (status, pareto tag, metrics), the
frontier rows and a trial's config (what ``spfde pareto``/``export``/``ui`` show)."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from spfde_search.config import field_info

from .records import _METRIC_NAME, FINAL_METRICS
from .store import TrackingUnavailable, _q, _search_all, resolve_tracking_uri, sqlite_path

log = logging.getLogger("spfde_search.tracking")


def find_parent_run(tracking_uri: str | None, search: str, experiment: str | None = None) -> tuple[Any, Any]:
    """(MlflowClient, parent Run) of a search, looked up by the ``spfde.search`` tag."""
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise TrackingUnavailable(f"no MLflow store at {db} (run a search first, or pass --tracking-uri)")
    c = MlflowClient(tracking_uri=uri)
    try:
        if experiment:
            exp = c.get_experiment_by_name(experiment)
            if exp is None:
                raise TrackingUnavailable(f"no MLflow experiment {experiment!r} at {uri}")
            ids = [exp.experiment_id]
        else:
            ids = [e.experiment_id for e in c.search_experiments(max_results=50000)]
        runs = c.search_runs(ids, filter_string=f"tags.`spfde.search` = '{_q(search)}' and "
                                                "tags.`spfde.role` = 'parent'",
                             order_by=["attributes.start_time DESC"]) if ids else []
    except TrackingUnavailable:
        raise
    except Exception as e:  # noqa: BLE001
        raise TrackingUnavailable(f"cannot read MLflow at {uri}: {type(e).__name__}: {e}") from None
    if not runs:
        raise TrackingUnavailable(f"no search named {search!r} in MLflow at {uri}"
                                  + (f" (experiment {experiment!r})" if experiment else ""))
    return c, runs[0]


def read_trials(tracking_uri: str | None, search: str, experiment: str | None = None) -> tuple[Any, pd.DataFrame]:
    """(parent run, one row per trial run read back from MLflow: ids, status, pareto tag, final metrics,
    sampled params)."""
    c, parent = find_parent_run(tracking_uri, search, experiment)
    runs = _search_all(c, [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    rows = []
    for r in runs:
        t, m = r.data.tags, r.data.metrics
        row: dict[str, Any] = {
            "trial_id": t.get("spfde.trial_id", r.info.run_name), "run_id": r.info.run_id,
            "status": t.get("spfde.status", ""), "full_budget": t.get("spfde.full_budget") == "true",
            "pareto": t.get("pareto") == "true",
        }
        for k in FINAL_METRICS:
            row[k] = m.get(_METRIC_NAME.get(k, k), float("nan"))
        row["params"] = t.get("spfde.sampled", "{}")
        row["error"] = t.get("spfde.error", "")  # why a trial failed or was infeasible (spfde pareto --all)
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values("train_flops").reset_index(drop=True)
    return parent, df


def frontier_table(df: pd.DataFrame) -> pd.DataFrame:
    """Frontier rows of a read-back table, by ascending training FLOPs."""
    if not len(df):
        return df
    return df[df["pareto"]].sort_values("train_flops", kind="stable").reset_index(drop=True)


def download_config(client: Any, run_id: str) -> dict[str, Any]:
    """The trial's full config, from its ``config.yaml`` artifact (falls back to the run's params)."""
    import yaml

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file: no progress bar
    with tempfile.TemporaryDirectory() as td:
        try:
            p = client.download_artifacts(run_id, "config.yaml", td)
            data = yaml.safe_load(Path(p).read_text())
            if isinstance(data, dict):
                return data
        except Exception as e:  # noqa: BLE001
            log.warning("run %s has no readable config.yaml artifact (%s); rebuilding it from params", run_id, e)
    from spfde_search.config import parse_value

    params = client.get_run(run_id).data.params
    flat: dict[str, Any] = {}
    for k, v in params.items():
        try:
            field_info(k)
        except KeyError:
            continue
        flat[k] = parse_value(k, v) if v != "None" else None  # on/off stay strings for string fields
    from spfde_search.config import unflatten

    return unflatten(flat)
