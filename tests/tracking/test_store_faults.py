"""A SQLite store that cannot be written (read-only here; a full disk takes the same path in MLflow): the live
search's tracking warns in one line, without MLflow's sqlalchemy traceback before it (issue 23 item 11)."""

from __future__ import annotations

import logging

import pytest
from test_tracking_support import make_records


@pytest.mark.mlflow
def test_a_failed_sqlite_write_is_one_warning_without_a_traceback(tmp_path, read_only, caplog, capfd):
    from spfde_search.tracking import Tracker

    recs = make_records()
    (tmp_path / "db").mkdir()
    uri = f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}"
    Tracker(uri, "exp", "s1").sync(recs[:2], {"name": "s1", "base_config": recs[0].config}, close=True)
    read_only(tmp_path / "db")
    caplog.clear()
    capfd.readouterr()
    with caplog.at_level(logging.WARNING):
        t = Tracker(uri, "exp", "s1")
        assert t.upsert_trial(recs[2]) is False
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in warnings] == ["spfde_search.tracking"], [r.getMessage()[:200] for r in warnings]
    assert "MLflow tracking at" in warnings[0].getMessage() and warnings[0].exc_info is None
    err = capfd.readouterr().err  # MLflow's loggers print to stderr themselves (they do not propagate)
    assert "Traceback" not in err and "SQLAlchemy database error" not in err, err[-2000:]
