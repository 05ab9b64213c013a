"""A short real training run on every required environment."""

import pytest

from distill.runs import read_metrics
from teachers.config import teacher_config
from teachers.train import train_teacher

TINY = dict(
    num_envs=4, unroll_length=10, batch_size=16, updates_per_step=2, total_steps=4 * 10 * 4, num_evals=1,
    eval_episodes=2, replay_rows=60, prefill_rows=20, width=32, repr_dim=8,
)


@pytest.mark.parametrize("env", ["ant", "humanoid", "ant_u4_maze"])
def test_short_training_run(env, tmp_path):
    final = train_teacher(teacher_config(env, **TINY), tmp_path / env, show_progress=False)
    metrics = read_metrics(tmp_path / env)
    assert len(metrics) == 1 and final["env_steps"] == 4 * 10 * 4
    assert final["episode_length"] == 1000 and final["episodes"] == 2
    for key in ("critic_loss", "actor_loss", "alpha"):
        assert metrics[0][key] == metrics[0][key]  # finite (NaN would have stopped the run)
