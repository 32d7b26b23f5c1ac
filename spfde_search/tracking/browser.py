"""Headless Chromium driven over its DevTools pipe (``--remote-debugging-pipe``: NUL-separated JSON messages on
fds 3/4), so a caller can wait on a condition in the page, click, and capture a screenshot without a websocket
library, a browser-automation package or a fixed sleep. Used by ``spfde_search.tracking.screenshots`` (the docs'
screenshots) and ``tests/tracking/test_ui_browser.py`` (the same pages, checked)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["Browser", "BrowserMissing", "non_blank", "painted"]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe", "--hide-scrollbars"]
TIMEOUT = 240.0  # generous: a busy 2-core machine (load 15 seen) renders MLflow's UI slowly; only a failure waits it


class BrowserMissing(RuntimeError):
    """No ``chromium`` (Debian's package) or ``chromium-browser`` on PATH."""


class Browser:
    """One headless Chromium page, commanded over the DevTools pipe."""

    def __init__(self, size: tuple[int, int] = (1500, 1000)) -> None:
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if exe is None:
            raise BrowserMissing("chromium is not installed (Debian: apt-get install chromium)")
        self.profile = tempfile.TemporaryDirectory()
        to_chrome_r, self._to_chrome_w = os.pipe()
        self._from_chrome_r, from_chrome_w = os.pipe()

        def fds() -> None:  # the child reads commands on fd 3 and writes answers on fd 4
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={self.profile.name}",
                                      f"--window-size={size[0]},{size[1]}", "about:blank"],
                                     preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self._iframe_sessions: dict[str, str] = {}
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.call("Page.enable", page=True)
        self.call("Runtime.enable", page=True)
        # out-of-process iframes (MLflow's sandboxed artifact viewer) become sessions of their own
        self.call("Target.setAutoAttach", page=True, autoAttach=True, waitForDebuggerOnStart=False, flatten=True)

    def _message(self) -> dict[str, Any]:
        while b"\0" not in self._buf:
            chunk = os.read(self._from_chrome_r, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, page: bool = False, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if page or session:
            msg["sessionId"] = session or self.session
        os.write(self._to_chrome_w, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._message()
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return dict(m.get("result", {}))
            if m.get("method") == "Target.attachedToTarget":
                self.events.append(m)

    def goto(self, url: str) -> None:
        self.call("Page.navigate", page=True, url=url)

    def js(self, expression: str) -> Any:
        r = self.call("Runtime.evaluate", page=True, expression=expression, returnByValue=True, awaitPromise=True)
        return r.get("result", {}).get("value")

    def wait(self, expression: str, what: str, timeout: float = TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; page text: "
                             f"{(self.js('document.body && document.body.innerText') or '')[:1500]}")

    def text(self) -> str:
        return str(self.js("document.body.innerText") or "")

    def screenshot(self, path: Path, clip: dict[str, float] | None = None) -> bytes:
        params: dict[str, Any] = {"format": "png"}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        data = base64.b64decode(self.call("Page.captureScreenshot", page=True, **params)["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data

    def iframe_texts(self) -> list[str]:
        """``document.body.innerText`` of every iframe in the page, wherever Chromium put it.

        An out-of-process iframe (MLflow's sandboxed artifact viewer, usually) is a target of its own: it is
        found with ``Target.getTargets`` on every call, not only from the auto-attach events, so an event that
        came while nothing was listening cannot hide it. An in-process iframe is reached through an isolated
        world in its frame, which a sandboxed frame's opaque origin does not block."""
        for t in self.call("Target.getTargets")["targetInfos"]:
            if t.get("type") == "iframe" and t["targetId"] not in self._iframe_sessions:
                try:
                    self._iframe_sessions[t["targetId"]] = self.call(
                        "Target.attachToTarget", targetId=t["targetId"], flatten=True)["sessionId"]
                except RuntimeError:  # gone between the two calls
                    continue
        for ev in self.events:
            info = ev["params"]["targetInfo"]
            if info.get("type") == "iframe":
                self._iframe_sessions.setdefault(info["targetId"], ev["params"]["sessionId"])
        out = []
        for session in list(self._iframe_sessions.values()):
            try:
                r = self.call("Runtime.evaluate", session=session, returnByValue=True,
                              expression="document.body ? document.body.innerText : ''")
            except RuntimeError:  # detached (the viewer re-rendered)
                continue
            out.append(str(r.get("result", {}).get("value") or ""))
        for frame_id in self._child_frames(self.call("Page.getFrameTree", page=True)["frameTree"]):
            try:
                ctx = self.call("Page.createIsolatedWorld", page=True, frameId=frame_id)["executionContextId"]
                r = self.call("Runtime.evaluate", page=True, contextId=ctx, returnByValue=True,
                              expression="document.body ? document.body.innerText : ''")
            except RuntimeError:  # the frame navigated away meanwhile
                continue
            out.append(str(r.get("result", {}).get("value") or ""))
        return out

    def frames(self) -> str:
        """What a failure message needs: the page's targets and frames, by type and URL."""
        targets = [f"{t['type']}:{t.get('url', '')[:80]}" for t in self.call("Target.getTargets")["targetInfos"]]

        def walk(node: dict[str, Any], depth: int = 0) -> list[str]:
            rows = ["  " * depth + node["frame"].get("url", "")[:80]]
            for child in node.get("childFrames", []):
                rows += walk(child, depth + 1)
            return rows

        return f"targets {targets}; frames {walk(self.call('Page.getFrameTree', page=True)['frameTree'])}"

    @staticmethod
    def _child_frames(node: dict[str, Any]) -> list[str]:
        ids = []
        for child in node.get("childFrames", []):
            ids.append(child["frame"]["id"])
            ids += Browser._child_frames(child)
        return ids

    def close(self) -> None:
        try:
            self.call("Browser.close")
            self.proc.wait(15)
        except Exception:  # noqa: BLE001 - already gone
            self.proc.kill()
        os.close(self._to_chrome_w)
        os.close(self._from_chrome_r)
        self.profile.cleanup()


def non_blank(png: bytes) -> float:
    """Share of pixels that differ from the most common colour (0: a blank page)."""
    import matplotlib.image as mpimg
    import numpy as np

    img = (mpimg.imread(io.BytesIO(png), format="png")[..., :3] * 255).astype(np.uint32)
    colour = (img[..., 0] << 16 | img[..., 1] << 8 | img[..., 2]).ravel()  # one int per pixel: a bincount, not a sort
    counts = np.bincount(colour)
    return float(1.0 - counts.max() / colour.size)


def painted(browser: Any, path: Path, share: float, clip: Callable[[], dict[str, float] | None] | None = None) -> float:
    """Screenshot until more than ``share`` of the pixels differ from the most common colour (a page's text is in
    the DOM before it paints: once seen blank on a loaded CI machine); the last share seen, kept at ``path``."""
    shown, deadline = 0.0, time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        shown = non_blank(browser.screenshot(path, clip=clip() if clip is not None else None))
        if shown > share:
            break
        time.sleep(0.5)
    return shown
