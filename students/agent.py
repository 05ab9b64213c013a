"""The distiller's jitted math: the student's state, one DAgger round and the function that builds it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from distill.data.replay import (
    Batch,
    TrajectoryBuffer,
    buffer_init,
    buffer_insert,
    sample_batch,
)
from distill.data.sensors import SensorModel, empty_buffer, observe
from distill.envs import EnvSpec, GoalEnv
from distill.envs.vector import VecState, vec_reset, vec_step
from distill.nn.networks import (
    CRLNetworks,
    deterministic_action,
    energy,
    make_crl_networks,
)
from distill.train.sharding import (
    BUFFER_SPEC,
    buffer_shardings,
    env_shardings,
    make_mesh,
    replicated,
)
from students import losses
from students.config import StudentConfig, check_teacher_reads_state, sensor_model
from students.losses import Outputs
from teachers.train import load_teacher


@struct.dataclass
class StudentState:
    params: dict
    opt: Any
    env: VecState
    dataset: TrajectoryBuffer  # states hold concat[state, episode goal], then the sensor vector if any
    readings: jax.Array | None  # [num_envs, L + K, R] sensor readings (None without a sensor model)
    key: jax.Array
    env_steps: jax.Array
    updates: jax.Array
    round: jax.Array


@dataclasses.dataclass(frozen=True)
class Distiller:
    config: StudentConfig
    spec: EnvSpec
    env: GoalEnv
    teacher: CRLNetworks
    teacher_params: dict
    student: CRLNetworks
    optimizer: optax.GradientTransformation
    mesh: Mesh
    sensors: SensorModel | None = None
    """What the student reads instead of the state (None: the state itself)."""

    @property
    def sensor_dim(self) -> int:
        return self.sensors.sensor_dim if self.sensors else 0

    def init(self, key: jax.Array) -> StudentState:
        k_params, k_env, k_state = jax.random.split(key, 3)
        params = self.student.init(k_params)
        cfg, spec = self.config, self.spec
        return StudentState(
            params=params,
            opt=self.optimizer.init(params),
            env=vec_reset(self.env, cfg.num_envs, k_env),
            dataset=buffer_init(cfg.dataset_rows, cfg.num_envs, spec.obs_dim + self.sensor_dim, spec.action_dim),
            readings=empty_buffer(self.sensors, cfg.num_envs),
            key=k_state,
            env_steps=jnp.zeros((), jnp.int32),
            updates=jnp.zeros((), jnp.int32),
            round=jnp.zeros((), jnp.int32),
        )

    def beta(self, round_index: jax.Array) -> jax.Array:
        return self.config.beta_start * jnp.power(self.config.beta_decay, round_index.astype(jnp.float32))

    # ---- collection with the mixed policy ---------------------------------------------------
    def collect(self, params, vec: VecState, readings, key: jax.Array, beta: jax.Array):
        """Steps the environments with the mixed policy: the teacher acts from the true state, the
        student from what its sensors read (a new episode starts a fresh history)."""
        state_dim = self.spec.state_dim

        def one_step(carry, step_key):
            vec, readings = carry
            obs = vec.env.obs
            teacher_mean, _ = self.teacher.policy(self.teacher_params["actor"], obs)
            noise = None
            if self.sensors is not None:
                noise = jax.random.normal(jax.random.fold_in(step_key, 1), obs[:, :state_dim].shape)
            readings, seen = observe(self.sensors, readings, obs, state_dim, noise, vec.steps == 0)
            student_mean, _ = self.student.policy(params["actor"], seen)
            use_teacher = jax.random.uniform(step_key, (obs.shape[0], 1)) < beta
            action = jnp.where(use_teacher, deterministic_action(teacher_mean), deterministic_action(student_mean))
            stored = obs if self.sensors is None else jnp.concatenate([obs, seen[:, : self.sensor_dim]], axis=-1)
            row = (stored, action, vec.traj_id, vec.steps)
            vec = vec_step(self.env, self.spec.episode_length, vec, action)
            return (vec, readings), (row, use_teacher[:, 0])

        (vec, readings), (rows, teacher_acted) = jax.lax.scan(
            one_step, (vec, readings), jax.random.split(key, self.config.unroll_length)
        )
        return vec, readings, rows, teacher_acted

    # ---- batches and labels -----------------------------------------------------------------
    def sample(self, dataset: TrajectoryBuffer, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """(state, action, goal, seen): the goal is the episode's or a hindsight future state; ``seen``
        is what the student read at that state (the state itself without a sensor model)."""
        cfg, spec = self.config, self.spec
        local_batch = cfg.batch_size // self.mesh.size

        def local(dataset, key):
            key = jax.random.fold_in(key, jax.lax.axis_index("data"))
            k_batch, k_goal = jax.random.split(key)
            batch: Batch = sample_batch(
                dataset, k_batch, local_batch, cfg.gamma, spec.episode_length, spec.goal_indices
            )
            state, episode_goal = batch.state[:, : spec.state_dim], batch.state[:, spec.state_dim : spec.obs_dim]
            seen = state if self.sensors is None else batch.state[:, spec.obs_dim :]
            use_episode_goal = (jax.random.uniform(k_goal, (local_batch, 1)) < cfg.env_goal_fraction) | (
                batch.weight[:, None] == 0
            )
            goal = jnp.where(use_episode_goal, episode_goal, batch.goal)
            return state, batch.action, goal, seen

        return jax.shard_map(local, mesh=self.mesh, in_specs=(BUFFER_SPEC, P()), out_specs=P("data"))(dataset, key)

    def label(self, state, action, goal) -> Outputs:
        tp = self.teacher_params
        mean, log_std = self.teacher.policy(tp["actor"], jnp.concatenate([state, goal], -1))
        return Outputs(
            mean=mean,
            log_std=log_std,
            phi=self.teacher.phi(tp["sa_encoder"], state, action),
            psi=self.teacher.psi(tp["goal_encoder"], goal),
        )

    def loss(self, params, state, action, goal, seen, labels: Outputs):
        mean, log_std = self.student.policy(params["actor"], jnp.concatenate([seen, goal], -1))
        teacher_q = None
        if self.config.critic_guidance_weight > 0:
            teacher_phi = self.teacher.phi(self.teacher_params["sa_encoder"], state, jnp.tanh(mean))
            teacher_q = energy(teacher_phi, labels.psi)
        student = Outputs(
            mean=mean,
            log_std=log_std,
            phi=self.student.phi(params["sa_encoder"], state, action),
            psi=self.student.psi(params["goal_encoder"], goal),
            teacher_q=teacher_q,
        )
        return losses.total_loss(student, labels, self.config)

    def sgd_step(self, state: StudentState, key: jax.Array):
        s, a, g, seen = self.sample(state.dataset, key)
        labels = jax.lax.stop_gradient(self.label(s, a, g))
        grads, metrics = jax.grad(self.loss, has_aux=True)(state.params, s, a, g, seen, labels)
        updates, opt = self.optimizer.update(grads, state.opt, state.params)
        return state.replace(
            params=optax.apply_updates(state.params, updates), opt=opt, updates=state.updates + 1
        ), metrics

    def dagger_round(self, state: StudentState) -> tuple[StudentState, dict]:
        key, k_collect, k_update = jax.random.split(state.key, 3)
        beta = self.beta(state.round)
        vec, readings, rows, teacher_acted = self.collect(state.params, state.env, state.readings, k_collect, beta)
        dataset = buffer_insert(state.dataset, *rows)
        steps = self.config.num_envs * self.config.unroll_length
        state = state.replace(env=vec, readings=readings, dataset=dataset, env_steps=state.env_steps + steps)
        state, metrics = jax.lax.scan(
            self.sgd_step, state, jax.random.split(k_update, self.config.updates_per_iteration)
        )
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["beta"] = beta
        metrics["teacher_acted"] = jnp.mean(teacher_acted.astype(jnp.float32))
        return state.replace(key=key, round=state.round + 1), metrics


def state_shardings(shape: StudentState, mesh: Mesh) -> StudentState:
    readings = None if shape.readings is None else NamedSharding(mesh, P("data"))
    return replicated(mesh, shape).replace(
        env=env_shardings(mesh, shape.env), dataset=buffer_shardings(mesh, shape.dataset), readings=readings
    )


def make_distiller(config: StudentConfig, teacher_run: Path, mesh: Mesh | None = None):
    mesh = mesh or make_mesh()
    teacher_config, spec, teacher_networks, teacher_params, teacher_step = load_teacher(teacher_run)
    check_teacher_reads_state(teacher_run, teacher_config.sensors)
    if not config.env or mesh.size > 1:  # student_config resolves and checks a config for one device
        config = config.resolved(
            teacher_config.width, teacher_config.repr_dim, teacher_config.env, teacher_config.backend
        )
        config = config.validate(mesh.size)
    config = dataclasses.replace(config, teacher_run=str(teacher_run))
    sensors = sensor_model(config)
    student = make_crl_networks(spec, **config.network_kwargs())
    env = spec.make(backend=config.backend)
    distiller = Distiller(
        config, spec, env, teacher_networks, teacher_params, student, optax.adam(config.learning_rate), mesh, sensors
    )
    return distiller, teacher_config
