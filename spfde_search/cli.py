"""``spfde`` entry point: importing the command modules registers their commands on the shared app."""

from __future__ import annotations

import importlib

from .cli_app import app

for _mod in ("cli_train", "cli_search", "cli_tracking"):
    try:
        importlib.import_module(f"spfde_search.{_mod}")
    except ModuleNotFoundError as e:  # a command module not written yet must not break the others
        if e.name != f"spfde_search.{_mod}":
            raise


def main() -> None:
    app()


if __name__ == "__main__":
    main()
