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
from distill.envs.ant import GoalAnt
from distill.envs.humanoid import RESET_NOISE, STANDING_HEIGHT, GoalHumanoid
from distill.envs.maze import (
    BIG_MAZE,
    BIG_MAZE_EVAL,
    HARDEST_MAZE,
    U4_MAZE,
    U5_MAZE,
    U_MAZE,
    MazeEnv,
    cell_centers,
    maze_env,
    wall_boxes,
)
from distill.envs.point_mass import BALL_RADIUS, GoalPointMass
from distill.envs.vector import episode_ends, vec_reset, vec_step

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


# Compiling each environment's physics is what these checks cost (half a minute for an MJX arm), and
# the variants of one robot share its code: the default suite checks each robot once, and a maze
# around the ant and around the point mass; CI runs the other mazes and arm tasks with the slow tests.
DEFAULT_ENVS = {"reacher", "ant", "humanoid", "ant_u4_maze", "simple_u_maze", "arm_push_easy"}


@pytest.fixture(
    scope="module",
    params=[pytest.param(name, marks=() if name in DEFAULT_ENVS else pytest.mark.slow) for name in sorted(REGISTRY)],
)
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


def test_environments_without_health_never_end_early(run):
    spec, env, _, trajectory = run
    done = np.asarray(trajectory.env.done)
    if env.healthy_z is None:
        assert (done == 0).all()
        # Every slot then restarts exactly every EPISODE_LENGTH steps, as before early termination.
        np.testing.assert_array_equal(
            np.asarray(trajectory.steps)[:, 0], (np.arange(1, ROLLOUT_STEPS + 1) % EPISODE_LENGTH)
        )
    # A reset slot starts healthy, so no slot is left done after the wrapper's step.
    assert (done[np.asarray(trajectory.steps) == 0] == 0).all()


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


@pytest.mark.parametrize("layout", [U_MAZE, U4_MAZE, U5_MAZE, BIG_MAZE, BIG_MAZE_EVAL, HARDEST_MAZE])
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


def geom_id(env, name: str) -> int:
    return mujoco.mj_name2id(env.sys.mj_model, mujoco.mjtObj.mjOBJ_GEOM, name)


def collision_pairs(env) -> set[tuple[int, int]]:
    """The geom pairs the spring pipeline resolves collisions between, in the initial pose."""

    def candidate_pairs(q):
        return contact.get(env.sys, env.pipeline_init(q, jnp.zeros(env.sys.qd_size())).x).geom

    return {tuple(sorted(pair)) for pair in np.asarray(run_once(candidate_pairs, env.sys.init_q)).tolist()}


def assert_walls_collide_with_the_robot(env: MazeEnv):
    """The walls are exactly ``wall_boxes``; they collide with exactly the robot's ``wall_geoms``,
    and the floor with exactly the robot's geoms of contype 1 (where the floor collides at all)."""
    wall_ids, centres, halves = boxes_of(env.sys)
    np.testing.assert_allclose(np.concatenate([centres, halves], axis=1), wall_boxes(env.layout, env.scale))
    contype, conaffinity = np.asarray(env.sys.geom_contype), np.asarray(env.sys.geom_conaffinity)
    floor = geom_id(env, "floor")
    robot = set(range(env.sys.ngeom)) - set(int(w) for w in wall_ids) - {floor}
    on_walls = {geom_id(env, name) for name in env.wall_geoms}
    assert on_walls and on_walls <= robot
    pairs = collision_pairs(env)
    expected = {tuple(sorted((int(wall), geom))) for wall in wall_ids for geom in on_walls}
    # (The point mass's floor collides with nothing: its ball slides on joints.)
    expected |= {tuple(sorted((floor, geom))) for geom in robot if contype[geom] & conaffinity[floor]}
    assert pairs == expected
    return pairs


@pytest.mark.parametrize("name", MAZES)
def test_every_wall_collides_with_the_robot(name):
    assert_walls_collide_with_the_robot(REGISTRY[name].make())


def test_ant_in_a_maze_collides_as_the_reference_maze():
    """Feet with floor and walls, torso and hips with walls only, legs with nothing."""
    env = REGISTRY["ant_u4_maze"].make()
    pairs = assert_walls_collide_with_the_robot(env)
    floor, walls = geom_id(env, "floor"), {int(w) for w in boxes_of(env.sys)[0]}
    feet = {geom_id(env, f"{leg}_foot_geom") for leg in ("left", "right", "third", "fourth")}
    body = {geom_id(env, name) for name in ("torso_geom", "aux_1_geom", "aux_2_geom", "aux_3_geom", "aux_4_geom")}
    expected = {tuple(sorted((floor, foot))) for foot in feet}
    expected |= {tuple(sorted((wall, geom))) for wall in walls for geom in feet | body}
    assert pairs == expected
    assert len(pairs) == 4 + len(walls) * 9


