"""``spfde`` entry point: importing the command modules registers their commands on the shared app."""

from __future__ import annotations

import importlib

from .app import app

# In this order, so that `spfde --help` lists train and flops, then search, then the tracking commands.
for _mod in ("train", "search", "tracking"):
    importlib.import_module(f"{__name__}.{_mod}")

__all__ = ["app", "main"]


def main() -> None:
    app()
