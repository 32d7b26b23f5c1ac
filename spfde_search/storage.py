"""Where a search's files live: a local folder or any pyarrow file system URI (``s3://...``), and small-file
reads and atomic writes on either.

Its own module, below ``search/`` and ``trainables/``: the driver (``search.json``, ``trials.parquet``, locks,
rung books) and each trial's state folder (``trainables/_state.py``) both use it, and neither may import the
other's internals. pyarrow only; no Ray, Optuna or MLflow.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs

__all__ = ["is_uri", "resolve_storage", "join", "filesystem", "exists", "write_bytes", "read_bytes"]


def is_uri(path: str) -> bool:
    """A URI (``scheme://...``) rather than a local path."""
    return "://" in path


def resolve_storage(path: str) -> str:
    """A storage root as stored and compared: a URI without its trailing ``/``, or an absolute local path."""
    if is_uri(path):
        return path.rstrip("/")
    return str(Path(path).expanduser().resolve())


def join(root: str, name: str) -> str:
    """``root/name`` for a URI or a local path (``root`` resolved as ``resolve_storage`` does)."""
    r = resolve_storage(root)
    return f"{r}/{name}" if is_uri(r) else str(Path(r) / name)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow file system holding ``uri`` and the path on it (a local path stays as it is)."""
    if is_uri(uri):
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path
    return pafs.LocalFileSystem(), uri


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``uri``, then move it into place: atomic on local disks, so a
    reader never sees a half-written file (parents are created)."""
    fs, path = filesystem(uri)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, path)


def list_names(uri: str) -> list[str]:
    """The names of the files directly in the folder ``uri`` ([] if there is no such folder)."""
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    return [i.base_name for i in infos if i.type == pafs.FileType.File]


def remove(uri: str) -> None:
    """Delete the file ``uri`` (nothing if it is gone)."""
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as f:
        return f.read()
