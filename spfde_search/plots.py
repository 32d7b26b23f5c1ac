"""Pictures and wording of a search's answer: accuracy vs training FLOPs, frontier, knee, budget.

Input is a trials table with the ``trials.parquet`` columns (docs/architecture.md) plus a boolean ``pareto``
column; the caller decides the frontier (``spfde_search.pareto``), this module only draws and words it. The
same helpers serve the PNG, the HTML page, the search's final table and ``spfde pareto``, so a FLOPs figure, a
parameter list and "knee" read the same everywhere.

- ``frontier_figure`` / ``frontier_png``: static matplotlib figure (Agg backend, no display needed).
- ``frontier_html``: a small self-contained page (inline SVG of the same figure, a hover title per trial, the
  frontier as a table). No scripts, so it renders inside MLflow's sandboxed artifact viewer at once; the old
  plotly page inlined 4.6 MB of plotly.js.

The paper's hand-picked schedules (docs/method.md §6) are marked where a trial ran exactly that schedule.
"""

from __future__ import annotations

import functools
import html
import io
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .pareto import is_finite
from .tables import natural_width, stacked_table

if TYPE_CHECKING:  # pandas/matplotlib load lazily: ``format_flops`` serves ``spfde --help``-fast commands
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = [
    "PAPER_POINTS", "CHANCE_MARGIN", "paper_point_label", "format_flops", "display_params", "format_params",
    "chance_accuracy", "chance_of_config", "chance_warning", "knee_trial", "selection_note", "answer_table",
    "plot_table",
    "frontier_figure", "frontier_png", "frontier_html", "brief",
]

# The paper's hand-picked points (docs/method.md §6; the headline points of search_spaces' `paper` set), as the
# config values that define them.
PAPER_POINTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("MEST 90%", {"sparsity.algorithm": "mest", "sparsity.ratio": 0.9,
                  "freezing.target_flops_reduction": 0.0, "sieving.fraction": 0.0}),
    ("MEST 95%", {"sparsity.algorithm": "mest", "sparsity.ratio": 0.95,
                  "freezing.target_flops_reduction": 0.0, "sieving.fraction": 0.0}),
    ("SpFDE 20%+20% @90%", {"sparsity.algorithm": "mest", "sparsity.ratio": 0.9,
                            "freezing.target_flops_reduction": 0.2, "sieving.fraction": 0.2}),
    ("SpFDE 25%+25% @90%", {"sparsity.algorithm": "mest", "sparsity.ratio": 0.9,
                            "freezing.target_flops_reduction": 0.25, "sieving.fraction": 0.25}),
    ("SpFDE 10%+10% @90%", {"sparsity.algorithm": "mest", "sparsity.ratio": 0.9,
                            "freezing.target_flops_reduction": 0.1, "sieving.fraction": 0.1}),
    ("MEST 60%", {"sparsity.algorithm": "mest", "sparsity.ratio": 0.6,
                  "freezing.target_flops_reduction": 0.0, "sieving.fraction": 0.0}),
)

CHANCE_MARGIN = 0.05
"""A best accuracy less than this far above chance (1 / number of classes) gets a warning: nothing was learnt."""

_STOPPED = ("EARLY_STOPPED", "STOPPED", "INTERRUPTED")


# ---------------------------------------------------------------- wording shared by every view


def brief(text: Any, limit: int = 300) -> str:
    """The first line of ``text`` in about ``limit`` characters, cut between words, keeping its start and its end
    ("... [Errno 111] Connection refused')"), where an error's cause usually is: a warning cut at a fixed width
    lost that end and ended mid-word. A single word longer than the budget is the only thing ever split."""
    lines = str(text).strip().splitlines()
    line = lines[0].strip() if lines else ""
    if len(line) <= limit:
        return line
    words = line.split()
    head_room, tail_room = limit * 2 // 3, limit - limit * 2 // 3 - 3
    head: list[str] = []
    for w in words:
        if len(" ".join([*head, w])) > head_room:
            break
        head.append(w)
    tail: list[str] = []
    for w in reversed(words[len(head):]):
        if len(" ".join([w, *tail])) > tail_room:
            break
        tail.insert(0, w)
    start = " ".join(head) if head else line[:head_room]
    return f"{start} … {' '.join(tail)}".rstrip()


def format_flops(n: Any) -> str:
    """One FLOPs format everywhere: ``39.49 GFLOPs``; '-' for a missing value."""
    try:
        x = float(n)
    except (TypeError, ValueError):
        return "-"
    if not math.isfinite(x):
        return "-"
    for unit, div in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.2f} {unit}FLOPs"
    return f"{x:.0f} FLOPs"


