"""The arm environments run for real in MJX: resets, a resting cube, pushing, picking, the bin.

Compiling an MJX program costs seconds to tens of seconds on a CPU, so each environment compiles
two: a batched reset, and one rollout of given actions. Every behaviour test reads its own slots of
that one rollout: random actions, zero actions, a scripted push, a scripted pick-and-place, and a
cube shoved from the bin's centre (the pushing environments have no bin, which makes them the
control for the walls). The two pushing environments share one model, so their rollouts are the
same program and XLA's persistent cache compiles it once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill.envs import arm

# A minute or more of compiling MJX programs from a cold cache: CI runs these with the slow tests,
# as it does test_envs.py's checks that every arm task resets, steps and keeps its goal bookkeeping
# (the default suite runs those for arm_push_easy).
pytestmark = pytest.mark.slow

ENVS = {"push_easy": arm.ArmPushEasy, "push_hard": arm.ArmPushHard, "binpick_hard": arm.ArmBinpickHard}
NUM_RESETS = 64
STEPS = 150
# Slots of the rollout batch.
RANDOM = slice(0, 8)
ZERO = slice(8, 12)
PUSH = slice(12, 16)
PICK = slice(16, 20)
SHOVE = slice(20, 24)
NUM_SLOTS = 24
SHOVE_SPEED = 2.0
# Resets run once, so only their compile time matters: XLA's cheapest optimisation level cuts it.
# The rollout is run for 150 steps and keeps the full optimisation.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


# --- scripted control ---------------------------------------------------------------------------


def pointing_down(point: np.ndarray) -> np.ndarray:
    """Joint angles that put the gripper centre at ``point`` with the fingers pointing down.

    Closed-form inverse kinematics: yaw faces the point, then the shoulder and elbow put the wrist
    GRIP_OFFSET above it (elbow up), and the wrist makes the three pitches sum to pi.
    """
    x, y, z = point
    radius = np.hypot(x, y)
    forward, up = radius, z + arm.GRIP_OFFSET - arm.SHOULDER_HEIGHT
    reach = np.hypot(forward, up)
    l1, l2 = arm.UPPER_ARM, arm.FOREARM
    elbow = np.arccos(np.clip((reach**2 - l1**2 - l2**2) / (2 * l1 * l2), -1.0, 1.0))
    shoulder = np.arctan2(forward, up) - np.arctan2(l2 * np.sin(elbow), l1 + l2 * np.cos(elbow))
    return np.array([np.arctan2(y, x), shoulder, elbow, np.pi - shoulder - elbow])


def action_for(point: np.ndarray, gripper_open: bool) -> np.ndarray:
    """The action whose servo targets hold the gripper at ``point``."""
    low, high = np.array(arm.JOINT_RANGES[: arm.ARM_JOINTS]).T
    joints = 2.0 * (pointing_down(point) - low) / (high - low) - 1.0
    return np.append(joints, 1.0 if gripper_open else -1.0)


def waypoints_to_actions(waypoints: list[tuple[int, np.ndarray, np.ndarray, bool]]) -> np.ndarray:
    """Actions along (steps, from, to, open) legs, the target moving linearly within each leg."""
    actions = []
    for steps, start, end, gripper_open in waypoints:
        for t in range(steps):
            fraction = min(1.0, (t + 1) / max(1, steps // 2))
            actions.append(action_for(start + fraction * (end - start), gripper_open))
    actions = np.array(actions[:STEPS])
    return np.concatenate([actions, np.repeat(actions[-1:], STEPS - len(actions), axis=0)])


def push_direction(cube: np.ndarray) -> np.ndarray:
    """Sideways, across the arm's reach and towards the middle of the table: always reachable."""
    radial = cube[:2] / np.linalg.norm(cube[:2])
    sideways = np.array([-radial[1], radial[0]])
    return np.append(sideways if cube[1] <= 0 else -sideways, 0.0)


