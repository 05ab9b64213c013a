"""Multi-process training through jax.distributed: real processes on 127.0.0.1, one CPU device each."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from distill.store.runs import read_metrics
from tests.conftest import TINY_TEACHER, assert_one_line_error, cli_process, kill_after_first_checkpoint, run_cli

ONE_DEVICE = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
TINY_FLAGS = [x for k, v in TINY_TEACHER.items() for x in (f"--{k.replace('_', '-')}", str(v))] + ["--no-progress"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_processes(out, *extra: str, count: int = 2):
    coordinator = f"127.0.0.1:{free_port()}"
    return [
        cli_process(
            "train-teacher",
            "--out",
            str(out),
            *TINY_FLAGS,
            *extra,
            "--coordinator",
            coordinator,
            "--num-processes",
            str(count),
            "--process-id",
            str(i),
            "--coordinator-timeout",
            "60",
            env=ONE_DEVICE,
        )
        for i in range(count)
    ]


def wait_all(procs, timeout: float = 400) -> list[str]:
    errors = []
    for proc in procs:
        _, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-3000:]
        errors.append(err)
    return errors


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """Two processes train a tiny teacher, are killed after the first checkpoint, and resume together."""
    out = tmp_path_factory.mktemp("distributed") / "run"
    t0 = time.perf_counter()
    killed_at = kill_after_first_checkpoint(start_processes(out), out)
    metrics_at_kill = read_metrics(out)
    wait_all(start_processes(out, "--resume"))
    return {"out": out, "killed_at": killed_at, "metrics_at_kill": metrics_at_kill, "seconds": time.perf_counter() - t0}


# Two processes compiling side by side on a small machine take minutes: CI runs the runs that train
# together with the slow tests; the default suite keeps the joins that fail (real processes too).
@pytest.mark.slow
def test_two_processes_resume_into_one_coherent_run(two_process_run):
    out = two_process_run["out"]
    metrics = read_metrics(out)
    assert two_process_run["killed_at"] == 2  # the first epoch's checkpoint: 2 training steps
    assert [m["epoch"] for m in metrics] == [1, 2]
    per_step = TINY_TEACHER["num_envs"] * TINY_TEACHER["unroll_length"]
    assert [m["env_steps"] for m in metrics] == [
        TINY_TEACHER["total_steps"] - 2 * per_step,
        TINY_TEACHER["total_steps"],
    ]
    assert [m["sgd_updates"] for m in metrics] == [
        2 * TINY_TEACHER["updates_per_step"],
        4 * TINY_TEACHER["updates_per_step"],
    ]
    # One directory, written once: one config, one metrics line per epoch, checkpoints of both epochs.
    import json

    config = json.loads((out / "config.json").read_text())
    assert config["num_devices"] == 2 and config["num_processes"] == 2
    assert sorted(p.name for p in (out / "checkpoints" / "last").iterdir()) == ["2", "4"]
    assert len(list(out.glob("events.out.tfevents.*"))) == 2  # process 0 only, once per start


@pytest.mark.slow
def test_two_processes_match_one_process_with_two_devices(two_process_run, tmp_path):
    single = tmp_path / "single"
    result = run_cli(
        "train-teacher",
        "--out",
        str(single),
        *TINY_FLAGS,
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    assert result.returncode == 0, result.stderr
    a, b = read_metrics(single), read_metrics(two_process_run["out"])
    assert [m["env_steps"] for m in a] == [m["env_steps"] for m in b]
    assert [m["sgd_updates"] for m in a] == [m["sgd_updates"] for m in b]
    # The same global computation on the same devices' data: the losses agree too.
    np.testing.assert_allclose([m["critic_loss"] for m in a], [m["critic_loss"] for m in b], rtol=1e-4)


@pytest.mark.parametrize(
    "flags, fragments",
    [
        (
            ["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"],
            ["--process-id must lie in [0, 1]"],
        ),
        (
            ["--coordinator", "127.0.0.1:1234", "--num-processes", "0", "--process-id", "0"],
            ["--num-processes must be at least 1"],
        ),
        (
            ["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"],
            ["--coordinator must be HOST:PORT"],
        ),
        (["--num-processes", "2"], ["needs --coordinator, --num-processes and --process-id together"]),
    ],
)
def test_bad_process_settings(tmp_path, flags, fragments):
    assert_one_line_error(run_cli("train-teacher", "--out", str(tmp_path / "run"), *flags), *fragments)
    assert not (tmp_path / "run").exists()


def test_unreachable_coordinator_times_out_with_one_line(tmp_path):
    t0 = time.perf_counter()
    result = run_cli(
        "train-teacher",
        "--out",
        str(tmp_path / "run"),
        "--coordinator",
        f"127.0.0.1:{free_port()}",
        "--num-processes",
        "2",
        "--process-id",
        "1",
        "--coordinator-timeout",
        "5",
        timeout=120,
    )
    assert_one_line_error(result, "could not join the run", "within 5 s")
    assert time.perf_counter() - t0 < 60
    assert not (tmp_path / "run").exists()


def test_mismatched_process_counts_stop_both_processes(tmp_path):
    coordinator = f"127.0.0.1:{free_port()}"
    common = [
        "train-teacher",
        "--out",
        str(tmp_path / "run"),
        *TINY_FLAGS,
        "--coordinator",
        coordinator,
        "--coordinator-timeout",
        "10",
    ]
    first = cli_process(*common, "--num-processes", "2", "--process-id", "0", env=ONE_DEVICE)
    second = run_cli(*common, "--num-processes", "3", "--process-id", "1", env=ONE_DEVICE, timeout=120)
    assert_one_line_error(second, "the run has 2 processes, not the 3 given by --num-processes")
    first.wait(timeout=120)  # it does not hang: its peer is gone, so it stops
    assert first.returncode != 0


def test_duplicate_process_ids_fail_with_one_line_each(tmp_path):
    coordinator = f"127.0.0.1:{free_port()}"
    args = [
        "train-teacher",
        "--out",
        str(tmp_path / "run"),
        *TINY_FLAGS,
        "--coordinator",
        coordinator,
        "--num-processes",
        "2",
        "--process-id",
        "0",
        "--coordinator-timeout",
        "5",
    ]
    first = cli_process(*args, env=ONE_DEVICE)
    second = run_cli(*args, env=ONE_DEVICE, timeout=120)
    _, first_err = first.communicate(timeout=120)
    for returncode, stderr in ((first.returncode, first_err), (second.returncode, second.stderr)):
        assert returncode == 2
        assert [line for line in stderr.splitlines() if line.strip()] == [
            f"error: could not join the run through coordinator {coordinator} within 5 s: "
            "not every process connected (this is process 0 of 2)"
        ]
    assert not (tmp_path / "run").exists()
