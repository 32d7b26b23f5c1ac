"""Frontier pictures and wording from a hand-made trials table: the figure's artists (knee, trial labels, budget,
stopped / infeasible markers), the PNG, the script-free HTML page, and the shared formats."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pandas as pd
import pytest
from test_tracking_support import make_config, make_records

from spfde_search.plots import (
    PAPER_POINTS,
    answer_table,
    brief,
    chance_accuracy,
    chance_warning,
    display_params,
    format_flops,
    format_params,
    frontier_figure,
    frontier_html,
    frontier_png,
    hypervolume_png,
    knee_trial,
    paper_point_label,
    plot_table,
    point_label,
    realised_text,
)
from spfde_search.tracking import frontier_flags
from spfde_search.wording import realised


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
    assert ax.get_xscale() == "log"  # cost is sampled log-uniformly: a linear axis crowds the cheap points
    (knee,) = _artist(ax, "knee")
    assert np.allclose(knee.get_offsets(), [[0.30, 0.80]])  # t0's (FLOPs ratio, accuracy)
    assert knee.get_label() == "knee: mest 90% (t0)"
    # every frontier point named by what it is (t3, t4 coincide and ran the same: one label), nothing else
    assert sorted(t.get_text() for t in _artist(ax, "trial-label")) == ["mest 50%", "mest 95%"]
    assert [t.get_text() for t in _artist(ax, "knee-label")] == ["knee: mest 90%"]
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
    assert "knee: mest 90% (t0)" in legend and any("infeasible" in s for s in legend)
    assert not _artist(ax, "front-test")  # no validation split: test accuracy is what selects, drawn once


def test_point_label_says_what_a_trial_is():
    assert point_label(make_config(**{"sparsity.ratio": 0.935, "sieving.fraction": 0.2})) == "mest 94%, y 0.2"
    assert point_label(make_config(**{"sparsity.algorithm": "rigl", "sparsity.ratio": 0.8,
                                      "freezing.target_flops_reduction": 0.25, "sieving.fraction": 0.125})) \
        == "rigl 80%, f 0.25, y 0.12"
    assert point_label(make_config(**{"sparsity.algorithm": "dense", "sparsity.ratio": 0.0})) == "dense"
    assert point_label(make_config(**{"freezing.start_epoch": 1})) == "mest 90%, f @e1"
    assert point_label(None, {"sparsity.ratio": 0.5}) == "50%"  # no config: the sampled parameters
    assert point_label(None) == ""


def _val_table() -> pd.DataFrame:
    """The hand-made table with a validation split: validation selects, test is 0.03 lower."""
    df = _table()
    df["val_accuracy"] = df["test_accuracy"]
    df["test_accuracy"] = df["test_accuracy"] - 0.03
    return df


def test_front_shows_test_accuracy_beside_validation():
    ax = frontier_figure(_val_table()).axes[0]
    assert ax.get_ylabel() == "validation accuracy"
    (tested,) = _artist(ax, "front-test")
    assert sorted(map(tuple, np.round(tested.get_offsets(), 6))) == [(0.2, 0.75), (0.3, 0.77), (0.5, 0.82),
                                                                        (0.5, 0.82)]
    assert "test accuracy" in tested.get_label()


def _crowded(n: int = 14) -> pd.DataFrame:
    """A front of ``n`` points log-uniform in cost (as the budget space samples it) with dominated points between."""
    rng = np.random.default_rng(0)
    rows = []
    for i, ratio in enumerate(np.geomspace(0.02, 0.9, n)):
        for j, (acc, tag) in enumerate(((0.70 + 0.2 * i / n, "front"), (0.66 + 0.2 * i / n, "dominated"))):
            cfg = make_config(**{"sparsity.ratio": round(1 - ratio, 3), "sieving.fraction": 0.1 * (i % 3),
                                 "freezing.target_flops_reduction": 0.05 * (i % 4)})
            rows.append({"trial_id": f"t{i:02d}{j}", "status": "COMPLETED", "full_budget": True,
                         "val_accuracy": acc, "test_accuracy": acc - 0.01 * rng.random(),
                         "flops_ratio": ratio * (1.0 + 0.05 * j), "train_flops": ratio * 1e12,
                         "pareto": tag == "front", "config": json.dumps(cfg), "params": "{}"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("make", [_table, _val_table, _crowded], ids=["hand", "validation", "crowded"])
def test_labels_and_legend_never_cover_points_or_each_other(make):
    """Every frontier label and the knee's: inside the axes, over no marker and no other label; the legend is
    outside the axes, so it covers nothing."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = frontier_figure(make(), title="test")
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    ax = fig.axes[0]
    box = ax.get_window_extent(renderer)
    points = [tuple(p) for c in ax.collections if c.get_gid() != "front-test-link"
              for p in c.get_offset_transform().transform(c.get_offsets())]
    texts = [*_artist(ax, "trial-label"), *_artist(ax, "knee-label"), *_artist(ax, "paper-label")]
    assert texts and _artist(ax, "knee-label")
    boxes = [t.get_window_extent(renderer) for t in texts]
    for t, b in zip(texts, boxes, strict=True):
        assert box.x0 <= b.x0 and b.x1 <= box.x1 and box.y0 <= b.y0 and b.y1 <= box.y1, t.get_text()
        covered = [p for p in points if b.x0 - 2 < p[0] < b.x1 + 2 and b.y0 - 2 < p[1] < b.y1 + 2]
        assert not covered, (t.get_text(), covered)
    for i, a in enumerate(boxes):
        assert not any(a.overlaps(b) for b in boxes[i + 1:]), texts[i].get_text()
    legend = ax.get_legend().get_window_extent(renderer)
    assert legend.x0 >= box.x1  # beside the axes, not over them
    assert legend.x1 <= fig.bbox.width - 4  # and not cut off, its frame included


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
              "<td>knee</td><td>t0</td><td>mest 90%</td>", "200.00 GFLOPs"):
        assert s in text, s
    for tid in ("t0", "t1", "t2", "t3", "t4", "t5", "t8"):  # a hover card per drawn trial
        assert f'id="point-{tid}"' in text, tid


