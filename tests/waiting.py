"""``wait_until``: tests wait on a condition with a generous deadline, never on a fixed sleep or a duration.

A busy machine (other CPU-bound jobs) only makes the wait longer; it never turns a pass into a failure unless the
condition is still false after ``timeout`` seconds, and then the message says what was awaited.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(cond: Callable[[], T], timeout: float, what: str, interval: float = 0.3,
               detail: Callable[[], str] | None = None) -> T:
    """Poll ``cond`` until it returns something truthy (and return it); raise ``TimeoutError`` naming ``what``.

    ``cond`` may raise ``AssertionError`` to fail at once (e.g. a process it waits on has died); ``detail`` adds
    context (a log tail) to the timeout message.
    """
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() >= deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(interval)


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is still in process group ``pgid`` (Linux ``/proc``)."""
    from pathlib import Path

    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is alive and not a zombie (Linux ``/proc``)."""
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False
