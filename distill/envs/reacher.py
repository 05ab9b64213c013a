"""Goal-conditioned reacher: move the fingertip of a two-link arm onto a point in the plane.

State (10): cos(theta) (2), sin(theta) (2), joint velocities (2), fingertip velocity xy (2),
fingertip xy (2). Goal: fingertip xy, drawn uniformly in the disk of radius 0.2 the arm can reach.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax import base
from brax.envs.reacher import Reacher

from distill.envs.base import GoalEnv

_TIP_OFFSET = jnp.array([0.11, 0.0, 0.0])


class GoalReacher(GoalEnv, Reacher):
    state_dim = 10
    goal_indices = (8, 9)
    success_radius = 0.05
    state_layout = (("joint_cos", 2), ("joint_sin", 2), ("joint_vel", 2), ("fingertip_vel", 2), ("fingertip_xy", 2))

    def __init__(self, backend: str = "spring", **kwargs):
        Reacher.__init__(self, backend=backend, **kwargs)

    def _initial_q(self, rng):
        rng_q, rng_qd = jax.random.split(rng)
        q = self.sys.init_q + jax.random.uniform(rng_q, (self.sys.q_size(),), minval=-0.1, maxval=0.1)
        qd = jax.random.uniform(rng_qd, (self.sys.qd_size(),), minval=-0.005, maxval=0.005)
        return q, qd.at[2:].set(0.0)

    def _sample_goal(self, rng):
        rng_r, rng_a = jax.random.split(rng)
        # sqrt makes the goals uniform over the disk's area rather than crowded at its centre.
        radius = 0.2 * jnp.sqrt(jax.random.uniform(rng_r))
        angle = 2.0 * jnp.pi * jax.random.uniform(rng_a)
        return jnp.array([radius * jnp.cos(angle), radius * jnp.sin(angle)])

    def _place_goal_marker(self, q, goal):
        return q.at[2:].set(goal)

    def _state(self, pipeline_state):
        theta = pipeline_state.q[:2]
        tip = base.Transform.create(pos=_TIP_OFFSET)
        tip_pos = pipeline_state.x.take(1).do(tip).pos
        tip_vel = tip.do(pipeline_state.xd.take(1)).vel
        return jnp.concatenate([jnp.cos(theta), jnp.sin(theta), pipeline_state.qd[:2], tip_vel[:2], tip_pos[:2]])
