"""Batched environments with automatic resets and trajectory ids.

Brax's own AutoResetWrapper restarts an episode from the state it first reset to, so every episode
of an environment slot would chase the same goal. Here a finished slot gets a fresh reset (new
start, new goal) and a new trajectory id. Resets are computed only on steps where some slot is
done, which with fixed-length episodes is once per episode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax.envs.base import State
from flax import struct

from distill.envs.base import GoalEnv


@struct.dataclass
class VecState:
    """A batch of environment slots. ``traj_id`` is unique across slots and episodes."""

    env: State
    steps: jax.Array  # [N] steps taken in the current episode
    traj_id: jax.Array  # [N] int32
    key: jax.Array


def vec_reset(env: GoalEnv, num_envs: int, key: jax.Array) -> VecState:
    key, sub = jax.random.split(key)
    env_state = jax.vmap(env.reset)(jax.random.split(sub, num_envs))
    return VecState(
        env=env_state,
        steps=jnp.zeros((num_envs,), jnp.int32),
        traj_id=jnp.arange(num_envs, dtype=jnp.int32),
        key=key,
    )


def vec_step(env: GoalEnv, episode_length: int, vec: VecState, actions: jax.Array) -> VecState:
    """Steps every slot; slots that reach ``episode_length`` start a new episode."""
    num_envs = vec.steps.shape[0]
    env_state = jax.vmap(env.step)(vec.env, actions)
    steps = vec.steps + 1
    done = steps >= episode_length

    def reset_done(operand):
        env_state, key = operand
        key, sub = jax.random.split(key)
        fresh = jax.vmap(env.reset)(jax.random.split(sub, num_envs))

        def pick(new, old):
            mask = done.reshape(done.shape + (1,) * (old.ndim - 1))
            return jnp.where(mask, new, old)

        return jax.tree.map(pick, fresh, env_state), key

    env_state, key = jax.lax.cond(jnp.any(done), reset_done, lambda operand: operand, (env_state, vec.key))
    return VecState(
        env=env_state,
        steps=jnp.where(done, 0, steps),
        traj_id=jnp.where(done, vec.traj_id + num_envs, vec.traj_id),
        key=key,
    )
