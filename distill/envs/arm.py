"""Goal-conditioned robot arm: push or carry a cube to a goal position on a table.

The arm stands on a fixed base at the origin of a table (the plane z = 0) and faces +x. It has
four hinges (base yaw about z, then shoulder, elbow and wrist pitch) and a two-finger parallel
gripper on slide joints, all driven by position servos with gravity compensation, as on a real
arm. A free cube lies on the table; ``arm_binpick_hard`` adds an open bin, four thin walls
standing on the table, which is the bin's floor.

Action (5), each in [-1, 1]: targets of the four arm joints, spanning each joint's range, and the
gripper's opening (-1 closed, +1 open), sent to both fingers.

State (18):
  cube xyz (3), gripper centre xyz (3),
  arm joint angles (4: yaw, shoulder, elbow, wrist), finger opening (1: half the gap),
  arm joint velocities (4), cube linear velocity (3).
Goal: cube xyz, ``goal_indices = (0, 1, 2)``; success is the cube within 0.1 of it.

- ``ArmPushEasy``: the cube starts at one spot (a centimetre of noise); the goal lies on the table
  0.17-0.25 m from that spot, in any direction within 120 degrees of straight ahead (not back
  towards the base).
- ``ArmPushHard``: start and goal are both uniform over a wider patch of table, at least 0.2 apart.
- ``ArmBinpickHard``: the cube starts anywhere on a patch of table beside the bin; the goal is near
  the bin's centre at resting height, so the cube has to be lifted over a wall and let go.

One environment step is 0.04 s: four 10 ms physics steps, each running a fixed four Newton
iterations of the contact solver. Only the cube collides, with the table, the bin, the palm and
the fingers; fingertip spheres keep the gripper above the table. The rest of the arm passes through
itself, the table and the bin's walls: those contacts would cost more than they add to these tasks.

Built for Brax's "mjx" pipeline, MuJoCo's own solver. Every Brax pipeline finds box contacts (they
all call MJX's collision functions), but none of the others can run these tasks: "spring" turns to
NaN within a second, "positional" ignores the gravity compensation and drops the arm through the
table, and "generalized" pushes the cube but cannot lift it, and lets a pressed cube sink into
the table.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax import base
from brax.envs.base import PipelineEnv, State
from brax.io import mjcf

from distill.envs.base import GoalEnv

CUBE_HALF = 0.04
CUBE_MASS = 0.2
# Shoulder height and link lengths (m).
SHOULDER_HEIGHT = 0.2
UPPER_ARM = 0.3
FOREARM = 0.3
# From the wrist hinge to the point between the fingers where a gripped cube's centre sits.
GRIP_OFFSET = 0.095
FINGER_HALF_THICKNESS = 0.008
MAX_OPENING = 0.065

# (low, high) of each actuated joint, arm first; the gripper's is half the gap between the fingers.
# Zero pitch points a link straight up. The middle of every range is the home pose the arm starts
# in, and where actions of zero hold it: yaw straight ahead, the gripper pointing down 0.15 m above
# the table at 0.35 m from the base, over the cubes, so that even random actions reach them.
JOINT_RANGES = ((-1.3, 1.3), (-0.35, 1.35), (0.8, 2.95), (-0.75, 2.25), (0.0, MAX_OPENING))
ARM_JOINTS = 4
HOME_NOISE = 0.05
# (stiffness, force limit) of each joint's servo, in N m/rad and N m (N/m and N for the fingers).
# The limits keep presses gentle: a stiffer press sinks the cube into the soft contact with the
# table. With the joint damping they also cap the speed, at about 2 rad/s.
SERVOS = ((60, 8), (80, 10), (50, 7), (15, 3), (100, 8))
DAMPING = (4, 5, 3, 1, 4)

# Bin: inner half width, wall half thickness and height; walls are lower than twice the cube, so a
# carried cube clears them at a modest height.
BIN_CENTER = (0.35, 0.3)
BIN_INNER_HALF = 0.1
BIN_WALL_HALF = 0.005
BIN_WALL_HEIGHT = 0.08

TIMESTEP = 0.01
N_FRAMES = 4  # one env step = 0.04 s
# Newton steps and line-search steps per physics step: MJX runs every one of them on every
# environment, converged or not. Fewer than four let hard presses fling the cube off the table.
SOLVER_ITERATIONS = 4
LINE_SEARCH_ITERATIONS = 6

# Every contact the model has, as explicit geom pairs: (geom1, geom2, condim, sliding friction).
# Fingers grip harder than the table holds, so a gripped cube comes off the table; the bin walls
# are smooth (frictionless contacts need a quarter of the solver rows).
CONTACTS = (
    ("cube", "table", 3, 1.0),
    ("cube", "palm", 3, 1.0),
    ("cube", "finger_left", 3, 1.5),
    ("cube", "finger_right", 3, 1.5),
    ("finger_left_tip", "table", 3, 1.0),
    ("finger_right_tip", "table", 3, 1.0),
)
BIN_CONTACTS = tuple((f"bin_wall_{k}", "cube", 1, 1.0) for k in range(4))


def _finger(name: str, sign: int) -> str:
    """One finger: a slide along the hand's x axis, opening towards ``sign`` * x.

    Its joint position is half the gap between the fingers: at 0 the two inner faces meet.
    """
    x = sign * FINGER_HALF_THICKNESS
    return f"""
        <body name="{name}" pos="0 0 0.052" gravcomp="1">
          <joint name="{name}" type="slide" axis="{sign} 0 0" range="0 {MAX_OPENING}" damping="{DAMPING[-1]}"/>
          <geom name="{name}" type="box" pos="{x} 0 0.035" size="{FINGER_HALF_THICKNESS} 0.02 0.035"
                mass="0.05" rgba="0.3 0.3 0.3 1"/>
          <geom name="{name}_tip" type="sphere" pos="{x} 0 0.07" size="{FINGER_HALF_THICKNESS}"
                mass="0.001" rgba="0.3 0.3 0.3 1"/>
        </body>"""


def _bin_walls() -> str:
    """Four thin static walls around BIN_CENTER; the table is the bin's floor."""
    cx, cy = BIN_CENTER
    offset = BIN_INNER_HALF + BIN_WALL_HALF
    long_half = BIN_INNER_HALF + 2 * BIN_WALL_HALF
    z = BIN_WALL_HEIGHT / 2
    walls = [
        (cx + offset, cy, BIN_WALL_HALF, long_half),
        (cx - offset, cy, BIN_WALL_HALF, long_half),
        (cx, cy + offset, long_half, BIN_WALL_HALF),
        (cx, cy - offset, long_half, BIN_WALL_HALF),
    ]
    return "".join(
        f'<geom name="bin_wall_{k}" type="box" pos="{x} {y} {z}" size="{hx} {hy} {z}" rgba="0.6 0.45 0.3 1"/>\n    '
        for k, (x, y, hx, hy) in enumerate(walls)
    )