def json_object(v: Any) -> dict[str, Any]:
    """A trial row's JSON cell (``params``, ``config``) as a dict; a mapping passes, anything else is ``{}``."""
    if isinstance(v, Mapping):
        return dict(v)
    if isinstance(v, str) and v.strip():
        try:
            out = json.loads(v)
        except ValueError:
            return {}
        return out if isinstance(out, dict) else {}
    return {}


def _flat(config: Mapping[str, Any] | str | None) -> dict[str, Any]:
    from spfde_search.config import flatten

    return flatten(json_object(config))


def display_params(params: Mapping[str, Any] | str | None,
                   base: Mapping[str, Any] | str | None = None) -> dict[str, Any]:
    """The sampled parameters worth reading: without ``None`` (an unused branch, e.g. ``freezing.start_epoch``
    when a FLOPs target drives freezing) and, given the base config, without values equal to the base's."""
    flat_base = _flat(base) if base is not None else {}
    out = {}
    for k, v in json_object(params).items():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if k in flat_base and flat_base[k] == v:
            continue
        out[k] = v
    return out


def format_params(params: Mapping[str, Any] | str | None, base: Mapping[str, Any] | str | None = None,
                  sep: str = ", ") -> str:
    """``display_params`` as ``k=v`` text, floats to 4 significant digits."""
    return sep.join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in display_params(params, base).items())


def chance_accuracy(data_name: str | None) -> float | None:
    """1 / number of classes of a data set (None when it cannot be told without reading files)."""
    if not data_name:
        return None
    try:
        from spfde_search.config import DataConfig
        from spfde_search.data import dataset_spec

        return 1.0 / dataset_spec(DataConfig.model_validate({"name": data_name})).num_classes
    except Exception:  # noqa: BLE001 - imagefolder without its folder, an unknown name: no warning then
        return None


def chance_of_config(config: Mapping[str, Any] | str | None) -> float | None:
    """Chance accuracy of a trial from its full config (a ``trials.parquet`` ``config`` cell): 1 / number of
    classes of its data set, None when that cannot be told (no data section, an imagefolder that is gone)."""
    data = json_object(config).get("data") if config is not None else None
    if not isinstance(data, Mapping):
        return None
    return _chance_of_data(json.dumps(data, sort_keys=True, default=str))


@functools.lru_cache(maxsize=64)
def _chance_of_data(data_json: str) -> float | None:
    """Cached: one search has one data section, and an imagefolder's class count needs a folder scan."""
    try:
        from spfde_search.config import DataConfig
        from spfde_search.data import dataset_spec

        return 1.0 / dataset_spec(DataConfig.model_validate(json.loads(data_json))).num_classes
    except Exception:  # noqa: BLE001 - unknown data set, missing folder: chance unknown, no rule applied
        return None


def chance_warning(best_accuracy: Any, chance: float | None, margin: float = CHANCE_MARGIN) -> str:
    """A warning when the best test accuracy is within ``margin`` of chance, else ''."""
    try:
        best = float(best_accuracy)
    except (TypeError, ValueError):
        return ""
    if chance is None or not math.isfinite(best) or best >= chance + margin:
        return ""
    return (f"the best test accuracy {best:.4f} is within {margin * 100:.0f} points of chance ({chance:.4f}): "
            "these trials learnt (almost) nothing, so the front and its knee mean little; train longer or on "
            "more data")


def knee_trial(trials: pd.DataFrame) -> str | None:
    """trial_id of the knee (``pareto.knee_point``, accuracy vs training FLOPs) among the ``pareto`` rows."""
    from spfde_search.pareto import knee_point

    if not len(trials) or "pareto" not in trials.columns:
        return None
    front = trials[trials["pareto"].fillna(False).astype(bool)]
    if not len(front):
        return None
    k = knee_point(front[_selected(front)].astype(float).tolist(), front["train_flops"].astype(float).tolist())
    return None if k is None else str(front["trial_id"].iloc[int(k)])


