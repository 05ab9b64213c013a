"""Every registered environment, run for real: shapes, goal bookkeeping, resets and maze walls.

Compiling a Brax step dominates the cost, so each environment is compiled once: a module-scoped
fixture runs one short batched rollout through the vector wrapper and the tests read its output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from brax import contact

from distill.envs import REGISTRY
from distill.envs.humanoid import RESET_NOISE, STANDING_HEIGHT, GoalHumanoid
from distill.envs.maze import (
    BIG_MAZE,
    GOAL_NOISE,
    HARDEST_MAZE,
    MAZE_SCALE,
    U4_MAZE,
    U5_MAZE,
    MazeEnv,
    cell_centers,
    maze_env,
    wall_boxes,
)
from distill.envs.point_mass import BALL_RADIUS
from distill.envs.vector import vec_reset, vec_step

NUM_ENVS = 4
# Short episodes so that a 10-step rollout crosses an automatic reset.
EPISODE_LENGTH = 5
ROLLOUT_STEPS = 10
MAZES = [name for name, spec in REGISTRY.items() if issubclass(spec.factory, MazeEnv)]
# Brax's pipelines (brax.envs.base.PipelineEnv refuses any other backend).
PIPELINES = {"generalized", "spring", "positional", "mjx"}
# These programs run a handful of steps, so only their compile time matters; XLA's cheapest
# optimisation level halves it.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def run_once(fn, *args):
    """Compiles ``fn`` for ``args`` with FAST_COMPILE and calls it."""
    return jax.jit(fn).lower(*args).compile(FAST_COMPILE)(*args)


def rollout(env, action_dim: int, key: jax.Array):
    """Random actions through the vector wrapper; returns the first and every later VecState."""

    def body(vec, step_key):
        actions = jax.random.uniform(step_key, (NUM_ENVS, action_dim), minval=-1.0, maxval=1.0)
        vec = vec_step(env, EPISODE_LENGTH, vec, actions)
        return vec, vec

    reset_key, action_key = jax.random.split(key)
    first = vec_reset(env, NUM_ENVS, reset_key)
    _, trajectory = jax.lax.scan(body, first, jax.random.split(action_key, ROLLOUT_STEPS))
    return first, trajectory


@pytest.fixture(scope="module", params=sorted(REGISTRY))
def run(request):
    spec = REGISTRY[request.param]
    env = spec.make()
    first, trajectory = run_once(lambda key: rollout(env, spec.action_dim, key), jax.random.PRNGKey(0))
    return spec, env, first, trajectory


def test_shapes_match_spec(run):
    spec, env, first, trajectory = run
    assert env.action_size == spec.action_dim and env.backend == spec.backend
    assert env.state_dim == spec.state_dim and env.goal_indices == spec.goal_indices
    reset = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
    assert reset.obs.shape == (spec.obs_dim,)
    step = jax.eval_shape(env.step, reset, jnp.zeros(spec.action_dim))
    assert step.obs.shape == (spec.obs_dim,)
    assert jax.eval_shape(env._sample_goal, jax.random.PRNGKey(0)).shape == (spec.goal_dim,)
    state = jax.eval_shape(lambda key: env._state(env.reset(key).pipeline_state), jax.random.PRNGKey(0))
    assert state.shape == (spec.state_dim,)
    assert first.env.obs.shape == (NUM_ENVS, spec.obs_dim)
    assert trajectory.env.obs.shape == (ROLLOUT_STEPS, NUM_ENVS, spec.obs_dim)
    assert max(spec.goal_indices) < spec.state_dim


def test_rollout_is_finite(run):
    _, _, first, trajectory = run
    assert np.isfinite(np.asarray(first.env.obs)).all()
    assert np.isfinite(np.asarray(trajectory.env.obs)).all()


def test_goal_is_obs_tail_and_fixed_within_episode(run):
    spec, _, first, trajectory = run
    obs = np.concatenate([np.asarray(first.env.obs)[None], np.asarray(trajectory.env.obs)])
    goals = obs[..., spec.state_dim :]
    achieved = obs[..., list(spec.goal_indices)]
    distance = np.concatenate(
        [np.asarray(first.env.metrics["distance"])[None], np.asarray(trajectory.env.metrics["distance"])]
    )
    np.testing.assert_allclose(distance, np.linalg.norm(achieved - goals, axis=-1), rtol=1e-4, atol=1e-5)
    # Steps 1..EPISODE_LENGTH-1 of the first episode keep the goal drawn at reset.
    for t in range(1, EPISODE_LENGTH):
        np.testing.assert_array_equal(goals[t], goals[0])


def test_success_is_distance_below_radius(run):
    spec, _, _, trajectory = run
    distance = np.asarray(trajectory.env.metrics["distance"])
    success = np.asarray(trajectory.env.metrics["success"])
    np.testing.assert_array_equal(success, (distance < spec.success_radius).astype(np.float32))
    np.testing.assert_array_equal(np.asarray(trajectory.env.reward), success)


def test_episode_end_gives_new_trajectory_and_goal(run):
    spec, _, first, trajectory = run
    ids = np.asarray(trajectory.traj_id)
    steps = np.asarray(trajectory.steps)
    last_of_episode = EPISODE_LENGTH - 1  # the step at which every slot finishes its first episode
    for t in range(last_of_episode):
        np.testing.assert_array_equal(ids[t], np.asarray(first.traj_id))
    np.testing.assert_array_equal(steps[last_of_episode], 0)
    new_ids = ids[last_of_episode]
    assert set(new_ids).isdisjoint(np.asarray(first.traj_id)) and len(set(new_ids)) == NUM_ENVS
    old_goals = np.asarray(trajectory.env.obs[last_of_episode - 1, :, spec.state_dim :])
    new_goals = np.asarray(trajectory.env.obs[last_of_episode, :, spec.state_dim :])
    assert not np.allclose(old_goals, new_goals)


def test_specs_carry_backend_and_preset():
    assert {spec.backend for spec in REGISTRY.values()} <= PIPELINES
    reacher = REGISTRY["reacher"]
    assert reacher.preset["total_steps"] == 1_000_000
    assert reacher.make(backend=None).backend == reacher.backend
    assert reacher.make(backend="generalized").backend == "generalized"


@pytest.mark.parametrize("run", ["humanoid"], indirect=True)
def test_humanoid_state_holds_actuator_forces(run):
    spec, env, _, trajectory = run
    forces = np.asarray(trajectory.env.obs[..., spec.state_dim - env.sys.qd_size() : spec.state_dim])
    stepped = np.asarray(trajectory.steps) > 0  # a fresh reset has applied no action yet
    # Random actions drive every motor, so the torques on the actuated joints are non-zero.
    assert (np.abs(forces).sum(axis=-1) > 0)[stepped].all()
    assert (forces[~stepped] == 0).all()


# --- mazes --------------------------------------------------------------------------------------


def boxes_of(sys) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids, xy centres and xy half-sizes of the box geoms compiled into a system."""
    ids = np.flatnonzero(np.asarray(sys.geom_type) == mujoco.mjtGeom.mjGEOM_BOX)
    return ids, np.asarray(sys.geom_pos)[ids, :2], np.asarray(sys.geom_size)[ids, :2]


