"""Where the MLflow store is, from the URI alone: no MLflow import, so a bad URI or a search name that is not in
a local store is answered before the (slow) MLflow import (``spfde_search/cli/precheck.py``); the tracking
adapter (``tracking/store.py``) re-exports these."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

__all__ = ["TRACKING_SCHEMES", "TrackingUnavailable", "TrackingUriError", "default_tracking_uri",
           "recorded_searches", "resolve_tracking_uri", "sqlite_path"]


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached or holds no such search; the message says which."""


class TrackingUriError(TrackingUnavailable, ValueError):
    """A tracking URI MLflow cannot use (bad input: ``error:`` and exit code 2)."""


# tracking stores MLflow >= 3.13 offers (``+driver`` dialects allowed, e.g. postgresql+psycopg2)
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "databricks-uc")




def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the SQLite file ``./mlflow.db`` (absolute)."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    return f"sqlite:///{(Path.cwd() / 'mlflow.db').resolve()}"


def resolve_tracking_uri(uri: str | None) -> str:
    if not uri:
        return default_tracking_uri()
    if uri.startswith("file:") or ("://" not in uri and not uri.startswith("databricks")):
        p = Path(uri.removeprefix("file:").removeprefix("//"))
        if p.suffix == ".db" or not p.exists() or p.is_file():
            return f"sqlite:///{p.resolve()}"
        raise ValueError(
            f"tracking uri {uri!r}: MLflow >= 3.13 no longer supports file stores; use sqlite:///path/mlflow.db "
            "or http://host:port of an `mlflow server`"
        )
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in TRACKING_SCHEMES:
        raise TrackingUriError(
            f"--tracking-uri {uri!r}: MLflow cannot store runs at a {scheme}:// address; use sqlite:///path/mlflow.db, "
            "http://host:port of an `mlflow server`, a database URI (postgresql://, mysql://, mssql://), or 'none'"
        )
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` URI, else None."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):].split("?", 1)[0])
    return None



# MLflow's SQL schema (mlflow/store/tracking/dbmodels/models.py: tables ``runs`` and ``tags``): the parent runs
# of searches, as ``find_parent_run`` looks them up (active runs tagged spfde.role=parent)
_SEARCHES_SQL = """
SELECT DISTINCT s.value FROM tags s
JOIN tags r ON r.run_uuid = s.run_uuid AND r.key = 'spfde.role' AND r.value = 'parent'
JOIN runs ON runs.run_uuid = s.run_uuid AND runs.lifecycle_stage = 'active'
WHERE s.key = 'spfde.search'
"""


def recorded_searches(uri: str) -> set[str] | None:
    """Names of the searches a local SQLite store holds, read directly (read-only); None when that cannot be told
    without MLflow (another kind of store, a schema this query does not know): the caller then asks MLflow."""
    db = sqlite_path(uri)
    if db is None or not db.is_file():
        return None
    with contextlib.suppress(sqlite3.Error), contextlib.closing(
            sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)) as con:
        return {str(row[0]) for row in con.execute(_SEARCHES_SQL)}
    return None