def _contacts(with_bin: bool) -> str:
    """The <pair> elements: MuJoCo takes a pair's friction from the pair, not from its geoms."""
    pairs = CONTACTS + (BIN_CONTACTS if with_bin else ())
    return "\n    ".join(
        f'<pair geom1="{g1}" geom2="{g2}" condim="{condim}" friction="{mu} {mu} 0.005 0.0001 0.0001"/>'
        for g1, g2, condim, mu in pairs
    )


def _actuators() -> str:
    """Position servos; both fingers get the gripper's range and gains."""
    joints = ("yaw", "shoulder", "elbow", "wrist", "finger_left", "finger_right")
    return "\n    ".join(
        f'<position name="{joint}" joint="{joint}" kp="{kp}" ctrlrange="{lo} {hi}" forcerange="{-force} {force}"/>'
        for joint, (lo, hi), (kp, force) in zip(joints, JOINT_RANGES + JOINT_RANGES[-1:], SERVOS + SERVOS[-1:])
    )


def arm_xml(with_bin: bool) -> str:
    """The MJCF of the arm, the cube on the table and, if asked, the bin."""
    ranges = [f"{lo} {hi}" for lo, hi in JOINT_RANGES]
    return f"""
<mujoco model="goal_arm">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{TIMESTEP}" iterations="{SOLVER_ITERATIONS}" ls_iterations="{LINE_SEARCH_ITERATIONS}"/>
  <default>
    <!-- Collisions come only from the explicit pairs under <contact>. -->
    <geom contype="0" conaffinity="0"/>
    <joint armature="0.01"/>
  </default>
  <worldbody>
    <light pos="0 0 2" dir="0 0 -1" directional="true"/>
    <geom name="table" type="plane" size="1.5 1.5 0.05" rgba="0.8 0.8 0.75 1"/>
    <geom name="pedestal" type="cylinder" pos="0 0 0.05" size="0.07 0.05" rgba="0.2 0.2 0.25 1"/>
    {_bin_walls() if with_bin else ""}
    <body name="turret" pos="0 0 0.1" gravcomp="1">
      <joint name="yaw" type="hinge" axis="0 0 1" range="{ranges[0]}" damping="{DAMPING[0]}"/>
      <geom type="cylinder" pos="0 0 0.05" size="0.05 0.05" mass="1" rgba="0.9 0.5 0.1 1"/>
      <body name="upper_arm" pos="0 0 {SHOULDER_HEIGHT - 0.1}" gravcomp="1">
        <joint name="shoulder" type="hinge" axis="0 1 0" range="{ranges[1]}" damping="{DAMPING[1]}"/>
        <geom type="capsule" fromto="0 0 0 0 0 {UPPER_ARM}" size="0.03" mass="0.5" rgba="0.9 0.5 0.1 1"/>
        <body name="forearm" pos="0 0 {UPPER_ARM}" gravcomp="1">
          <joint name="elbow" type="hinge" axis="0 1 0" range="{ranges[2]}" damping="{DAMPING[2]}"/>
          <geom type="capsule" fromto="0 0 0 0 0 {FOREARM}" size="0.025" mass="0.4" rgba="0.9 0.5 0.1 1"/>
          <body name="hand" pos="0 0 {FOREARM}" gravcomp="1">
            <joint name="wrist" type="hinge" axis="0 1 0" range="{ranges[3]}" damping="{DAMPING[3]}"/>
            <geom type="capsule" fromto="0 0 0 0 0 0.028" size="0.02" mass="0.1" rgba="0.2 0.2 0.25 1"/>
            <geom name="palm" type="box" pos="0 0 0.04" size="0.075 0.025 0.012" mass="0.1" rgba="0.2 0.2 0.25 1"/>
            {_finger("finger_left", -1)}
            {_finger("finger_right", 1)}
          </body>
        </body>
      </body>
    </body>
    <body name="cube" pos="0.35 0 {CUBE_HALF}">
      <freejoint name="cube"/>
      <geom name="cube" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" mass="{CUBE_MASS}"
            rgba="0.2 0.6 0.9 1"/>
    </body>
  </worldbody>
  <contact>
    {_contacts(with_bin)}
  </contact>
  <actuator>
    {_actuators()}
  </actuator>
</mujoco>
"""


