"""Each trial's trainer state, kept by the trainable under the search's folder: ``state/<trial_id>/``.

Why not in Ray's checkpoint: Ray deletes checkpoint n (``CheckpointConfig(num_to_keep)``) when n+1 registers,
*before* the experiment snapshot naming n+1 reaches storage (it is written, then synced in the background). A
driver killed in that window resumes from a snapshot that names a deleted checkpoint, and Ray's restore fails
("Could not recover from checkpoint as it does not exist on storage anymore") -- the trial errors on every retry.
So Ray's checkpoint is only a pointer (the last report, a few kB, all kept: ``num_to_keep=None``), and the
trainer state lives here, where the trainable keeps two (latest and previous, ``spfde_search/checkpoint.py``)
and resumes from the newest that loads, whichever snapshot Ray restored.

Uploads are one file at a time, each to a temporary name then moved into place, previous before latest: a kill
at any point leaves a loadable pair. The folder URI is any pyarrow file system the search's storage is on.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from spfde_search.checkpoint import LATEST, PREVIOUS
from spfde_search.storage import filesystem

STATE_DIR = "state"
LAST_REPORT = "last_report.json"  # the metrics reported with the state, beside it
ENDED = "ended.json"  # written by the driver when the trial ended: its final result, so a rerun only re-reports it
_ORDER = (PREVIOUS, LATEST, LAST_REPORT)  # upload order: a kill between two leaves a loadable pair

__all__ = ["ENDED", "LAST_REPORT", "STATE_DIR", "StorageFull", "TrialState", "storage_full"]

_FATAL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
          errno.EROFS: "read-only file system"}


class StorageFull(RuntimeError):
    """A trial could not write its state: the disk is full (or over quota) or read-only. Fatal for the search,
    not for the trial (every trial writes to the same storage): the driver stops launching trials and leaves the
    search resumable (``spfde_search.search.callbacks``). The message names the path and the space needed."""


def storage_full(e: BaseException, path: str, local: str | os.PathLike[str] | None = None) -> StorageFull | None:
    """``StorageFull`` for an ``OSError`` that no retry can fix (ENOSPC, EDQUOT, EROFS), else None. ``path``: where
    the state was going (the error's own file name wins); ``local``: the folder whose files had to be written,
    for the space needed."""
    if not isinstance(e, OSError) or e.errno not in _FATAL:
        return None
    where = str(e.filename or path)
    need = sum(f.stat().st_size for f in Path(local).iterdir() if f.is_file()) if local and Path(local).is_dir() else 0
    free = ""
    with contextlib.suppress(OSError):
        probe = Path(where)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = f", {shutil.disk_usage(probe).free / 1e6:.1f} MB free"
    needed = f" (needs about {need / 1e6:.1f} MB per trial{free})" if need else (f" ({free[2:]})" if free else "")
    return StorageFull(f"{_FATAL[e.errno]} writing trial state to {where}{needed}")


class TrialState:
    """One trial's state folder on the search's storage."""

    def __init__(self, experiment_uri: str, trial_id: str) -> None:
        self.uri = f"{experiment_uri.rstrip('/')}/{STATE_DIR}/{trial_id}"
        self.fs, self.path = filesystem(self.uri)

    def upload(self, local: str | os.PathLike[str]) -> None:
        """Copy the local checkpoint folder's files here (those it has, in ``_ORDER``)."""
        self.fs.create_dir(self.path, recursive=True)
        for name in _ORDER:
            src = Path(local) / name
            if not src.is_file():
                continue
            tmp = f"{self.path}/.{name}.tmp-{os.getpid()}"
            try:
                with open(src, "rb") as f, self.fs.open_output_stream(tmp) as out:
                    shutil.copyfileobj(f, out, 1 << 20)
                self.fs.move(tmp, f"{self.path}/{name}")
            except BaseException:
                with contextlib.suppress(OSError):
                    self.fs.delete_file(tmp)
                raise

    def download(self, local: str | os.PathLike[str]) -> bool:
        """Copy the stored files into ``local``; False when this trial has stored nothing yet."""
        found = False
        for name in _ORDER:
            with contextlib.suppress(OSError):  # FileNotFoundError included
                if self.fs.get_file_info(f"{self.path}/{name}").type != pafs.FileType.File:
                    continue
                with self.fs.open_input_stream(f"{self.path}/{name}") as f, open(Path(local) / name, "wb") as out:
                    shutil.copyfileobj(f, out, 1 << 20)
                found = found or name != LAST_REPORT
        return found

    def mark_ended(self, status: str, result: dict[str, Any]) -> None:
        """The driver records that the trial ended (``status``, its final ``result``): Ray's experiment snapshot may
        be older than this, and a ``--resume`` from it reruns the trial; the rerun then reports this result and
        stops, so a decision taken before the crash (completed, stopped by MOASHA, diverged) is never undone."""
        self.fs.create_dir(self.path, recursive=True)
        tmp = f"{self.path}/.{ENDED}.tmp-{os.getpid()}"
        with self.fs.open_output_stream(tmp) as out:
            out.write(json.dumps({"status": status, "result": result}, default=str).encode())
        self.fs.move(tmp, f"{self.path}/{ENDED}")

    def ended(self) -> dict[str, Any] | None:
        """What ``mark_ended`` recorded, or None (still running, or never ended before a crash)."""
        try:
            with self.fs.open_input_stream(f"{self.path}/{ENDED}") as f:
                doc = json.loads(f.read())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) and isinstance(doc.get("result"), dict) else None
