"""The shared typer app; command modules register on it (``cli.py`` imports them all)."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup, TyperOption

_display_type_rich = TyperOption.display_type_rich


def _switch_without_metavar(self: TyperOption, ctx: Any) -> str | None:
    """A switch (``--quiet``, ``--help``, ``-v`` counts) takes no value, so its help row shows no ``<bool>`` /
    ``<int>`` type (typer's rich help prints one for every option)."""
    if self.is_flag or self.count:
        return None
    return _display_type_rich(self, ctx)


TyperOption.display_type_rich = _switch_without_metavar  # type: ignore[method-assign]



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


app = typer.Typer(
    cls=_Group,
    name="spfde",
    help="SpFDE Search: search sparsity x layer freezing x data sieving for accuracy vs training FLOPs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
