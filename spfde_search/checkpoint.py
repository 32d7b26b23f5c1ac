"""Trainer checkpoints that cannot run code and survive a crash or a damaged file.

- Loading uses ``torch.load(..., weights_only=True)``: a checkpoint may come from a shared store (a search's
  trial folders), and full unpickling would run whatever a crafted file asks for before any check. The state
  therefore holds only tensors and plain Python values; :func:`save` refuses anything else up front, so a new
  field that weights-only loading would reject fails where it is added, not on some later resume.
- Writes are atomic (temporary file, fsync, ``os.replace``) and the folder keeps two: the latest and the one
  before it. A latest that is truncated, corrupt or refused is skipped with a :class:`CheckpointFallbackWarning`
  and the previous one is loaded; with no loadable file left, :class:`CheckpointError` says what was wrong.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "LATEST",
    "PREVIOUS",
    "CheckpointError",
    "CheckpointFallbackWarning",
    "check_plain",
    "copy_as_latest",
    "exists",
    "load",
    "save",
]

LATEST = "trainer.pt"
PREVIOUS = "trainer.prev.pt"

_PLAIN_LEAVES = (int, float, bool, str, bytes, complex, type(None), torch.dtype, torch.device)


class CheckpointError(RuntimeError):
    """No checkpoint in the folder can be loaded safely; the message names each file and what is wrong."""


class CheckpointFallbackWarning(UserWarning):
    """The latest checkpoint could not be loaded and the previous one was used (one epoch is repeated)."""


def check_plain(state: Any, where: str = "state") -> None:
    """TypeError naming the first value that ``weights_only`` loading would refuse (numpy, objects, ...)."""
    t = type(state)
    if isinstance(state, torch.Tensor) or t in _PLAIN_LEAVES:
        return
    if t in (dict, OrderedDict):
        for k, v in state.items():
            if type(k) not in _PLAIN_LEAVES:
                raise TypeError(f"checkpoint {where} has a key of type {type(k).__name__}; use str or int keys")
            check_plain(v, f"{where}[{k!r}]")
        return
    if t in (list, tuple, torch.Size):
        for i, v in enumerate(state):
            check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"checkpoint {where} is a {t.__module__}.{t.__qualname__}; store tensors and plain Python values only "
        "(weights_only loading refuses anything else): convert it, e.g. numpy -> torch.from_numpy or .tolist()"
    )


def exists(directory: str | os.PathLike[str]) -> bool:
    d = Path(directory)
    return (d / LATEST).is_file() or (d / PREVIOUS).is_file()


def save(state: Mapping[str, Any], directory: str | os.PathLike[str]) -> Path:
    """Write ``state`` as the folder's latest checkpoint, keeping the former latest as the previous one."""
    check_plain(dict(state))
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=LATEST + ".", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        latest = d / LATEST
        if latest.is_file():
            os.replace(latest, d / PREVIOUS)  # a crash between the two replaces leaves the previous one: loadable
        os.replace(tmp, latest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(d)
    return latest


def copy_as_latest(path: str | os.PathLike[str], directory: str | os.PathLike[str]) -> Path:
    """Put a checkpoint that loaded (``load(...)[1]``) into ``directory`` as its latest, so that the next
    :func:`save` there keeps it as the previous one."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=LATEST + ".", suffix=".tmp", dir=d)
    os.close(fd)
    try:
        shutil.copyfile(path, tmp)
        os.replace(tmp, d / LATEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return d / LATEST


def load(directory: str | os.PathLike[str], map_location: Any = None) -> tuple[dict[str, Any], Path]:
    """The state of the folder's newest loadable checkpoint and the file it came from.

    FileNotFoundError if the folder has none; CheckpointError (one line) if none can be loaded safely.
    """
    d = Path(directory)
    candidates = [p for p in (d / LATEST, d / PREVIOUS) if p.is_file()]
    if not candidates:
        raise FileNotFoundError(f"no trainer checkpoint at {d / LATEST}")
    problems: list[str] = []
    for path in candidates:
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # truncated zip, bad pickle, refused global, unreadable file: all "cannot load"
            problems.append(f"{path} {_why(e)}")
            continue
        if not isinstance(state, dict):
            problems.append(f"{path} holds a {type(state).__name__}, not a trainer state")
            continue
        if problems:
            warnings.warn(
                f"skipped the latest checkpoint: {problems[0]}; resuming from the previous one, {path}",
                CheckpointFallbackWarning,
                stacklevel=2,
            )
        return state, path
    raise CheckpointError(
        "cannot resume: " + "; ".join(problems) + f". Delete {d} to start over, or restore the file from a copy"
    )


def _why(e: Exception) -> str:
    """One line for a failed ``torch.load``: refused global, truncation, or the exception's first line."""
    text = str(e)
    m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if m:
        return f"was refused: it asks to run {m.group(1)}, and a checkpoint holds only tensors and plain values"
    if isinstance(e, EOFError) or "central directory" in text or "end of file" in text.lower():
        return "is truncated or corrupt"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"is corrupt ({type(e).__name__}{': ' + first[:160] if first else ''})"


def _fsync_dir(d: Path) -> None:
    """Make the renames durable where the platform allows it (not on Windows)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
