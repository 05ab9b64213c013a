"""Shared fixtures. Tests run on real components: Brax environments, orbax, onnxruntime."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Tests compile the same small programs in many processes; XLA's persistent cache makes the repeats
# cheap. Set before JAX is imported here, and inherited by every subprocess the tests start.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import pytest  # noqa: E402


def run_cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Runs ``distill`` in a fresh process, as a user would."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "distill.app.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=ROOT,
    )


def run_cli_in_process(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs ``distill`` inside this process, answering as ``run_cli`` does.

    For bad input, which is refused before any real work: a fresh interpreter for each refusal costs
    seconds of imports. What a fresh process would show still shows here: what the native libraries
    write to the stderr file descriptor is kept, and an uncaught exception comes back as the traceback
    Python would print. What ``one_line_errors`` changes in the logging and warnings machinery is
    undone afterwards, so later tests see this process as it was.
    """
    import logging
    import tempfile
    import traceback
    import warnings

    from typer.testing import CliRunner

    from distill.app.cli import app

    loggers = [logging.getLogger(), logging.getLogger("absl")]
    levels = [logger.level for logger in loggers]
    showwarning = warnings.showwarning
    sys.stderr.flush()
    terminal = os.dup(2)
    with tempfile.TemporaryFile() as native:
        os.dup2(native.fileno(), 2)
        try:
            result = CliRunner().invoke(app, list(args), env=env)
        finally:
            os.dup2(terminal, 2)
            os.close(terminal)
            warnings.showwarning = showwarning
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
        native.seek(0)
        stderr = result.stderr + native.read().decode(errors="replace")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(["distill", *args], result.exit_code, result.stdout, stderr)


def cli_process(*args: str, env: dict | None = None) -> subprocess.Popen:
    """Starts ``distill`` in the background, as a user would."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "distill.app.cli", *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def checkpoint_steps(run: Path) -> list[int]:
    """Training steps of the finished ``last`` checkpoints (orbax renames a step's folder when done)."""
    root = Path(run) / "checkpoints" / "last"
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []


def kill_after_first_checkpoint(procs: list[subprocess.Popen], run: Path, timeout: float = 300) -> int:
    """SIGKILLs every process once the run has a checkpoint; returns that checkpoint's step."""
    import signal
    import time

    deadline = time.time() + timeout
    while not checkpoint_steps(run):
        for proc in procs:
            assert proc.poll() is None, f"run ended before its first checkpoint: {proc.stderr.read()[-2000:]}"
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.1)
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return checkpoint_steps(run)[-1]


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


from teachers.config import TOY_SETTINGS  # noqa: E402

# A teacher small enough to train in seconds on 2 CPU cores.
TINY_TEACHER = dict(
    num_envs=8,
    unroll_length=10,
    batch_size=32,
    updates_per_step=2,
    total_steps=8 * 10 * 6,
    num_evals=2,
    eval_episodes=4,
    replay_rows=100,
    prefill_rows=20,
    width=32,
    repr_dim=16,
)


@pytest.fixture(scope="session")
def tiny_teacher_run(tmp_path_factory):
    """A real, tiny reacher teacher run directory shared by tests that need a trained teacher."""
    from teachers.config import teacher_config
    from teachers.train import train_teacher

    out = tmp_path_factory.mktemp("teacher") / "run"
    train_teacher(teacher_config("reacher", **TINY_TEACHER), out, show_progress=False)
    return out


# A teacher for the 1000-step environments, small enough to train in well under a minute.
TINY_ENV_TEACHER = TOY_SETTINGS


@pytest.fixture(scope="session")
def tiny_maze_teacher_run(tmp_path_factory):
    """A real, tiny simple_u_maze teacher run (trained, evaluated, checkpointed)."""
    from teachers.config import teacher_config
    from teachers.train import train_teacher

    out = tmp_path_factory.mktemp("maze_teacher") / "run"
    train_teacher(teacher_config("simple_u_maze", **TINY_ENV_TEACHER), out, show_progress=False)
    return out


TINY_STUDENT_FLAGS = [
    "--num-envs",
    "8",
    "--unroll-length",
    "10",
    "--batch-size",
    "32",
    "--eval-episodes",
    "4",
    "--iterations",
    "2",
    "--steps",
    "6",
    "--student-width",
    "16",
    "--report-episodes",
    "4",
    "--no-progress",
]


@pytest.fixture(scope="session")
def tiny_student_run(tiny_teacher_run, tmp_path_factory):
    """A real, tiny student (depth 4, width 16) of the tiny teacher, made through the CLI.

    It keeps the default scratch baseline (a same-size network trained by CRL from scratch), so its
    report is the one a user gets; other student runs in the tests pass --no-baseline.
    """
    out = tmp_path_factory.mktemp("student") / "run"
    result = run_cli("compress", str(tiny_teacher_run), "--student-depth", "4", "--out", str(out), *TINY_STUDENT_FLAGS)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def tiny_student_onnx(tiny_student_run, tmp_path_factory):
    """The tiny student exported through the CLI with its critic: policy.onnx beside policy.critic.onnx."""
    out = tmp_path_factory.mktemp("export") / "policy.onnx"
    result = run_cli("export", str(tiny_student_run), "--out", str(out), "--critic")
    assert result.returncode == 0, result.stderr
    return out


# Velocities dropped, a history of 3 readings, one step late: the sensor student several test files read.
SENSOR_SPEC = "drop=joint_vel,fingertip_vel;noise=0.02;history=3;latency=1"


@pytest.fixture(scope="session")
def sensor_student_run(tiny_teacher_run, tmp_path_factory):
    """A tiny reacher student behind sensors, made through the CLI (its report's baselines are a slow
    test's)."""
    out = tmp_path_factory.mktemp("sensors") / "student"
    result = run_cli(
        "compress",
        str(tiny_teacher_run),
        "--student-depth",
        "4",
        "--out",
        str(out),
        "--sensors",
        SENSOR_SPEC,
        *TINY_STUDENT_FLAGS,
        "--no-baseline",
    )
    assert result.returncode == 0, result.stderr
    return out