def test_every_humanoid_geom_collides_with_the_floor():
    """As in the reference's humanoid model; body parts still pass through one another."""
    env = GoalHumanoid()
    floor = geom_id(env, "floor")
    body = set(range(env.sys.ngeom)) - {floor}
    assert len(body) == 17  # torso, head, waist (2), butt, legs (2 x 3), arms (2 x 3)
    assert collision_pairs(env) == {tuple(sorted((floor, geom))) for geom in body}


def test_maze_takes_any_robot():
    """The humanoid in a one-cell corridor: walls its feet and trunk hit, its own goal height kept."""
    layout = ("####", "#RG#", "####")
    env = maze_env(GoalHumanoid, layout)()
    assert_walls_collide_with_the_robot(env)
    key = jax.random.PRNGKey(0)
    goal = np.asarray(env._sample_goal(key))
    # The humanoid's maze goals are exact cell centres, as in the reference.
    np.testing.assert_array_equal(goal[:2], cell_centers(layout, "G")[0])
    assert goal[2] == STANDING_HEIGHT
    assert env.healthy_z == GoalHumanoid.healthy_z
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
    walled, free = pushed_along_x(env, [[8.0, 4.0], [4.0, 12.0]], speed=0.0, steps=100, action=jnp.array([1.0, 0.0]))
    assert free.max() > 14.0
    assert walled.max() < 10.0 - BALL_RADIUS + 0.05
    # It rests against the wall rather than bouncing back out.
    assert walled[-1] > 10.0 - BALL_RADIUS - 0.1


def test_wall_stops_a_pushed_humanoid():
    """The humanoid's U maze (2 m cells) has a wall spanning x in [3, 5] beyond its start (2, 2);
    from (2, 6) the corridor along column 3 is free up to x = 7."""
    env = REGISTRY["humanoid_u_maze"].make()
    walled, free = pushed_along_x(env, [[2.0, 2.0], [2.0, 6.0]], speed=8.0, steps=60)
    # In the open the shove carries the torso well past where the wall's far side would be ...
    assert free.max() > 5.0
    # ... while at the wall its body stops at the face and the torso leans at most a body length over.
    assert walled.max() < 3.0 + 1.5


# --- the reference's physics ------------------------------------------------------------------------

# Printed by the paper's code (its humanoid.py and humanoid_maze.py) under brax 0.10.1, the version
# it pins, on the spring pipeline: reset with PRNGKey(0), then one step of the action 0.5 on every
# actuator. Its humanoid steps 0.03 s (its opt.timestep of 0.0015 never reaches that pipeline, which
# steps by sys.dt, the XML's 0.003), its humanoid mazes 0.015 s.
REFERENCE_HUMANOID = {
    "humanoid": (0.03, [0.00021089, -0.00016687, -0.00483346]),
    "humanoid_u_maze": (0.015, [0.00016165, -0.00011253, -0.00119579]),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_HUMANOID))
def test_the_humanoid_steps_as_long_and_as_far_as_the_reference(name):
    dt, displacement = REFERENCE_HUMANOID[name]
    env = REGISTRY[name].make()
    assert env.dt == pytest.approx(dt)
    state = run_once(env.reset, jax.random.PRNGKey(0))
    moved = run_once(env.step, state, 0.5 * jnp.ones(env.action_size))
    step = np.asarray(moved.pipeline_state.x.pos[0] - state.pipeline_state.x.pos[0])
    np.testing.assert_allclose(step, displacement, rtol=1e-3, atol=2e-6)


def test_the_humanoid_starts_every_episode_in_the_same_pose_as_the_reference():
    env = REGISTRY["humanoid"].make()
    starts = [run_once(env._initial_q, jax.random.PRNGKey(k)) for k in range(3)]
    for q, qd in starts:
        np.testing.assert_array_equal(q, env.sys.init_q)
        np.testing.assert_array_equal(qd, np.zeros_like(qd))


# --- goals of the reference ----------------------------------------------------------------------


def test_ant_and_humanoid_maze_goals_are_cell_centres_point_mass_goals_jitter():
    keys = jax.random.split(jax.random.PRNGKey(3), 64)
    for name, exact in (("ant_u4_maze", True), ("humanoid_big_maze", True), ("simple_u_maze", False)):
        env = REGISTRY[name].make()
        goals = np.asarray(run_once(jax.vmap(env._sample_goal), keys))[:, :2]
        off = np.linalg.norm(goals[:, None] - env.goals[None], axis=-1).min(axis=1)
        assert (off == 0).all() == exact
        assert off.max() <= np.sqrt(2) * GoalPointMass.maze_goal_noise * env.scale + 1e-5


