"""Several seeds in one program (``train-teacher --seeds``, ``sweep --parallel-seeds``): each seed
learns what it would alone, and is written as an ordinary, resumable run."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from distill.store.runs import read_metrics
from teachers.config import teacher_config
from teachers.train import train_teacher, train_teachers
from tests.conftest import (
    TINY_TEACHER,
    assert_one_line_error,
    cli_process,
    kill_after_first_checkpoint,
    run_cli,
    run_cli_in_process,
)


def assert_same_epoch(stacked: dict, solo: dict) -> None:
    for key in ("critic_loss", "actor_loss", "alpha"):
        np.testing.assert_allclose(stacked[key], solo[key], rtol=2e-3, err_msg=key)
    for key in ("env_steps", "sgd_updates", "time_at_goal", "success_any"):
        assert stacked[key] == solo[key], key


# Compiling the vmapped step of two seeds takes a minute or two on a small machine: CI runs it with the
# slow tests.
@pytest.mark.slow
def test_two_seeds_in_one_program_match_their_solo_runs(tiny_teacher_run, tmp_path):
    config = teacher_config("reacher", **TINY_TEACHER)
    outs = [tmp_path / "seed_0", tmp_path / "seed_1"]
    finals = train_teachers([dataclasses.replace(config, seed=s) for s in (0, 1)], outs, show_progress=False)
    solo_1 = tmp_path / "solo_1"
    train_teacher(dataclasses.replace(config, seed=1), solo_1, show_progress=False)

    # The session's tiny teacher is the solo run of seed 0 under the same config.
    for stacked, solo in ((outs[0], tiny_teacher_run), (outs[1], solo_1)):
        assert_same_epoch(read_metrics(stacked)[0], read_metrics(solo)[0])
        record = json.loads((stacked / "config.json").read_text())
        assert record["kind"] == "teacher" and record["parallel_seeds"] == [0, 1]
        assert record["seed"] == int(stacked.name[-1])
    assert [f["epoch"] for f in finals] == [2, 2] and read_metrics(outs[0])[-1]["parallel_runs"] == 2


# Two stacked trainings, a kill and a resume, then evaluate and compress: CI runs it with the slow tests.
@pytest.mark.slow
def test_stacked_runs_resume_after_a_kill_and_read_as_ordinary_runs(tmp_path):
    out = tmp_path / "seeds"
    flags = [
        f"--{k.replace('_', '-')}={v}" for k, v in {**TINY_TEACHER, "num_evals": 6, "total_steps": 8 * 10 * 14}.items()
    ]
    proc = cli_process("train-teacher", "--out", str(out), "--seeds", "3,5", "--no-progress", *flags)
    kill_after_first_checkpoint([proc], out / "seed_5")
    resumed = run_cli("train-teacher", "--out", str(out), "--seeds", "3,5", "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    for seed in (3, 5):
        run = out / f"seed_{seed}"
        assert [m["epoch"] for m in read_metrics(run)] == list(range(1, 7)), seed
        evaluated = run_cli("evaluate", str(run), "--episodes", "4", "--json")
        assert evaluated.returncode == 0, evaluated.stderr
    compressed = run_cli(
        "compress",
        str(out / "seed_5"),
        "--out",
        str(tmp_path / "student"),
        "--no-baseline",
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
        "4",
        "--student-width",
        "16",
        "--report-episodes",
        "4",
        "--no-progress",
    )
    assert compressed.returncode == 0, compressed.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--seeds", ""], "--seeds must not be empty"),
        (["--seeds", "1,1"], "more than once"),
        (["--seeds", "0,x"], "integers"),
        (["--seeds", "0,1", "--seed", "2"], "either --seed or --seeds"),
        (["--block-unroll", "0"], "at least 1"),
        (["--block-unroll", "some"], "positive integer"),
    ],
)
def test_bad_seeds_and_unrolls_are_refused_in_one_line(tmp_path, args, fragment):
    out = tmp_path / "run"
    result = run_cli_in_process("train-teacher", "--out", str(out), *args)
    assert_one_line_error(result, fragment)
    assert not out.exists()


def test_parallel_seeds_the_device_cannot_hold_are_refused_with_the_estimate(tmp_path):
    from distill.nn.memory import available_bytes

    # One seed's replay alone takes a quarter of the memory there is; eight seeds would need twice it.
    row_bytes = 2048 * (29 + 8 + 2) * 4
    rows = available_bytes() // 4 // row_bytes
    out = tmp_path / "sweep"
    # In a fresh process: were the refusal to go, this run would be too big for the test process to survive.
    result = run_cli(
        "sweep",
        "--env",
        "ant",
        "--depths",
        "4",
        "--seeds",
        "0,1,2,3,4,5,6,7",
        "--parallel-seeds",
        "--num-envs",
        "2048",
        "--replay-rows",
        str(rows),
        "--out",
        str(out),
    )
    assert_one_line_error(result, "8 seeds in one program", "GB")
    assert not out.exists()
