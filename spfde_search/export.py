"""Export frontier schedules as complete, runnable YAML configs (``spfde export``).

A pick is made on the Pareto frontier read back from MLflow (``tracking.read_trials``), after the optional
``max_flops`` / ``min_accuracy`` filters; the exported file is the trial's own ``config.yaml`` artifact, revalidated
and written by ``config_to_yaml`` with a comment header naming the source run, so ``spfde train --config FILE``
reruns exactly that schedule (same training FLOPs). The trial's config holds the execution settings it resolved
(threads, precision, channels-last, device kind; ``execution.py``), so on the same machine the accuracy is the same
too.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from spfde_search.config import Config, ConfigError
from spfde_search.config_export import config_to_yaml
from spfde_search.pareto import selected_on
from spfde_search.wording import realised_text

__all__ = ["PICKS", "Exported", "choose", "check_out_dir", "default_out_dir", "export_search"]

PICKS = ("knee", "max-accuracy", "min-flops", "all")


@dataclass(frozen=True)
class Exported:
    path: Path
    pick: str
    trial_id: str
    run_id: str
    test_accuracy: float
    train_flops: float
    flops_ratio: float
    val_accuracy: float = float("nan")  # what chose it (NaN: a search without a validation split chose on test)


def check_max_flops(max_flops: float | None) -> None:
    """ValueError (one line) unless ``max_flops`` is None or a positive finite number (``--max-flops``)."""
    if max_flops is not None and not (max_flops > 0 and math.isfinite(max_flops)):
        raise ValueError(f"--max-flops must be a positive number (a ratio of dense training <= 1, e.g. 0.1, or "
                         f"absolute training FLOPs, e.g. 2.5e12), got {max_flops}")


def _accuracy_threshold(min_accuracy: float, accuracies: pd.Series) -> float:
    """Accept a percentage (e.g. 91.5) when accuracies are fractions in [0, 1]."""
    if min_accuracy > 1 and len(accuracies) and float(accuracies.max()) <= 1:
        return min_accuracy / 100.0
    return min_accuracy


def choose(front: pd.DataFrame, pick: str, *, max_flops: float | None = None,
           min_accuracy: float | None = None) -> pd.DataFrame:
    """Rows of the frontier table to export, each with a ``pick`` column.

    ``front`` holds the frontier (columns ``val_accuracy``, ``test_accuracy``, ``train_flops``, ``flops_ratio``,
    ...). Filters: ``max_flops`` bounds absolute training FLOPs (a value <= 1 bounds the FLOPs *ratio* instead),
    ``min_accuracy`` bounds validation accuracy. ``knee`` is ``pareto.knee_point`` on the filtered frontier. Every
    choice reads validation accuracy (``selected_on``); test accuracy never chooses.
    """
    if pick not in PICKS:
        raise ValueError(f"unknown pick {pick!r}; choose one of {', '.join(PICKS)}")
    check_max_flops(max_flops)
    acc = selected_on(front)
    df = front.copy()
    if max_flops is not None:
        col = "flops_ratio" if max_flops <= 1 else "train_flops"
        df = df[df[col] <= max_flops]
    if min_accuracy is not None:
        df = df[df[acc] >= _accuracy_threshold(min_accuracy, front[acc])]
    df = df.sort_values(["train_flops", acc], ascending=[True, False]).reset_index(drop=True)
    if not len(df):
        return df.assign(pick=pd.Series(dtype=str))
    if pick == "all":
        return df.assign(pick="all")
    if pick == "max-accuracy":
        i = int(df[acc].idxmax())
    elif pick == "min-flops":
        i = int(df["train_flops"].idxmin())
    else:
        from spfde_search.pareto import knee_point

        k = knee_point(df[acc].tolist(), df["train_flops"].tolist())
        if k is None:
            return df.iloc[[]].assign(pick=pd.Series(dtype=str))
        i = int(k)
    return df.iloc[[i]].assign(pick=pick).reset_index(drop=True)


def _header(search: str, row: pd.Series, pick: str, uri: str, cfg: Config) -> str:
    t = cfg.train
    lines = [
        f"SpFDE Search export: search {search!r}, pick {pick}",
        f"source MLflow run: {row['run_id']} (trial {row['trial_id']}) at {uri}",
        f"validation accuracy: {float(row.get('val_accuracy', float('nan'))):.6g} (what selected it; nan: no "
        "validation split, selected on test)",
        f"test accuracy: {float(row['test_accuracy']):.6g}",
        f"training FLOPs: {float(row['train_flops']):.0f}",
        f"training FLOPs ratio (vs dense): {float(row['flops_ratio']):.6g}",
        *([f"realised (sampled target in brackets): {realised_text(row)}"] if realised_text(row) else []),
        "rerun: spfde train --config <this file>",
    ]
    if t.threads is not None:  # recorded by the trial (spfde_search/execution.py)
        lines.append(f"execution as the trial resolved it: train.device {t.device}, precision {t.precision}, "
                     f"channels_last {t.channels_last}, threads {t.threads}; on the same machine the rerun is exact, "
                     "elsewhere the FLOPs are the same and the accuracy agrees within noise")
    return "\n".join(lines)


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)


def default_out_dir(search: str, storage_path: str | Path | None = None) -> Path:
    """Where exports go by default: ``<search folder>/exported`` (under the git-ignored ``runs/``) when the
    search's folder is on this machine, else ``./exported/<search>`` (also git-ignored)."""
    from spfde_search.search import DEFAULT_STORAGE

    folder = Path(storage_path or DEFAULT_STORAGE) / search
    return folder / "exported" if folder.is_dir() else Path("exported") / search


