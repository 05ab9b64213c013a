"""Deterministic goal-reaching evaluation: time_at_goal and success_any."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from distill.envs import EnvSpec, GoalEnv
from distill.errors import DistillError


def rollout_success(
    env: GoalEnv, policy: Callable[[jax.Array], jax.Array], num_episodes: int, episode_length: int, key: jax.Array
) -> jax.Array:
    """Runs ``num_episodes`` episodes in parallel; returns the [episode_length, episodes] success flags."""
    env_state = jax.vmap(env.reset)(jax.random.split(key, num_episodes))

    def step(env_state, _):
        env_state = jax.vmap(env.step)(env_state, policy(env_state.obs))
        return env_state, env_state.metrics["success"]

    _, success = jax.lax.scan(step, env_state, None, length=episode_length)
    return success


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
    """A jitted ``evaluate(params, key) -> success flags`` for a deterministic policy."""
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


__all__ = ["make_evaluator", "random_policy_baseline", "rollout_success", "summarize"]