def inside_any_box(points: np.ndarray, centres: np.ndarray, halves: np.ndarray, margin: float) -> np.ndarray:
    gap = np.abs(points[:, None, :] - centres[None]) - halves[None] - margin
    return (gap < 0).all(axis=-1).any(axis=-1)


@pytest.mark.parametrize("layout", [U4_MAZE, U5_MAZE, BIG_MAZE, HARDEST_MAZE])
def test_wall_boxes_cover_exactly_the_wall_cells(layout):
    boxes = np.asarray(wall_boxes(layout))
    centres, halves = boxes[:, :2], boxes[:, 2:]
    for kind in "#RG.":
        cells = cell_centers(layout, kind)
        if len(cells):
            assert inside_any_box(cells, centres, halves, margin=-0.01).all() == (kind == "#")
    # Every maze is closed: its border is wall all round.
    assert set(layout[0]) == set(layout[-1]) == {"#"} and {row[0] + row[-1] for row in layout} == {"##"}


@pytest.mark.parametrize("name", MAZES)
def test_maze_start_and_goals_lie_in_free_space(name):
    env = REGISTRY[name].make()
    _, centres, halves = boxes_of(env.sys)
    keys = jax.random.split(jax.random.PRNGKey(1), 256)
    goals = np.asarray(run_once(jax.vmap(env._sample_goal), keys))
    starts = np.asarray(run_once(jax.vmap(env._initial_q), keys)[0][:, :2])
    # A quarter cell of clearance (a metre for the ant): goals jitter by an eighth of a cell.
    assert not inside_any_box(goals[:, :2], centres, halves, margin=env.scale / 4).any()
    assert not inside_any_box(starts, centres, halves, margin=env.scale / 4).any()
    # Goals spread over every goal cell, not just one ...
    nearest_cell = np.linalg.norm(goals[:, None, :2] - env.goals[None], axis=-1).argmin(axis=1)
    assert set(nearest_cell) == set(range(len(env.goals)))
    # ... and no episode starts at its goal.
    assert (np.linalg.norm(goals[:, :2] - starts, axis=-1) > 2 * env.success_radius).all()