# Indices into the pipeline state: q holds the six actuated joints, then the cube's free joint
# (xyz, quaternion); qd the six joint velocities, then the cube's linear and angular velocity.
CUBE_Q = 6
CUBE_QD = 6
_HAND_LINK = 3
_GRIP = base.Transform.create(pos=jnp.array([0.0, 0.0, GRIP_OFFSET]))


def _cube_q(xy: jax.Array) -> jax.Array:
    """Free-joint q of a cube resting on the table at ``xy``, turned to face the base.

    Facing the base lines the cube's faces up with the fingers, which close along the arm's radius.
    """
    half_yaw = 0.5 * jnp.arctan2(xy[1], xy[0])
    quat = jnp.array([jnp.cos(half_yaw), 0.0, 0.0, jnp.sin(half_yaw)])
    return jnp.concatenate([xy, jnp.array([CUBE_HALF]), quat])


def _uniform_xy(rng: jax.Array, low: tuple[float, float], high: tuple[float, float], shape=()) -> jax.Array:
    return jax.random.uniform(rng, shape + (2,), minval=jnp.array(low), maxval=jnp.array(high))


def _on_table(xy: jax.Array) -> jax.Array:
    """A goal: the cube resting at ``xy``."""
    return jnp.concatenate([xy, jnp.array([CUBE_HALF])])


