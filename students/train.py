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
import math
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from distill import runs
from distill.checkpoints import RunCheckpoints, abstract_of
from distill.envs import EnvSpec, GoalEnv
from distill.envs.vector import VecState, vec_reset, vec_step
from distill.errors import DistillError
from distill.evaluation import make_evaluator, summarize
from distill.networks import deterministic_action, energy
from distill.progress import TrainingProgress
from distill.replay import Batch, TrajectoryBuffer, buffer_init, buffer_insert, sample_batch
from distill.sharding import BUFFER_SPEC, buffer_shardings, env_shardings, make_mesh, replicated, with_shardings
from students import losses
from students.config import DEPLOYABLE_WIDTH, StudentConfig
from distill.networks import CRLNetworks, load_run_networks, make_crl_networks
from teachers.train import load_teacher


@struct.dataclass
class StudentState:
    params: dict
    opt: Any
    env: VecState
    dataset: TrajectoryBuffer  # states hold concat[state, episode goal]
    key: jax.Array
    env_steps: jax.Array
    updates: jax.Array
    round: jax.Array


@struct.dataclass
class Labels:
    """What the teacher says about a batch: its policy and its representations."""

    mean: jax.Array
    log_std: jax.Array
    phi: jax.Array
    psi: jax.Array


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

    def init(self, key: jax.Array) -> StudentState:
        k_params, k_env, k_state = jax.random.split(key, 3)
        params = self.student.init(k_params)
        cfg, spec = self.config, self.spec
        return StudentState(
            params=params,
            opt=self.optimizer.init(params),
            env=vec_reset(self.env, cfg.num_envs, k_env),
            dataset=buffer_init(cfg.dataset_rows, cfg.num_envs, spec.obs_dim, spec.action_dim),
            key=k_state,
            env_steps=jnp.zeros((), jnp.int32),
            updates=jnp.zeros((), jnp.int32),
            round=jnp.zeros((), jnp.int32),
        )

    def beta(self, round_index: jax.Array) -> jax.Array:
        return self.config.beta_start * jnp.power(self.config.beta_decay, round_index.astype(jnp.float32))

    # ---- collection with the mixed policy ---------------------------------------------------
    def collect(self, params, vec: VecState, key: jax.Array, beta: jax.Array):
        def one_step(vec, step_key):
            obs = vec.env.obs
            teacher_mean, _ = self.teacher.policy(self.teacher_params["actor"], obs)
            student_mean, _ = self.student.policy(params["actor"], obs)
            use_teacher = jax.random.uniform(step_key, (obs.shape[0], 1)) < beta
            action = jnp.where(use_teacher, deterministic_action(teacher_mean), deterministic_action(student_mean))
            row = (obs, action, vec.traj_id, vec.steps)
            return vec_step(self.env, self.spec.episode_length, vec, action), (row, use_teacher[:, 0])

        vec, (rows, teacher_acted) = jax.lax.scan(one_step, vec, jax.random.split(key, self.config.unroll_length))
        return vec, rows, teacher_acted

    # ---- batches and labels -----------------------------------------------------------------
    def sample(self, dataset: TrajectoryBuffer, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(state, action, goal): the goal is the episode's or a hindsight future state."""
        cfg, spec = self.config, self.spec
        local_batch = cfg.batch_size // self.mesh.size

        def local(dataset, key):
            key = jax.random.fold_in(key, jax.lax.axis_index("data"))
            k_batch, k_goal = jax.random.split(key)
            batch: Batch = sample_batch(dataset, k_batch, local_batch, cfg.gamma, spec.episode_length, spec.goal_indices)
            state, episode_goal = batch.state[:, : spec.state_dim], batch.state[:, spec.state_dim :]
            use_episode_goal = (jax.random.uniform(k_goal, (local_batch, 1)) < cfg.env_goal_fraction) | (batch.weight[:, None] == 0)
            goal = jnp.where(use_episode_goal, episode_goal, batch.goal)
            return state, batch.action, goal

        return jax.shard_map(local, mesh=self.mesh, in_specs=(BUFFER_SPEC, P()), out_specs=P("data"))(dataset, key)

    def label(self, state, action, goal) -> Labels:
        tp = self.teacher_params
        mean, log_std = self.teacher.policy(tp["actor"], jnp.concatenate([state, goal], -1))
        return Labels(
            mean=mean,
            log_std=log_std,
            phi=self.teacher.phi(tp["sa_encoder"], state, action),
            psi=self.teacher.psi(tp["goal_encoder"], goal),
        )

    def loss(self, params, state, action, goal, labels: Labels):
        cfg = self.config
        mean, log_std = self.student.policy(params["actor"], jnp.concatenate([state, goal], -1))
        total, metrics = losses.policy_loss(cfg.policy_loss, labels.mean, labels.log_std, mean, log_std)
        phi = self.student.phi(params["sa_encoder"], state, action)
        psi = self.student.psi(params["goal_encoder"], goal)
        if cfg.representation_weight > 0:
            regression = losses.representation_regression(phi, psi, labels.phi, labels.psi)
            total = total + cfg.representation_weight * regression
            metrics["repr/regression"] = regression
        if cfg.relational_weight > 0:
            relational = losses.relational_kl(phi, psi, labels.phi, labels.psi, cfg.temperature)
            total = total + cfg.relational_weight * relational
            metrics["repr/relational_kl"] = relational
        if cfg.critic_guidance_weight > 0:
            teacher_phi = self.teacher.phi(self.teacher_params["sa_encoder"], state, jnp.tanh(mean))
            guidance = losses.critic_guidance(energy(teacher_phi, labels.psi))
            total = total + cfg.critic_guidance_weight * guidance
            metrics["policy/teacher_q"] = -guidance
        metrics["loss"] = total
        return total, metrics

    def sgd_step(self, state: StudentState, key: jax.Array):
        s, a, g = self.sample(state.dataset, key)
        labels = jax.lax.stop_gradient(self.label(s, a, g))
        grads, metrics = jax.grad(self.loss, has_aux=True)(state.params, s, a, g, labels)
        updates, opt = self.optimizer.update(grads, state.opt, state.params)
        return state.replace(params=optax.apply_updates(state.params, updates), opt=opt, updates=state.updates + 1), metrics

    def dagger_round(self, state: StudentState) -> tuple[StudentState, dict]:
        key, k_collect, k_update = jax.random.split(state.key, 3)
        beta = self.beta(state.round)
        vec, rows, teacher_acted = self.collect(state.params, state.env, k_collect, beta)
        dataset = buffer_insert(state.dataset, *rows)
        steps = self.config.num_envs * self.config.unroll_length
        state = state.replace(env=vec, dataset=dataset, env_steps=state.env_steps + steps)
        state, metrics = jax.lax.scan(self.sgd_step, state, jax.random.split(k_update, self.config.updates_per_iteration))
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["beta"] = beta
        metrics["teacher_acted"] = jnp.mean(teacher_acted.astype(jnp.float32))
        return state.replace(key=key, round=state.round + 1), metrics

    def student_policy(self, actor_params, obs):
        mean, _ = self.student.policy(actor_params, obs)
        return deterministic_action(mean)


def state_shardings(shape: StudentState, mesh: Mesh) -> StudentState:
    return replicated(mesh, shape).replace(env=env_shardings(mesh, shape.env), dataset=buffer_shardings(mesh, shape.dataset))


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
    config = config.resolved(teacher_config.width, teacher_config.repr_dim, teacher_config.env)
    config = dataclasses.replace(config, teacher_run=str(teacher_run)).validate(mesh.size)
    if config.student_width > DEPLOYABLE_WIDTH:
        warnings.warn(f"student width {config.student_width} is wider than is sensible for deployment (> {DEPLOYABLE_WIDTH})")
    student = make_crl_networks(
        spec, actor_depth=config.student_depth, critic_depth=config.student_depth, width=config.student_width,
        repr_dim=config.repr_dim,
    )
    env = spec.make(backend=teacher_config.backend)
    distiller = Distiller(config, spec, env, teacher_networks, teacher_params, student, optax.adam(config.learning_rate), mesh)
    return distiller, teacher_config


def compress(config: StudentConfig, teacher_run: Path, out: Path, resume: bool = False, show_progress: bool = True,
             evaluate_every_round: bool = False) -> dict:
    """Distils the teacher in ``teacher_run`` into a student written to ``out``."""
    teacher_run = Path(teacher_run)
    runs.read_config(teacher_run, kind="teacher")
    out = runs.prepare_out_dir(Path(out), resume)
    if resume:
        recorded = runs.read_config(out, kind="student")
        config = StudentConfig(**recorded["config"])
        teacher_run = Path(config.teacher_run)
    distiller, teacher_config = make_distiller(config, teacher_run)
    config = distiller.config
    if not resume:
        runs.write_config(out, "student", config, {
            "teacher": {"run": str(teacher_run), "config": dataclasses.asdict(teacher_config),
                        "checkpoint_sha256": teacher_checkpoint_hash(teacher_run)},
            "num_devices": distiller.mesh.size,
        })

    shape = jax.eval_shape(distiller.init, jax.random.PRNGKey(0))
    shardings = state_shardings(shape, distiller.mesh)
    scalar_sharding = NamedSharding(distiller.mesh, P())
    init = jax.jit(distiller.init, out_shardings=shardings)
    dagger_round = jax.jit(distiller.dagger_round, in_shardings=(shardings,), out_shardings=(shardings, scalar_sharding), donate_argnums=0)
    evaluate = make_evaluator(distiller.env, distiller.spec, distiller.student_policy, config.eval_episodes)
    eval_key = jax.random.PRNGKey(config.seed + 1_000_003)
    checkpoints = RunCheckpoints(out, keep=config.keep_checkpoints)
    rounds_per_epoch = math.ceil(config.iterations / config.num_evals)
    per_round = config.num_envs * config.unroll_length
    try:
        if resume:
            if checkpoints.latest_step() is None:
                raise DistillError(f"cannot resume: {out} has no checkpoint yet")
            abstract = with_shardings(abstract_of(shape), shardings)
            start_epoch, state = checkpoints.restore_state(abstract)
            runs.truncate_metrics(out, start_epoch)
        else:
            start_epoch, state = 0, init(jax.random.PRNGKey(config.seed))
        records = runs.read_metrics(out)
        latest = records[-1] if records else None
        epochs = math.ceil(config.iterations / rounds_per_epoch)
        progress = TrainingProgress(config.iterations * per_round, f"student {config.env} d{config.student_depth}", show_progress)
        t_start = time.perf_counter()
        with progress:
            progress.advance_to(int(state.env_steps), latest)
            for epoch in range(start_epoch + 1, epochs + 1):
                t0 = time.perf_counter()
                rounds = min(rounds_per_epoch, config.iterations - int(state.round))
                round_metrics = []
                for _ in range(rounds):
                    state, metrics = dagger_round(state)
                    metrics = jax.device_get(metrics)
                    if not all(np.isfinite(v) for v in metrics.values()):
                        raise DistillError(f"distillation diverged: non-finite loss in round {int(state.round)}; last good checkpoint kept in {out}/checkpoints")
                    round_metrics.append(metrics)
                    progress.advance_to(int(state.env_steps), latest)
                evaluation = summarize(evaluate(state.params["actor"], eval_key))
                record = {
                    "epoch": epoch, "round": int(state.round), "env_steps": int(state.env_steps),
                    "sgd_updates": int(state.updates), "epoch_seconds": time.perf_counter() - t0,
                    "steps_per_s": rounds * per_round / max(time.perf_counter() - t0, 1e-9),
                    **{k: float(np.mean([m[k] for m in round_metrics])) for k in round_metrics[0]},
                    **evaluation,
                }
                runs.append_metrics(out, record)
                records.append(record)
                latest = record
                checkpoints.save(epoch, state, state.params, record["time_at_goal"])
                runs.plot_learning_curve(out, records, f"student (depth {config.student_depth}) of a depth-{teacher_config.critic_depth} teacher on {config.env}")
                progress.advance_to(int(state.env_steps), latest)
        latest = dict(latest)
        latest["compress_seconds"] = time.perf_counter() - t_start
    finally:
        checkpoints.close()
    return latest


def load_student(run: Path, which: str = "best"):
    """Rebuilds a student's networks and parameters: (config, spec, networks, params, step)."""
    return load_run_networks(
        run, "student", StudentConfig, which,
        lambda c: dict(actor_depth=c.student_depth, critic_depth=c.student_depth, width=c.student_width, repr_dim=c.repr_dim),
    )
