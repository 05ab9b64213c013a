"""A short real training run on every required environment."""

import math

import numpy as np
import pytest

from distill.runs import read_metrics
from teachers.config import teacher_config
from teachers.train import train_teacher

TINY = dict(
    num_envs=4, unroll_length=10, batch_size=16, updates_per_step=2, total_steps=4 * 10 * 4, num_evals=1,
    eval_episodes=2, replay_rows=60, prefill_rows=20, width=32, repr_dim=8,
)
# Prefill collects whole unrolls of every environment until prefill_rows are filled; the remaining
# env-step budget is spent in training steps of num_envs * unroll_length env steps each.
PER_STEP = TINY["num_envs"] * TINY["unroll_length"]
PREFILL_ENV_STEPS = math.ceil(TINY["prefill_rows"] / TINY["unroll_length"]) * PER_STEP
TRAINING_STEPS = (TINY["total_steps"] - PREFILL_ENV_STEPS) // PER_STEP


# The ant maze trains the ant robot too, so the plain ant is left to test_envs (reset and step).
@pytest.mark.parametrize("env", ["humanoid", "ant_u4_maze"])
def test_short_training_run(env, tmp_path):
    final = train_teacher(teacher_config(env, **TINY), tmp_path / env, show_progress=False)
    metrics = read_metrics(tmp_path / env)
    assert len(metrics) == 1 and metrics[0]["epoch"] == 1
    record = metrics[0]
    assert final["env_steps"] == record["env_steps"] == TINY["total_steps"] == PREFILL_ENV_STEPS + TRAINING_STEPS * PER_STEP
    # 2 prefill unrolls (80 env steps), then 2 training steps of 40 env steps and 2 updates each.
    assert record["sgd_updates"] == TRAINING_STEPS * TINY["updates_per_step"] == 4
    assert final["episode_length"] == 1000 and final["episodes"] == 2
    for key in ("critic_loss", "actor_loss", "alpha"):
        assert np.isfinite(record[key]), (key, record[key])
