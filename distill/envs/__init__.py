"""Registry of goal-conditioned environments."""

from __future__ import annotations

import contextlib
import io

# MuJoCo's optional GPU backend prints an import failure on machines without it; it is not an error.
with contextlib.redirect_stdout(io.StringIO()):
    import brax.envs  # noqa: F401

from distill.envs.ant import GoalAnt
from distill.envs.ant_maze import AntBigMaze, AntU4Maze
from distill.envs.base import EnvSpec, GoalEnv
from distill.envs.humanoid import GoalHumanoid
from distill.envs.reacher import GoalReacher
from distill.errors import DistillError

DEFAULT_ENV = "reacher"

REGISTRY: dict[str, EnvSpec] = {}


def register(spec: EnvSpec) -> EnvSpec:
    REGISTRY[spec.name] = spec
    return spec


register(
    EnvSpec(
        name="reacher",
        state_dim=GoalReacher.state_dim,
        goal_indices=GoalReacher.goal_indices,
        action_dim=2,
        success_radius=GoalReacher.success_radius,
        # The arm crosses its whole workspace in well under a second (50 steps); 100 steps leaves
        # time to hold the goal, which is what time_at_goal rewards.
        episode_length=100,
        description="two-link arm; goal = fingertip xy in a disk of radius 0.2 (CPU default)",
        factory=GoalReacher,
    )
)


def register_goal_env(name: str, env_class: type[GoalEnv], action_dim: int, description: str) -> EnvSpec:
    """Registers a class whose state_dim, goal_indices and success_radius are class attributes."""
    return register(
        EnvSpec(
            name=name,
            state_dim=env_class.state_dim,
            goal_indices=env_class.goal_indices,
            action_dim=action_dim,
            success_radius=env_class.success_radius,
            episode_length=1000,
            description=description,
            factory=env_class,
        )
    )


register_goal_env("ant", GoalAnt, 8, "quadruped; goal = torso xy on a circle of radius 10")
register_goal_env(
    "humanoid", GoalHumanoid, 17, "biped; goal = torso xyz, 1-5 m away at standing height"
)
register_goal_env("ant_u4_maze", AntU4Maze, 8, "ant in a long U-shaped corridor; goal = torso xy")
register_goal_env("ant_big_maze", AntBigMaze, 8, "ant in an 8 x 8 maze with dead ends; goal = torso xy")


def get_spec(name: str) -> EnvSpec:
    """The spec of a registered environment, or a one-line error naming the valid ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        valid = ", ".join(sorted(REGISTRY))
        raise DistillError(f"unknown environment '{name}'; choose one of: {valid}") from None


__all__ = ["DEFAULT_ENV", "REGISTRY", "EnvSpec", "GoalEnv", "get_spec", "register", "register_goal_env"]
