import jax
import jax.numpy as jnp
import numpy as np

from distill.data.replay import buffer_init, buffer_insert, sample_batch, sample_indices

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
        buf = buffer_insert(
            buf,
            jnp.asarray(states),
            jnp.zeros((7, num_envs, 1)),
            jnp.asarray(traj, jnp.int32),
            jnp.asarray(steps, jnp.int32),
        )
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


def variable_length_buffer(capacity=60, num_envs=5, rows=150, seed=0):
    """Trajectories that end at random steps (early termination), differently in every column;
    state = (traj_id, step, row), rows written in chunks of 10 so that the buffer wraps."""
    rng = np.random.default_rng(seed)
    traj = np.zeros((rows, num_envs), np.int32)
    steps = np.zeros((rows, num_envs), np.int32)
    ids, step = np.arange(num_envs), np.zeros(num_envs, np.int32)
    for t in range(rows):
        traj[t], steps[t] = ids, step
        # An episode ends after reaching EPISODE steps or, early, with probability 0.15 a step.
        ended = (step + 1 >= EPISODE) | (rng.random(num_envs) < 0.15)
        ids = np.where(ended, ids + num_envs, ids)
        step = np.where(ended, 0, step + 1)
    buf = buffer_init(capacity, num_envs, state_dim=3, action_dim=1)
    for start in range(0, rows, 10):
        t = np.arange(start, start + 10)
        states = np.stack([traj[t], steps[t], np.repeat(t[:, None], num_envs, 1)], axis=-1).astype(np.float32)
        buf = buffer_insert(
            buf, jnp.asarray(states), jnp.zeros((10, num_envs, 1)), jnp.asarray(traj[t]), jnp.asarray(steps[t])
        )
    return buf, traj


def test_goals_never_cross_an_early_termination():
    buf, traj = variable_length_buffer()
    idx = sample_indices(buf, jax.random.PRNGKey(2), 50_000, GAMMA, EPISODE)
    valid = np.asarray(idx.valid)
    row, future, env = np.asarray(idx.row), np.asarray(idx.future_row), np.asarray(idx.env)
    assert row.min() >= 150 - 60 and future.max() <= 149
    assert np.all(future[valid] > row[valid])
    assert np.all(traj[row[valid], env[valid]] == traj[future[valid], env[valid]])
    # A row has no future exactly when the next row (if written) belongs to another trajectory.
    next_row = np.minimum(row + 1, 149)
    no_future = (row == 149) | (traj[next_row, env] != traj[row, env])
    np.testing.assert_array_equal(~valid, no_future)
    # Offsets reach the very last row of each trajectory, and never beyond.
    last = np.array([np.flatnonzero(traj[:, e] == traj[r, e]).max() for r, e in zip(row[:2000], env[:2000])])
    assert np.all(future[:2000][valid[:2000]] <= np.minimum(last, 149)[valid[:2000]])
    reached_end = future == np.array([np.flatnonzero(traj[:, e] == traj[r, e]).max() for r, e in zip(row, env)])
    assert reached_end[valid].any()


def test_offsets_within_a_terminated_trajectory_follow_the_truncated_geometric():
    buf, traj = variable_length_buffer(seed=1)
    idx = sample_indices(buf, jax.random.PRNGKey(3), 200_000, GAMMA, EPISODE)
    row, future, env = np.asarray(idx.row), np.asarray(idx.future_row), np.asarray(idx.env)
    # Rows with exactly 3 future rows in their (possibly early-ended) trajectory.
    horizon = 3
    later = np.stack([traj[np.minimum(row + k, 149), env] == traj[row, env] for k in range(1, horizon + 2)])
    pick = later[:horizon].all(axis=0) & ~later[horizon] & (row + horizon <= 149)
    offsets = (future - row)[pick]
    expected = GAMMA ** np.arange(horizon)
    expected /= expected.sum()
    observed = np.bincount(offsets, minlength=horizon + 1)[1:] / len(offsets)
    assert len(offsets) > 3000 and offsets.min() >= 1 and offsets.max() <= horizon
    chi2 = len(offsets) * np.sum((observed - expected) ** 2 / expected)
    assert chi2 < 13.8  # 2 degrees of freedom, p ~ 0.001
