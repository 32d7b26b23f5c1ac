"""One driver per search folder: ``search_lock`` refuses a second ``spfde search`` (or ``--resume``) of the same
name while the first runs, and never stays stuck after a crash.

On a local storage path the lock is ``flock`` on ``<search>/.lock`` (the kernel drops it when the holder dies,
even by SIGKILL); the file also names the holder (pid, host) for the error message. On a URI storage path
(``s3://``...), where no file lock exists, the lock file itself is the lock: it is taken over when its holder was
on this host and is gone; held by another host, the message says how to clear it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..storage import exists, filesystem, is_uri, read_bytes, write_bytes
from .settings import SearchError

LOCK_FILE = ".lock"


def _holder() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}


def _describe(holder: dict[str, Any]) -> str:
    since = holder.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {when}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _busy(name: str, holder: dict[str, Any], extra: str = "") -> SearchError:
    return SearchError(f"the search {name!r} is already running ({_describe(holder)}); wait for it to finish, "
                       f"or choose another --name{extra}")


@contextlib.contextmanager
def search_lock(uri: str, name: str) -> Iterator[None]:
    """Hold the lock of the search folder ``uri`` for the block; SearchError if another driver holds it."""
    if is_uri(uri):
        with _uri_lock(uri, name):
            yield
        return
    import fcntl

    path = Path(uri) / LOCK_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by Ray's processes (O_CLOEXEC)
    except OSError as e:  # a read-only search folder (or file system): the search could not write anything there
        raise SearchError(f"cannot take the lock {path} ({e.strerror or e}): the search folder must be writable to "
                          "run or resume a search; make it writable (or copy it to a writable --storage-path)") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                holder = {}
            raise _busy(name, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


@contextlib.contextmanager
def _uri_lock(uri: str, name: str) -> Iterator[None]:
    lock = f"{uri}/{LOCK_FILE}"
    me = _holder()
    if exists(lock):
        try:
            holder = json.loads(read_bytes(lock))
        except (OSError, ValueError):
            holder = {}
        same_host = holder.get("host") == me["host"]
        if same_host and isinstance(holder.get("pid"), int) and not _pid_alive(holder["pid"]):
            pass  # its driver is gone: take over
        elif same_host and holder.get("pid") == me["pid"]:
            pass
        else:
            raise _busy(name, holder, f"; if no search runs there any more, delete {lock}")
    write_bytes(lock, json.dumps(me).encode())
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            fs, path = filesystem(lock)
            fs.delete_file(path)


def driver_alive(uri: str) -> bool | None:
    """Whether a driver holds the lock of the search folder ``uri`` now: a shared ``flock`` probe on a local path
    (it never blocks the holder's exclusive lock, and the kernel drops that lock when a driver dies, even by
    SIGKILL); on URI storage, whether the lock file's pid is alive on this host. None: cannot tell (another host, or
    no lock file here)."""
    if is_uri(uri):
        if not exists(f"{uri}/{LOCK_FILE}"):
            return False  # the lock file goes with its driver
        try:
            holder = json.loads(read_bytes(f"{uri}/{LOCK_FILE}"))
        except (OSError, ValueError):
            return None
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return None
        return _pid_alive(holder["pid"])
    import fcntl

    path = Path(uri) / LOCK_FILE
    try:  # no folder or no lock file here: the search lives on another machine (or predates the lock)
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
