"""The shared typer app; command modules register on it (``cli.py`` imports them all)."""

from __future__ import annotations

import os
import shutil
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption

_display_type_rich = TyperOption.display_type_rich


def _switch_without_metavar(self: TyperOption, ctx: Any) -> str | None:
    """A switch (``--quiet``, ``--help``, ``-v`` counts) takes no value, so its help row shows no ``<bool>`` /
    ``<int>`` type (typer's rich help prints one for every option)."""
    if self.is_flag or self.count:
        return None
    return _display_type_rich(self, ctx)


TyperOption.display_type_rich = _switch_without_metavar  # type: ignore[method-assign]

RICH_HELP_MIN_WIDTH = 100
"""Below this many columns typer's boxed help squeezes its name column and truncates option names
(``--reduction-fact…``) while the descriptions wrap one word a line; click's plain help keeps every name whole
and wraps the text at the terminal's width, so narrow terminals get that instead."""


def _narrow() -> bool:
    return shutil.get_terminal_size().columns < RICH_HELP_MIN_WIDTH  # $COLUMNS first, then the terminal


def _plain_when_narrow(rich_format: Any) -> Any:
    def format_help(self: Any, ctx: Any, formatter: Any) -> None:
        if not _narrow():
            return rich_format(self, ctx, formatter)
        saved, self.rich_markup_mode = self.rich_markup_mode, None  # typer's own switch to click's plain help
        try:
            return rich_format(self, ctx, formatter)
        finally:
            self.rich_markup_mode = saved

    return format_help


TyperCommand.format_help = _plain_when_narrow(TyperCommand.format_help)  # type: ignore[method-assign]



FILE_WIDTH = 1000
"""Console width when output goes to a file or a pipe: wide enough that no table or line is cut."""


def make_console(stderr: bool = False) -> Any:
    """A rich Console for a command's output. In a terminal: the terminal's width (tables fit it, see
    ``plots.answer_table``). To a file or a pipe: lines are never wrapped (a log line stays one line for grep and
    diff; rich would otherwise hard-wrap at 80 columns), and tables use ``$COLUMNS`` when set, else no limit."""
    from rich.console import Console

    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    columns = os.environ.get("COLUMNS", "")
    return Console(stderr=stderr, width=int(columns) if columns.isdigit() else FILE_WIDTH, soft_wrap=True)


def table_width(console: Any) -> int | None:
    """The width a table must fit on ``console`` (None: no limit)."""
    return None if console.width >= FILE_WIDTH else int(console.width)


def compat_argv(argv: list[str]) -> list[str]:
    """``spfde pareto NAME --json`` (a switch before ``--json`` took a path everywhere) still prints JSON:
    a bare ``--json`` (last, or followed by another option) becomes ``--json -`` (stdout)."""
    if not argv or argv[0] != "pareto":
        return list(argv)
    out: list[str] = []
    for i, a in enumerate(argv):
        out.append(a)
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if a == "--json" and (nxt is None or (nxt.startswith("-") and nxt != "-")):
            out.append("-")
    return out


class _Group(TyperGroup):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, compat_argv(args))

    format_help = _plain_when_narrow(TyperGroup.format_help)


app = typer.Typer(
    cls=_Group,
    name="spfde",
    help="SpFDE Search: search sparsity x layer freezing x data sieving for accuracy vs training FLOPs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