def answer_table(rows: pd.DataFrame, title: str, *, knee: str | None, base: Mapping[str, Any] | None = None,
                 status: bool = False, frontier: bool = False, reason: bool = False, run_id: bool = False,
                 width: int | None = None) -> Any:
    """The rich table of a front (``spfde search``'s last table) or of every trial (``spfde pareto --all``).

    The knee gets the word ``knee`` in its own column (no ``*``); FLOPs read as ``format_flops``; parameters as
    ``format_params`` against ``base``; ``reason`` shows why a trial failed or was infeasible. Given a ``width``
    (a terminal's) the table would overflow, the parameters, reasons and run ids go on lines under each row
    instead (``stacked_table``): rich would otherwise truncate parameter names (``sieving.frac…``). Validation accuracy (what
    selects) comes first and test accuracy (reported only) beside it; a search without a validation split shows
    test alone, and its title says it selects on test (``selection_note``).
    """
    from rich.table import Table

    cols: list[tuple[str, str]] = [("knee", "left"), ("trial", "left")]
    cols += [("status", "left")] * status + [("frontier", "left")] * frontier
    cols += [("val acc", "right")] * _has_val(rows)
    cols += [("test acc", "right"), ("training FLOPs", "right"), ("ratio to dense", "right")]
    records = []
    for r in rows.to_dict("records"):
        val, acc, ratio = r.get("val_accuracy"), r.get("test_accuracy"), r.get("flops_ratio")
        ok = str(r.get("status", "")) not in ("FAILED", "INFEASIBLE")
        cells = ["knee" if knee is not None and str(r.get("trial_id")) == knee else "", str(r.get("trial_id", ""))]
        cells += [str(r.get("status", ""))] * status + (["yes" if r.get("pareto") else ""] if frontier else [])
        cells += [format_accuracy(val) if ok else "-"] * _has_val(rows)
        cells += [format_accuracy(acc) if ok else "-",
                  format_flops(r.get("train_flops")) if ok else "-", f"{float(ratio):.4f}" if is_finite(ratio) else "-"]
        under = {"parameters": format_params(r.get("params"), base, sep="\0")}
        under.update({"reason": _one_line(r.get("error"))} if reason else {})
        under.update({"MLflow run": str(r.get("run_id", ""))} if run_id else {})
        records.append((cells, under))
    t = Table(title=title, title_justify="left")
    under_cols = ["parameters"] + ["reason"] * reason + ["MLflow run"] * run_id
    for col, just in cols + [(k, "left") for k in under_cols]:
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for cells, under in records:
        t.add_row(*cells, *(v.replace("\0", ", ") for v in under.values()))
    if width is None or natural_width(t) <= width:
        return t
    return stacked_table(title, cols, records, width)


def _selected(df: pd.DataFrame) -> str:
    from spfde_search.pareto import selected_on  # lazily, as every import here

    return selected_on(df)


def _has_val(df: pd.DataFrame) -> bool:
    return _selected(df) == "val_accuracy"


def selection_note(df: pd.DataFrame) -> str:
    """'' when ``df`` selects on validation accuracy; else the warning every output of such a search carries."""
    return "" if _has_val(df) else ("selected on TEST accuracy (no validation split: data.val_size 0, or a search "
                                    "from before validation); its front is optimistically biased")


