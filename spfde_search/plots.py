"""Pictures of a search's answer: accuracy vs training FLOPs (frontier, knee, budget) and hypervolume vs compute.

Input is a trials table with the ``trials.parquet`` columns (docs/architecture.md) plus a boolean ``pareto``
column; the caller decides the frontier (``spfde_search.pareto``), this module only draws it. The words the
pictures share with the tables (FLOPs and accuracy formats, parameter lists, "knee") live in ``wording.py`` and
are re-exported here, so a FLOPs figure or a parameter list reads the same everywhere.

- ``frontier_figure`` / ``frontier_png``: static matplotlib figure (Agg backend, no display needed). The FLOPs
  axis is logarithmic: the budget space samples cost log-uniformly, so on a linear axis half the trials crowd
  the left fifth. Points are labelled by what they are (``wording.point_label``), placed where they cover no
  point and no other label; the legend sits outside the axes.
- ``frontier_html``: a small self-contained page (inline SVG of the same figure, a hover card per trial with
  every sampled parameter, the frontier as a table). No scripts, so it renders inside MLflow's sandboxed
  artifact viewer at once; the old plotly page inlined 4.6 MB of plotly.js.
- ``hypervolume_figure`` / ``hypervolume_png``: the search's ``hypervolume_vs_compute.csv`` as a step curve.

The paper's hand-picked schedules (docs/method.md §6) are marked where a trial ran exactly that schedule.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .pareto import is_finite, selected_on
from .wording import (
    CHANCE_MARGIN,
    PAPER_POINTS,
    answer_table,
    brief,
    chance_accuracy,
    chance_of_config,
    chance_warning,
    display_params,
    format_accuracy,
    format_flops,
    format_params,
    json_object,
    knee_trial,
    paper_point_label,
    point_label,
    realised_text,
    selection_note,
)

if TYPE_CHECKING:  # pandas/matplotlib load lazily: ``format_flops`` serves ``spfde --help``-fast commands
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = [
    "PAPER_POINTS", "CHANCE_MARGIN", "paper_point_label", "point_label", "format_flops", "format_accuracy",
    "display_params", "format_params", "json_object", "chance_accuracy", "chance_of_config", "chance_warning",
    "knee_trial", "selection_note", "answer_table", "brief", "plot_table", "realised_text",
    "frontier_figure", "frontier_png", "frontier_html", "hypervolume_figure", "hypervolume_png",
]

_STOPPED = ("EARLY_STOPPED", "STOPPED", "INTERRUPTED")
_POINT_PX = 7.0  # half the size of the largest ordinary marker, in pixels: a label keeps this far from a point

# ---------------------------------------------------------------- the figure


def _numeric(trials: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    df = trials.copy()
    if "pareto" not in df.columns:
        df["pareto"] = False
    df["pareto"] = df["pareto"].fillna(False).astype(bool)
    for col in ("val_accuracy", "test_accuracy", "train_flops", "flops_ratio"):
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else math.nan
    if "status" not in df.columns:
        df["status"] = "COMPLETED"
    return df


def plot_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Rows drawn as points: trained (not FAILED / INFEASIBLE) with a selection accuracy (validation, else test)
    and a positive FLOPs ratio (the axis is logarithmic); adds ``paper_point``, ``label`` and ``knee``."""
    df = _numeric(trials)
    df = df[df[selected_on(trials)].notna() & (df["flops_ratio"] > 0)
            & ~df["status"].isin(["FAILED", "INFEASIBLE"])]
    configs = list(df["config"]) if "config" in df.columns else [None] * len(df)
    params = list(df["params"]) if "params" in df.columns else [None] * len(df)
    df = df.assign(paper_point=[paper_point_label(c) for c in configs],
                   label=[point_label(c, p) for c, p in zip(configs, params, strict=True)]).reset_index(drop=True)
    knee = knee_trial(df)
    return df.assign(knee=[knee is not None and str(t) == knee for t in df.get("trial_id", [None] * len(df))])


def _infeasible(trials: pd.DataFrame) -> pd.DataFrame:
    df = _numeric(trials)
    return df[df["status"].eq("INFEASIBLE") & (df["flops_ratio"] > 0)]


