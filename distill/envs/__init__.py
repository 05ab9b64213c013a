"""Registry of goal-conditioned environments."""

from __future__ import annotations

import contextlib
import io

# MuJoCo's optional GPU backend prints an import failure on machines without it; it is not an error.
with contextlib.redirect_stdout(io.StringIO()):
    import brax.envs  # noqa: F401

from distill.envs.ant import GoalAnt
from distill.envs.arm import ArmBinpickHard, ArmPushEasy, ArmPushHard
from distill.envs.base import EnvSpec, GoalEnv
from distill.envs.humanoid import GoalHumanoid
from distill.envs.maze import BIG_MAZE, BIG_MAZE_EVAL, HARDEST_MAZE, U4_MAZE, U5_MAZE, U_MAZE, maze_env
from distill.envs.point_mass import GoalPointMass
from distill.envs.reacher import GoalReacher
from distill.errors import DistillError

DEFAULT_ENV = "reacher"

REGISTRY: dict[str, EnvSpec] = {}


def register(spec: EnvSpec) -> EnvSpec:
    REGISTRY[spec.name] = spec
    return spec


def register_goal_env(
    name: str,
    env_class: type[GoalEnv],
    action_dim: int,
    description: str,
    episode_length: int = 1000,
    backend: str = "spring",
    preset: dict | None = None,
    evaluation_class: type[GoalEnv] | None = None,
) -> EnvSpec:
    """Registers a class whose state_dim, goal_indices and success_radius are class attributes.

    ``backend``, ``preset`` and ``evaluation_class`` (the spec's ``evaluation_factory``) are the
    spec's (see ``EnvSpec``); a new environment is its module plus one call of this, and a new maze
    one layout and ``maze_env(robot_class, layout)`` here.
    """
    return register(
        EnvSpec(
            layout=_layout(name, env_class),
            name=name,
            state_dim=env_class.state_dim,
            goal_indices=env_class.goal_indices,
            action_dim=action_dim,
            success_radius=env_class.success_radius,
            episode_length=episode_length,
            description=description,
            factory=env_class,
            backend=backend,
            preset=preset or {},
            evaluation_factory=evaluation_class,
        )
    )


def _layout(name: str, env_class: type[GoalEnv]) -> tuple[tuple[str, int, int], ...]:
    """``env_class.state_layout`` as (name, start, stop), checked to cover the state exactly once."""
    layout, start = [], 0
    for slice_name, size in env_class.state_layout:
        layout.append((slice_name, start, start + size))
        start += size
    names = [n for n, _, _ in layout]
    if start != env_class.state_dim or len(set(names)) != len(names):
        raise ValueError(
            f"{name}: state_layout {env_class.state_layout} must name each of the {env_class.state_dim} "
            "state entries exactly once"
        )
    return tuple(layout)


