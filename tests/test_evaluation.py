"""Evaluation stops counting at an early termination, as the reference's evaluator does."""

import jax
import jax.numpy as jnp
import numpy as np

from distill.envs import REGISTRY
from distill.envs.ant import GoalAnt
from distill.eval.evaluation import evaluation_env, rollout_success, scored_env, summarize, until_termination


def test_until_termination_keeps_the_ending_step_and_zeroes_the_rest():
    success = np.ones((5, 3), np.float32)
    done = np.zeros((5, 3), np.float32)
    done[1, 0] = 1  # episode 0 ends at its second step
    done[4, 1] = 1  # episode 1 at its last
    done[2:, 0] = 1  # a terminated environment may keep saying done; it is ended already
    counted = np.asarray(until_termination(success, done))
    np.testing.assert_array_equal(counted.sum(axis=0), [2, 5, 5])


class AntAtItsGoalThatSettlesTooLow(GoalAnt):
    """A real ant whose goal is its start and whose healthy range ends above the height it settles
    to: it succeeds from the first step and its episode ends within a few steps, as it sinks."""

    healthy_z = (0.6, 1.0)

    def _sample_goal(self, rng):
        return jnp.zeros(2)


def test_evaluation_counts_no_success_after_termination():
    env = AntAtItsGoalThatSettlesTooLow()
    length, episodes = 40, 4
    result = jax.jit(lambda key: rollout_success(env, lambda obs: jnp.zeros((obs.shape[0], 8)), episodes, length, key))(
        jax.random.PRNGKey(0)
    )
    success = np.asarray(result.success)
    counted = success.sum(axis=0)
    # Each episode ended early: its successes stop at its last step, and the summary keeps it in the
    # mean with what it had.
    assert (counted >= 1).all() and (counted < length).all()
    for e in range(episodes):
        assert (success[: int(counted[e]), e] == 1).all() and (success[int(counted[e]) :, e] == 0).all()
    summary = summarize(success)
    assert summary["time_at_goal"] == counted.mean() and summary["success_any"] == 1.0
    assert summary["episodes"] == episodes


def test_evaluators_of_ant_big_maze_use_its_far_goals():
    spec = REGISTRY["ant_big_maze"]
    env = evaluation_env(spec)
    assert len(env.goals) == 9 and env.backend == spec.backend
    assert scored_env(spec.make(), spec).layout == env.layout
    reacher = REGISTRY["reacher"]
    plain = reacher.make()
    assert scored_env(plain, reacher) is plain
