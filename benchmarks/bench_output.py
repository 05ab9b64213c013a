"""What every benchmark ends with: a table on the terminal and the records as JSON."""

from __future__ import annotations

import json
from pathlib import Path


def env_names(envs: str | None) -> list[str]:
    """The environments an ``--envs a,b`` option names (every registered one when empty), or exits
    with a one-line error naming the valid ones."""
    from distill.envs import REGISTRY, get_spec
    from distill.errors import DistillError

    names = envs.split(",") if envs else list(REGISTRY)
    try:
        for name in names:
            get_spec(name)
    except DistillError as err:
        raise SystemExit(f"error: {err}") from None
    return names


def table_and_json(title: str, columns: list[str], rows: list[list[str]], records: list[dict], json_path: str) -> Path:
    from rich.table import Table

    from distill.app.console import print_table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*row)
    print_table(table)
    path = Path(json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=2) + "\n")
    print(f"wrote {path}")
    return path