def _title(trials: pd.DataFrame, title: str | None) -> str:
    n = len(trials)
    counts = trials["status"].value_counts().to_dict() if "status" in trials.columns else {}
    parts = ", ".join(f"{v} {str(k).lower()}" for k, v in sorted(counts.items()))
    head = title or "Accuracy vs training FLOPs"
    return f"{head}\n{n} trials ({parts})" if parts else head


def _log_ratio_axis(ax: Any) -> None:
    """A log x axis read as plain ratios (0.05, 0.1, 0.2, 0.5, 1), not powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def frontier_figure(trials: pd.DataFrame, title: str | None = None, *, flops_budget: float | None = None,
                    chance: float | None = None) -> Figure:
    """Every trained trial on a log FLOPs axis; the frontier as a staircase, its points labelled by what they
    are and, with a validation split, their test accuracy beside; the knee, the FLOPs budget (a ratio of dense
    training) as a dashed line, stopped and infeasible trials with their own markers; the legend outside.

    Artists carry labels (legend) and gids (``trial-label``, ``knee-label``, ``front-test``, ...) that the tests
    and the HTML read. The layout is fixed once drawn, so the HTML's hover cards sit on their points.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.layout_engine import ConstrainedLayoutEngine
    from matplotlib.transforms import blended_transform_factory

    df = plot_table(trials)
    y = selected_on(trials)
    # pads in inches: room for the legend's frame at the figure's edge
    fig = Figure(figsize=(10, 5.5), dpi=120, layout=ConstrainedLayoutEngine(w_pad=0.1, h_pad=0.08))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    _log_ratio_axis(ax)
    labels: list[tuple[str, float, float, str]] = []  # text, x, y, gid: placed once the layout is known
    full = df["full_budget"].fillna(False).astype(bool) if "full_budget" in df.columns else True
    stopped = df["status"].isin(_STOPPED) | ~full
    other = df[stopped]
    if len(other):
        ax.scatter(other["flops_ratio"], other[y], s=30, c="gray", marker="x",
                   label=f"stopped early / partial budget ({len(other)})", gid="stopped")
    rest = df[~stopped & ~df["pareto"]]
    if len(rest):
        ax.scatter(rest["flops_ratio"], rest[y], s=24, c="tab:blue", alpha=0.7,
                   label=f"completed, dominated ({len(rest)})", gid="dominated")
    front = df[df["pareto"]].sort_values("flops_ratio")
    if len(front):
        ax.step(front["flops_ratio"], front[y], where="post", c="tab:red", lw=1.5, alpha=0.8)
        ax.scatter(front["flops_ratio"], front[y], s=60, c="tab:red", edgecolors="black",
                   zorder=3, label=f"Pareto frontier ({len(front)})", gid="frontier")
        for (px, py), group in front.groupby(["flops_ratio", y], sort=False):
            knee_here = bool(group["knee"].any())
            text = " | ".join(dict.fromkeys(s or str(t) for s, t in zip(group["label"], group["trial_id"],
                                                                          strict=True)))
            labels.append((f"knee: {text}" if knee_here else text, px, py, "knee-label" if knee_here else "trial-label"))
        tested = front[front["test_accuracy"].notna()] if y == "val_accuracy" else front.iloc[:0]
        if len(tested):  # reported beside the validation accuracy that selected it
            ax.vlines(tested["flops_ratio"], tested[y], tested["test_accuracy"], colors="tab:red", lw=0.8,
                      linestyles=":", gid="front-test-link")
            ax.scatter(tested["flops_ratio"], tested["test_accuracy"], s=36, facecolors="none",
                       edgecolors="tab:red", zorder=3, label="frontier, test accuracy (reported only)",
                       gid="front-test")
    knee = df[df["knee"]]
    if len(knee):
        ax.scatter(knee["flops_ratio"], knee[y], s=220, marker="D", facecolors="none",
                   edgecolors="black", linewidths=2, zorder=5,
                   label=f"knee: {knee['label'].iloc[0] or 'trial'} ({knee['trial_id'].iloc[0]})", gid="knee")
    paper = df[df["paper_point"] != ""]
    if len(paper):
        ax.scatter(paper["flops_ratio"], paper[y], s=160, marker="*", c="gold",
                   edgecolors="black", zorder=4, label="paper's hand-picked points", gid="paper")
        for _, r in paper.iterrows():  # a frontier point says what it is already; the star marks it the paper's
            if not r["pareto"]:
                labels.append((r["paper_point"], r["flops_ratio"], r[y], "paper-label"))
    bad = _infeasible(trials)
    if len(bad):  # no accuracy: drawn on the bottom edge at the FLOPs they would have cost
        ax.scatter(bad["flops_ratio"], [0.03] * len(bad), transform=blended_transform_factory(ax.transData,
                   ax.transAxes), s=50, marker="X", c="tab:purple", zorder=4, clip_on=False,
                   label=f"infeasible, at predicted FLOPs ({len(bad)})", gid="infeasible")
    if flops_budget is not None and math.isfinite(flops_budget) and flops_budget > 0:
        ax.axvline(flops_budget, ls="--", c="tab:orange", lw=1.2,
                   label=f"FLOPs budget ({flops_budget:.3g}x dense)", gid="budget")
    ax.set_xlabel("training FLOPs, fraction of dense training (log scale)")
    ax.set_ylabel("validation accuracy" if y == "val_accuracy" else "test accuracy (selected on test: no validation split)")
    head = _title(trials, title)
    warn = chance_warning(df[y].max() if len(df) else None, chance)
    if warn:
        head += f"\nwarning: best accuracy {df[y].max():.3f} is near chance ({chance:.3f})"
    ax.set_title(head, fontsize=10, color="firebrick" if warn else "black")
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:  # outside the axes: it never covers a point
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8)
    ax.margins(x=0.08, y=0.1)
    fig.canvas.draw()  # the constrained layout settles with the legend outside; then it is fixed
    fig.set_layout_engine("none")
    _place_labels(ax, labels)
    return fig