def check_out_dir(out: str | Path) -> Path:
    """``out`` as a directory that can be created; ValueError (one line) if it or a parent is a file."""
    path = Path(out)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            what = "--out" if p == path else f"--out {out}: {p}"
            raise ValueError(f"{what} is a file, not a directory; give a directory for the YAML configs")
    return path


def export_search(search: str, pick: str, out: str | Path, *, tracking_uri: str | None = None,
                  experiment: str | None = None, max_flops: float | None = None,
                  min_accuracy: float | None = None) -> list[Exported]:
    """Write the chosen frontier schedules of ``search`` to ``out``; returns what was written."""
    from spfde_search.tracking import download_config, frontier_table, read_trials, resolve_tracking_uri

    outdir = check_out_dir(out)  # before any MLflow read: bad input fails fast
    parent, df = read_trials(tracking_uri, search, experiment)
    front = frontier_table(df)
    if not len(front):
        raise LookupError(f"search {search!r} has no frontier yet (no completed full-budget trial in MLflow); "
                          f"if the tracking server was down, run `spfde sync {search}` first")
    chosen = choose(front, pick, max_flops=max_flops, min_accuracy=min_accuracy)
    if not len(chosen):
        raise LookupError(f"no frontier schedule of {search!r} passes the filters (max_flops={max_flops}, "
                          f"min_accuracy={min_accuracy}); the frontier spans accuracy "
                          f"{front[selected_on(front)].min():.4g}..{front[selected_on(front)].max():.4g} "
                          f"({selected_on(front)}) and training "
                          f"FLOPs {front['train_flops'].min():.4g}..{front['train_flops'].max():.4g}")
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=uri)
    outdir.mkdir(parents=True, exist_ok=True)
    written: list[Exported] = []
    for _, row in chosen.iterrows():
        data: dict[str, Any] = download_config(client, str(row["run_id"]))
        try:
            cfg = Config.parse(data)
        except ConfigError as e:
            raise ConfigError(f"run {row['run_id']}: stored config does not validate: {e}") from None
        path = outdir / f"{_slug(search)}-{pick}-{_slug(str(row['trial_id']))}.yaml"
        path.write_text(config_to_yaml(cfg, header=_header(search, row, pick, uri, cfg)))
        written.append(Exported(path, pick, str(row["trial_id"]), str(row["run_id"]),
                                float(row["test_accuracy"]), float(row["train_flops"]), float(row["flops_ratio"]),
                                float(row.get("val_accuracy", float("nan")))))
    return written