def _one_line(text: Any, width: int = 120) -> str:
    if not isinstance(text, str) or not text.strip():
        return ""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def paper_point_label(config: Mapping[str, Any] | str | None) -> str:
    """The paper point a full config (nested dict or its JSON) reproduces, or '' if none.

    A freezing schedule given by explicit ``start_epoch`` is not the paper's FLOPs-target schedule.
    """
    flat = _flat(config)
    if not flat or flat.get("freezing.start_epoch") is not None:
        return ""
    for label, want in PAPER_POINTS:
        ok = True
        for k, v in want.items():
            got = flat.get(k)
            if isinstance(v, float):
                ok = isinstance(got, (int, float)) and math.isclose(float(got), v, abs_tol=1e-9)
            else:
                ok = got == v
            if not ok:
                break
        if ok:
            return label
    return ""


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
    and a FLOPs ratio; adds ``paper_point`` and ``knee``."""
    df = _numeric(trials)
    df = df[df[_selected(trials)].notna() & df["flops_ratio"].notna() & ~df["status"].isin(["FAILED", "INFEASIBLE"])]
    configs = df["config"] if "config" in df.columns else [None] * len(df)
    df = df.assign(paper_point=[paper_point_label(c) for c in configs]).reset_index(drop=True)
    knee = knee_trial(df)
    return df.assign(knee=[knee is not None and str(t) == knee for t in df.get("trial_id", [None] * len(df))])


def _infeasible(trials: pd.DataFrame) -> pd.DataFrame:
    df = _numeric(trials)
    return df[df["status"].eq("INFEASIBLE") & df["flops_ratio"].notna()]


def _title(trials: pd.DataFrame, title: str | None) -> str:
    n = len(trials)
    counts = trials["status"].value_counts().to_dict() if "status" in trials.columns else {}
    parts = ", ".join(f"{v} {str(k).lower()}" for k, v in sorted(counts.items()))
    head = title or "Accuracy vs training FLOPs"
    return f"{head}\n{n} trials ({parts})" if parts else head


def frontier_figure(trials: pd.DataFrame, title: str | None = None, *, flops_budget: float | None = None,
                    chance: float | None = None) -> Figure:
    """Every trained trial, the frontier as a staircase labelled with trial ids, the knee, the FLOPs budget
    (a ratio of dense training) as a dashed line, stopped and infeasible trials with their own markers.

    Artists carry labels (legend) and gids (``point-<trial>`` in the SVG) that the tests and the HTML read.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.transforms import blended_transform_factory

    df = plot_table(trials)
    y = _selected(trials)
    fig = Figure(figsize=(8, 5.5), dpi=120)
    ax = fig.add_subplot()
    labels: list[tuple[str, float, float, str, bool]] = []  # text, x, y, gid, below: placed once the limits are known
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
        for (px, py), ids in front.groupby(["flops_ratio", y], sort=False)["trial_id"]:
            labels.append((", ".join(map(str, ids)), px, py, "trial-label", False))  # identical points: one label
    knee = df[df["knee"]]
    if len(knee):
        ax.scatter(knee["flops_ratio"], knee[y], s=220, marker="D", facecolors="none",
                   edgecolors="black", linewidths=2, zorder=5,
                   label=f"knee: trial {knee['trial_id'].iloc[0]}", gid="knee")
    paper = df[df["paper_point"] != ""]
    if len(paper):
        ax.scatter(paper["flops_ratio"], paper[y], s=160, marker="*", c="gold",
                   edgecolors="black", zorder=4, label="paper's hand-picked points", gid="paper")
        for _, r in paper.iterrows():
            labels.append((r["paper_point"], r["flops_ratio"], r[y], "paper-label", True))
    bad = _infeasible(trials)
    if len(bad):  # no accuracy: drawn on the bottom edge at the FLOPs they would have cost
        ax.scatter(bad["flops_ratio"], [0.03] * len(bad), transform=blended_transform_factory(ax.transData,
                   ax.transAxes), s=50, marker="X", c="tab:purple", zorder=4, clip_on=False,
                   label=f"infeasible, at predicted FLOPs ({len(bad)})", gid="infeasible")
    if flops_budget is not None and math.isfinite(flops_budget) and flops_budget > 0:
        ax.axvline(flops_budget, ls="--", c="tab:orange", lw=1.2,
                   label=f"FLOPs budget ({flops_budget:.3g}x dense)", gid="budget")
    _place_labels(ax, labels)
    ax.set_xlabel("training FLOPs (fraction of dense training)")
    ax.set_ylabel("validation accuracy" if y == "val_accuracy" else "test accuracy (selected on test: no validation split)")
    head = _title(trials, title)
    warn = chance_warning(df[y].max() if len(df) else None, chance)
    if warn:
        head += f"\nwarning: best accuracy {df[y].max():.3f} is near chance ({chance:.3f})"
    ax.set_title(head, fontsize=10, color="firebrick" if warn else "black")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def _place_labels(ax: Any, labels: list[tuple[str, float, float, str, bool]]) -> None:
    """Point labels that stay inside the axes, clear of the tick labels: towards the middle of the plot from
    their point (right of points in the left half, left of those in the right half; below points near the top,
    and below when ``below`` unless near the bottom)."""
    ax.autoscale_view()
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    for text, x, y, gid, below in labels:
        fx = (x - x0) / (x1 - x0) if x1 > x0 else 0.5
        fy = (y - y0) / (y1 - y0) if y1 > y0 else 0.5
        left = fx < 0.5
        down = fy > 0.8 or (below and fy > 0.2)
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(6 if left else -6, -9 if down else 7),
                    ha="left" if left else "right", va="top" if down else "bottom", fontsize=8, gid=gid,
                    annotation_clip=True)


def frontier_png(trials: pd.DataFrame, path: str | Path, title: str | None = None, *,
                 flops_budget: float | None = None, chance: float | None = None) -> Path:
    """``frontier_figure`` saved as a PNG."""
    out = Path(path)
    frontier_figure(trials, title, flops_budget=flops_budget, chance=chance).savefig(out)
    return out


