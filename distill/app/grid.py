"""What ``sweep`` and ``frontier`` share: a folder of runs, one per cell of a plan, trained one after
another. The folder's record says what the grid is (a second call with other settings is refused);
a finished cell is skipped, a started one resumed; the summary (JSON, Markdown, PNG) is rewritten
whenever a cell is done, so an interrupted grid still shows what it has."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

from distill.store import runs

Cell = TypeVar("Cell")


def notice(text: str) -> None:
    """Where a grid says what it is doing: one line on stderr."""
    print(text, file=sys.stderr, flush=True)


def open_grid(out: Path, record_name: str, record: dict, what: str, **check) -> bool:
    """The grid's folder: True if it holds this grid already (to continue), False if it starts here;
    another grid's folder, or other settings, are refused (``runs.open_grid_dir``)."""
    return runs.open_grid_dir(Path(out), record_name, record, what, **check)


def pending(
    cells: Iterable[Cell], run_of: Callable[[Cell], Path], done: Callable[[Cell], bool]
) -> Iterator[tuple[int, int, Cell, bool]]:
    """(index from 1, count, cell, resume) of every cell not done yet; ``resume`` says its run was started."""
    cells = list(cells)
    for index, cell in enumerate(cells, 1):
        if not done(cell):
            yield index, len(cells), cell, (run_of(cell) / "config.json").is_file()


def write_summary(out: Path, name: str, summary: dict, markdown: str, plot: Callable[[Path], None]) -> dict:
    """``name``.json, ``name``.md and ``name``.png in ``out``, each replaced whole."""
    out = Path(out)
    runs.atomic_write_text(out / f"{name}.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    runs.atomic_write_text(out / f"{name}.md", markdown)
    plot(out / f"{name}.png")
    return summary