def push_actions(cube: np.ndarray) -> np.ndarray:
    """Closed fingers lowered beside the cube, then swept through it."""
    direction = push_direction(cube)
    height = np.array([0.0, 0.0, arm.CUBE_HALF])
    behind = cube * [1, 1, 0] - 0.13 * direction + height
    beyond = cube * [1, 1, 0] + 0.1 * direction + height
    above = behind + [0.0, 0.0, 0.12]
    return waypoints_to_actions(
        [
            (40, above, above, False),
            (20, above, behind, False),
            (60, behind, beyond, False),
        ]
    )


def pick_and_place_actions(cube: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Open above the cube, descend, close, lift, carry above the goal, lower and let go."""
    grasp = cube * [1, 1, 0] + [0.0, 0.0, arm.CUBE_HALF]
    above_cube = grasp + [0.0, 0.0, 0.16]
    above_goal = goal + [0.0, 0.0, 0.2]
    release = goal + [0.0, 0.0, 0.05]
    return waypoints_to_actions(
        [
            (40, above_cube, above_cube, True),
            (20, above_cube, grasp, True),
            (15, grasp, grasp, False),
            (25, grasp, above_cube, False),
            (30, above_cube, above_goal, False),
            (15, above_goal, release, False),
            (10, release, release, True),
        ]
    )


def shove(pipeline_state, slots: slice):
    """Moves the cube of ``slots`` to the bin's centre, sliding at SHOVE_SPEED along +-x, +-y."""
    directions = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    q, qd = np.array(pipeline_state.q), np.array(pipeline_state.qd)
    q[slots, arm.CUBE_Q : arm.CUBE_Q + 7] = [*arm.BIN_CENTER, arm.CUBE_HALF, 1.0, 0.0, 0.0, 0.0]
    qd[slots, arm.CUBE_QD : arm.CUBE_QD + 6] = 0.0
    qd[slots, arm.CUBE_QD : arm.CUBE_QD + 2] = SHOVE_SPEED * directions
    # The next physics step recomputes everything else from these.
    return pipeline_state.replace(q=q, qpos=q, qd=qd, qvel=qd)


# --- one compiled reset and rollout per environment ---------------------------------------------


def scripted_actions(first_obs: np.ndarray, key: jax.Array) -> np.ndarray:
    """Actions [STEPS, NUM_SLOTS, 5] for the slots above, given each slot's first observation."""
    actions = np.array(jax.random.uniform(key, (STEPS, NUM_SLOTS, 5), minval=-1.0, maxval=1.0))
    actions[:, ZERO] = 0.0
    actions[:, SHOVE] = 0.0
    cubes, goals = first_obs[:, :3], first_obs[:, 18:]
    for slot in range(PUSH.start, PUSH.stop):
        actions[:, slot] = push_actions(cubes[slot])
    for slot in range(PICK.start, PICK.stop):
        actions[:, slot] = pick_and_place_actions(cubes[slot], goals[slot])
    return actions


@pytest.fixture(scope="module", params=sorted(ENVS))
def run(request):
    env = ENVS[request.param]()
    keys = jax.random.split(jax.random.PRNGKey(0), NUM_RESETS)
    resets = jax.jit(jax.vmap(env.reset)).lower(keys).compile(FAST_COMPILE)(keys)
    first = jax.tree.map(lambda x: x[:NUM_SLOTS], resets)
    first = first.replace(pipeline_state=shove(first.pipeline_state, SHOVE))
    actions = scripted_actions(np.asarray(first.obs), jax.random.PRNGKey(1))

    def rollout(state, actions):
        def body(state, action):
            state = jax.vmap(env.step)(state, action)
            return state, (state.obs, state.metrics["success"])

        return jax.lax.scan(body, state, actions)[1]

    obs, success = jax.jit(rollout)(first, jnp.asarray(actions))
    return request.param, env, resets, np.asarray(obs), np.asarray(success)


def cube(obs: np.ndarray) -> np.ndarray:
    return obs[..., :3]


# --- tests --------------------------------------------------------------------------------------


def test_dimensions(run):
    _, env, resets, obs, success = run
    assert (env.state_dim, env.goal_indices, env.success_radius, env.action_size) == (18, (0, 1, 2), 0.1, 5)
    assert env.backend == "mjx"
    assert resets.obs.shape == (NUM_RESETS, 21)
    assert obs.shape == (STEPS, NUM_SLOTS, 21) and success.shape == (STEPS, NUM_SLOTS)


def test_reset_starts_off_goal_with_cube_on_table(run):
    name, env, resets, _, _ = run
    obs = np.asarray(resets.obs)
    assert np.isfinite(obs).all()
    start, goal = cube(obs), obs[:, env.state_dim :]
    np.testing.assert_allclose(start[:, 2], arm.CUBE_HALF, atol=1e-6)
    np.testing.assert_allclose(goal[:, 2], arm.CUBE_HALF, atol=1e-6)
    assert (np.linalg.norm(start - goal, axis=-1) >= 0.15).all()
    assert (np.asarray(resets.metrics["success"]) == 0).all()
    # Distinct draws: not one task repeated.
    assert len(np.unique(goal[:, :2].round(4), axis=0)) == NUM_RESETS
    if name == "binpick_hard":
        inside = np.abs(goal[:, :2] - arm.BIN_CENTER).max(axis=-1)
        assert (inside <= arm.BIN_INNER_HALF - arm.CUBE_HALF).all()


@pytest.mark.parametrize("cls", ENVS.values(), ids=ENVS.keys())
def test_goals_keep_their_distance_over_many_draws(cls):
    env = cls()
    keys = jax.random.split(jax.random.PRNGKey(2), 20_000)
    start, goal = jax.jit(jax.vmap(env._sample_task))(keys)
    distance = np.linalg.norm(np.asarray(start) - np.asarray(goal)[:, :2], axis=-1)
    assert distance.min() >= 0.15


def test_rollout_is_finite_and_keeps_its_goal(run):
    _, env, resets, obs, _ = run
    assert np.isfinite(obs).all()
    np.testing.assert_array_equal(
        obs[:, :, env.state_dim :],
        np.broadcast_to(np.asarray(resets.obs)[None, :NUM_SLOTS, env.state_dim :], obs[:, :, env.state_dim :].shape),
    )


def test_cube_rests_on_the_table(run):
    _, _, resets, obs, _ = run
    start = cube(np.asarray(resets.obs)[ZERO])
    # Zero actions send the arm to the middle of its ranges, clear of the cube: it stays put.
    for t in (49, STEPS - 1):
        resting = cube(obs[t, ZERO])
        np.testing.assert_allclose(resting[:, 2], arm.CUBE_HALF, atol=0.003)
        assert np.linalg.norm(resting[:, :2] - start[:, :2], axis=-1).max() < 0.005
    # Random actions knock it about, and may press it into the table's soft contact (by up to about
    # a centimetre, under the servos' full force) but never through it.
    assert cube(obs[:, RANDOM])[..., 2].min() > arm.CUBE_HALF - 0.015


def test_scripted_push_moves_the_cube(run):
    _, _, resets, obs, _ = run
    start = cube(np.asarray(resets.obs)[PUSH])
    end = cube(obs[-1, PUSH])
    along = np.sum((end - start) * np.array([push_direction(c) for c in start]), axis=-1)
    assert (along > 0.05).all(), along


def test_scripted_pick_and_place_reaches_the_goal(run):
    _, _, _, obs, success = run
    heights = cube(obs[:, PICK])[..., 2]
    # Gripped and lifted well clear of the table (and, in the bin task, over its walls) ...
    assert (heights.max(axis=0) > 0.15).all(), heights.max(axis=0)
    # ... and let go at the goal: the episode ends in success.
    assert (success[-1, PICK] == 1).all(), success[-1, PICK]


def test_bin_walls_hold_a_shoved_cube(run):
    name, _, _, obs, _ = run
    offset = np.abs(cube(obs[:, SHOVE])[..., :2] - arm.BIN_CENTER).max(axis=-1)
    if name == "binpick_hard":
        assert offset.max() <= arm.BIN_INNER_HALF - arm.CUBE_HALF + 0.01
        np.testing.assert_allclose(cube(obs[-1, SHOVE])[:, 2], arm.CUBE_HALF, atol=0.005)
    else:
        # The same shove on an open table carries the cube past where the walls would be.
        assert (offset[-1] > arm.BIN_INNER_HALF + 2 * arm.BIN_WALL_HALF + arm.CUBE_HALF).all(), offset[-1]
