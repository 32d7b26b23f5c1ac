"""Pictures of a search: accuracy vs training FLOPs, the Pareto frontier highlighted.

Input is a trials table with the ``trials.parquet`` columns (docs/architecture.md) plus a boolean ``pareto``
column; the caller decides the frontier (``spfde_search.pareto``), this module only draws it.

- ``frontier_png``: static matplotlib figure (Agg backend, no display needed).
- ``frontier_html``: interactive, self-contained plotly page (plotly.js inlined, works offline).

The paper's hand-picked schedules (SPFDE.md §6) are marked where a trial ran exactly that schedule.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["PAPER_POINTS", "paper_point_label", "frontier_png", "frontier_html", "plot_table"]

# The paper's hand-picked points (SPFDE.md §6; the headline points of search_spaces' `paper` set), as the
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


def _flat(config: Mapping[str, Any] | str | None) -> dict[str, Any]:
    from spfde_search.config import flatten

    if config is None or (isinstance(config, float) and math.isnan(config)):
        return {}
    if isinstance(config, str):
        config = json.loads(config) if config else {}
    return flatten(config)


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


def plot_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Rows that can be drawn: finished with a test accuracy and training FLOPs; adds ``paper_point``."""
    df = trials.copy()
    if "pareto" not in df.columns:
        df["pareto"] = False
    df["pareto"] = df["pareto"].fillna(False).astype(bool)
    for col in ("test_accuracy", "train_flops", "flops_ratio"):
        df[col] = pd.to_numeric(df.get(col), errors="coerce")
    df = df[df["test_accuracy"].notna() & df["flops_ratio"].notna()]
    df = df.assign(paper_point=[paper_point_label(c) for c in df.get("config", pd.Series([None] * len(df)))])
    return df.reset_index(drop=True)


def _title(trials: pd.DataFrame, title: str | None) -> str:
    n = len(trials)
    counts = trials["status"].value_counts().to_dict() if "status" in trials.columns else {}
    parts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items()))
    head = title or "Accuracy vs training FLOPs"
    return f"{head}\n{n} trials ({parts})" if parts else head


def frontier_png(trials: pd.DataFrame, path: str | Path, title: str | None = None) -> Path:
    """Scatter of every finished trial, frontier as a highlighted staircase, paper points starred."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    df = plot_table(trials)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    full = df["full_budget"].fillna(False).astype(bool) if "full_budget" in df.columns else pd.Series(True, df.index)
    done = df["status"].eq("COMPLETED") & full if "status" in df.columns else full
    other = df[~done]
    if len(other):
        ax.scatter(other["flops_ratio"], other["test_accuracy"], s=18, c="lightgray", marker="x",
                   label="stopped early / partial budget")
    rest = df[done & ~df["pareto"]]
    ax.scatter(rest["flops_ratio"], rest["test_accuracy"], s=24, c="tab:blue", alpha=0.7, label="completed trial")
    front = df[df["pareto"]].sort_values("flops_ratio")
    if len(front):
        ax.step(front["flops_ratio"], front["test_accuracy"], where="post", c="tab:red", lw=1.5, alpha=0.8)
        ax.scatter(front["flops_ratio"], front["test_accuracy"], s=60, c="tab:red", edgecolors="black",
                   zorder=3, label=f"Pareto frontier ({len(front)})")
    paper = df[df["paper_point"] != ""]
    if len(paper):
        ax.scatter(paper["flops_ratio"], paper["test_accuracy"], s=160, marker="*", c="gold",
                   edgecolors="black", zorder=4, label="paper's hand-picked points")
        for _, r in paper.iterrows():
            ax.annotate(r["paper_point"], (r["flops_ratio"], r["test_accuracy"]), textcoords="offset points",
                        xytext=(6, -10), fontsize=8)
    ax.set_xlabel("training FLOPs (fraction of dense training)")
    ax.set_ylabel("test accuracy")
    ax.set_title(_title(trials, title), fontsize=10)
    ax.grid(alpha=0.3)
    if len(df):
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out


def _hover(r: pd.Series) -> str:
    lines = [f"trial {r.get('trial_id', '')}", f"accuracy {r['test_accuracy']:.4f}",
             f"FLOPs ratio {r['flops_ratio']:.4f}"]
    tf = r.get("train_flops")
    if tf is not None and not (isinstance(tf, float) and math.isnan(tf)):
        lines.append(f"training FLOPs {float(tf):.4g}")
    if r.get("run_id"):
        lines.append(f"MLflow run {r['run_id']}")
    params = r.get("params")
    if isinstance(params, str) and params:
        try:
            for k, v in json.loads(params).items():
                lines.append(f"{k} = {v}")
        except ValueError:
            pass
    if r.get("paper_point"):
        lines.append(f"paper point: {r['paper_point']}")
    return "<br>".join(lines)


def frontier_html(trials: pd.DataFrame, path: str | Path, title: str | None = None) -> Path:
    """Interactive page: hover a point for its trial, params and MLflow run; self-contained (no CDN)."""
    import plotly.graph_objects as go

    df = plot_table(trials)
    df = df.assign(hover=[_hover(r) for _, r in df.iterrows()])
    fig = go.Figure()
    front = df[df["pareto"]].sort_values("flops_ratio")
    rest = df[~df["pareto"]]
    fig.add_trace(go.Scatter(x=rest["flops_ratio"], y=rest["test_accuracy"], mode="markers", name="trials",
                             marker={"size": 8, "color": "steelblue", "opacity": 0.7},
                             hovertext=rest["hover"], hoverinfo="text"))
    fig.add_trace(go.Scatter(x=front["flops_ratio"], y=front["test_accuracy"], mode="lines+markers",
                             line={"shape": "hv", "color": "crimson"}, name="Pareto frontier",
                             marker={"size": 12, "color": "crimson", "line": {"width": 1, "color": "black"}},
                             hovertext=front["hover"], hoverinfo="text"))
    paper = df[df["paper_point"] != ""]
    if len(paper):
        fig.add_trace(go.Scatter(x=paper["flops_ratio"], y=paper["test_accuracy"], mode="markers+text",
                                 name="paper's hand-picked points", text=paper["paper_point"],
                                 textposition="bottom right",
                                 marker={"symbol": "star", "size": 16, "color": "gold",
                                         "line": {"width": 1, "color": "black"}},
                                 hovertext=paper["hover"], hoverinfo="text"))
    fig.update_layout(title=_title(trials, title).replace("\n", "<br>"),
                      xaxis_title="training FLOPs (fraction of dense training)", yaxis_title="test accuracy",
                      template="plotly_white")
    out = Path(path)
    fig.write_html(str(out), include_plotlyjs=True, full_html=True)
    return out
