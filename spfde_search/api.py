"""The notebook API: ``spfde_search.run_search(config, space=..., num_samples=..., tracking_uri=...)``.

The same defaults as ``spfde search`` (the built-in quickstart config when none is given, the search's default
validation split, MLflow tracking into ``./mlflow.db`` unless ``tracking_uri="none"``), progress shown as the
live status block, and a :class:`SearchResult` to read: ``.front`` (a DataFrame), ``.knee``,
``.at_budget(r)`` and ``.export(path)``; ``extend_search(name, n)`` takes a finished search to ``n`` trials.
Like the CLI, this is a place where the search driver and the MLflow adapter meet; the driver itself is
``spfde_search.search.drive_search``.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .config import Config, apply_overrides, load_config, parse_config_yaml
from .config_export import config_to_yaml
from .export import choose
from .pareto import best_within, selected_on
from .search import (
    DEFAULT_STORAGE,
    SearchError,
    SearchOutcome,
    SearchSettings,
    drive_search,
    experiment_uri,
    finished_meta,
    load_settings,
    prepare,
)
from .tracking import callbacks_for, tracking_settings

__all__ = ["SearchResult", "extend_search", "run_search"]

QUICKSTART = Path(__file__).resolve().parent / "presets" / "quickstart.yaml"


@dataclass
class SearchResult:
    """What a search found. ``table``: every trial (``trials.parquet``); ``front``: the Pareto front (cheapest
    first, selected on validation accuracy), ``path``: the search's folder."""

    name: str
    path: str
    table: pd.DataFrame
    front: pd.DataFrame
    hypervolume: float
    outcome: SearchOutcome

    @property
    def metric(self) -> str:
        """The accuracy the front selects on (``val_accuracy``; ``test_accuracy`` without a validation split)."""
        return selected_on(self.table)

    @property
    def knee(self) -> pd.Series | None:
        """The front's knee (``pareto.knee_point``), or None with an empty front."""
        rows = self.front[self.front["knee"].astype(bool)] if "knee" in self.front else self.front.iloc[:0]
        return rows.iloc[0] if len(rows) else None

    def at_budget(self, ratio: float) -> pd.Series | None:
        """The most accurate front trial whose training FLOPs are at most ``ratio`` x dense, or None."""
        if not len(self.front):
            return None
        i = best_within(self.front[self.metric].to_numpy(), self.front["flops_ratio"].to_numpy(), ratio)
        return None if i is None else self.front.iloc[int(i)]

    def config(self, row: pd.Series) -> Config:
        """The full config a trial ran (what ``spfde train --config`` reruns)."""
        return Config.parse(json.loads(str(row["config"])))

    def export(self, path: str | Path, pick: str = "knee") -> list[Path]:
        """Write the ``pick`` (knee | max-accuracy | min-flops | all) front schedules as runnable YAML configs
        into the folder ``path``; returns the files (none with an empty front)."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for _, row in choose(self.front, pick).iterrows():
            f = out / f"{self.name}-{pick}-{row['trial_id']}.yaml"
            header = (f"SpFDE Search export: search {self.name!r}, pick {pick}, trial {row['trial_id']}\n"
                      f"{self.metric}: {float(row[self.metric]):.6g}; training FLOPs ratio (vs dense): "
                      f"{float(row['flops_ratio']):.6g}\nrerun: spfde train --config <this file>")
            f.write_text(config_to_yaml(self.config(row), header=header))
            written.append(f)
        return written


def _base_config(config: Config | Mapping[str, Any] | str | Path | None) -> dict[str, Any]:
    """A Config, a nested mapping (dotted keys too: ``{"model.name": ...}``), a YAML path, or None (quickstart)."""
    if isinstance(config, Config):
        return config.to_dict()
    if isinstance(config, (str, Path)):
        return load_config(config).to_dict()
    base = parse_config_yaml(QUICKSTART.read_text())
    if config is None:
        return Config.parse(base).to_dict()
    nested = {k: v for k, v in config.items() if "." not in k}
    dotted = {k: v for k, v in config.items() if "." in k}
    if nested:
        base = nested
    elif (dotted.get("data.name") or "fashion_mnist") != "fashion_mnist":
        base["data"] = {}  # the quickstart's subset sizes are Fashion-MNIST's (as `spfde search --set`)
    return Config.parse(apply_overrides(base, dotted)).to_dict()


def run_search(
    config: Config | Mapping[str, Any] | str | Path | None = None,
    *,
    space: str = "joint",
    num_samples: int = 16,
    tracking_uri: str | None = None,
    name: str | None = None,
    storage_path: str | None = None,
    experiment: str | None = None,
    progress: bool = True,
    **options: Any,
) -> SearchResult:
    """Run one search to the end and return what it found (``spfde search``'s defaults; further
    ``SearchSettings`` fields as keywords: ``sampler``, ``seed``, ``max_concurrent``, ``flops_budget``,
    ``early_stopping``, ``num_cpus``, ...). Bad input raises ``ConfigError`` / ``SearchError`` before Ray
    starts, with the same one-line message the command prints."""
    from rich.console import Console

    base = _base_config(config)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    settings = SearchSettings(
        name=name or f"search-{Path(space).stem}-{stamp}", base_config=base, space=space, num_samples=num_samples,
        storage_path=storage_path or DEFAULT_STORAGE, tracking=tracking_settings(tracking_uri, experiment, base),
        **options,
    )
    prep = prepare(settings)
    out = drive_search(prep.settings, prepared=prep, callbacks=callbacks_for(prep.settings),
                       console=Console() if progress else None, verbose=1 if progress else 0)
    return SearchResult(out.name, out.path, out.table, out.front, out.hypervolume, out)


def extend_search(name: str, num_samples: int, *, storage_path: str | None = None, progress: bool = True) -> SearchResult:
    """Extend the finished search ``name`` to ``num_samples`` trials in total (``spfde search --resume NAME -n N``):
    the new trials come from a sampler warm-started with every earlier one (docs/search.md). ``num_samples`` below
    the trials already run raises ``SearchError``; the search's own ``num_samples`` runs nothing."""
    from rich.console import Console

    settings = load_settings(name, storage_path or DEFAULT_STORAGE)
    if storage_path is not None:
        settings.storage_path = storage_path
    if finished_meta(experiment_uri(settings.storage_path, name)) is None:
        raise SearchError(f"search {name!r} has not finished; resume it first (spfde search --resume {name}), "
                          "then extend it")
    settings.num_samples = num_samples
    prep = prepare(settings, resume=True)
    out = drive_search(prep.settings, resume=True, prepared=prep, callbacks=callbacks_for(prep.settings),
                       console=Console() if progress else None, verbose=1 if progress else 0)
    return SearchResult(out.name, out.path, out.table, out.front, out.hypervolume, out)
