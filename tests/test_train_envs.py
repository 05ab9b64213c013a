"""A short real training run on every required environment."""

import math

import numpy as np
import pytest

from distill.runs import read_metrics
from teachers.config import teacher_config
from teachers.train import train_teacher
from tests.conftest import TINY_ENV_TEACHER

TINY = TINY_ENV_TEACHER
# Prefill collects whole unrolls of every environment until prefill_rows are filled; the remaining
# env-step budget is spent in training steps of num_envs * unroll_length env steps each.
PER_STEP = TINY["num_envs"] * TINY["unroll_length"]
PREFILL_ENV_STEPS = math.ceil(TINY["prefill_rows"] / TINY["unroll_length"]) * PER_STEP
TRAINING_STEPS = (TINY["total_steps"] - PREFILL_ENV_STEPS) // PER_STEP


def check_tiny_run(run, final):
    metrics = read_metrics(run)
    assert len(metrics) == 1 and metrics[0]["epoch"] == 1
    record = metrics[0]
    assert final["env_steps"] == record["env_steps"] == TINY["total_steps"] == PREFILL_ENV_STEPS + TRAINING_STEPS * PER_STEP
    # 2 prefill unrolls (80 env steps), then 2 training steps of 40 env steps and 2 updates each.
    assert record["sgd_updates"] == TRAINING_STEPS * TINY["updates_per_step"] == 4
    assert final["episode_length"] == 1000 and final["episodes"] == 2
    for key in ("critic_loss", "actor_loss", "alpha"):
        assert np.isfinite(record[key]), (key, record[key])


# A minute of compiling the humanoid's physics: CI runs it with the learning tests.
@pytest.mark.slow
def test_short_training_run_humanoid(tmp_path):
    final = train_teacher(teacher_config("humanoid", **TINY), tmp_path / "run", show_progress=False)
    check_tiny_run(tmp_path / "run", final)


def test_short_training_run_ant_maze(tiny_maze_teacher_run):
    # The ant maze trains the ant robot too, so the plain ant is left to test_envs (reset and step).
    check_tiny_run(tiny_maze_teacher_run, read_metrics(tiny_maze_teacher_run)[-1])
