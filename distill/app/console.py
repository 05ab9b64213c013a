"""Tables that read well both on a terminal and in a log file.

On a terminal a table is drawn by rich as usual. Into a file or a pipe (a batch job's log) rich would
assume 80 columns and cut or wrap the cells, so there the table is written as plain Markdown-style
rows instead: every cell in full, one row a line, columns padded to line up.
"""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text


def _plain(cell) -> str:
    """The text of one table cell as rich would show it (markup applied, styles dropped)."""
    if isinstance(cell, Text):
        return cell.plain
    if isinstance(cell, str):
        return Text.from_markup(cell).plain
    return str(cell)


def table_lines(table: Table) -> list[str]:
    """``table`` as Markdown-style lines: an optional title, the header, a rule, one line per row."""
    headers = [_plain(col.header) for col in table.columns]
    columns = [[_plain(cell) for cell in col.cells] for col in table.columns]
    rows = [list(row) for row in zip(*columns)] if columns else []
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    right = [col.justify == "right" for col in table.columns]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)]
        return ("| " + " | ".join(padded) + " |").rstrip()

    lines = [_plain(table.title)] if table.title else []
    lines.append(line(headers))
    lines.append("|" + "|".join(("-" * (w + 1) + ":") if r else "-" * (w + 2) for w, r in zip(widths, right)) + "|")
    lines += [line(r) for r in rows]
    return lines


def print_table(table: Table, file: TextIO | None = None) -> None:
    """Prints ``table`` to ``file`` (stdout by default): rich's drawing on a terminal, whole plain rows otherwise."""
    file = file if file is not None else sys.stdout
    console = Console(file=file)
    if console.is_terminal:
        console.print(table)
        return
    print("\n".join(table_lines(table)), file=file, flush=True)


__all__ = ["print_table", "table_lines"]
