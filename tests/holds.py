"""``Hold``: the test side of ``trainables/_hold.py``. A fault test makes its moment instead of racing to catch it:
``hold.at(n)`` pauses the trial that makes the search's n-th epoch report (and every report after it) until the
test moves the hold on or releases it. Start the search with ``env=hold.env()``; trials must run one at a time."""

from __future__ import annotations

import os
from pathlib import Path

from trainables._hold import ENV, HOLD, REPORTED, STARTS


class Hold:
    def __init__(self, folder: Path, starts: bool = False) -> None:
        """``starts``: trials also pass the hold as they start (``<trial id> 0``), so a trial MOASHA stops at its
        first report (which never returns) cannot let the search run past the hold."""
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        if starts:
            (folder / STARTS).touch()

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, ENV: str(self.folder), **extra}

    def at(self, n: int) -> None:
        tmp = self.folder / f"{HOLD}.tmp"
        tmp.write_text(str(n))
        tmp.replace(self.folder / HOLD)  # atomic: a trainable never reads half a number

    def reports(self) -> list[tuple[str, int]]:
        """(trial id, epoch) of each report so far, in order; the last one is the report a held trial waits after."""
        path = self.folder / REPORTED
        lines = path.read_text().splitlines() if path.exists() else []
        return [(t, int(e)) for t, e in (ln.split() for ln in lines if ln.count(" ") == 1)]

    def release(self) -> None:
        (self.folder / HOLD).unlink(missing_ok=True)
