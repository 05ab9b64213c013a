"""Batched environments with automatic resets and trajectory ids.

Brax's own AutoResetWrapper restarts an episode from the state it first reset to, so every episode
of an environment slot would chase the same goal. Here a finished slot gets a fresh reset (new
start, new goal) and a new trajectory id. A slot is done when its episode reaches the spec's
length or its environment ends it early (``done``, e.g. a flipped ant); each slot restarts alone.
Resets are computed only on steps where some slot is done.
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


def any_done(done: jax.Array, runs_axis: str | None = None) -> jax.Array:
    """Whether any slot must reset. With ``runs_axis`` (the vmap axis of runs stacked in one program)
    the answer is taken over every run, so it stays one unbatched predicate and the reset stays a
    branch taken only when needed, rather than the select of both branches that vmap makes of a cond."""
    anywhere = jnp.any(done)
    if runs_axis is None:
        return anywhere
    return jax.lax.psum(anywhere.astype(jnp.int32), runs_axis) > 0


def vec_step(
    env: GoalEnv, episode_length: int, vec: VecState, actions: jax.Array, runs_axis: str | None = None
) -> VecState:
    """Steps every slot; slots that reach ``episode_length`` or that their environment ends start a
    new episode."""
    num_envs = vec.steps.shape[0]
    env_state = jax.vmap(env.step)(vec.env, actions)
    steps = vec.steps + 1
    done = (steps >= episode_length) | (env_state.done > 0)

    def reset_done(operand):
        env_state, key = operand
        next_key, sub = jax.random.split(key)
        fresh = jax.vmap(env.reset)(jax.random.split(sub, num_envs))

        def pick(new, old):
            mask = done.reshape(done.shape + (1,) * (old.ndim - 1))
            return jnp.where(mask, new, old)

        # A run whose own slots all go on keeps its key, as it would training alone.
        return jax.tree.map(pick, fresh, env_state), jnp.where(jnp.any(done), next_key, key)

    env_state, key = jax.lax.cond(any_done(done, runs_axis), reset_done, lambda operand: operand, (env_state, vec.key))
    return VecState(
        env=env_state,
        steps=jnp.where(done, 0, steps),
        traj_id=jnp.where(done, vec.traj_id + num_envs, vec.traj_id),
        key=key,
    )


def episode_ends(before: VecState, after: VecState, episode_length: int) -> tuple[jax.Array, jax.Array]:
    """Of the step from ``before`` to ``after``: [N] flags of slots whose episode ended, and of those
    their environment ended early (not by reaching ``episode_length``)."""
    ended = after.traj_id != before.traj_id
    return ended, ended & (before.steps + 1 < episode_length)
