"""Deterministic goal-reaching evaluation: time_at_goal and success_any."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from distill.envs import EnvSpec, GoalEnv
from distill.errors import DistillError


# Episodes whose paths an evaluation keeps for pictures (a maze's top view).
PATH_EPISODES = 4


class Episodes(NamedTuple):
    """What an evaluation returns: every episode's success flags, and the paths of the first few."""

    success: jax.Array
    """[episode_length, episodes] success flags."""
    path: jax.Array
    """[episode_length + 1, PATH_EPISODES or fewer, 2]: the first two goal coordinates the state
    achieves (a maze robot's xy), from the reset on."""
    goal: jax.Array
    """[PATH_EPISODES or fewer, 2]: the first two goal coordinates of those episodes."""


def rollout_success(
    env: GoalEnv, policy: Callable[[jax.Array], jax.Array], num_episodes: int, episode_length: int, key: jax.Array
) -> Episodes:
    """Runs ``num_episodes`` episodes in parallel from the key's starts and goals."""
    env_state = jax.vmap(env.reset)(jax.random.split(key, num_episodes))
    drawn = min(PATH_EPISODES, num_episodes)
    where = jnp.asarray(env.goal_indices[:2])

    def step(env_state, _):
        env_state = jax.vmap(env.step)(env_state, policy(env_state.obs))
        return env_state, (env_state.metrics["success"], env_state.obs[:drawn, where])

    _, (success, path) = jax.lax.scan(step, env_state, None, length=episode_length)
    path = jnp.concatenate([env_state.obs[None, :drawn, where], path])
    return Episodes(success, path, env_state.obs[:drawn, env.state_dim : env.state_dim + 2])


def summarize(success) -> dict:
    success = np.asarray(success)
    per_episode = success.sum(axis=0)
    return {
        "time_at_goal": float(per_episode.mean()),
        "time_at_goal_std": float(per_episode.std()),
        "success_any": float((per_episode > 0).mean()),
        "episodes": int(success.shape[1]),
        "episode_length": int(success.shape[0]),
    }


def make_evaluator(env: GoalEnv, spec: EnvSpec, policy_apply: Callable, num_episodes: int):
    """A jitted ``evaluate(params, key) -> Episodes`` for a deterministic policy."""
    if num_episodes <= 0:
        raise DistillError(f"evaluation episodes must be positive, got {num_episodes}")

    @jax.jit
    def evaluate(params, key):
        return rollout_success(env, lambda obs: policy_apply(params, obs), num_episodes, spec.episode_length, key)

    return evaluate


def random_policy_baseline(env: GoalEnv, spec: EnvSpec, num_episodes: int, seed: int) -> dict:
    """time_at_goal of uniformly random actions, the floor a trained teacher must clear."""
    key = jax.random.PRNGKey(seed)

    @jax.jit
    def run(key):
        k_reset, k_act = jax.random.split(key)
        env_state = jax.vmap(env.reset)(jax.random.split(k_reset, num_episodes))

        def step(carry, _):
            env_state, k = carry
            k, sub = jax.random.split(k)
            action = jax.random.uniform(sub, (num_episodes, spec.action_dim), minval=-1.0, maxval=1.0)
            env_state = jax.vmap(env.step)(env_state, action)
            return (env_state, k), env_state.metrics["success"]

        return jax.lax.scan(step, (env_state, k_act), None, length=spec.episode_length)[1]

    return summarize(run(key))


__all__ = ["Episodes", "PATH_EPISODES", "make_evaluator", "random_policy_baseline", "rollout_success", "summarize"]