register_goal_env(
    "reacher",
    GoalReacher,
    2,
    "two-link arm; goal = fingertip xy in a disk of radius 0.2 (CPU default)",
    # The arm crosses its whole workspace in well under a second (50 steps); 100 steps leaves
    # time to hold the goal, which is what time_at_goal rewards.
    episode_length=100,
    preset=dict(
        num_envs=128,
        unroll_length=50,
        batch_size=256,
        updates_per_step=50,
        total_steps=1_000_000,
        num_evals=10,
        eval_episodes=128,
        replay_rows=2_000,
        prefill_rows=200,
    ),
)
register_goal_env("ant", GoalAnt, 8, "quadruped; goal = torso xy on a circle of radius 10")
register_goal_env("humanoid", GoalHumanoid, 17, "biped; goal = torso xyz, 1-5 m away at standing height")
register_goal_env("ant_u4_maze", maze_env(GoalAnt, U4_MAZE), 8, "ant in a long U-shaped corridor; goal = torso xy")
# The paper's budgets, where they differ from its 100M default (TeacherConfig.total_steps).
PAPER_200M, PAPER_400M = dict(total_steps=200_000_000), dict(total_steps=400_000_000)
register_goal_env(
    "ant_u5_maze",
    maze_env(GoalAnt, U5_MAZE),
    8,
    "ant in a longer U-shaped corridor (7 x 8); goal = torso xy",
    preset=PAPER_400M,
)
# Trained on every free cell as a goal, evaluated on the far ones only, as in the reference.
register_goal_env(
    "ant_big_maze",
    maze_env(GoalAnt, BIG_MAZE),
    8,
    "ant in an 8 x 8 maze with dead ends; goal = torso xy (evaluated on its 9 far cells, as the paper)",
    evaluation_class=maze_env(GoalAnt, BIG_MAZE_EVAL),
)
register_goal_env(
    "ant_hardest_maze",
    maze_env(GoalAnt, HARDEST_MAZE),
    8,
    "ant in a 9 x 12 maze of junctions; goal = torso xy",
    preset=PAPER_200M,
)
# The humanoid is about half the ant's reach per step, so its mazes are drawn at half the scale.
HUMANOID_MAZE_SCALE = 2.0
for name, layout, what, budget in (
    ("humanoid_u_maze", U_MAZE, "a 5 x 5 U", PAPER_400M),
    ("humanoid_big_maze", BIG_MAZE, "an 8 x 8 maze with dead ends", PAPER_400M),
    ("humanoid_hardest_maze", HARDEST_MAZE, "a 9 x 12 maze of junctions", None),
):
    register_goal_env(
        name,
        maze_env(GoalHumanoid, layout, HUMANOID_MAZE_SCALE),
        17,
        f"humanoid in {what} (2 m cells); goal = torso xyz",
        preset=budget,
    )
# The point mass costs a few microseconds a step, so its mazes train on a CPU in minutes: every
# SGD update the paper's ratio asks for (one per 40 transitions) fits in the budget.
SIMPLE_MAZE_PRESET = dict(
    num_envs=256,
    unroll_length=50,
    batch_size=256,
    total_steps=3_000_000,
    num_evals=10,
    eval_episodes=64,
    replay_rows=4_000,
    prefill_rows=1_000,
)
for name, layout, what in (
    ("simple_u_maze", U4_MAZE, "a U-shaped corridor"),
    ("simple_big_maze", BIG_MAZE, "an 8 x 8 maze with dead ends"),
    ("simple_hardest_maze", HARDEST_MAZE, "a 9 x 12 maze of junctions"),
):
    register_goal_env(
        name,
        maze_env(GoalPointMass, layout),
        2,
        f"point mass in {what}; goal = xy (the cheapest maze)",
        preset=SIMPLE_MAZE_PRESET,
    )

# MuJoCo's own contact solver (MJX): Brax's other pipelines cannot hold a cube in a gripper. A step
# costs about 20 times the point mass's, so the preset keeps the reacher's smaller batch.
ARM_PRESET = dict(
    num_envs=128,
    unroll_length=50,
    batch_size=256,
    updates_per_step=50,
    num_evals=10,
    eval_episodes=128,
    replay_rows=2_000,
    prefill_rows=200,
)
register_goal_env(
    "arm_push_easy",
    ArmPushEasy,
    5,
    "4-joint arm with a gripper; push the cube 0.17-0.25 m from its fixed start; goal = cube xyz",
    episode_length=100,
    backend="mjx",
    preset=dict(ARM_PRESET, total_steps=2_000_000),
)
register_goal_env(
    "arm_push_hard",
    ArmPushHard,
    5,
    "4-joint arm with a gripper; cube start and goal anywhere on a table patch, at least 0.2 m apart",
    episode_length=150,
    backend="mjx",
    preset=dict(ARM_PRESET, total_steps=3_000_000),
)
register_goal_env(
    "arm_binpick_hard",
    ArmBinpickHard,
    5,
    "4-joint arm with a gripper; lift the cube over a wall into a bin; goal = cube xyz",
    episode_length=150,
    backend="mjx",
    preset=dict(ARM_PRESET, total_steps=3_000_000),
)


def get_spec(name: str) -> EnvSpec:
    """The spec of a registered environment, or a one-line error naming the valid ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        valid = ", ".join(sorted(REGISTRY))
        raise DistillError(f"unknown environment '{name}'; choose one of: {valid}") from None


__all__ = ["DEFAULT_ENV", "REGISTRY", "EnvSpec", "GoalEnv", "get_spec", "register", "register_goal_env"]
