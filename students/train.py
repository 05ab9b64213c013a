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

import jax

from distill.errors import DistillError
from distill.eval.evaluation import evaluation_key, make_evaluator, summarize
from distill.store import runs
from distill.store.checkpoints import RunCheckpoints
from distill.store.loading import load_run_networks
from distill.train import engine
from distill.train.engine import Schedule, Trainable, is_writer, make_schedule
from distill.train.progress import TrainingProgress
from students.agent import Distiller, make_distiller, state_shardings
from students.config import StudentConfig


def teacher_checkpoint_hash(teacher_run: Path) -> str:
    """sha256 over the files of the teacher's best checkpoint, to tie a student to its teacher."""
    digest = hashlib.sha256()
    root = Path(teacher_run) / "checkpoints" / "best"
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def schedule(config: StudentConfig) -> Schedule:
    return make_schedule(config.iterations, config.num_evals, config.num_envs * config.unroll_length)


def student_trainable(distiller: Distiller, title: str) -> Trainable:
    config = distiller.config
    shape = jax.eval_shape(distiller.init, jax.random.PRNGKey(0))
    shardings = state_shardings(shape, distiller.mesh)
    init = jax.jit(distiller.init, out_shardings=shardings)
    evaluate = make_evaluator(
        distiller.env, distiller.spec, distiller.student.act, config.eval_episodes, sensors=distiller.sensors
    )
    eval_key = evaluation_key(config.seed)
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


def compress(
    config: StudentConfig | None,
    teacher_run: Path | None,
    out: Path,
    resume: bool = False,
    show_progress: bool = True,
    checkpoint_minutes: float = 10.0,
    description: str | None = None,
) -> dict:
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
    distiller, teacher_config = make_distiller(config, teacher_run)
    config = distiller.config
    if recorded is not None:
        runs.check_unchanged(out, recorded, config)
    runs.start_run(
        out,
        resume,
        "student",
        config,
        {
            "teacher": {
                "run": str(teacher_run),
                "config": dataclasses.asdict(teacher_config),
                "checkpoint_sha256": teacher_checkpoint_hash(teacher_run),
            },
            "num_devices": distiller.mesh.size,
            "num_processes": jax.process_count(),
        },
    )
    title = f"student (depth {config.student_depth}{', sensors' if config.sensors else ''}) of a depth-{teacher_config.critic_depth} teacher on {config.env}"
    trainable = student_trainable(distiller, title)
    plan = schedule(config)
    checkpoints = RunCheckpoints(out, keep=config.keep_checkpoints)
    progress = TrainingProgress(
        plan.total_env_steps,
        description or f"student {config.env} d{config.student_depth}",
        enabled=show_progress and is_writer(),
    )
    t_start = time.perf_counter()
    try:
        with progress:
            latest = engine.train(
                trainable,
                plan,
                out,
                checkpoints,
                resume=resume,
                checkpoint_minutes=checkpoint_minutes,
                progress_fn=progress.advance_to,
            )
    finally:
        checkpoints.close()
    return {**latest, "compress_seconds": time.perf_counter() - t_start}


def load_student(run: Path, which: str = "best"):
    """Rebuilds a student's networks and parameters: (config, spec, networks, params, step). The
    networks' ``sensor_dim`` says whether the actor reads a sensor vector (``student_sensors``)."""
    return load_run_networks(run, "student", StudentConfig, which)
