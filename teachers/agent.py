"""The CRL teacher's jitted math: its training state, one training step (collect ``unroll_length``
steps in every slot, insert them, run ``updates_per_step`` SGD steps on hindsight-relabelled batches)
and the functions that build them.

The replay buffer and environment slots are sharded over the local devices along the slot axis, each
device draws its share of every batch from its own slots, and parameters are replicated: XLA inserts
the cross-device reductions, so the same code runs on 1 device, N devices or N hosts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from distill.data.replay import (
    TrajectoryBuffer,
    buffer_init,
    buffer_insert,
    sample_batch,
)
from distill.data.sensors import SensorModel, empty_buffer, observe
from distill.envs import EnvSpec, GoalEnv, get_spec
from distill.envs.vector import VecState, episode_ends, vec_reset, vec_step
from distill.nn.networks import (
    CRLNetworks,
    make_crl_networks,
    sample_action,
)
from distill.train.sharding import (
    BUFFER_SPEC,
    buffer_shardings,
    env_shardings,
    make_mesh,
    replicated,
)
from teachers import losses
from teachers.config import TeacherConfig, sensor_model


@struct.dataclass
class TrainState:
    params: dict  # actor, sa_encoder, goal_encoder
    log_alpha: jax.Array
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any
    env: VecState
    buffer: TrajectoryBuffer  # states hold the state, then the sensor vector the actor read there if any
    readings: jax.Array | None  # [num_envs, L + K, R] sensor readings (None without a sensor model)
    key: jax.Array
    env_steps: jax.Array
    updates: jax.Array


def critic_params(params: dict) -> dict:
    return {"sa_encoder": params["sa_encoder"], "goal_encoder": params["goal_encoder"]}


def state_shardings(state_shape: TrainState, mesh: Mesh) -> TrainState:
    """Slots, their readings and replay columns are split over devices; everything else is replicated."""
    readings = None if state_shape.readings is None else NamedSharding(mesh, P("data"))
    return replicated(mesh, state_shape).replace(
        env=env_shardings(mesh, state_shape.env), buffer=buffer_shardings(mesh, state_shape.buffer), readings=readings
    )


@dataclasses.dataclass(frozen=True)
class Teacher:
    """The static parts of a teacher run and its pure, jittable functions."""

    config: TeacherConfig
    spec: EnvSpec
    env: GoalEnv
    networks: CRLNetworks
    optimizer: optax.GradientTransformation
    mesh: Mesh
    runs_axis: str | None = None
    """The vmap axis name when several runs (seeds) are stacked in one program (see ``train_teachers``)."""
    sensors: SensorModel | None = None
    """What the actor reads instead of the state (None: the state itself); the critic reads the state."""

    @property
    def target_entropy(self) -> float:
        return -self.config.target_entropy_scale * self.spec.action_dim

    @property
    def sensor_dim(self) -> int:
        return self.sensors.sensor_dim if self.sensors else 0

    # ---- initialisation -------------------------------------------------------------------
    def init(self, key: jax.Array, params: dict | None = None) -> TrainState:
        """A fresh state; ``params`` (say, another run's) replace the random networks, and everything
        else (optimiser states, alpha, environments, replay) is as fresh as without them."""
        k_params, k_env, k_state = jax.random.split(key, 3)
        if params is None:
            params = self.networks.init(k_params)
        log_alpha = jnp.zeros(())
        return TrainState(
            params=params,
            log_alpha=log_alpha,
            actor_opt=self.optimizer.init(params["actor"]),
            critic_opt=self.optimizer.init(critic_params(params)),
            alpha_opt=self.optimizer.init(log_alpha),
            env=vec_reset(self.env, self.config.num_envs, k_env),
            buffer=buffer_init(
                self.config.replay_rows,
                self.config.num_envs,
                self.spec.state_dim + self.sensor_dim,
                self.spec.action_dim,
            ),
            readings=empty_buffer(self.sensors, self.config.num_envs),
            key=k_state,
            env_steps=jnp.zeros((), jnp.int32),
            updates=jnp.zeros((), jnp.int32),
        )

    # ---- collection -----------------------------------------------------------------------
    def collect(self, actor_params, vec: VecState, readings: jax.Array | None, key: jax.Array, length: int):
        """Steps every slot ``length`` times with the stochastic policy, the actor reading its sensors
        if it has any (a new episode starts a fresh history); returns the readings, buffer rows and
        the numbers of episodes that ended, and that their environment ended early, on the way."""
        state_dim = self.spec.state_dim

        def one_step(carry, step_key):
            vec, readings = carry
            obs = vec.env.obs
            stored = obs[:, :state_dim]
            if self.sensors is not None:
                # A key of its own, so that the action is drawn from the key a plain run draws it from.
                noise = jax.random.normal(jax.random.fold_in(step_key, 1), stored.shape)
                readings, obs = observe(self.sensors, readings, obs, state_dim, noise, vec.steps == 0)
                stored = jnp.concatenate([stored, obs[:, : self.sensor_dim]], axis=-1)
            mean, log_std = self.networks.policy(actor_params, obs)
            action, _ = sample_action(step_key, mean, log_std)
            row = (stored, action, vec.traj_id, vec.steps)
            new = vec_step(self.env, self.spec.episode_length, vec, action, self.runs_axis)
            ended, terminated = episode_ends(vec, new, self.spec.episode_length)
            return (new, readings), (row, ended.sum(), terminated.sum())

        (vec, readings), (rows, ended, terminated) = jax.lax.scan(
            one_step, (vec, readings), jax.random.split(key, length)
        )
        return vec, readings, rows, {"episode_ends": ended.sum(), "early_terminations": terminated.sum()}

    # ---- one SGD step ---------------------------------------------------------------------
    def sample(self, buffer: TrajectoryBuffer, key: jax.Array):
        """Each device draws its share of the batch from its own replay columns."""
        cfg, spec = self.config, self.spec
        local_batch = cfg.batch_size // self.mesh.size

        def local(buffer, key):
            key = jax.random.fold_in(key, jax.lax.axis_index("data"))
            return sample_batch(buffer, key, local_batch, cfg.gamma, spec.episode_length, spec.goal_indices)

        return jax.shard_map(local, mesh=self.mesh, in_specs=(BUFFER_SPEC, P()), out_specs=P("data"))(buffer, key)

    def sgd_step(self, state: TrainState, key: jax.Array) -> tuple[TrainState, dict]:
        cfg = self.config
        k_batch, k_actor = jax.random.split(key)
        batch = self.sample(state.buffer, k_batch)
        seen = None
        if self.sensors is not None:
            # The actor learns from what it read at each state; the critic, used only here, from the state.
            state_dim = self.spec.state_dim
            seen = batch.state[:, state_dim:]
            batch = batch.replace(state=batch.state[:, :state_dim])
        params = state.params
        alpha = jnp.exp(state.log_alpha)

        (a_loss, a_metrics), a_grads = jax.value_and_grad(losses.actor_loss, has_aux=True)(
            params["actor"], critic_params(params), self.networks, batch, alpha, k_actor, seen
        )
        updates, actor_opt = self.optimizer.update(a_grads, state.actor_opt, params["actor"])
        actor = optax.apply_updates(params["actor"], updates)

        log_prob = a_metrics.pop("log_prob")
        al_loss, al_grad = jax.value_and_grad(losses.alpha_loss)(
            state.log_alpha, log_prob, batch.weight, self.target_entropy
        )
        updates, alpha_opt = self.optimizer.update(al_grad, state.alpha_opt, state.log_alpha)
        log_alpha = optax.apply_updates(state.log_alpha, updates)

        (c_loss, c_metrics), c_grads = jax.value_and_grad(losses.critic_loss, has_aux=True)(
            critic_params(params), self.networks, batch, cfg.logsumexp_penalty
        )
        updates, critic_opt = self.optimizer.update(c_grads, state.critic_opt, critic_params(params))
        critic = optax.apply_updates(critic_params(params), updates)

        metrics = {"actor_loss": a_loss, "critic_loss": c_loss, "alpha_loss": al_loss, "alpha": jnp.exp(log_alpha)}
        metrics.update(a_metrics)
        metrics.update(c_metrics)
        new_state = state.replace(
            params={"actor": actor, **critic},
            log_alpha=log_alpha,
            actor_opt=actor_opt,
            critic_opt=critic_opt,
            alpha_opt=alpha_opt,
            updates=state.updates + 1,
        )
        return new_state, metrics

    # ---- training step and prefill --------------------------------------------------------
    def collect_and_insert(self, state: TrainState, key: jax.Array) -> tuple[TrainState, dict]:
        vec, readings, rows, episodes = self.collect(
            state.params["actor"], state.env, state.readings, key, self.config.unroll_length
        )
        buffer = buffer_insert(state.buffer, *rows)
        steps = self.config.num_envs * self.config.unroll_length
        return state.replace(env=vec, readings=readings, buffer=buffer, env_steps=state.env_steps + steps), episodes

    def prefill_step(self, state: TrainState) -> TrainState:
        key, k_collect = jax.random.split(state.key)
        return self.collect_and_insert(state, k_collect)[0].replace(key=key)

    def training_step(self, state: TrainState) -> tuple[TrainState, dict]:
        """One training step. Besides the losses, its metrics count the episodes that ended in its
        collection and those their environment ended early: an epoch's mean of the second over its
        mean of the first is the share of training episodes that terminated early."""
        key, k_collect, k_update = jax.random.split(state.key, 3)
        state, episodes = self.collect_and_insert(state, k_collect)
        state, metrics = jax.lax.scan(self.sgd_step, state, jax.random.split(k_update, self.config.updates_per_step))
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics.update(episodes)
        return state.replace(key=key), metrics


def make_teacher(config: TeacherConfig, mesh: Mesh | None = None, runs_axis: str | None = None) -> Teacher:
    mesh = mesh or make_mesh()
    config = config.resolved().validate(mesh.size)
    spec = get_spec(config.env)
    sensors = sensor_model(config)
    networks = make_crl_networks(spec, **config.network_kwargs())
    env = spec.make(backend=config.backend)
    return Teacher(config, spec, env, networks, optax.adam(config.learning_rate), mesh, runs_axis, sensors)


@dataclasses.dataclass
class CompiledTeacher:
    """Jitted, sharded entry points of a teacher."""

    teacher: Teacher
    init: Callable
    prefill_step: Callable
    shardings: TrainState


def compile_teacher(teacher: Teacher) -> CompiledTeacher:
    shape = jax.eval_shape(teacher.init, jax.random.PRNGKey(0))
    shardings = state_shardings(shape, teacher.mesh)
    return CompiledTeacher(
        teacher=teacher,
        init=jax.jit(teacher.init, out_shardings=shardings),
        prefill_step=jax.jit(
            teacher.prefill_step, in_shardings=(shardings,), out_shardings=shardings, donate_argnums=0
        ),
        shardings=shardings,
    )


RUNS_AXIS = "runs"
