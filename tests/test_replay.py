import jax
import jax.numpy as jnp
import numpy as np

from distill.replay import buffer_init, buffer_insert, sample_batch, sample_indices

EPISODE = 10
GAMMA = 0.7


def filled_buffer(capacity=40, num_envs=3, rows=70):
    """Rows written in chunks of 7 so that the buffer wraps; state = (traj_id, step, row)."""
    buf = buffer_init(capacity, num_envs, state_dim=3, action_dim=1)
    for start in range(0, rows, 7):
        t = np.arange(start, start + 7)
        steps = np.repeat((t % EPISODE)[:, None], num_envs, axis=1)
        traj = (t // EPISODE)[:, None] * num_envs + np.arange(num_envs)[None, :]
        states = np.stack([traj, steps, np.repeat(t[:, None], num_envs, 1)], axis=-1).astype(np.float32)
        buf = buffer_insert(buf, jnp.asarray(states), jnp.zeros((7, num_envs, 1)), jnp.asarray(traj, jnp.int32), jnp.asarray(steps, jnp.int32))
    return buf


def test_goals_come_only_from_the_future_of_the_same_trajectory():
    buf = filled_buffer()
    idx = sample_indices(buf, jax.random.PRNGKey(0), 20_000, GAMMA, EPISODE)
    valid = np.asarray(idx.valid)
    row, future, env = np.asarray(idx.row), np.asarray(idx.future_row), np.asarray(idx.env)
    assert valid.mean() > 0.8
    # Only rows still in the buffer are drawn, and futures are rows already written.
    assert row.min() >= 70 - 40 and future.max() <= 69
    traj = np.asarray(buf.traj_ids)
    assert np.all(future[valid] > row[valid])
    assert np.all(traj[row[valid] % 40, env[valid]] == traj[future[valid] % 40, env[valid]])
    # A row without a future is exactly the last step of an episode or the newest row.
    step = np.asarray(buf.steps)[row % 40, env]
    assert np.all((step[~valid] == EPISODE - 1) | (row[~valid] == 69))

    batch = sample_batch(buf, jax.random.PRNGKey(0), 20_000, GAMMA, EPISODE, goal_indices=(0, 2))
    state, goal, weight = np.asarray(batch.state), np.asarray(batch.goal), np.asarray(batch.weight)
    ok = weight > 0
    assert np.all(goal[ok, 0] == state[ok, 0])  # same trajectory id
    assert np.all(goal[ok, 1] > state[ok, 2])  # a later row


def test_future_offsets_follow_the_truncated_geometric_distribution():
    buf = filled_buffer()
    idx = sample_indices(buf, jax.random.PRNGKey(1), 200_000, GAMMA, EPISODE)
    row, future, env = np.asarray(idx.row), np.asarray(idx.future_row), np.asarray(idx.env)
    step = np.asarray(buf.steps)[row % 40, env]
    # Rows at step 2 of an episode that lies wholly in the buffer have 7 future rows.
    pick = (step == 2) & (row + 7 <= 69)
    offsets = (future - row)[pick]
    horizon = 7
    expected = GAMMA ** np.arange(horizon)
    expected /= expected.sum()
    observed = np.bincount(offsets, minlength=horizon + 1)[1:] / len(offsets)
    assert len(offsets) > 5000
    assert offsets.min() >= 1 and offsets.max() <= horizon
    chi2 = len(offsets) * np.sum((observed - expected) ** 2 / expected)
    assert chi2 < 22.5  # 6 degrees of freedom, p ~ 0.001


def test_uniform_weighting_would_fail_the_same_check():
    """The statistic above has power: it rejects a uniform offset distribution."""
    rng = np.random.default_rng(0)
    offsets = rng.integers(1, 8, size=8000)
    expected = GAMMA ** np.arange(7)
    expected /= expected.sum()
    observed = np.bincount(offsets, minlength=8)[1:] / len(offsets)
    assert len(offsets) * np.sum((observed - expected) ** 2 / expected) > 22.5
