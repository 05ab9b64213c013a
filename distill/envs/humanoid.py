"""Goal-conditioned humanoid: bring the torso of Brax's humanoid, upright, to a point 1-5 m away.

State (246), Brax's humanoid observation with the torso xy kept in it:
  joint positions (24: torso xyz first, then torso quaternion and 17 hinge angles),
  joint velocities (23), centre-of-mass-frame inertia of the 11 links (11 x 10),
  centre-of-mass velocity of the 11 links (11 x 6), actuator forces on the joints (23).
Goal: torso xyz, at a horizontal distance U(1, 5) in a uniformly random direction from the start,
at standing torso height, so reaching it needs the humanoid to arrive on its feet.

The paper's 268 comes from JaxGCRL's humanoid, whose MJCF adds a goal-marker body on two slide
joints; the marker's positions, velocities, inertia, velocity and forces fill the other 22 entries
(26 + 25 + 12 x 10 + 12 x 6 + 25 = 268). That marker is not part of the robot and would leak the
episode's goal into the state, so it is left out here.

Every body geom collides with the floor, as in the reference's humanoid model (Brax's gives only
the feet contacts, and a fallen humanoid there sinks through the floor). A humanoid whose torso
height leaves [1.0, 2.0], i.e. that has fallen, ends its episode, as in the reference.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import jax
import jax.numpy as jnp
from brax.envs.humanoid import Humanoid
from brax.io import mjcf

from distill.envs.base import GoalEnv

MIN_GOAL_DISTANCE = 1.0
MAX_GOAL_DISTANCE = 5.0
# The humanoid starts with its torso at 1.4; settling onto its feet it bobs between about 1.2 and
# 1.33. JaxGCRL uses the same value.
STANDING_HEIGHT = 1.25
# The reference starts every episode from the model's standing pose exactly (reset noise 0).
RESET_NOISE = 0.0
# The geoms that hit maze walls: the feet and the trunk (torso and pelvis capsules), so the humanoid
# can neither step nor lean through a wall. The reference lets all 17 geoms hit the walls, but the
# spring pipeline checks every such geom against every wall on every step: in the hardest maze a
# step of 64 humanoids costs about 26 ms with the feet, 60 ms with feet and trunk, and 355 ms with
# every geom (on a 2-core CPU). Only a swinging arm or leg now passes through a wall.
WALL_GEOMS = ("left_foot", "right_foot", "torso1", "butt")


class GoalHumanoid(GoalEnv, Humanoid):
    state_dim = 246
    goal_indices = (0, 1, 2)
    success_radius = 0.5
    healthy_z = (1.0, 2.0)
    state_layout = (
        ("torso_xy", 2),
        ("torso_height", 1),
        ("orientation", 4),
        ("joint_pos", 17),
        ("torso_vel", 6),
        ("joint_vel", 17),
        ("com_inertia", 110),
        ("com_vel", 66),
        ("actuator_force", 23),
    )
    asset = "envs/assets/humanoid.xml"
    wall_geoms = WALL_GEOMS
    # What the reference really integrates with (printed under brax 0.10.1, the version it pins): its
    # open humanoid asks for 0.0015 through opt.timestep, but that pipeline steps by sys.dt, which
    # keeps the XML's 0.003, so an env step (10 frames) is 0.03 s; its mazes replace sys.dt itself
    # with 0.0015, so 0.015 s. Brax now reads opt.timestep, hence the two set here.
    spring_timestep = 0.003
    maze_spring_timestep = 0.0015

    def __init__(self, backend: str = "spring", **kwargs):
        Humanoid.__init__(self, backend=backend, exclude_current_positions_from_observation=False, **kwargs)
        # Brax tuned its humanoid per backend (time step, solver, gears); keep that tuning on the
        # model whose body collides with the floor.
        tuned = self.sys
        opt = tuned.opt
        if backend in ("spring", "positional") and self.spring_timestep is not None:
            opt = opt.replace(timestep=self.spring_timestep)
        self.sys = mjcf.loads(self.mjcf()).replace(opt=opt, actuator=tuned.actuator)

    @classmethod
    def mjcf(cls) -> str:
        """Brax's humanoid with every body geom colliding with the floor (contype 1; the floor has
        conaffinity 1). Conaffinity stays 0, so body parts still pass through one another."""
        root = ET.fromstring(super().mjcf())
        for body in root.find("worldbody").iter("body"):
            for geom in body.findall("geom"):
                geom.set("contype", "1")
        return ET.tostring(root, encoding="unicode")

    def _initial_q(self, rng):
        rng_q, rng_qd = jax.random.split(rng)
        noise = dict(minval=-RESET_NOISE, maxval=RESET_NOISE)
        q = self.sys.init_q + jax.random.uniform(rng_q, (self.sys.q_size(),), **noise)
        qd = jax.random.uniform(rng_qd, (self.sys.qd_size(),), **noise)
        return q, qd

    def _sample_goal(self, rng):
        rng_d, rng_a = jax.random.split(rng)
        distance = jax.random.uniform(rng_d, minval=MIN_GOAL_DISTANCE, maxval=MAX_GOAL_DISTANCE)
        angle = 2.0 * jnp.pi * jax.random.uniform(rng_a)
        start = self.sys.init_q[:2]
        direction = jnp.array([jnp.cos(angle), jnp.sin(angle)])
        return jnp.concatenate([start + distance * direction, jnp.array([STANDING_HEIGHT])])

    def step(self, env_state, action):
        # Policies act in [-1, 1]; the motors take their control range (Brax's humanoid does the
        # same). The base step builds the state without the action, so the actuator forces in it
        # are filled in here.
        low, high = self.sys.actuator.ctrl_range[:, 0], self.sys.actuator.ctrl_range[:, 1]
        ctrl = low + (action + 1.0) * 0.5 * (high - low)
        env_state = super().step(env_state, ctrl)
        state = self._state(env_state.pipeline_state, ctrl)
        return env_state.replace(obs=env_state.obs.at[: self.state_dim].set(state))

    def _state(self, pipeline_state, ctrl=None):
        """Brax's humanoid observation, torso xy kept; ``ctrl=None`` means no actuation."""
        if ctrl is None:
            ctrl = jnp.zeros(self.sys.act_size())
        return self._get_obs(pipeline_state, ctrl)