def _hover(r: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> str:
    lines = [f"trial {r.get('trial_id', '')} ({r.get('status', '')})" + ("  KNEE" if r.get("knee") else ""),
             *([f"validation accuracy {float(r['val_accuracy']):.4f}"] if is_finite(r.get("val_accuracy")) else []),
             f"test accuracy {float(r['test_accuracy']):.4f}" if is_finite(r.get("test_accuracy")) else "test accuracy -",
             f"training FLOPs {format_flops(r.get('train_flops'))} ({float(r['flops_ratio']):.4f}x dense)"]
    if r.get("run_id"):
        lines.append(f"MLflow run {r['run_id']}")
    lines += [f"{k} = {v}" for k, v in display_params(r.get("params"), base).items()]
    if r.get("paper_point"):
        lines.append(f"paper point: {r['paper_point']}")
    return "\n".join(lines)


def format_accuracy(v: Any) -> str:
    """One accuracy format everywhere: ``0.8823``; '-' for a missing value."""
    return f"{float(v):.4f}" if is_finite(v) else "-"


def _svg_with_titles(fig: Figure, df: pd.DataFrame, base: Mapping[str, Any] | None = None) -> str:
    """The figure as inline SVG; every trial gets an invisible hit target whose <title> is its hover text."""
    ax = fig.axes[0]
    for _, r in df.iterrows():
        ax.plot([r["flops_ratio"]], [r[_selected(df)]], "o", ms=12, alpha=0.0,
                gid=f"point-{re.sub(r'[^A-Za-z0-9_-]', '_', str(r.get('trial_id', '')))}")
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML prolog and doctype: inline in HTML
    for _, r in df.iterrows():
        gid = f"point-{re.sub(r'[^A-Za-z0-9_-]', '_', str(r.get('trial_id', '')))}"
        svg = svg.replace(f'<g id="{gid}">', f'<g id="{gid}" style="pointer-events:all">'
                          f"<title>{html.escape(_hover(r, base))}</title>", 1)
    return svg


def frontier_html(trials: pd.DataFrame, path: str | Path, title: str | None = None, *,
                  flops_budget: float | None = None, chance: float | None = None,
                  base: Mapping[str, Any] | None = None) -> Path:
    """A small page that works offline and in MLflow's sandboxed artifact iframe: the figure as SVG (hover a
    point for its trial, parameters and MLflow run) and the frontier as a table, knee marked; parameters shown
    where they differ from the ``base`` config."""
    df = plot_table(trials)
    fig = frontier_figure(trials, title, flops_budget=flops_budget, chance=chance)
    svg = _svg_with_titles(fig, df, base)
    front = df[df["pareto"]].sort_values("flops_ratio")
    rows = []
    for _, r in front.iterrows():
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
            "knee" if r["knee"] else "", r.get("trial_id", ""), format_accuracy(r.get("val_accuracy")),
            format_accuracy(r.get("test_accuracy")),
            format_flops(r.get("train_flops")), f"{float(r['flops_ratio']):.4f}",
            format_params(r.get("params"), base), r.get("paper_point", ""), r.get("run_id", ""))) + "</tr>")
    warn = chance_warning(df[_selected(trials)].max() if len(df) else None, chance)
    head = html.escape(_title(trials, title)).replace("\n", "<br>")
    cols = "".join(f"<th>{c}</th>" for c in ("knee", "trial", "val acc", "test acc", "training FLOPs", "ratio to dense",
                                            "parameters", "paper point", "MLflow run"))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title or 'Pareto frontier')}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 12px; color: #222; background: #fff; }}
svg {{ max-width: 100%; height: auto; }}
table {{ border-collapse: collapse; font-size: 13px; margin-top: 8px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }}
tr:has(td:first-child:not(:empty)) {{ background: #fff3c4; font-weight: 600; }}
.warn {{ color: #a00; font-weight: 600; }}
</style></head><body>
<h3>{head}</h3>
{f'<p class="warn">warning: {html.escape(warn)}</p>' if warn else ''}
{f'<p class="warn">{html.escape(selection_note(trials))}</p>' if selection_note(trials) else ''}
<p>Hover a point for its trial, parameters and MLflow run.</p>
{svg}
<h4>Pareto frontier ({len(front)} of {len(trials)} trials), cheapest first</h4>
<table><thead><tr>{cols}</tr></thead><tbody>
{chr(10).join(rows) if rows else '<tr><td colspan="9">no completed full-budget trial yet</td></tr>'}
</tbody></table>
</body></html>
"""
    out = Path(path)
    out.write_text(page)
    return out