def _point_pixels(ax: Any) -> list[tuple[float, float]]:
    """Where every drawn marker is, in display pixels (scatter offsets in their own transforms)."""
    out: list[tuple[float, float]] = []
    for c in ax.collections:
        if c.get_gid() in ("front-test-link",):
            continue
        offsets = c.get_offsets()
        if len(offsets):
            out += [tuple(p) for p in c.get_offset_transform().transform(offsets)]
    return out


def _place_labels(ax: Any, labels: list[tuple[str, float, float, str]]) -> None:
    """Each label goes to the first of rings of spots around its point (near ones first; then the same text on
    two lines) where its box stays inside the axes and covers no marker and no label placed before; a label set
    off from its point gets a thin leader line. The knee's label is placed first, so it gets the nearest spot."""
    renderer = ax.figure.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    points = _point_pixels(ax)
    taken: list[Any] = []
    order = sorted(labels, key=lambda lab: lab[3] != "knee-label")
    spots = [(dx * r, dy * r) for r in (8, 18, 32, 50, 75, 100, 130)
             for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1.4), (0, -1.4),
                            (1, 0.5), (1, -0.5), (-1, 0.5), (-1, -0.5))]

    def cost(b: Any) -> float:
        c = 0.0 if box.contains(b.x0, b.y0) and box.contains(b.x1, b.y1) else 100.0
        c += 10 * sum(b.x0 - _POINT_PX < px < b.x1 + _POINT_PX and b.y0 - _POINT_PX < py < b.y1 + _POINT_PX
                      for px, py in points)
        return c + 10 * sum(b.overlaps(t) for t in taken)

    for text, x, y, gid in order:
        best: tuple[float, Any] | None = None
        for variant in dict.fromkeys((text, text.replace(", ", ",\n", 1))):
            for dx, dy in spots:
                ann = ax.annotate(variant, (x, y), textcoords="offset points", xytext=(dx, dy),
                                  ha="left" if dx > 0 else "right" if dx < 0 else "center",
                                  va="bottom" if dy > 0 else "top" if dy < 0 else "center", fontsize=8, gid=gid,
                                  fontweight="bold" if gid == "knee-label" else "normal", annotation_clip=True,
                                  arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.4", "shrinkA": 0,
                                              "shrinkB": 4} if abs(dx) > 8 or abs(dy) > 12 else None)
                c = cost(ann.get_window_extent(renderer).padded(2))
                if best is None or c < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (c, ann)
                else:
                    ann.remove()
                if c == 0:
                    break
            if best is not None and best[0] == 0:
                break
        if best is not None:
            taken.append(best[1].get_window_extent(renderer).padded(2))