class ArmEnv(GoalEnv):
    """The arm and a cube; subclasses choose the bin and how start and goal are drawn.

    The start and the goal come from one key (``_sample_task``) so that the goal can be drawn away
    from the cube's start: an episode never begins at its goal.
    """

    state_dim = 18
    goal_indices = (0, 1, 2)
    success_radius = 0.1
    state_layout = (
        ("cube_xyz", 3),
        ("gripper_xyz", 3),
        ("joint_pos", 4),
        ("finger_opening", 1),
        ("joint_vel", 4),
        ("cube_vel", 3),
    )
    with_bin = False

    def __init__(self, backend: str = "mjx", n_frames: int = N_FRAMES, **kwargs):
        sys = mjcf.loads(arm_xml(self.with_bin))
        PipelineEnv.__init__(self, sys=sys, backend=backend, n_frames=n_frames, **kwargs)

    @property
    def action_size(self) -> int:
        return ARM_JOINTS + 1

    def _sample_task(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Cube start xy and goal xyz."""
        raise NotImplementedError

    def _initial_q(self, rng):
        """The arm at home with a little noise, the gripper closed, the cube at its start."""
        rng_task, rng_arm = jax.random.split(rng)
        start, _ = self._sample_task(rng_task)
        home = jnp.array(JOINT_RANGES[:ARM_JOINTS]).mean(axis=1)
        arm = home + jax.random.uniform(rng_arm, (ARM_JOINTS,), minval=-HOME_NOISE, maxval=HOME_NOISE)
        q = jnp.concatenate([arm, jnp.zeros(2), _cube_q(start)])
        return q, jnp.zeros(self.sys.qd_size())

    def _sample_goal(self, rng):
        # The task key that ``_initial_q(rng)`` draws the cube's start from.
        rng_task, _ = jax.random.split(rng)
        return self._sample_task(rng_task)[1]

    def _reset_keys(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        # One key for both start and goal (see the class docstring), so that they are drawn together.
        return rng, rng

    def step(self, env_state: State, action: jax.Array) -> State:
        return super().step(env_state, self._controls(action))

    def _controls(self, action: jax.Array) -> jax.Array:
        """Servo targets: [-1, 1] spans each joint's range; both fingers get the gripper's target."""
        targets = jnp.clip(jnp.concatenate([action, action[-1:]]), -1.0, 1.0)
        low, high = self.sys.actuator.ctrl_range[:, 0], self.sys.actuator.ctrl_range[:, 1]
        return low + (targets + 1.0) * 0.5 * (high - low)

    def _state(self, pipeline_state):
        q, qd = pipeline_state.q, pipeline_state.qd
        grip = pipeline_state.x.take(_HAND_LINK).do(_GRIP).pos
        opening = 0.5 * (q[ARM_JOINTS] + q[ARM_JOINTS + 1])
        return jnp.concatenate(
            [
                q[CUBE_Q : CUBE_Q + 3],
                grip,
                q[:ARM_JOINTS],
                opening[None],
                qd[:ARM_JOINTS],
                qd[CUBE_QD : CUBE_QD + 3],
            ]
        )


# Where cubes start and push goals lie: a patch of table in front of the base that the gripper
# reaches from above and from either side.
TABLE_LOW = (0.25, -0.25)
TABLE_HIGH = (0.5, 0.25)

PUSH_EASY_START = (0.32, 0.0)
PUSH_EASY_NOISE = 0.01
PUSH_EASY_DISTANCE = (0.17, 0.25)
# Goals within this angle of straight ahead (+x): never behind the cube, where the base stands.
PUSH_EASY_SPREAD = 2.0 * jnp.pi / 3.0

PUSH_HARD_MIN_DISTANCE = 0.2
# Candidate goals drawn per episode: the first far enough from the start is taken, or if none is (a
# chance below 1e-8) the farthest.
PUSH_HARD_CANDIDATES = 64

BINPICK_START_LOW = (0.25, -0.25)
BINPICK_START_HIGH = (0.5, 0.05)
BINPICK_GOAL_NOISE = 0.03


class ArmPushEasy(ArmEnv):
    """Push the cube from a fixed spot to a goal 0.17-0.25 m away on the table."""

    def _sample_task(self, rng):
        rng_start, rng_distance, rng_angle = jax.random.split(rng, 3)
        nominal = jnp.array(PUSH_EASY_START)
        start = nominal + jax.random.uniform(rng_start, (2,), minval=-PUSH_EASY_NOISE, maxval=PUSH_EASY_NOISE)
        # Measured from the nominal spot, so the goal is at least 0.17 - 0.01 * sqrt(2) > 0.15 from
        # the actual start.
        distance = jax.random.uniform(rng_distance, minval=PUSH_EASY_DISTANCE[0], maxval=PUSH_EASY_DISTANCE[1])
        angle = jax.random.uniform(rng_angle, minval=-PUSH_EASY_SPREAD, maxval=PUSH_EASY_SPREAD)
        goal_xy = nominal + distance * jnp.array([jnp.cos(angle), jnp.sin(angle)])
        return start, _on_table(goal_xy)


class ArmPushHard(ArmEnv):
    """Push the cube between two random spots of the table patch at least 0.2 m apart."""

    def _sample_task(self, rng):
        rng_start, rng_goal = jax.random.split(rng)
        start = _uniform_xy(rng_start, TABLE_LOW, TABLE_HIGH)
        candidates = _uniform_xy(rng_goal, TABLE_LOW, TABLE_HIGH, (PUSH_HARD_CANDIDATES,))
        distance = jnp.linalg.norm(candidates - start, axis=-1)
        far = distance >= PUSH_HARD_MIN_DISTANCE
        pick = jnp.where(far.any(), jnp.argmax(far), jnp.argmax(distance))
        return start, _on_table(candidates[pick])


class ArmBinpickHard(ArmEnv):
    """Pick the cube up from the table and put it in the bin."""

    with_bin = True

    def _sample_task(self, rng):
        rng_start, rng_goal = jax.random.split(rng)
        start = _uniform_xy(rng_start, BINPICK_START_LOW, BINPICK_START_HIGH)
        noise = jax.random.uniform(rng_goal, (2,), minval=-BINPICK_GOAL_NOISE, maxval=BINPICK_GOAL_NOISE)
        return start, _on_table(jnp.array(BIN_CENTER) + noise)
