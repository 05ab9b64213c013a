"""Goal-conditioned ant: walk the torso of Brax's quadruped onto a point 10 m away.

State (29): the full joint positions (15: torso xyz, torso quaternion, 8 hinge angles) followed by
the joint velocities (14). Keeping the torso xy in the state, unlike Brax's running task, is what
lets a state name a goal. Goal: torso xy, on the circle of radius 10 around the origin where the
ant starts, at a uniformly random angle.

As in Brax's ant, only the feet collide with the floor. An ant whose torso height leaves
[0.2, 1.0] (flipped over, sinking its torso below the floor, or thrown into the air) ends its
episode, as in the paper's reference environment. In a maze the torso and hip capsules collide
with the walls as well (``wall_geoms``), as in the reference's maze model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax.envs.ant import Ant

from distill.envs.base import GoalEnv

GOAL_RADIUS = 10.0
# Brax's ant reset noise: uniform on positions, normal on velocities.
RESET_NOISE = 0.1


class GoalAnt(GoalEnv, Ant):
    state_dim = 29
    goal_indices = (0, 1)
    success_radius = 0.5
    healthy_z = (0.2, 1.0)
    state_layout = (
        ("torso_xy", 2),
        ("torso_height", 1),
        ("orientation", 4),
        ("joint_pos", 8),
        ("torso_vel", 6),
        ("joint_vel", 8),
    )
    asset = "envs/assets/ant.xml"
    # The feet, and as in the reference's maze model the torso sphere and the four hip capsules.
    wall_geoms = (
        "left_foot_geom",
        "right_foot_geom",
        "third_foot_geom",
        "fourth_foot_geom",
        "torso_geom",
        "aux_1_geom",
        "aux_2_geom",
        "aux_3_geom",
        "aux_4_geom",
    )

    def __init__(self, backend: str = "spring", **kwargs):
        Ant.__init__(self, backend=backend, **kwargs)

    def _initial_q(self, rng):
        rng_q, rng_qd = jax.random.split(rng)
        q = self.sys.init_q + jax.random.uniform(rng_q, (self.sys.q_size(),), minval=-RESET_NOISE, maxval=RESET_NOISE)
        qd = RESET_NOISE * jax.random.normal(rng_qd, (self.sys.qd_size(),))
        return q, qd

    def _sample_goal(self, rng):
        angle = 2.0 * jnp.pi * jax.random.uniform(rng)
        return GOAL_RADIUS * jnp.array([jnp.cos(angle), jnp.sin(angle)])

    def _state(self, pipeline_state):
        return jnp.concatenate([pipeline_state.q, pipeline_state.qd])