def frontier_png(trials: pd.DataFrame, path: str | Path, title: str | None = None, *,
                 flops_budget: float | None = None, chance: float | None = None) -> Path:
    """``frontier_figure`` saved as a PNG."""
    out = Path(path)
    frontier_figure(trials, title, flops_budget=flops_budget, chance=chance).savefig(out)
    return out


# ---------------------------------------------------------------- hypervolume vs compute


def hypervolume_figure(curve: pd.DataFrame, title: str | None = None) -> Figure:
    """Hypervolume of the front after each ended trial against the training FLOPs all trials spent so far
    (``search.results.compute_curve``: the ``hypervolume_vs_compute.csv`` beside ``trials.parquet``), with the
    trial-seconds spent on a second axis label. A flat tail says more trials bought nothing."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(8, 4.5), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    spent = curve["spent_train_flops"].astype(float).to_numpy() if len(curve) else []
    hv = curve["hypervolume"].astype(float).to_numpy() if len(curve) else []
    if len(spent):
        ax.step(spent, hv, where="post", c="tab:red", lw=1.5, gid="hypervolume")
        ax.scatter(spent, hv, s=14, c="tab:red", zorder=3)
        secs = curve["spent_seconds"].astype(float).iloc[-1] if "spent_seconds" in curve.columns else math.nan
        note = f"{len(curve)} ended trials, {format_flops(spent[-1])}"
        note += f", {secs / 3600:.2f} trial-hours" if is_finite(secs) else ""
        ax.text(0.99, 0.02, note, transform=ax.transAxes, ha="right", va="bottom", fontsize=8, color="0.3")
    ax.set_xlabel("training FLOPs spent by all trials so far")
    ax.set_ylabel("hypervolume of the front (accuracy x FLOPs saved)")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_flops(v).replace("FLOPs", "").strip()))
    ax.set_title(title or "Hypervolume vs compute", fontsize=10)
    ax.grid(alpha=0.3)
    return fig


def hypervolume_png(curve: pd.DataFrame, path: str | Path | None = None, title: str | None = None) -> bytes:
    """``hypervolume_figure`` as PNG bytes (written to ``path`` too if given; storage URIs write the bytes)."""
    buf = io.BytesIO()
    hypervolume_figure(curve, title).savefig(buf, format="png")
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


# ---------------------------------------------------------------- the HTML page


def _hover(r: Mapping[str, Any]) -> str:
    """A point's hover card: what it is, its accuracies and FLOPs, and every sampled parameter, unabridged."""
    lines = [f"trial {r.get('trial_id', '')} ({r.get('status', '')})" + ("  KNEE" if r.get("knee") else ""),
             *([str(r["label"])] if r.get("label") else []),
             *([f"validation accuracy {float(r['val_accuracy']):.4f}"] if is_finite(r.get("val_accuracy")) else []),
             f"test accuracy {float(r['test_accuracy']):.4f}" if is_finite(r.get("test_accuracy")) else "test accuracy -",
             f"training FLOPs {format_flops(r.get('train_flops'))} ({float(r['flops_ratio']):.4f}x dense)"]
    if r.get("run_id"):
        lines.append(f"MLflow run {r['run_id']}")
    if realised_text(r):
        lines.append(f"realised: {realised_text(r)}")
    sampled = {k: v for k, v in json_object(r.get("params")).items() if v is not None}
    lines += ["sampled:", *(f"  {k} = {v}" for k, v in sampled.items())] if sampled else []
    if r.get("paper_point"):
        lines.append(f"paper point: {r['paper_point']}")
    return "\n".join(lines)


def _dom_id(trial_id: Any) -> str:
    return f"point-{re.sub(r'[^A-Za-z0-9_-]', '_', str(trial_id))}"


def _hover_cards(fig: Figure, df: pd.DataFrame) -> str:
    """One invisible hit target per trial over its point, and its card shown on hover or focus (pure CSS), at
    percentages of the figure so they follow the SVG as it scales. A card opens away from the nearer edges and
    never wraps or cuts a line."""
    ax = fig.axes[0]
    width, height = fig.bbox.width, fig.bbox.height
    y = selected_on(df) if len(df) else "test_accuracy"
    out = []
    for _, r in df.iterrows():
        px, py = ax.transData.transform((float(r["flops_ratio"]), float(r[y])))
        left, top = 100 * px / width, 100 * (1 - py / height)
        side = f"right:{100 - left:.2f}%" if left > 50 else f"left:{left:.2f}%"
        vert = f"bottom:{100 - top:.2f}%" if top > 50 else f"top:{top:.2f}%"
        out.append(f'<a class="pt" id="{_dom_id(r.get("trial_id", ""))}" tabindex="0" '
                   f'style="left:{left:.2f}%;top:{top:.2f}%" aria-label="trial {html.escape(str(r.get("trial_id")))}">'
                   f'</a><div class="tip" style="{side};{vert}">{html.escape(_hover(r))}</div>')
    return "\n".join(out)


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]  # drop the XML prolog and doctype: inline in HTML