def test_ant_big_maze_is_evaluated_on_its_far_goals():
    spec = REGISTRY["ant_big_maze"]
    train, evaluation = spec.make(), spec.make(evaluation=True)
    assert train.layout == BIG_MAZE and evaluation.layout == BIG_MAZE_EVAL
    assert wall_boxes(BIG_MAZE_EVAL) == wall_boxes(BIG_MAZE)
    np.testing.assert_array_equal(evaluation.start, train.start)
    far = {tuple(g) for g in evaluation.goals.tolist()}
    # The paper's code evaluates on these 9 cells (row, column); JaxGCRL's list adds (2, 5).
    cells = [(1, 5), (1, 6), (2, 6), (5, 3), (5, 6), (6, 2), (6, 3), (6, 5), (6, 6)]
    assert far == {(i * evaluation.scale, j * evaluation.scale) for i, j in cells}
    assert far < {tuple(g) for g in train.goals.tolist()}
    # Every other environment is evaluated where it trains.
    assert type(REGISTRY["ant_u4_maze"].make(evaluation=True)) is REGISTRY["ant_u4_maze"].factory


def test_humanoid_u_maze_is_the_reference_five_by_five_u():
    env = REGISTRY["humanoid_u_maze"].make()
    assert env.layout == U_MAZE and len(U_MAZE) == 5 and {len(row) for row in U_MAZE} == {5}
    assert len(env.goals) == 6


# --- early termination ----------------------------------------------------------------------------

# Upside down (half a turn about x), and lying on its side (a quarter turn about x).
FLIPPED = (0.0, 1.0, 0.0, 0.0)
LYING = (np.cos(np.pi / 4), np.sin(np.pi / 4), 0.0, 0.0)


def step_with_one_slot_moved(env, z: float, quat):
    """Three fresh slots, the middle one's torso moved to height ``z`` and orientation ``quat``;
    returns the raw environment step and the vector wrapper's step from there."""

    def run(key):
        vec = vec_reset(env, 3, key)
        q = vec.env.pipeline_state.q.at[1, 2].set(z).at[1, 3:7].set(jnp.asarray(quat, jnp.float32))
        qd = jnp.zeros_like(vec.env.pipeline_state.qd)
        vec = vec.replace(env=vec.env.replace(pipeline_state=jax.vmap(env.pipeline_init)(q, qd)))
        actions = jnp.zeros((3, env.action_size))
        return vec, jax.vmap(env.step)(vec.env, actions), vec_step(env, 1000, vec, actions)

    return run_once(run, jax.random.PRNGKey(4))


@pytest.mark.parametrize(
    "robot, z, quat",
    [
        pytest.param(GoalAnt, 0.1, FLIPPED, id="flipped_ant"),
        # The humanoid's reset and step compile for about a minute.
        pytest.param(GoalHumanoid, 0.3, LYING, id="fallen_humanoid", marks=pytest.mark.slow),
    ],
)
def test_an_unhealthy_robot_ends_its_episode_and_its_slot_alone_restarts(robot, z, quat):
    env = robot()
    before, stepped, after = step_with_one_slot_moved(env, z, quat)
    np.testing.assert_array_equal(np.asarray(stepped.done), [0, 1, 0])
    ids = np.asarray(before.traj_id)
    np.testing.assert_array_equal(np.asarray(after.traj_id), [ids[0], ids[1] + 3, ids[2]])
    np.testing.assert_array_equal(np.asarray(after.steps), [1, 0, 1])
    ended, terminated = episode_ends(before, after, 1000)
    np.testing.assert_array_equal(np.asarray(terminated), [False, True, False])
    np.testing.assert_array_equal(np.asarray(ended), np.asarray(terminated))
    # The restarted slot is a fresh, healthy episode with a new goal; the others went on.
    low, high = env.healthy_z
    assert low < float(after.env.pipeline_state.q[1, 2]) < high and float(after.env.done[1]) == 0
    assert not np.allclose(
        np.asarray(after.env.obs[1, env.state_dim :]), np.asarray(before.env.obs[1, env.state_dim :])
    )
    np.testing.assert_array_equal(np.asarray(after.env.obs)[[0, 2]], np.asarray(stepped.obs)[[0, 2]])


def test_mazes_end_episodes_as_their_robot():
    for name, spec in REGISTRY.items():
        if issubclass(spec.factory, MazeEnv):
            robot = GoalPointMass if name.startswith("simple") else GoalHumanoid if "humanoid" in name else GoalAnt
            assert spec.factory.healthy_z == robot.healthy_z
    assert GoalPointMass.healthy_z is None


@pytest.mark.slow
def test_a_fallen_humanoid_lies_on_the_floor():
    """Limp (zero action), the humanoid falls within a second or two and then lies on the floor
    instead of sinking through it."""
    env = GoalHumanoid()

    def torso_z(key):
        state = env.reset(key)

        def body(state, _):
            state = env.step(state, jnp.zeros(env.action_size))
            return state, (state.pipeline_state.q[2], state.done)

        return jax.lax.scan(body, state, None, 200)[1]

    z, done = (np.asarray(a) for a in run_once(torso_z, jax.random.PRNGKey(5)))
    assert z.min() < GoalHumanoid.healthy_z[0] and done.max() == 1
    assert z.min() > 0.0
