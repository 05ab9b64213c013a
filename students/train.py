"""DAgger distillation of a CRL teacher into a shallow student.

Each round is one jitted function: the environments are stepped with a mix of teacher and student
(the teacher's action is executed with probability beta, which decays every round), the visited
observations are appended to an aggregated dataset, and the student takes SGD steps on batches from
everything aggregated so far. The teacher labels those batches on the fly: its action distribution,
phi(s, a) and psi(g) at exactly the states the student visited, for the episode goal or a hindsight
future state of the same trajectory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from distill import engine, runs
from distill.checkpoints import RunCheckpoints
from distill.engine import Schedule, Trainable, is_writer, make_schedule
from distill.envs import EnvSpec, GoalEnv
from distill.envs.vector import VecState, vec_reset, vec_step
from distill.errors import DistillError
from distill.evaluation import make_evaluator, summarize
from distill.networks import deterministic_action, energy
from distill.progress import TrainingProgress
from distill.replay import Batch, TrajectoryBuffer, buffer_init, buffer_insert, sample_batch
from distill.sensors import SensorModel, empty_buffer, observe
from distill.sharding import BUFFER_SPEC, buffer_shardings, env_shardings, make_mesh, replicated
from students import losses
from students.config import StudentConfig, check_teacher_reads_state, sensor_model
from students.losses import Outputs
from distill.networks import CRLNetworks, load_run_networks, make_crl_networks
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
            one_step, (vec, readings), jax.random.split(key, self.config.unroll_length))
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
            batch: Batch = sample_batch(dataset, k_batch, local_batch, cfg.gamma, spec.episode_length, spec.goal_indices)
            state, episode_goal = batch.state[:, : spec.state_dim], batch.state[:, spec.state_dim : spec.obs_dim]
            seen = state if self.sensors is None else batch.state[:, spec.obs_dim :]
            use_episode_goal = (jax.random.uniform(k_goal, (local_batch, 1)) < cfg.env_goal_fraction) | (batch.weight[:, None] == 0)
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
        return state.replace(params=optax.apply_updates(state.params, updates), opt=opt, updates=state.updates + 1), metrics

    def dagger_round(self, state: StudentState) -> tuple[StudentState, dict]:
        key, k_collect, k_update = jax.random.split(state.key, 3)
        beta = self.beta(state.round)
        vec, readings, rows, teacher_acted = self.collect(state.params, state.env, state.readings, k_collect, beta)
        dataset = buffer_insert(state.dataset, *rows)
        steps = self.config.num_envs * self.config.unroll_length
        state = state.replace(env=vec, readings=readings, dataset=dataset, env_steps=state.env_steps + steps)
        state, metrics = jax.lax.scan(self.sgd_step, state, jax.random.split(k_update, self.config.updates_per_iteration))
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["beta"] = beta
        metrics["teacher_acted"] = jnp.mean(teacher_acted.astype(jnp.float32))
        return state.replace(key=key, round=state.round + 1), metrics

    def student_policy(self, actor_params, obs):
        mean, _ = self.student.policy(actor_params, obs)
        return deterministic_action(mean)


def state_shardings(shape: StudentState, mesh: Mesh) -> StudentState:
    readings = None if shape.readings is None else NamedSharding(mesh, P("data"))
    return replicated(mesh, shape).replace(env=env_shardings(mesh, shape.env), dataset=buffer_shardings(mesh, shape.dataset),
                                           readings=readings)


def teacher_checkpoint_hash(teacher_run: Path) -> str:
    """sha256 over the files of the teacher's best checkpoint, to tie a student to its teacher."""
    digest = hashlib.sha256()
    root = Path(teacher_run) / "checkpoints" / "best"
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def make_distiller(config: StudentConfig, teacher_run: Path, mesh: Mesh | None = None):
    mesh = mesh or make_mesh()
    teacher_config, spec, teacher_networks, teacher_params, teacher_step = load_teacher(teacher_run)
    check_teacher_reads_state(teacher_run, teacher_config.sensors)
    config = config.resolved(teacher_config.width, teacher_config.repr_dim, teacher_config.env, teacher_config.backend)
    config = dataclasses.replace(config, teacher_run=str(teacher_run)).validate(mesh.size)
    sensors = sensor_model(config)
    student = make_crl_networks(
        spec, actor_depth=config.student_depth, critic_depth=config.student_depth, width=config.student_width,
        repr_dim=config.repr_dim, sensor_dim=sensors.sensor_dim if sensors else 0,
    )
    env = spec.make(backend=config.backend)
    distiller = Distiller(config, spec, env, teacher_networks, teacher_params, student, optax.adam(config.learning_rate), mesh,
                          sensors)
    return distiller, teacher_config


