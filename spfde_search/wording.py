"""Wording of a search's answer shared by every view: FLOPs and accuracy formats, parameter lists, chance
warnings, the paper's points, the knee, and the rich table of a front (``spfde search``'s last table,
``spfde pareto``). Split from ``plots.py`` (which re-exports these names), so the pictures and the words each
stay one readable module; nothing here loads matplotlib, and pandas only where a table is passed in.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .pareto import is_finite
from .tables import natural_width, stacked_table

if TYPE_CHECKING:  # pandas loads lazily: ``format_flops`` serves ``spfde --help``-fast commands
    import pandas as pd

__all__ = [
    "PAPER_POINTS", "CHANCE_MARGIN", "paper_point_label", "format_flops", "format_accuracy", "display_params",
    "format_params", "json_object", "brief", "chance_accuracy", "chance_of_config", "chance_warning", "knee_trial",
    "selection_note", "answer_table", "point_label", "realised", "realised_text", "run_name",
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
    instead (``stacked_table``): rich would otherwise truncate parameter names (``sieving.frac…``). ``realised``
    puts what the trial achieved beside its targets (``realised_text``). Validation accuracy (what
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
        under = {"parameters": format_params(r.get("params"), base, sep="\0"),
                 "realised": realised_text(r).replace(", ", "\0") if ok else ""}
        under.update({"reason": _one_line(r.get("error"))} if reason else {})
        under.update({"MLflow run": str(r.get("run_id", ""))} if run_id else {})
        records.append((cells, under))
    t = Table(title=title, title_justify="left")
    under_cols = ["parameters", "realised"] + ["reason"] * reason + ["MLflow run"] * run_id
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


def format_accuracy(v: Any) -> str:
    """One accuracy format everywhere: ``0.8823``; '-' for a missing value."""
    return f"{float(v):.4f}" if is_finite(v) else "-"


def point_label(config: Mapping[str, Any] | str | None, params: Mapping[str, Any] | str | None = None) -> str:
    """What a trial is, in a few words, for a point on a plot: ``mest 94%, f 0.2, y 0.25`` (the DST algorithm and
    sparsity, then the freezing target and the sieve fraction where they are used; ``f @e30`` for an explicit
    freeze epoch), read from the resolved config (a budget-first trial's sparsity is solved, not sampled), else
    from the sampled parameters. '' when neither says anything."""
    flat: dict[str, Any] = _flat(config) or {k: v for k, v in json_object(params).items() if v is not None}
    alg, ratio = flat.get("sparsity.algorithm"), flat.get("sparsity.ratio")
    parts = []
    if alg == "dense":
        parts.append("dense")
    elif alg is not None or ratio is not None:
        sparsity = f"{float(ratio) * 100:.0f}%" if ratio is not None and is_finite(ratio) else ""
        parts.append(" ".join(str(p) for p in (alg or "", sparsity) if p))
    start, x = flat.get("freezing.start_epoch"), flat.get("freezing.target_flops_reduction")
    if start is not None:
        parts.append(f"f @e{start}")
    elif x is not None and is_finite(x) and float(x) > 0:
        parts.append(f"f {float(x):.2g}")
    y = flat.get("sieving.fraction")
    if y is not None and is_finite(y) and float(y) > 0:
        parts.append(f"y {float(y):.2g}")
    return ", ".join(parts)


def _num(v: Any) -> float:
    return float(v) if is_finite(v) else math.nan


def realised(row: Mapping[str, Any]) -> dict[str, float]:
    """What a trial realised, as fractions comparable to its targets (NaN where unknown), from a trials row:

    - ``freezing``: training FLOPs freezing saved, against the same run without freezing (the target x's own
      reference, docs/method.md §3): saved_freezing / (train_flops + saved_freezing);
    - ``sieving``: FLOPs sieving saved, against the same sparse run on the full set: saved_sieving /
      (train_flops + saved_freezing + saved_sieving) (the target is the removed fraction y);
    - ``sparsity``: the sparsity the sparse layers held at the last epoch (``held_sparsity``).

    A freezing target is met or beaten (T_frz rounds down to the Δτ grid), so a trial sampled at 0.17 may save
    24%: the plots, tables and exports show both."""
    train, fr, sv = _num(row.get("train_flops")), _num(row.get("saved_freezing")), _num(row.get("saved_sieving"))
    out = {"freezing": math.nan, "sieving": math.nan, "sparsity": _num(row.get("held_sparsity"))}
    if math.isfinite(train) and math.isfinite(fr) and train + fr > 0:
        out["freezing"] = fr / (train + fr)
        if math.isfinite(sv) and train + fr + sv > 0:
            out["sieving"] = sv / (train + fr + sv)
    return out


def realised_text(row: Mapping[str, Any]) -> str:
    """``froze 24.4% (x 0.17), sieved 20.0% (y 0.2), held 90.0% sparse (target 90%), bf16``: realised beside
    sampled target, and the precision the trial ran with (its config's resolved ``train.precision``)."""
    flat: dict[str, Any] = _flat(row.get("config"))
    got = realised(row)
    parts = []
    x, y, s = (_num(flat.get(k)) for k in ("freezing.target_flops_reduction", "sieving.fraction", "sparsity.ratio"))
    if math.isfinite(got["freezing"]) and (got["freezing"] > 0 or x > 0):
        parts.append(f"froze {got['freezing']:.1%}" + (f" (x {x:.2g})" if math.isfinite(x) else ""))
    if math.isfinite(got["sieving"]) and (got["sieving"] > 0 or y > 0):
        parts.append(f"sieved {got['sieving']:.1%}" + (f" (y {y:.2g})" if math.isfinite(y) else ""))
    if math.isfinite(got["sparsity"]) and flat.get("sparsity.algorithm") != "dense":
        parts.append(f"held {got['sparsity']:.1%} sparse" + (f" (target {s:.0%})" if math.isfinite(s) else ""))
    if flat.get("train.precision"):
        parts.append(f"precision {flat['train.precision']}")
    return ", ".join(parts)


def run_name(trial_id: str, config: Mapping[str, Any] | str | None) -> str:
    """A trial's MLflow run name, what it is first: ``mest s0.93 f0.20 y0.25 · c435e8cc`` (DST algorithm,
    sparsity, freezing target and sieve fraction where used, from the resolved config), then the trial id that
    keeps it unique. A bare id (``c435e8cc``) said nothing in the runs table."""
    flat: dict[str, Any] = _flat(config)
    alg, ratio = flat.get("sparsity.algorithm"), _num(flat.get("sparsity.ratio"))
    parts = [str(alg)] if alg else []
    if alg != "dense" and math.isfinite(ratio):
        parts.append(f"s{ratio:.2f}")
    x, y, start = _num(flat.get("freezing.target_flops_reduction")), _num(flat.get("sieving.fraction")), \
        flat.get("freezing.start_epoch")
    if start is not None:
        parts.append(f"f@e{start}")
    elif x > 0:
        parts.append(f"f{x:.2f}")
    if y > 0:
        parts.append(f"y{y:.2f}")
    return f"{' '.join(parts)} · {trial_id}" if parts else str(trial_id)
