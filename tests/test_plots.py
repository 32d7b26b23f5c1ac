"""Frontier pictures from a hand-made trials table: PNG (matplotlib Agg) and self-contained HTML (plotly)."""

from __future__ import annotations

import pandas as pd
from test_tracking_support import make_config, make_records

from spfde_search.plots import PAPER_POINTS, frontier_html, frontier_png, paper_point_label, plot_table
from spfde_search.tracking import frontier_flags


def _table():
    recs = make_records()
    flags = frontier_flags(recs)
    rows = []
    for r in recs:
        row = r.row()
        row["pareto"] = flags[r.trial_id]
        row["run_id"] = f"run-{r.trial_id}"
        rows.append(row)
    return pd.DataFrame(rows)


def test_paper_points_are_recognised_from_the_full_config():
    assert paper_point_label(make_config()) == "MEST 90%"
    assert paper_point_label(make_config(**{"sparsity.ratio": 0.95})) == "MEST 95%"
    assert paper_point_label(make_config(**{"freezing.target_flops_reduction": 0.2, "sieving.fraction": 0.2})) \
        == "SpFDE 20%+20% @90%"
    assert paper_point_label(make_config(**{"freezing.target_flops_reduction": 0.2})) == ""
    assert paper_point_label(make_config(**{"sparsity.algorithm": "rigl"})) == ""
    assert paper_point_label(None) == "" and paper_point_label("") == ""
    assert len({label for label, _ in PAPER_POINTS}) == len(PAPER_POINTS)


def test_plot_table_keeps_drawable_rows_only():
    df = plot_table(_table())
    assert set(df["trial_id"]) == {"t0", "t1", "t2", "t3", "t4", "t5", "t8"}  # failed/infeasible have no point
    assert df.loc[df["trial_id"] == "t0", "paper_point"].item() == "MEST 90%"


def test_png(tmp_path):
    p = frontier_png(_table(), tmp_path / "front.png", title="test")
    data = p.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_png_and_html_of_an_empty_search(tmp_path):
    empty = pd.DataFrame({"trial_id": ["a"], "status": ["FAILED"], "test_accuracy": [None], "flops_ratio": [None],
                          "train_flops": [None], "config": ["{}"], "pareto": [False]})
    assert frontier_png(empty, tmp_path / "e.png").stat().st_size > 1000
    assert frontier_html(empty, tmp_path / "e.html").stat().st_size > 1000


def test_html_is_self_contained_and_interactive(tmp_path):
    p = frontier_html(_table(), tmp_path / "front.html", title="test")
    html = p.read_text()
    assert "<script src=\"https://cdn" not in html  # works offline
    assert "Plotly.newPlot" in html or "plotly" in html.lower()
    assert len(html) > 1_000_000  # plotly.js inlined
    for s in ("Pareto frontier", "MEST 90%", "run-t1", "trial t3", "sparsity.ratio = 0.95"):
        assert s in html, s
