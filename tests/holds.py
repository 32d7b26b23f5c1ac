"""``Hold``: the test side of ``trainables/_hold.py``. A fault test makes its moment instead of racing to catch it:
``hold.at(n)`` pauses the trial that makes the search's n-th epoch report (and every report after it) until the
test moves the hold on or releases it. Start the search with ``env=hold.env()``; trials must run one at a time."""

from __future__ import annotations

import os
from pathlib import Path

from trainables._hold import ENV, HOLD


class Hold:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, ENV: str(self.folder), **extra}

    def at(self, n: int) -> None:
        tmp = self.folder / f"{HOLD}.tmp"
        tmp.write_text(str(n))
        tmp.replace(self.folder / HOLD)  # atomic: a trainable never reads half a number

    def release(self) -> None:
        (self.folder / HOLD).unlink(missing_ok=True)