def frontier_html(trials: pd.DataFrame, path: str | Path, title: str | None = None, *,
                  flops_budget: float | None = None, chance: float | None = None,
                  base: Mapping[str, Any] | None = None) -> Path:
    """A small page that works offline and in MLflow's sandboxed artifact iframe: the figure as SVG (hover a
    point for its trial, every sampled parameter and its MLflow run) and the frontier as a table, knee marked;
    the table's parameters are those that differ from the ``base`` config, one per line."""
    df = plot_table(trials)
    fig = frontier_figure(trials, title, flops_budget=flops_budget, chance=chance)
    cards = _hover_cards(fig, df)
    svg = _svg(fig)
    front = df[df["pareto"]].sort_values("flops_ratio")
    rows = []
    for _, r in front.iterrows():
        cells = ["knee" if r["knee"] else "", r.get("trial_id", ""), r.get("label", ""),
                 format_accuracy(r.get("val_accuracy")), format_accuracy(r.get("test_accuracy")),
                 format_flops(r.get("train_flops")), f"{float(r['flops_ratio']):.4f}", realised_text(r)]
        params = "<br>".join(html.escape(p) for p in format_params(r.get("params"), base, sep="\0").split("\0"))
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + f"<td>{params}</td>"
                    + "".join(f"<td>{html.escape(str(c))}</td>" for c in (r.get("paper_point", ""),
                                                                          r.get("run_id", ""))) + "</tr>")
    warn = chance_warning(df[selected_on(trials)].max() if len(df) else None, chance)
    head = html.escape(_title(trials, title)).replace("\n", "<br>")
    names = ("knee", "trial", "what", "val acc", "test acc", "training FLOPs", "ratio to dense", "realised", "parameters",
             "paper point", "MLflow run")
    cols = "".join(f"<th>{c}</th>" for c in names)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title or 'Pareto frontier')}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 12px; color: #222; background: #fff; }}
.plot {{ position: relative; display: inline-block; max-width: 100%; }}
.plot svg {{ display: block; max-width: 100%; height: auto; }}
.pt {{ position: absolute; width: 16px; height: 16px; margin: -8px 0 0 -8px; border-radius: 50%; }}
.pt:hover, .pt:focus {{ outline: 2px solid #333; }}
.tip {{ display: none; position: absolute; z-index: 10; white-space: pre; font: 12px/1.35 ui-monospace, monospace;
        background: #fffdf3; border: 1px solid #888; padding: 4px 8px; box-shadow: 0 2px 6px rgba(0,0,0,.25);
        pointer-events: none; }}
.pt:hover + .tip, .pt:focus + .tip {{ display: block; }}
table {{ border-collapse: collapse; font-size: 13px; margin-top: 8px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }}
tr:has(td:first-child:not(:empty)) {{ background: #fff3c4; font-weight: 600; }}
.warn {{ color: #a00; font-weight: 600; }}
</style></head><body>
<h3>{head}</h3>
{f'<p class="warn">warning: {html.escape(warn)}</p>' if warn else ''}
{f'<p class="warn">{html.escape(selection_note(trials))}</p>' if selection_note(trials) else ''}
<p>Hover a point (or tab to it) for its trial, every sampled parameter and its MLflow run.</p>
<div class="plot">
{svg}
{cards}
</div>
<h4>Pareto frontier ({len(front)} of {len(trials)} trials), cheapest first</h4>
<table><thead><tr>{cols}</tr></thead><tbody>
{chr(10).join(rows) if rows else f'<tr><td colspan="{len(names)}">no completed full-budget trial yet</td></tr>'}
</tbody></table>
</body></html>
"""
    out = Path(path)
    out.write_text(page)
    return out
