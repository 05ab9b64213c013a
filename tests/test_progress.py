"""Progress and tables written into a log file (not a terminal) come out as whole, readable lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

from tests.conftest import ROOT

DESCRIPTION = "teacher simple_hardest_maze d64 w1024 (a description long enough to pass 80 columns)"
TOTAL = 100_000
INTERVAL_S = 0.3
EVALS = {30_000: 11.5, 60_000: 22.5, 100_000: 33.5}  # env steps at each evaluation -> its time_at_goal

DRIVER = textwrap.dedent(f"""
    import json, sys, time
    from distill.train.progress import TrainingProgress

    evals = {{int(k): v for k, v in json.loads(sys.argv[1]).items()}}
    t0 = time.monotonic()
    latest, epoch = None, 0
    with TrainingProgress({TOTAL}, {DESCRIPTION!r}, interval_s={INTERVAL_S}) as progress:
        progress.advance_to(0, latest, updates=0)
        for steps in range(500, {TOTAL} + 1, 500):  # 200 ticks of 10 ms: far more than one per interval
            time.sleep(0.01)
            progress.advance_to(steps, latest, updates=steps // 4)
            if steps in evals:
                epoch += 1
                latest = {{"epoch": epoch, "env_steps": steps, "steps_per_s": 1.0, "sgd_updates": steps // 4,
                           "time_at_goal": evals[steps], "success_any": 0.5, "critic_loss": 0.1}}
                progress.advance_to(steps, latest, updates=steps // 4)
    print(time.monotonic() - t0)
""")


def plain_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_progress_into_a_log_is_whole_lines_now_and_then(tmp_path):
    import json

    log = tmp_path / "run.log"
    with open(log, "w") as stderr:
        done = subprocess.run(
            [sys.executable, "-c", DRIVER, json.dumps(EVALS)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=plain_env(),
            cwd=ROOT,
            timeout=120,
            check=True,
        )
    seconds = float(done.stdout)
    lines = log.read_text().splitlines()
    assert lines, "nothing was written into the log"
    assert not any("…" in line for line in lines), "a line was cut:\n" + "\n".join(lines)
    assert all(line.startswith(DESCRIPTION) for line in lines), "\n".join(lines)
    assert lines[0].endswith(": started, 100,000 env steps to run (the first steps wait for compilation)")
    assert re.search(r" done: 100,000/100,000 env steps in \d+:\d\d:\d\d  last eval: time_at_goal 33\.5", lines[-1])

    assert re.search(
        r": first training steps done after \d+:\d\d:\d\d \(compilation included\), 500/100,000 env steps$", lines[1]
    )
    body = lines[2:-1]
    eval_lines = [line for line in body if re.search(r"  eval \d+: ", line)]
    between = [line for line in body if line not in eval_lines]
    assert [re.search(r"time_at_goal (\S+),", line).group(1) for line in eval_lines] == ["11.5", "22.5", "33.5"]
    assert between, "no line between evaluations"
    assert len(between) <= seconds / INTERVAL_S, f"{len(between)} lines in {seconds:.1f} s:\n" + "\n".join(lines)

    shown = None  # the newest evaluation's time_at_goal, once there is one
    for line in body:
        steps = int(re.search(r": ([\d,]+)/100,000 env steps \(\d+%\)", line).group(1).replace(",", ""))
        assert re.search(r"  [\d,]+ steps/s  ", line), line
        assert re.search(r"  \d+\.\d\d ms/SGD update  ", line), line
        assert re.search(r"  ETA (\d+:\d\d:\d\d|-)", line), line
        if line in eval_lines:
            shown = EVALS[steps]
        if shown is not None:
            assert f"time_at_goal {shown}," in line, line
    assert shown == 33.5


def test_a_table_into_a_pipe_keeps_every_cell_whole():
    long_cell = "a description of " + "many words " * 20 + "that ends here"
    script = textwrap.dedent(f"""
        from rich.table import Table
        from distill.app.console import print_table

        table = Table(title="environments \\\\[state, goal]")
        for col in ("name", "state", "description"):
            table.add_column(col, justify="right" if col == "state" else "left")
        table.add_row("humanoid_hardest_maze", "246", {long_cell!r})
        table.add_row("reacher", "10", "two-link arm \\\\[paper defaults]")
        print_table(table)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=plain_env(),
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "environments [state, goal]"
    assert long_cell in done.stdout and "two-link arm [paper defaults]" in done.stdout
    assert "…" not in done.stdout
    rows = [line for line in lines[1:] if line.startswith("|")]
    assert len(rows) == 4 and len({len(line) for line in rows[:3]}) == 1, done.stdout  # header, rule, rows line up
    assert re.search(r"\| humanoid_hardest_maze \|\s+246 \| " + re.escape(long_cell) + r"\s+\|", done.stdout)


def test_a_terminal_still_gets_the_bar(monkeypatch):
    """What a terminal shows: a live bar with the steps done and the latest evaluation, no log lines."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    from distill.train.progress import TrainingProgress

    main_fd, tty_fd = pty.openpty()
    fcntl.ioctl(tty_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a terminal 160 columns wide
    monkeypatch.setenv("COLUMNS", "160")
    with os.fdopen(tty_fd, "w") as tty:
        with TrainingProgress(10, "teacher reacher d4", stream=tty) as progress:
            progress.advance_to(5, {"time_at_goal": 1.0, "success_any": 0.0}, updates=3)
    shown = b""
    while select.select([main_fd], [], [], 0.5)[0]:
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(main_fd)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode(errors="replace"))
    assert "teacher reacher d4" in text and "5/10" in text, text
    assert "eval: time_at_goal 1.0, success 0.00" in text, text
    assert "━" in text, text  # the bar itself
    assert "started," not in text and "env steps to run" not in text  # no log-file lines on a terminal