def schedule(config: StudentConfig) -> Schedule:
    return make_schedule(config.iterations, config.num_evals, config.num_envs * config.unroll_length)


def student_trainable(distiller: Distiller, title: str) -> Trainable:
    config = distiller.config
    shape = jax.eval_shape(distiller.init, jax.random.PRNGKey(0))
    shardings = state_shardings(shape, distiller.mesh)
    init = jax.jit(distiller.init, out_shardings=shardings)
    evaluate = make_evaluator(distiller.env, distiller.spec, distiller.student_policy, config.eval_episodes,
                              sensors=distiller.sensors)
    eval_key = jax.random.PRNGKey(config.seed + 1_000_003)
    return Trainable(
        name="distillation",
        step=distiller.dagger_round,
        init=lambda: init(jax.random.PRNGKey(config.seed)),
        shardings=shardings,
        mesh=distiller.mesh,
        evaluate=lambda state, epoch: summarize(evaluate(state.params["actor"], eval_key).success),
        params=lambda state: state.params,
        title=title,
        describe=lambda state, rounds_done: {"round": rounds_done},
    )


def compress(config: StudentConfig | None, teacher_run: Path | None, out: Path, resume: bool = False,
             show_progress: bool = True, checkpoint_minutes: float = 10.0, description: str | None = None) -> dict:
    """Distils the teacher in ``teacher_run`` into a student written to ``out``.

    With ``resume`` the run in ``out`` continues from its latest checkpoint (from the beginning if it
    has none yet) with its recorded teacher; ``config`` may then be None or must equal the recorded one.
    ``description`` labels the progress bar (default: the environment and depth).
    """
    out = Path(out)
    engine.check_checkpoint_minutes(checkpoint_minutes)
    recorded = runs.recorded_config(out, "student", StudentConfig) if resume else None
    if config is None and recorded is None:
        raise DistillError("a new student run needs a config")
    config = config or recorded
    teacher_run = Path(recorded.teacher_run if recorded else (teacher_run or config.teacher_run))
    runs.read_config(teacher_run, kind="teacher")
    distiller, teacher_config = make_distiller(config, teacher_run)
    config = distiller.config
    if recorded is not None:
        runs.check_unchanged(out, recorded, config)
    runs.start_run(out, resume, "student", config, {
        "teacher": {"run": str(teacher_run), "config": dataclasses.asdict(teacher_config),
                    "checkpoint_sha256": teacher_checkpoint_hash(teacher_run)},
        "num_devices": distiller.mesh.size,
        "num_processes": jax.process_count(),
    })
    title = f"student (depth {config.student_depth}{', sensors' if config.sensors else ''}) of a depth-{teacher_config.critic_depth} teacher on {config.env}"
    trainable = student_trainable(distiller, title)
    plan = schedule(config)
    checkpoints = RunCheckpoints(out, keep=config.keep_checkpoints)
    progress = TrainingProgress(plan.total_env_steps, description or f"student {config.env} d{config.student_depth}",
                                enabled=show_progress and is_writer())
    t_start = time.perf_counter()
    try:
        with progress:
            latest = engine.train(trainable, plan, out, checkpoints, resume=resume,
                                  checkpoint_minutes=checkpoint_minutes, progress_fn=progress.advance_to)
    finally:
        checkpoints.close()
    return {**latest, "compress_seconds": time.perf_counter() - t_start}


def load_student(run: Path, which: str = "best"):
    """Rebuilds a student's networks and parameters: (config, spec, networks, params, step). The
    networks' ``sensor_dim`` says whether the actor reads a sensor vector (``student_sensors``)."""
    def shape(c: StudentConfig) -> dict:
        sensors = sensor_model(c)
        return dict(actor_depth=c.student_depth, critic_depth=c.student_depth, width=c.student_width, repr_dim=c.repr_dim,
                    sensor_dim=sensors.sensor_dim if sensors else 0)

    return load_run_networks(run, "student", StudentConfig, which, shape)
