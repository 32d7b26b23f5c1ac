"""The shared typer app; command modules register on it (``cli.py`` imports them all)."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="spfde",
    help="SpFDE Search: search sparsity x layer freezing x data sieving for accuracy vs training FLOPs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
