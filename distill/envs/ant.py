"""Goal-conditioned ant: walk the torso of Brax's quadruped onto a point 10 m away.

State (29): the full joint positions (15: torso xyz, torso quaternion, 8 hinge angles) followed by
the joint velocities (14). Keeping the torso xy in the state, unlike Brax's running task, is what
lets a state name a goal. Goal: torso xy, on the circle of radius 10 around the origin where the
ant starts, at a uniformly random angle.

As in Brax's ant, only the feet collide with the floor: an ant that flips over sinks its torso
below the floor and stays there, since episodes do not end early.
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
    asset = "envs/assets/ant.xml"

    def __init__(self, backend: str = "spring", **kwargs):
        Ant.__init__(self, backend=backend, **kwargs)

    def _initial_q(self, rng):
        rng_q, rng_qd = jax.random.split(rng)
        q = self.sys.init_q + jax.random.uniform(
            rng_q, (self.sys.q_size(),), minval=-RESET_NOISE, maxval=RESET_NOISE
        )
        qd = RESET_NOISE * jax.random.normal(rng_qd, (self.sys.qd_size(),))
        return q, qd

    def _sample_goal(self, rng):
        angle = 2.0 * jnp.pi * jax.random.uniform(rng)
        return GOAL_RADIUS * jnp.array([jnp.cos(angle), jnp.sin(angle)])

    def _state(self, pipeline_state):
        return jnp.concatenate([pipeline_state.q, pipeline_state.qd])
