"""The embedded Ray of a dead driver: its session is recorded at start, and its leftovers ended at the next start.

A driver killed by SIGKILL takes its ``gcs_server`` and ``raylet`` with it (Ray starts them bound to the driver's
life), but the raylet's children ``ray::DashboardAgent`` and ``ray::RuntimeEnvAgent`` notice only when they next
poll it, about a minute later (issue 34, item 4); meanwhile they hold the agent's fixed listen port and memory. So
each embedded start records its session folder (``ray_session.json`` in the search folder, with the host), and the
next start or ``--resume`` of the search, holding the search's lock (so that driver is gone), ends the processes of
that session still alive on this host. A process belongs to the session when one of its open files, or its command
line, is under the session folder: Ray's agents rename themselves (``ray::DashboardAgent``) but keep their logs
open there. Nothing else is touched: not another user's Ray, not another search's, not a cluster joined with
``--address``. Linux ``/proc`` only; elsewhere nothing is ended.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Any

from ..storage import exists, read_bytes, write_bytes
from .settings import RAY_SESSION_JSON

log = logging.getLogger(__name__)


def session_dir(nodes: list[dict[str, Any]]) -> str:
    """The session folder of the local Ray whose ``ray.nodes()`` are given: the folder of its plasma socket's
    ``sockets/`` folder ('' when no node names one)."""
    for n in nodes:
        sock = str(n.get("ObjectStoreSocketName") or "")
        if "/sockets/" in sock:
            return sock.rsplit("/sockets/", 1)[0]
    return ""


def record_session(uri: str, folder: str) -> None:
    """Write which Ray session (``folder``) this driver started, on which host, into the search folder ``uri``."""
    if not folder:
        return
    doc = {"session_dir": folder, "host": socket.gethostname(), "driver_pid": os.getpid()}
    try:
        write_bytes(f"{uri}/{RAY_SESSION_JSON}", json.dumps(doc).encode())
    except OSError as e:  # only the clean-up after a crash depends on it
        log.warning("could not write %s: %s", RAY_SESSION_JSON, e)


def session_pids(folder: str, proc: Path = Path("/proc")) -> list[int]:
    """Live processes (not this one) with an open file or a command-line argument under the session ``folder``."""
    root = folder.rstrip("/") + "/"
    out = []
    for d in proc.glob("[0-9]*"):
        pid = int(d.name)
        if pid == os.getpid():
            continue
        try:
            if (d / "stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                continue
            args = [a.decode(errors="replace") for a in (d / "cmdline").read_bytes().split(b"\0")]
            if not _is_ray(args):
                continue
            hit = any(root in a for a in args)
            if not hit:
                for fd in (d / "fd").iterdir():
                    try:
                        if os.readlink(fd).startswith(root):
                            hit = True
                            break
                    except OSError:
                        continue
        except (OSError, IndexError):  # gone while we looked, or not ours to read
            continue
        if hit:
            out.append(pid)
    return out


def _is_ray(args: list[str]) -> bool:
    """A process of Ray's own: renamed ``ray::...``, or one of Ray's programs (``.../ray/...``) run directly or by
    Python; a shell or an editor with a session log open is not."""
    head = [a for a in args[:3] if a and not a.startswith("-")]
    return bool(head) and (head[0].startswith("ray::") or any("/ray/" in a for a in head[:2]))


def end_dead_session(uri: str) -> list[int]:
    """End what is left of the Ray session the search's previous driver recorded (call it holding the search's
    lock, before starting a new Ray): returns the pids signalled. Another host's session is left alone."""
    path = f"{uri}/{RAY_SESSION_JSON}"
    try:
        doc = json.loads(read_bytes(path)) if exists(path) else {}
    except (OSError, ValueError) as e:
        log.debug("no previous Ray session: %s", e)
        return []
    folder = str(doc.get("session_dir") or "") if isinstance(doc, dict) else ""
    if not folder or doc.get("host") != socket.gethostname() or "/session_" not in folder:
        return []
    pids = session_pids(folder)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)  # a dead driver's agents: nothing of theirs needs a clean stop
        except OSError as e:  # already gone, or not ours
            log.debug("could not end process %d: %s", pid, e)
    if pids:
        log.info("ended %d leftover process(es) of the previous driver's Ray session %s", len(pids), folder)
    return pids
