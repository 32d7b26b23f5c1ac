"""A config as YAML that ``spfde train --config`` reruns exactly, without the fields that do nothing for its data
set (split from ``config.py``, which stays the model and its parsing)."""

from __future__ import annotations

import yaml

from .choices import is_import_path
from .config import Config, DataConfig

__all__ = ["config_to_yaml", "inert_paths"]


def inert_paths(cfg: Config) -> list[str]:
    """Config paths that change nothing for this config's data set: the synthetic set's sizes for any other set,
    the imagefolder crop size for any other set, and the DataLoader workers and ``data.stream`` for a registered
    tensor set (held on the device, no loader; a user's set behind an import path may stream)."""
    out = []
    if cfg.data.name != "synthetic":
        out += [f"data.{k}" for k in DataConfig.model_fields if k.startswith("synthetic_")]
    user = is_import_path(cfg.data.name)
    if cfg.data.name != "imagefolder":
        out += ["data.image_size"] if user else ["data.image_size", "data.num_workers"]
    if not user:
        out.append("data.stream")
    return out


def config_to_yaml(cfg: Config, header: str | None = None) -> str:
    """The config as YAML that ``spfde train --config`` reruns exactly. Fields inert for its data set
    (``inert_paths``) are left out where they hold their default, so reloading gives the same config, and named
    as inert in the header where someone set them (kept, so the config still round-trips)."""
    data = cfg.to_dict()
    defaults = Config.model_validate({}).to_dict()
    left, kept = [], []
    for path in inert_paths(cfg):
        sec, key = path.split(".")
        if data[sec].get(key) == defaults[sec].get(key):
            del data[sec][key]
            left.append(path)
        else:
            kept.append(path)
    synthetic = [p for p in left if p.startswith("data.synthetic_")]
    if len(synthetic) > 1:  # one name for the group
        left = ["data.synthetic_*", *(p for p in left if p not in synthetic)]
    notes = []
    if left:
        notes.append(f"left out, inert for data set {cfg.data.name!r} (defaults): {', '.join(left)}")
    if kept:
        notes.append(f"inert for data set {cfg.data.name!r} (kept as set, they change nothing): {', '.join(kept)}")
    body = yaml.safe_dump(data, sort_keys=False)
    lines = [*(header.splitlines() if header else []), *notes]
    return "".join(f"# {line}\n" for line in lines) + body
