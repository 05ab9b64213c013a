"""`distill evaluate --obs-noise SIGMA`: noise on the observed state only, seeded, and sigma 0 is plain evaluation."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill.app.evaluate import evaluate_target, load_run_policy
from distill.errors import DistillError
from distill.eval.evaluation import make_evaluator
from tests.conftest import assert_one_line_error, run_cli, run_cli_in_process

EPISODES = 8


@pytest.mark.slow  # whole commands on trained runs: CI runs it with the learning tests
def test_sigma_zero_is_plain_evaluation_exactly(tiny_teacher_run, tiny_student_run, tiny_student_onnx):
    for target in (tiny_teacher_run, tiny_student_run, tiny_student_onnx):
        plain = evaluate_target(target, EPISODES, None, 0)
        assert evaluate_target(target, EPISODES, None, 0, obs_noise=0.0) == plain
        assert plain["obs_noise"] == 0.0
    # The whole rollout, not only its summary: every success flag and every drawn path.
    policy = load_run_policy(tiny_student_run)
    env, key = policy.spec.make(backend=policy.backend), jax.random.PRNGKey(0)
    plain = make_evaluator(env, policy.spec, policy.apply, EPISODES)(policy.actor_params, key)
    zero = make_evaluator(env, policy.spec, policy.apply, EPISODES, 0.0)(policy.actor_params, key)
    for a, b in zip(plain, zero):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_noise_is_seeded_and_touches_only_the_observed_state(tiny_student_run):
    policy = load_run_policy(tiny_student_run)
    spec, env, key = policy.spec, policy.spec.make(backend=policy.backend), jax.random.PRNGKey(0)

    def rollout(apply, sigma):
        return jax.device_get(make_evaluator(env, spec, apply, EPISODES, sigma)(policy.actor_params, key))

    noisy_evaluator = make_evaluator(env, spec, policy.apply, EPISODES, 0.05)
    noisy = jax.device_get(noisy_evaluator(policy.actor_params, key))
    for a, b in zip(noisy, jax.device_get(noisy_evaluator(policy.actor_params, key))):  # seeded: the same noise
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(noisy.path, rollout(policy.apply, 0.0).path)  # the student sees it
    # A policy that reads only the goal acts exactly as without noise: the goal is not noised, and the
    # physics and success use the true state.
    goal_only = lambda params, obs: jnp.tanh(10.0 * obs[:, spec.state_dim : spec.state_dim + spec.action_dim])  # noqa: E731
    for a, b in zip(rollout(goal_only, 0.5), rollout(goal_only, 0.0)):
        np.testing.assert_array_equal(a, b)


def test_onnx_file_gets_the_same_noise_as_its_student(tiny_student_run, tiny_student_onnx):
    jax_eval = evaluate_target(tiny_student_run, EPISODES, None, 0, obs_noise=0.05)
    onnx_eval = evaluate_target(tiny_student_onnx, EPISODES, None, 0, obs_noise=0.05)
    assert onnx_eval["obs_noise"] == jax_eval["obs_noise"] == 0.05
    assert onnx_eval["time_at_goal"] == pytest.approx(jax_eval["time_at_goal"])
    assert onnx_eval["success_any"] == pytest.approx(jax_eval["success_any"])


@pytest.mark.parametrize("sigma", [-0.1, float("nan"), float("inf")])
def test_bad_sigma_is_refused(tiny_student_run, tiny_student_onnx, sigma):
    for target in (tiny_student_run, tiny_student_onnx):
        with pytest.raises(DistillError, match="--obs-noise must be a finite, non-negative"):
            evaluate_target(target, EPISODES, None, 0, obs_noise=sigma)


def test_obs_noise_through_the_command_line(tiny_student_run, tiny_student_onnx):
    result = run_cli("evaluate", str(tiny_student_onnx), "--episodes", str(EPISODES), "--obs-noise", "0.05", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["obs_noise"] == 0.05
    assert_one_line_error(run_cli_in_process("evaluate", str(tiny_student_run), "--obs-noise", "-0.1"), "--obs-noise")
    assert_one_line_error(run_cli_in_process("evaluate", str(tiny_student_onnx), "--obs-noise", "inf"), "--obs-noise")