@pytest.mark.parametrize("name", MAZES)
def test_a_robot_placed_on_its_goal_has_reached_it(name):
    """The goal slice of the state a goal names is that goal: goals are reachable states."""
    env = REGISTRY[name].make()

    def reached(key):
        goal = env._sample_goal(key)
        # Every maze robot's goal is the leading entries of its joint positions (torso xy[z]).
        q = env.sys.init_q.at[: goal.shape[0]].set(goal)
        state = env._state(env.pipeline_init(q, jnp.zeros(env.sys.qd_size())))
        return goal, state[jnp.asarray(env.goal_indices)]

    goals, achieved = run_once(jax.vmap(reached), jax.random.split(jax.random.PRNGKey(2), 16))
    np.testing.assert_allclose(np.asarray(achieved), np.asarray(goals), atol=1e-5)
    assert (np.asarray(env.goal_distance(achieved, goals)) < env.success_radius).all()


def assert_walls_collide_with_the_robot(env: MazeEnv):
    """The walls are exactly ``wall_boxes``, and collide with every robot geom that can touch them
    (the feet of Brax's ant and humanoid, which alone touch the floor, and the point mass's ball)."""
    wall_ids, centres, halves = boxes_of(env.sys)
    np.testing.assert_allclose(np.concatenate([centres, halves], axis=1), wall_boxes(env.layout, env.scale))
    contype, conaffinity = np.asarray(env.sys.geom_contype), np.asarray(env.sys.geom_conaffinity)
    floor = mujoco.mj_name2id(env.sys.mj_model, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    robot = [g for g in range(len(contype)) if g not in set(wall_ids) | {floor}
             and contype[g] & conaffinity[wall_ids[0]]]
    assert robot

    def candidate_pairs(q):
        # The spring pipeline resolves collisions between exactly these geom pairs.
        return contact.get(env.sys, env.pipeline_init(q, jnp.zeros(env.sys.qd_size())).x).geom

    pairs = {tuple(sorted(pair)) for pair in np.asarray(run_once(candidate_pairs, env.sys.init_q)).tolist()}
    assert {tuple(sorted((int(wall), geom))) for wall in wall_ids for geom in robot} <= pairs
    on_floor = {geom for pair in pairs if floor in pair for geom in pair if geom != floor}
    assert on_floor <= set(robot)


@pytest.mark.parametrize("name", MAZES)
def test_every_wall_collides_with_the_robot(name):
    assert_walls_collide_with_the_robot(REGISTRY[name].make())


def test_maze_takes_any_robot():
    """The humanoid in a one-cell corridor: walls its feet hit, its own goal height kept."""
    layout = ("####", "#RG#", "####")
    env = maze_env(GoalHumanoid, layout)()
    assert_walls_collide_with_the_robot(env)
    key = jax.random.PRNGKey(0)
    goal = np.asarray(env._sample_goal(key))
    assert np.abs(goal[:2] - cell_centers(layout, "G")[0]).max() <= GOAL_NOISE * MAZE_SCALE
    assert goal[2] == STANDING_HEIGHT
    start = np.asarray(env._initial_q(key)[0][:2])
    np.testing.assert_allclose(start, cell_centers(layout, "R")[0], atol=RESET_NOISE)


def test_wall_stops_a_pushed_ant():
    """Two ants in the U4 maze get the same shove along +x: one at a wall, one down a corridor."""
    env = REGISTRY["ant_u4_maze"].make()
    # The start cell (8, 4) has a wall cell spanning x in [10, 14] next to it; from (4, 12) the
    # corridor along column 3 is free up to x = 22.
    starts = jnp.array([[8.0, 4.0], [4.0, 12.0]])
    speed = 15.0

    def torso_x(start):
        q = env.sys.init_q.at[:2].set(start)
        qd = jnp.zeros(env.sys.qd_size()).at[0].set(speed)
        state = env.pipeline_init(q, qd)

        def body(state, _):
            state = env.pipeline_step(state, jnp.zeros(env.action_size))
            return state, state.x.pos[0, 0]

        return jax.lax.scan(body, state, None, 30)[1]

    xs = np.asarray(run_once(jax.vmap(torso_x), starts))
    walled, free = xs[0], xs[1]
    # In the open the shove carries the ant well over a cell's width, past where the far side of
    # the wall would be ...
    assert free.max() - 4.0 > 14.0 - 8.0
    # ... while at the wall the torso gets at most about a leg's length past the wall's face.
    assert walled.max() < 10.0 + 1.0


def pushed_along_x(env, starts, speed: float, steps: int, action=None) -> np.ndarray:
    """Torso (or ball) x over ``steps`` steps after a shove of ``speed`` along +x from each start."""
    action = jnp.zeros(env.action_size) if action is None else action

    def torso_x(start):
        q = env.sys.init_q.at[:2].set(start)
        qd = jnp.zeros(env.sys.qd_size()).at[0].set(speed)
        state = env.pipeline_init(q, qd)

        def body(state, _):
            state = env.pipeline_step(state, action)
            return state, state.x.pos[0, 0]

        return jax.lax.scan(body, state, None, steps)[1]

    return np.asarray(run_once(jax.vmap(torso_x), jnp.asarray(starts)))


def test_wall_stops_a_driven_point_mass():
    """The ball pushed at full force along +x: at a wall it stops at the wall's face, in a corridor it
    runs on."""
    env = REGISTRY["simple_u_maze"].make()
    # Same places as for the ant: a wall spans x in [10, 14] beyond the start cell (8, 4); the
    # corridor along column 3 is free up to x = 22.
    walled, free = pushed_along_x(env, [[8.0, 4.0], [4.0, 12.0]], speed=0.0, steps=100,
                                  action=jnp.array([1.0, 0.0]))
    assert free.max() > 14.0
    assert walled.max() < 10.0 - BALL_RADIUS + 0.05
    # It rests against the wall rather than bouncing back out.
    assert walled[-1] > 10.0 - BALL_RADIUS - 0.1


def test_wall_stops_a_pushed_humanoid():
    """The humanoid's U maze (2 m cells) has a wall spanning x in [5, 7] beyond its start (4, 2)."""
    env = REGISTRY["humanoid_u_maze"].make()
    walled, free = pushed_along_x(env, [[4.0, 2.0], [2.0, 6.0]], speed=8.0, steps=60)
    # In the open the shove carries the torso well past where the wall's far side would be ...
    assert free.max() - 2.0 > 7.0 - 4.0
    # ... while at the wall its feet stop at the face and the torso leans at most a body length over.
    assert walled.max() < 5.0 + 1.5
