"""Progress for long jobs: steps, steps/s, ETA and the latest evaluation.

On a terminal this is a rich progress bar. When the output stream is not a terminal (a batch job,
``nohup`` into a log file) it is plain lines instead, each in full: one at the start, one at every
evaluation, at most one every ``interval_s`` seconds in between, and one when the run ends.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} steps/s" if speed else "- steps/s", style="progress.data.speed")


def _clock(seconds: float) -> str:
    seconds = int(round(max(seconds, 0.0)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def eval_text(latest: dict | None) -> str:
    """The latest evaluation's numbers in a few words, or "" before the first one."""
    if not latest or "time_at_goal" not in latest:
        return ""
    text = f"time_at_goal {latest['time_at_goal']:.1f}"
    if "success_any" in latest:
        text += f", success {latest['success_any']:.2f}"
    return text


class _PlainLines:
    """The log-file form of the progress: whole lines, written only now and then."""

    def __init__(self, total: int, description: str, stream: TextIO, interval_s: float):
        self.total, self.description, self.stream = total, description, stream
        self.interval_s = interval_s
        self.t_start = time.monotonic()
        self.steps = self.updates = None
        self.latest = None
        self.mark = None  # (time, steps, updates) at the last line written (or the first step taken)
        self.anchor = None  # (time, steps) at the first step taken: ETA's rate leaves out the first compile
        self.rate = self.ms_per_update = None
        self.write(f"{description}: started, {total:,} env steps to run (the first steps wait for compilation)")

    def write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def update(self, steps: int, latest: dict | None, updates: int | None) -> None:
        now = time.monotonic()
        first = self.steps is None
        self.steps, self.updates = steps, updates
        if first:
            self.latest, self.mark = latest, (now, steps, updates)
            if steps:  # a resumed run, or env steps taken before training (a replay buffer's prefill)
                self.write(f"{self.description}: {steps:,}/{self.total:,} env steps before the first training step")
            return
        if self.anchor is None and steps > self.mark[1]:
            # The first tick's time is mostly compilation: measure rates from here on.
            self.anchor, self.mark = (now, steps), (now, steps, updates)
            self.write(
                f"{self.description}: first training steps done after {_clock(now - self.t_start)} "
                f"(compilation included), {steps:,}/{self.total:,} env steps"
            )
        new_eval = latest is not None and latest is not self.latest and latest != self.latest
        self.latest = latest
        if new_eval or now - self.mark[0] >= self.interval_s:
            self.write(self.line(now, evaluation=new_eval))

    def _measure(self, now: float) -> None:
        t0, steps0, updates0 = self.mark
        if self.steps > steps0 and now > t0:
            self.rate = (self.steps - steps0) / (now - t0)
            if self.updates is not None and updates0 is not None and self.updates > updates0:
                self.ms_per_update = 1000.0 * (now - t0) / (self.updates - updates0)
        elif self.rate is None and self.latest and self.latest.get("steps_per_s"):
            self.rate = self.latest["steps_per_s"]  # too early to measure: the engine's figure for the epoch
        self.mark = (now, self.steps, self.updates)

    def line(self, now: float, evaluation: bool = False) -> str:
        self._measure(now)
        steps = min(self.steps, self.total)
        parts = [
            f"{self.description}: {steps:,}/{self.total:,} env steps ({100.0 * steps / max(self.total, 1):.0f}%)",
            f"{self.rate:,.0f} steps/s" if self.rate else "- steps/s",
        ]
        if self.ms_per_update:
            parts.append(f"{self.ms_per_update:.2f} ms/SGD update")
        parts.append(f"elapsed {_clock(now - self.t_start)}")
        parts.append(f"ETA {self._eta(now)}")
        text = eval_text(self.latest)
        if text:
            epoch = self.latest.get("epoch")
            parts.append(
                (f"eval {epoch}: " if evaluation and epoch is not None else "eval: " if evaluation else "last eval: ")
                + text
            )
        return "  ".join(parts)

    def _eta(self, now: float) -> str:
        if self.steps >= self.total:
            return _clock(0)
        if self.anchor is None or self.steps <= self.anchor[1] or now <= self.anchor[0]:
            return _clock((self.total - self.steps) / self.rate) if self.rate else "-"
        rate = (self.steps - self.anchor[1]) / (now - self.anchor[0])
        return _clock((self.total - self.steps) / rate)

    def close(self, failed: bool) -> None:
        now = time.monotonic()
        steps = self.steps if self.steps is not None else 0
        word = "stopped" if failed else "done"
        text = eval_text(self.latest)
        self.write(
            f"{self.description} {word}: {steps:,}/{self.total:,} env steps in {_clock(now - self.t_start)}"
            + (f"  last eval: {text}" if text else "")
        )


class TrainingProgress:
    """Context manager; ``advance_to(steps, latest, updates)`` moves the progress and shows the latest eval.

    ``stream`` defaults to stderr. ``plain`` picks plain lines (True) or the rich bar (False); by
    default plain lines are used exactly when ``stream`` is not a terminal. ``interval_s`` is the
    most time between two plain lines while no evaluation arrives. Without ``advance_to``'s
    ``updates`` (SGD updates done) the lines leave out the time per SGD update.
    """

    def __init__(
        self,
        total: int,
        description: str,
        enabled: bool = True,
        *,
        stream: TextIO | None = None,
        plain: bool | None = None,
        interval_s: float = 30.0,
    ):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.enabled = enabled
        self.total = total
        self.description = description
        self.stream = stream
        self.plain = plain
        self.interval_s = interval_s
        self._progress = None
        self._task = None
        self._lines = None

    def __enter__(self):
        if self.enabled:
            stream = self.stream if self.stream is not None else sys.stderr
            console = Console(file=stream)
            plain = (not console.is_terminal) if self.plain is None else self.plain
            if plain:
                self._lines = _PlainLines(self.total, self.description, stream, self.interval_s)
                return self
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

    def __exit__(self, exc_type, exc, tb):
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)
            self._progress = None
        if self._lines is not None:
            self._lines.close(failed=exc_type is not None)
            self._lines = None
        return False

    def advance_to(self, steps: int, latest: dict | None = None, updates: int | None = None) -> None:
        if self._lines is not None:
            self._lines.update(steps, latest, updates)
            return
        if self._progress is None:
            return
        text = eval_text(latest)
        self._progress.update(self._task, completed=min(steps, self.total), latest=f"eval: {text}" if text else "")


__all__ = ["TrainingProgress", "eval_text"]