def test_html_hover_shows_every_sampled_parameter_unclipped(tmp_path):
    """The card lists every sampled parameter, also those equal to the base config (the table leaves those
    out), whole: no wrapping, no ellipsis, no overflow cut."""
    long_name = "sieving.a_parameter_with_a_rather_long_dotted_name"
    df = _table()
    params = {"sparsity.ratio": 0.95, "freezing.target_flops_reduction": 0.0, "sieving.fraction": 0.0,
              long_name: "a value that is long enough to be cut by a fixed-width tooltip " * 2}
    df.loc[df["trial_id"] == "t1", "params"] = json.dumps(params)
    text = frontier_html(df, tmp_path / "f.html", base=make_config()).read_text()
    card = re.search(r'id="point-t1"[^>]*></a><div class="tip"[^>]*>(.*?)</div>', text, flags=re.S)
    assert card, "no hover card for t1"
    shown = html.unescape(card.group(1))
    for k, v in params.items():
        assert f"{k} = {v}" in shown, k
    css = re.search(r"\.tip \{(.*?)\}", text, flags=re.S).group(1)
    assert "white-space: pre" in css and "overflow" not in css and "ellipsis" not in css and "max-width" not in css


def test_hypervolume_png_of_the_compute_curve(tmp_path):
    curve = pd.DataFrame({"trial_id": ["a", "b", "c"], "status": ["COMPLETED"] * 3,
                          "spent_train_flops": [1e12, 3e12, 4e12], "spent_seconds": [10.0, 30.0, 45.0],
                          "hypervolume": [0.0, 0.4, 0.55]})
    data = hypervolume_png(curve, tmp_path / "hv.png")
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "hv.png").read_bytes() == data
    from spfde_search.plots import hypervolume_figure

    ax = hypervolume_figure(curve).axes[0]
    (line,) = [ln for ln in ax.lines if ln.get_gid() == "hypervolume"]
    assert list(line.get_ydata()) == [0.0, 0.4, 0.55] and list(line.get_xdata()) == [1e12, 3e12, 4e12]
    assert "4.00 TFLOPs" in " ".join(t.get_text() for t in ax.texts)
    assert hypervolume_png(curve.iloc[:0])[:4] == b"\x89PNG"  # a search with no ended trial yet


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


def _realised_row() -> dict:
    """A trial sampled at x 0.17, y 0.2 that saved 24% by freezing (T_frz rounds down) and 20% by sieving."""
    cfg = make_config(**{"freezing.target_flops_reduction": 0.17, "sieving.fraction": 0.2, "train.precision": "bf16"})
    return {"trial_id": "r1", "status": "COMPLETED", "full_budget": True, "test_accuracy": 0.8,
            "train_flops": 76.0, "saved_freezing": 24.0, "saved_sieving": 25.0, "held_sparsity": 0.9,
            "flops_ratio": 0.2, "params": json.dumps({"sieving.fraction": 0.2}), "config": json.dumps(cfg)}


def test_realised_savings_beside_the_sampled_targets():
    got = realised(_realised_row())
    assert got["freezing"] == pytest.approx(24 / 100)  # against the same run without freezing
    assert got["sieving"] == pytest.approx(25 / 125)  # against the sparse run on the full set
    assert got["sparsity"] == pytest.approx(0.9)
    assert realised_text(_realised_row()) == \
        "froze 24.0% (x 0.17), sieved 20.0% (y 0.2), held 90.0% sparse (target 90%), precision bf16"
    assert np.isnan(realised({"train_flops": float("nan")})["freezing"])
    no_freeze = {**_realised_row(), "saved_freezing": 0.0, "saved_sieving": 0.0, "config": json.dumps(make_config())}
    assert realised_text(no_freeze).startswith("held 90.0% sparse")  # nothing frozen nor sieved: not said


def test_tables_plots_and_pages_show_what_a_trial_realised(tmp_path):
    from rich.console import Console

    df = pd.DataFrame([{**_realised_row(), "pareto": True}])
    console = Console(width=250, record=True)
    console.print(answer_table(df, "front", knee="r1"))
    text = console.export_text()
    assert "froze 24.0% (x 0.17)" in text and "precision bf16" in text and "realised" in text
    page = frontier_html(df, tmp_path / "r.html").read_text()
    assert page.count("froze 24.0% (x 0.17), sieved 20.0% (y 0.2)") == 2  # hover card and frontier table


def test_trials_parquet_keeps_the_held_sparsity():
    """trials.parquet's ``held_sparsity`` is 1 - the density the sparse layers held at the last reported epoch."""
    from types import SimpleNamespace

    from spfde_search.search.results import TRIAL_COLUMNS, trial_row

    assert "held_sparsity" in TRIAL_COLUMNS
    result = {"epoch": 2, "epochs_total": 2, "density": 0.115, "train_flops": 1.0, "test_accuracy": 0.5}
    trial = SimpleNamespace(trial_id="a", status="TERMINATED", config={"sparsity.ratio": 0.9}, last_result=result)
    assert trial_row(trial, make_config())["held_sparsity"] == pytest.approx(0.885)
