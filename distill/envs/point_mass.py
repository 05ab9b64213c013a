"""Goal-conditioned point mass: a ball pushed around the floor by two forces, the cheapest robot.

It exists for the simple mazes (``maze_env(GoalPointMass, layout)``), where what is hard is the maze,
not the body: experiments and tests then cost seconds where the ant costs minutes.

State (4): x, y, vx, vy. Action (2): force along x and y in [-1, 1]. Goal: xy. In the open the goal
lies uniformly in the ring between ``MIN_GOAL_DISTANCE`` and ``GOAL_RADIUS``; a maze moves it onto its goal cells.

The ball (radius ``BALL_RADIUS``) slides on two joints at a fixed height, so gravity and the floor
play no part; the only contacts are with maze walls, which it cannot cross. Joint damping gives a
top speed of ``TOP_SPEED`` m/s (a 4 m maze cell in about 20 steps) and a response time of half a
second, so momentum matters but a policy can stop where it wants.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax.envs.base import PipelineEnv
from brax.io import mjcf

from distill.envs.base import GoalEnv

BALL_RADIUS = 0.4
MASS = 1.0
DAMPING = 2.0
TOP_SPEED = 4.0
GOAL_RADIUS = 8.0
# Goals in the open keep this far from the start, so that no episode begins at its goal.
MIN_GOAL_DISTANCE = 1.0
RESET_NOISE = 0.1
# Physics at 100 Hz, the agent at 20 Hz: fast enough that the ball moves at most 0.2 m per step,
# half its radius, so it never tunnels into a wall.
TIMESTEP = 0.01
N_FRAMES = 5

XML = f"""<mujoco model="point_mass">
  <compiler angle="radian"/>
  <option timestep="{TIMESTEP}"/>
  <worldbody>
    <light pos="0 0 30" dir="0 0 -1" directional="true"/>
    <geom name="floor" type="plane" size="60 60 0.1" contype="0" conaffinity="0" rgba="0.5 0.5 0.5 1"/>
    <body name="ball" pos="0 0 {BALL_RADIUS}">
      <joint name="slide_x" type="slide" axis="1 0 0" damping="{DAMPING}"/>
      <joint name="slide_y" type="slide" axis="0 1 0" damping="{DAMPING}"/>
      <geom name="ball" type="sphere" size="{BALL_RADIUS}" mass="{MASS}" contype="1" conaffinity="0" rgba="0.2 0.4 0.8 1"/>
    </body>
  </worldbody>
  <actuator>
    <motor name="force_x" joint="slide_x" gear="{TOP_SPEED * DAMPING}" ctrlrange="-1 1" ctrllimited="true"/>
    <motor name="force_y" joint="slide_y" gear="{TOP_SPEED * DAMPING}" ctrlrange="-1 1" ctrllimited="true"/>
  </actuator>
</mujoco>
"""


class GoalPointMass(GoalEnv):
    state_dim = 4
    goal_indices = (0, 1)
    success_radius = 0.5
    state_layout = (("position", 2), ("velocity", 2))
    # The simple mazes have no reference counterpart; their goals keep the jitter of an eighth of a
    # cell (0.5 m, well inside a corridor) under which their published teachers were trained.
    maze_goal_noise = 1 / 8
    wall_geoms = ("ball",)

    def __init__(self, backend: str = "spring", **kwargs):
        kwargs.setdefault("n_frames", N_FRAMES)
        PipelineEnv.__init__(self, sys=mjcf.loads(XML), backend=backend, **kwargs)

    @classmethod
    def mjcf(cls) -> str:
        return XML

    def _initial_q(self, rng):
        q = self.sys.init_q + jax.random.uniform(rng, (2,), minval=-RESET_NOISE, maxval=RESET_NOISE)
        return q, jnp.zeros(2)

    def _sample_goal(self, rng):
        rng_r, rng_a = jax.random.split(rng)
        # sqrt makes the goal uniform over the ring's area rather than crowded at its centre.
        inner = (MIN_GOAL_DISTANCE / GOAL_RADIUS) ** 2
        radius = GOAL_RADIUS * jnp.sqrt(jax.random.uniform(rng_r, minval=inner, maxval=1.0))
        angle = 2.0 * jnp.pi * jax.random.uniform(rng_a)
        return radius * jnp.array([jnp.cos(angle), jnp.sin(angle)])

    def _state(self, pipeline_state):
        return jnp.concatenate([pipeline_state.q, pipeline_state.qd])
