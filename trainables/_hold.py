"""A pause after each epoch report, for the test suite's fault tests; it does nothing unless ``$SPFDE_TEST_HOLD``
names a folder.

Fault tests kill or interrupt a search at a chosen moment ("two trials ended and the third has reported an
epoch"). Waiting for that moment by polling races the trials on a fast machine: a 3-epoch trial of 512 images
takes half a second, so the moment passed between two polls and the search ended first. With a hold the moment
is made, not caught: after each report the trainable appends a line ``<trial id> <epoch>`` to ``FOLDER/reported``
and, while the number in ``FOLDER/hold`` is at most the count of lines, waits (the test moves the number on, or
deletes the file, to release it). Trials run one at a time in those tests, so the count is the search's epoch
reports in order. A trial that MOASHA stops never returns from its report, so with ``FOLDER/starts`` present each
trial also passes the hold as it starts (a line ``<trial id> 0``): a chain of stopped trials cannot run past it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ENV = "SPFDE_TEST_HOLD"
REPORTED = "reported"
HOLD = "hold"
STARTS = "starts"


def _folder() -> Path | None:
    where = os.environ.get(ENV)
    return Path(where) if where else None


def _pass(folder: Path, epoch: int) -> None:
    from ray import tune  # only with a hold: the trainable's hot path never asks Ray for its id

    with open(folder / REPORTED, "a") as f:  # one short append per report: atomic on a local file system
        f.write(f"{tune.get_context().get_trial_id()} {epoch}\n")
    count = len((folder / REPORTED).read_text().splitlines())
    while True:
        try:
            at = int((folder / HOLD).read_text())  # the test replaces the file whole (tests/holds.py)
        except FileNotFoundError:  # released
            return
        if count < at:
            return
        time.sleep(0.05)


def hold_after_report(epoch: int) -> None:
    folder = _folder()
    if folder is not None:
        _pass(folder, epoch)


def hold_at_start() -> None:
    folder = _folder()
    if folder is not None and (folder / STARTS).exists():
        _pass(folder, 0)
