"""What every benchmark ends with: a table on the terminal and the records as JSON."""

from __future__ import annotations

import json
from pathlib import Path


def table_and_json(title: str, columns: list[str], rows: list[list[str]], records: list[dict], json_path: str) -> Path:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    path = Path(json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=2) + "\n")
    print(f"wrote {path}")
    return path
