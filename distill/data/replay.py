"""A trajectory replay buffer with hindsight future-state goals.

Rows are time steps and columns are environment slots, so a slot's column is its stream of
trajectories in order. For a sampled row t, the goal is the goal slice of a future row j > t of the
SAME trajectory, with P(j) proportional to gamma^(j - t), truncated at that trajectory's last row.

Episodes may end early (``done``, see ``distill.envs.base``), and where a trajectory ends is not
known when its rows are inserted, so the number L of future rows of t's trajectory is found at
sample time. H = min(episode_length - 1 - step_t, newest_row - t) bounds it. A slot's trajectories
follow one another in its column, each a contiguous run of rows with a larger id than the one
before, so in unwrapped row order the ids of rows t..t+H never decrease: the rows of t's trajectory
are a prefix of that window, and a binary search for the last row with t's id finds L in
ceil(log2(episode_length)) vectorised gathers, whatever the buffer's size. The truncated geometric
offset in 1..L is then drawn exactly by inverting its CDF. Rows with no future (the last step of an
episode, a step that ended one early, or the newest row) get weight 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class TrajectoryBuffer:
    states: jax.Array  # [capacity, num_envs, state_dim]
    actions: jax.Array  # [capacity, num_envs, action_dim]
    traj_ids: jax.Array  # [capacity, num_envs] int32
    steps: jax.Array  # [capacity, num_envs] int32, step of the row within its episode
    rows_written: jax.Array  # scalar int32, total rows ever inserted

    @property
    def capacity(self) -> int:
        return self.states.shape[0]


@struct.dataclass
class Batch:
    state: jax.Array  # [B, state_dim]
    action: jax.Array  # [B, action_dim]
    goal: jax.Array  # [B, goal_dim]
    weight: jax.Array  # [B], 1 where the row has a future in its trajectory


@struct.dataclass
class SampleIndices:
    row: jax.Array  # [B] unwrapped row of the transition
    future_row: jax.Array  # [B] unwrapped row the goal comes from
    env: jax.Array  # [B]
    valid: jax.Array  # [B] bool


def buffer_init(capacity: int, num_envs: int, state_dim: int, action_dim: int) -> TrajectoryBuffer:
    return TrajectoryBuffer(
        states=jnp.zeros((capacity, num_envs, state_dim), jnp.float32),
        actions=jnp.zeros((capacity, num_envs, action_dim), jnp.float32),
        traj_ids=jnp.full((capacity, num_envs), -1, jnp.int32),
        steps=jnp.zeros((capacity, num_envs), jnp.int32),
        rows_written=jnp.zeros((), jnp.int32),
    )


def buffer_insert(buf: TrajectoryBuffer, states, actions, traj_ids, steps) -> TrajectoryBuffer:
    """Appends ``U`` rows (leading axis) at the write position, overwriting the oldest."""
    num_rows = states.shape[0]
    index = (buf.rows_written + jnp.arange(num_rows)) % buf.capacity
    return buf.replace(
        states=buf.states.at[index].set(states),
        actions=buf.actions.at[index].set(actions),
        traj_ids=buf.traj_ids.at[index].set(traj_ids),
        steps=buf.steps.at[index].set(steps),
        rows_written=buf.rows_written + num_rows,
    )


def truncated_geometric(key: jax.Array, gamma: float, horizon: jax.Array) -> jax.Array:
    """k in 1..horizon with P(k) proportional to gamma^(k-1); 0 where horizon is 0."""
    u = jax.random.uniform(key, horizon.shape)
    horizon_f = horizon.astype(jnp.float32)
    mass = 1.0 - jnp.power(gamma, horizon_f)
    k = jnp.ceil(jnp.log1p(-u * mass) / jnp.log(gamma))
    k = jnp.clip(k, 1.0, jnp.maximum(horizon_f, 1.0)).astype(jnp.int32)
    return jnp.where(horizon > 0, k, 0)


def rows_in_trajectory(
    traj_ids: jax.Array, row: jax.Array, env: jax.Array, horizon: jax.Array, episode_length: int
) -> jax.Array:
    """The number of rows row+1..row+horizon of column ``env`` that belong to ``row``'s trajectory.

    ``traj_ids`` [capacity, num_envs]; ``row`` unwrapped, and every row up to row + horizon written
    and not overwritten. Those rows' ids never decrease, so the answer is where they change: a
    binary search, whose step count ``episode_length`` (an upper bound of every horizon) fixes.
    """
    capacity = traj_ids.shape[0]
    own = traj_ids[row % capacity, env]
    low, high = jnp.zeros_like(horizon), horizon  # invariant: the answer lies in [low, high]
    for _ in range(max(1, int(episode_length).bit_length())):
        mid = (low + high + 1) // 2
        same = traj_ids[(row + mid) % capacity, env] == own
        low, high = jnp.where(same, mid, low), jnp.where(same, high, mid - 1)
    return low


def sample_indices(
    buf: TrajectoryBuffer, key: jax.Array, batch_size: int, gamma: float, episode_length: int
) -> SampleIndices:
    num_envs = buf.states.shape[1]
    filled = jnp.minimum(buf.rows_written, buf.capacity)
    oldest = buf.rows_written - filled
    key_row, key_env, key_offset = jax.random.split(key, 3)
    # The newest row never has a future, so it is not drawn.
    row = jax.random.randint(key_row, (batch_size,), oldest, jnp.maximum(buf.rows_written - 1, oldest + 1))
    env = jax.random.randint(key_env, (batch_size,), 0, num_envs)
    step = buf.steps[row % buf.capacity, env]
    bound = jnp.maximum(jnp.minimum(episode_length - 1 - step, buf.rows_written - 1 - row), 0)
    horizon = rows_in_trajectory(buf.traj_ids, row, env, bound, episode_length)
    offset = truncated_geometric(key_offset, gamma, horizon)
    return SampleIndices(row=row, future_row=row + offset, env=env, valid=horizon > 0)


def sample_batch(
    buf: TrajectoryBuffer,
    key: jax.Array,
    batch_size: int,
    gamma: float,
    episode_length: int,
    goal_indices: tuple[int, ...],
) -> Batch:
    idx = sample_indices(buf, key, batch_size, gamma, episode_length)
    row = idx.row % buf.capacity
    future = idx.future_row % buf.capacity
    future_state = buf.states[future, idx.env]
    return Batch(
        state=buf.states[row, idx.env],
        action=buf.actions[row, idx.env],
        goal=future_state[:, jnp.asarray(goal_indices)],
        weight=idx.valid.astype(jnp.float32),
    )
