"""Goal-conditioned Brax environments.

Every environment observes concat[state, goal]. The goal lives in the same space as
``state[goal_indices]``, so a future state of a trajectory is a valid goal (hindsight relabelling).
Episodes last ``EnvSpec.episode_length`` steps unless the robot becomes unhealthy first: a robot
with a ``healthy_z`` range (the ant, the humanoid, and their mazes) ends its episode, with
``done = 1`` as in Brax, on the step its torso height leaves that range, as the paper's reference
environments do. A flipped ant or fallen humanoid can no longer reach any goal, so the steps it
would spend lying there teach nothing. Environments without a range never set ``done``. The vector
wrapper restarts a finished slot alone, so trajectories have different lengths.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from brax.envs.base import PipelineEnv, State
from etils import epath

from distill.errors import DistillError


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """What a goal-conditioned environment declares about itself."""

    name: str
    state_dim: int
    goal_indices: tuple[int, ...]
    action_dim: int
    success_radius: float
    episode_length: int
    description: str
    factory: Callable[..., "GoalEnv"]
    backend: str = "spring"
    """The Brax physics pipeline this environment trains with, and so is evaluated with."""
    # Not hashed: a dict is unhashable, and the spec's name already identifies it.
    preset: dict = dataclasses.field(default_factory=dict, hash=False, compare=False)
    """Teacher-config overrides: the paper's budget where it differs from the default, and for the
    environments meant for a CPU, settings under which they train well on 2 cores."""
    evaluation_factory: Callable[..., "GoalEnv"] | None = None
    """The environment policies are evaluated on, where it differs from the training one (the
    reference evaluates ``ant_big_maze`` on its far goals only); None means the training one."""
    layout: tuple[tuple[str, int, int], ...] = ()
    """The named slices of the state, ``(name, start, stop)`` in order, covering it exactly (the
    environment class's ``state_layout``): what a sensor model keeps, drops and noises."""

    @property
    def goal_dim(self) -> int:
        return len(self.goal_indices)

    @property
    def obs_dim(self) -> int:
        return self.state_dim + self.goal_dim

    def layout_slice(self, name: str) -> slice:
        """The state slice called ``name``, or a one-line error naming the valid ones."""
        for slice_name, start, stop in self.layout:
            if slice_name == name:
                return slice(start, stop)
        valid = ", ".join(n for n, _, _ in self.layout)
        raise DistillError(f"'{self.name}' has no state slice '{name}'; its slices are: {valid}")

    def make(self, evaluation: bool = False, **kwargs) -> "GoalEnv":
        """The environment; ``backend`` left out or None means the spec's own. ``evaluation`` asks
        for the one policies are scored on (see ``evaluation_factory``)."""
        if kwargs.get("backend") is None:
            kwargs["backend"] = self.backend
        factory = self.evaluation_factory if evaluation and self.evaluation_factory else self.factory
        with _local_device_first():
            return factory(**kwargs)


@contextlib.contextmanager
def _local_device_first():
    """Brax builds its system through MJX's ``put_model``, which places it on ``jax.devices()[0]``.

    In a multi-process run that device belongs to process 0, and every other process would hold a
    system it cannot read. While an environment is built, this process's own devices come first.
    """
    if jax.process_count() == 1:
        yield
        return
    all_devices = jax.devices

    def local_first(backend=None):
        devices = all_devices(backend)
        return [d for d in devices if d.process_index == jax.process_index()] + [
            d for d in devices if d.process_index != jax.process_index()
        ]

    jax.devices = local_first
    try:
        yield
    finally:
        jax.devices = all_devices


class GoalEnv(PipelineEnv):
    """Base for goal-conditioned pipeline environments.

    Subclasses implement ``_initial_q``, ``_state`` (the state vector from a pipeline state) and
    ``_sample_goal``. The success radius, goal slice and healthy range are class attributes so
    that jitted code sees them as constants.
    """

    state_dim: int
    goal_indices: tuple[int, ...]
    success_radius: float
    healthy_z: tuple[float, float] | None = None
    """The torso heights (``q[2]``) of a robot that can still act; leaving them ends the episode.
    None: the episode never ends early."""
    wall_geoms: tuple[str, ...] = ()
    """The geoms that hit maze walls (see ``distill.envs.maze``)."""
    state_layout: tuple[tuple[str, int], ...] = ()
    """The state's named slices in order, ``(name, size)``, sizes summing to ``state_dim``: what a
    robot would measure with one sensor each (torso position from localisation, joint angles from
    encoders, velocities from differentiation or an IMU)."""
    maze_goal_noise: float = 0.0
    """How far a maze jitters this robot's goals around their cell centres, as a fraction of a cell."""
    spring_timestep: float | None = None
    """The physics time step on the spring and positional pipelines, where it differs from Brax's
    tuning of the robot (None keeps that); an env step is this times the robot's frames."""
    maze_spring_timestep: float | None = None
    """The same for the robot's mazes (None: as in the open)."""
    asset: str
    """Where a robot's MJCF lies inside the brax package (e.g. ``envs/assets/ant.xml``), for
    environments such as mazes that build on it."""

    @classmethod
    def mjcf(cls) -> str:
        """The text of the robot's MJCF."""
        return (epath.resource_path("brax") / cls.asset).read_text()

    def _initial_q(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError

    def _sample_goal(self, rng: jax.Array) -> jax.Array:
        raise NotImplementedError

    def _state(self, pipeline_state) -> jax.Array:
        raise NotImplementedError

    def _is_done(self, pipeline_state) -> jax.Array:
        """1.0 where the robot's torso height has left ``healthy_z``, else 0.0 (always 0.0 without one)."""
        if self.healthy_z is None:
            return jnp.zeros(())
        low, high = self.healthy_z
        z = pipeline_state.q[2]
        return ((z < low) | (z > high)).astype(jnp.float32)

    def _place_goal_marker(self, q: jax.Array, goal: jax.Array) -> jax.Array:
        """Environments with a visual target body move it to the goal; default: nothing."""
        return q

    def _reset_keys(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The keys of an episode's start (``_initial_q``) and goal (``_sample_goal``)."""
        rng_q, rng_goal = jax.random.split(rng)
        return rng_q, rng_goal

    def reset(self, rng: jax.Array) -> State:
        rng_q, rng_goal = self._reset_keys(rng)
        goal = self._sample_goal(rng_goal)
        q, qd = self._initial_q(rng_q)
        q = self._place_goal_marker(q, goal)
        pipeline_state = self.pipeline_init(q, qd)
        state = self._state(pipeline_state)
        distance = self.goal_distance(state, goal)
        metrics = {"distance": distance, "success": (distance < self.success_radius).astype(jnp.float32)}
        zero = jnp.zeros(())
        return State(pipeline_state, jnp.concatenate([state, goal]), zero, zero, metrics, {})

    def step(self, env_state: State, action: jax.Array) -> State:
        pipeline_state = self.pipeline_step(env_state.pipeline_state, action)
        state = self._state(pipeline_state)
        goal = env_state.obs[self.state_dim :]
        distance = self.goal_distance(state, goal)
        success = (distance < self.success_radius).astype(jnp.float32)
        metrics = {"distance": distance, "success": success}
        return env_state.replace(
            pipeline_state=pipeline_state,
            obs=jnp.concatenate([state, goal]),
            reward=success,
            done=self._is_done(pipeline_state),
            metrics=metrics,
        )

    def goal_distance(self, state: jax.Array, goal: jax.Array) -> jax.Array:
        achieved = state[..., jnp.asarray(self.goal_indices)]
        return jnp.linalg.norm(achieved - goal, axis=-1)
