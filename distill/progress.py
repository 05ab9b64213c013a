"""A rich progress bar for long jobs: steps, steps/s, ETA and the latest evaluation."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import ProgressColumn
from rich.text import Text


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} steps/s" if speed else "- steps/s", style="progress.data.speed")


class TrainingProgress:
    """Context manager; ``advance_to(steps, latest)`` moves the bar and shows the latest eval."""

    def __init__(self, total: int, description: str, enabled: bool = True):
        self.enabled = enabled
        self.total = total
        self.description = description
        self._progress = None
        self._task = None

    def __enter__(self):
        if self.enabled:
            console = Console(file=sys.stderr)
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                _RateColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[latest]}"),
                console=console,
                refresh_per_second=2,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total, latest="")
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)
        return False

    def advance_to(self, steps: int, latest: dict | None = None) -> None:
        if self._progress is None:
            return
        text = ""
        if latest:
            text = f"eval: time_at_goal {latest['time_at_goal']:.1f}, success {latest['success_any']:.2f}"
        self._progress.update(self._task, completed=min(steps, self.total), latest=text)
