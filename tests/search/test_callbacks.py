"""The trials table written by the search's Tune callback (spfde_search/search/callbacks.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import test_tracking_support as support


def test_the_table_written_at_a_result_holds_that_result(tmp_path):
    """Tune calls ``on_trial_result`` before it stores the result on the trial, so a table built from
    ``trial.last_result`` lagged one epoch: a trial paused after its first epoch showed 0 epochs until its next
    report (a fault test waiting for 'a trial past epoch 1' then waited forever)."""
    from spfde_search.search.callbacks import _make_table_callback

    cb = _make_table_callback(support.make_config(), str(tmp_path), None, None)
    cb.setup()
    trial = SimpleNamespace(trial_id="t0", status="RUNNING", config={"sparsity.ratio": 0.9}, last_result={},
                            error_file=None)
    cb.on_trial_start(0, [trial], trial)
    first = {"epoch": 1, "epochs_total": 3, "val_accuracy": 0.5, "test_accuracy": 0.4, "train_flops": 1e9,
             "flops_ratio": 0.2, "wall_seconds": 1.0}
    cb.on_trial_result(0, [trial], trial, first)  # trial.last_result is still {} here, as in Tune
    row = pd.read_parquet(tmp_path / "trials.parquet").iloc[0]
    assert row["status"] == "RUNNING" and row["epochs_completed"] == 1
    assert row["val_accuracy"] == 0.5 and row["spent_train_flops"] == 1e9
