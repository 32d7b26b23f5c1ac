"""Tables for narrow terminals: a table's natural width, and a front stacked so that every line fits (the
parameters, reason and run id on indented lines under each row). Split from ``plots`` by responsibility: plain
text layout, no data or figures."""

from __future__ import annotations

from typing import Any

__all__ = ["natural_width", "stacked_table"]


def natural_width(table: Any) -> int:
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(width=100_000)
    return int(Measurement.get(console, console.options, table).maximum)


def stacked_table(title: str, cols: list[tuple[str, str]], records: list[tuple[list[str], dict[str, str]]],
                  width: int) -> Any:
    """A front for a narrow terminal: the short columns in a row, then the parameters (``k=v`` items packed on
    indented lines, an item never split), the reason and the run id under it. Every line fits ``width``; only a
    value too long for a line of its own is abbreviated (``…``), never a parameter name."""
    import textwrap

    from rich.text import Text

    widths = [max([len(c)] + [len(cells[i]) for cells, _ in records]) for i, (c, _) in enumerate(cols)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if just == "right" else c.ljust(w)
                         for c, w, (_, just) in zip(cells, widths, cols, strict=True)).rstrip()

    indent = "      "
    out = Text()
    for ln in textwrap.wrap(title, width) or [""]:
        out.append(ln + "\n", style="italic")
    out.append(line([c for c, _ in cols]) + "\n", style="bold")
    room = max(width - len(indent), 20)
    for cells, under in records:
        out.append(line(cells) + "\n", style="bold" if cells[0] == "knee" else None)
        for key, text in under.items():
            if not text:
                continue
            items = text.split("\0") if key == "parameters" else [f"{'run' if key == 'MLflow run' else key}: {text}"]
            for ln in _pack([_fit(i, room) for i in items], room):
                out.append(indent + ln + "\n")
    out.rstrip()
    return out


def _fit(item: str, room: int) -> str:
    """``name=value`` within ``room`` characters: the value is cut (``…``), the name never."""
    if len(item) <= room:
        return item
    name, sep, value = item.partition("=") if "=" in item else item.partition(": ")
    keep = room - len(name) - len(sep) - 1
    return f"{name}{sep}{value[:keep]}…" if keep > 0 else f"{name}{sep}…"


def _pack(items: list[str], room: int) -> list[str]:
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 2 + len(item) <= room:
            lines[-1] += "  " + item
        else:
            lines.append(item)
    return lines
