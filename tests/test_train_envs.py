"""A short real training run, ending in an evaluation, on every environment."""

import math

import numpy as np
import pytest

from distill.envs import REGISTRY
from distill.envs.maze import MazeEnv
from distill.store.runs import read_metrics
from teachers.config import teacher_config
from teachers.train import train_teacher
from tests.conftest import TINY_ENV_TEACHER

TINY = TINY_ENV_TEACHER
# Prefill collects whole unrolls of every environment until prefill_rows are filled; the remaining
# env-step budget is spent in training steps of num_envs * unroll_length env steps each.
PER_STEP = TINY["num_envs"] * TINY["unroll_length"]
PREFILL_ENV_STEPS = math.ceil(TINY["prefill_rows"] / TINY["unroll_length"]) * PER_STEP
TRAINING_STEPS = (TINY["total_steps"] - PREFILL_ENV_STEPS) // PER_STEP


def check_tiny_run(run, final, env: str):
    metrics = read_metrics(run)
    assert len(metrics) == 1 and metrics[0]["epoch"] == 1
    record = metrics[0]
    assert (
        final["env_steps"]
        == record["env_steps"]
        == TINY["total_steps"]
        == PREFILL_ENV_STEPS + TRAINING_STEPS * PER_STEP
    )
    # 2 prefill unrolls (80 env steps), then 2 training steps of 40 env steps and 2 updates each.
    assert record["sgd_updates"] == TRAINING_STEPS * TINY["updates_per_step"] == 4
    assert final["episode_length"] == REGISTRY[env].episode_length and final["episodes"] == 2
    for key in ("critic_loss", "actor_loss", "alpha"):
        assert np.isfinite(record[key]), (key, record[key])
    # A maze run ends with the top view of its final policy's episodes.
    assert (run / "maze.png").exists() == issubclass(REGISTRY[env].factory, MazeEnv)


# The reacher trains in the shared fixtures of the other tests, the point mass's U maze here; each
# other robot costs a minute or more of compiling its physics, so CI runs them with the slow tests.
OTHERS = sorted(set(REGISTRY) - {"reacher", "simple_u_maze"})


@pytest.mark.slow
@pytest.mark.parametrize("env", OTHERS)
def test_short_training_run(env, tmp_path):
    final = train_teacher(teacher_config(env, **TINY), tmp_path / "run", show_progress=False)
    check_tiny_run(tmp_path / "run", final, env)


def test_short_training_run_simple_maze(tiny_maze_teacher_run):
    """The fixture's run as ``train_teacher`` left it; its final parameters, read back from the last
    checkpoint, score again exactly what the last epoch recorded."""
    from distill.eval.evaluation import evaluation_key, make_evaluator, summarize
    from teachers.train import load_teacher

    run = tiny_maze_teacher_run
    record = read_metrics(run)[-1]
    config, spec, networks, params, _ = load_teacher(run, "last")
    evaluate = make_evaluator(spec.make(backend=config.backend), spec, networks.act, config.eval_episodes)
    again = summarize(evaluate(params["actor"], evaluation_key(config.seed, record["epoch"])).success)
    assert (again["time_at_goal"], again["success_any"]) == (record["time_at_goal"], record["success_any"])
    check_tiny_run(run, {**again, "env_steps": record["env_steps"]}, "simple_u_maze")
