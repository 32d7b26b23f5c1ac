"""Frontier pictures and wording from a hand-made trials table: the figure's artists (knee, trial labels, budget,
stopped / infeasible markers), the PNG, the script-free HTML page, and the shared formats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_tracking_support import make_config, make_records

from spfde_search.plots import (
    PAPER_POINTS,
    brief,
    chance_accuracy,
    chance_warning,
    display_params,
    format_flops,
    format_params,
    frontier_figure,
    frontier_html,
    frontier_png,
    knee_trial,
    paper_point_label,
    plot_table,
)
from spfde_search.tracking import frontier_flags


def _table(extra: list[dict] | None = None) -> pd.DataFrame:
    recs = make_records()
    flags = frontier_flags(recs)
    rows = []
    for r in recs:
        row = r.row()
        row["pareto"] = flags[r.trial_id]
        row["run_id"] = f"run-{r.trial_id}"
        rows.append(row)
    return pd.DataFrame(rows + (extra or []))


# t9: refused before training, with the FLOPs it would have cost
INFEASIBLE = {"trial_id": "t9", "status": "INFEASIBLE", "test_accuracy": 0.0, "flops_ratio": 0.45,
              "train_flops": 0.0, "pareto": False, "params": "{}", "config": "{}", "full_budget": False,
              "error": "over the FLOPs budget"}


def _artist(ax, gid):
    found = [a for a in [*ax.collections, *ax.lines, *ax.texts] if a.get_gid() == gid]
    return found


def test_paper_points_are_recognised_from_the_full_config():
    assert paper_point_label(make_config()) == "MEST 90%"
    assert paper_point_label(make_config(**{"sparsity.ratio": 0.95})) == "MEST 95%"
    assert paper_point_label(make_config(**{"freezing.target_flops_reduction": 0.2, "sieving.fraction": 0.2})) \
        == "SpFDE 20%+20% @90%"
    assert paper_point_label(make_config(**{"freezing.target_flops_reduction": 0.2})) == ""
    assert paper_point_label(make_config(**{"sparsity.algorithm": "rigl"})) == ""
    assert paper_point_label(None) == "" and paper_point_label("") == ""
    assert len({label for label, _ in PAPER_POINTS}) == len(PAPER_POINTS)


def test_plot_table_keeps_trained_rows_only_and_marks_the_knee():
    df = plot_table(_table([INFEASIBLE]))
    assert set(df["trial_id"]) == {"t0", "t1", "t2", "t3", "t4", "t5", "t8"}  # failed/infeasible have no point
    assert df.loc[df["trial_id"] == "t0", "paper_point"].item() == "MEST 90%"
    # front t1 (0.78, 0.2) - t0 (0.80, 0.3) - t3/t4 (0.85, 0.5): normalised, t0 is the only point off the
    # chord from the cheapest to the most accurate, so it is the knee
    assert df.loc[df["knee"], "trial_id"].tolist() == ["t0"]
    assert knee_trial(_table()) == "t0"


def test_figure_marks_knee_frontier_ids_budget_stopped_and_infeasible():
    fig = frontier_figure(_table([INFEASIBLE]), title="test", flops_budget=0.4)
    ax = fig.axes[0]
    (knee,) = _artist(ax, "knee")
    assert np.allclose(knee.get_offsets(), [[0.30, 0.80]])  # t0's (FLOPs ratio, accuracy)
    assert knee.get_label() == "knee: trial t0"
    labels = sorted(t.get_text() for t in _artist(ax, "trial-label"))
    assert labels == ["t0", "t1", "t3, t4"]  # every frontier point named (t3, t4 coincide), nothing else
    (front,) = _artist(ax, "frontier")
    assert sorted(map(tuple, np.round(front.get_offsets(), 6))) == [(0.2, 0.78), (0.3, 0.8), (0.5, 0.85),
                                                                       (0.5, 0.85)]
    (budget,) = _artist(ax, "budget")
    assert list(budget.get_xdata()) == [0.4, 0.4] and "budget" in budget.get_label()
    (stopped,) = _artist(ax, "stopped")
    assert np.allclose(stopped.get_offsets(), [[0.10, 0.99]]) and stopped.get_paths()  # t5, an 'x' marker
    (bad,) = _artist(ax, "infeasible")
    assert np.allclose(np.asarray(bad.get_offsets())[:, 0], [0.45])
    shapes = {a.get_gid(): a.get_paths()[0].vertices.tobytes() for a in ax.collections
              if a.get_gid() in ("stopped", "infeasible", "frontier", "knee")}
    assert len(shapes) == 4 and len(set(shapes.values())) == 4  # four distinct marker shapes
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "knee: trial t0" in legend and any("infeasible" in s for s in legend)


def test_point_labels_stay_inside_the_axes_clear_of_the_tick_labels():
    """A long id on the cheapest frontier point and the most accurate point at the top edge: their labels are
    drawn inside the axes (once, the cheapest point's label ran left over the y tick labels)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    df = _table()
    df = df[df["pareto"] | (df["trial_id"] == "t2")].copy()
    df.loc[df["trial_id"] == "t1", "trial_id"] = "trial-000001"  # the cheapest frontier point, leftmost
    fig = frontier_figure(df, title="test")
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    ax = fig.axes[0]
    box = ax.get_window_extent(renderer)
    ticks = [t.get_window_extent(renderer) for t in [*ax.get_xticklabels(), *ax.get_yticklabels()] if t.get_text()]
    labels = _artist(ax, "trial-label")
    assert sorted(t.get_text() for t in labels) == ["t0", "t3, t4", "trial-000001"]
    for t in labels:
        b = t.get_window_extent(renderer)
        assert box.x0 <= b.x0 and b.x1 <= box.x1 and box.y0 <= b.y0 and b.y1 <= box.y1, (t.get_text(), b, box)
        assert not any(b.overlaps(k) for k in ticks), t.get_text()


def test_no_budget_line_without_a_budget_and_no_knee_without_a_front():
    ax = frontier_figure(_table()).axes[0]
    assert not _artist(ax, "budget") and _artist(ax, "knee")
    only_stopped = _table()[lambda d: d["trial_id"] == "t5"]
    ax = frontier_figure(only_stopped).axes[0]
    assert not _artist(ax, "knee") and not _artist(ax, "frontier")


def test_png(tmp_path):
    p = frontier_png(_table(), tmp_path / "front.png", title="test", flops_budget=0.4)
    data = p.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_png_and_html_of_an_empty_search(tmp_path):
    empty = pd.DataFrame({"trial_id": ["a"], "status": ["FAILED"], "test_accuracy": [None], "flops_ratio": [None],
                          "train_flops": [None], "config": ["{}"], "pareto": [False]})
    assert frontier_png(empty, tmp_path / "e.png").stat().st_size > 1000
    text = frontier_html(empty, tmp_path / "e.html").read_text()
    assert "no completed full-budget trial yet" in text


def test_html_is_small_script_free_and_names_every_point(tmp_path):
    p = frontier_html(_table(), tmp_path / "front.html", title="test", flops_budget=0.4)
    text = p.read_text()
    assert "<script" not in text  # renders in MLflow's sandboxed artifact iframe and offline
    assert len(text.encode()) < 400_000, len(text)  # the plotly page was 4.6 MB
    assert "<svg" in text
    for s in ("Pareto frontier", "MEST 90%", "run-t1", "trial t3", "sparsity.ratio = 0.95", "KNEE",
              "<td>knee</td><td>t0</td>", "200.00 GFLOPs"):
        assert s in text, s
    for tid in ("t0", "t1", "t2", "t3", "t4", "t5", "t8"):  # a hover title per drawn trial
        assert f'id="point-{tid}"' in text, tid


def test_chance_warning_in_figure_and_page(tmp_path):
    low = _table()
    low["test_accuracy"] = low["test_accuracy"] * 0 + 0.11
    chance = chance_accuracy("fashion_mnist")
    assert chance == pytest.approx(0.1)
    assert chance_warning(0.11, chance) and not chance_warning(0.80, chance)
    assert chance_warning(0.14, chance) and not chance_warning(0.16, chance)
    assert chance_accuracy("no-such-set") is None and chance_warning(0.1, None) == ""
    title = frontier_figure(low, chance=chance).axes[0].get_title()
    assert "near chance" in title
    assert "within 5 points of chance" in frontier_html(low, tmp_path / "c.html", chance=chance).read_text()
    assert "near chance" not in frontier_figure(_table(), chance=chance).axes[0].get_title()


def test_formats():
    assert format_flops(3.9486e10) == "39.49 GFLOPs"
    assert format_flops(2.5e12) == "2.50 TFLOPs" and format_flops(812) == "812 FLOPs"
    assert format_flops(None) == "-" and format_flops(float("nan")) == "-"
    params = {"sparsity.ratio": 0.912345, "freezing.start_epoch": None, "sieving.fraction": 0.0}
    assert display_params(params) == {"sparsity.ratio": 0.912345, "sieving.fraction": 0.0}
    base = make_config(**{"sieving.fraction": 0.0})
    assert display_params(params, base) == {"sparsity.ratio": 0.912345}
    assert format_params('{"sparsity.ratio": 0.912345, "freezing.start_epoch": null}') == "sparsity.ratio=0.9123"


def test_brief_cuts_between_words_and_keeps_both_ends():
    assert brief("short message\nsecond line") == "short message"
    assert brief("") == ""
    text = " ".join(f"word{i:03d}" for i in range(100))  # 799 characters
    out = brief(text, 80)
    assert len(out) <= 80 and out.startswith("word000 word001") and out.endswith("word098 word099")
    head, tail = out.split(" … ")
    assert all(w in text.split() for w in [*head.split(), *tail.split()])  # whole words only
    assert brief("x" * 500, 90).startswith("x" * 60) and len(brief("x" * 500, 90)) <= 90  # one huge word: cut
