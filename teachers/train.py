"""Training a CRL teacher, on the host: the teacher as the engine's trainable (one run, or seeds
stacked in one program), its runs on disk (start, resume, ``--init-from``) and loading a trained one.
The jitted math is in ``teachers.agent``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp

from distill.envs.maze import MazeEnv
from distill.errors import DistillError
from distill.eval.evaluation import evaluation_key, make_evaluator, summarize
from distill.eval.render import write_maze_png
from distill.nn.memory import available_bytes, gigabytes
from distill.store import runs
from distill.store.checkpoints import RunCheckpoints, abstract_of, load_params
from distill.store.loading import load_run_networks
from distill.train import engine
from distill.train.engine import (
    Schedule,
    Trainable,
    is_writer,
    make_schedule,
    member_of,
)
from distill.train.progress import TrainingProgress
from distill.train.sharding import (
    replicated,
    stacked_shardings,
    with_shardings,
)
from teachers.agent import (
    RUNS_AXIS,
    Teacher,
    TrainState,
    compile_teacher,
    make_teacher,
)
from teachers.config import TeacherConfig


def schedule(config: TeacherConfig) -> Schedule:
    """Prefill, then training steps of ``num_envs * unroll_length`` env steps, in ``num_evals`` epochs."""
    per_step = config.num_envs * config.unroll_length
    prefill_steps = config.prefill_steps
    training_steps = max(1, (config.total_steps - prefill_steps * per_step) // per_step)
    return make_schedule(training_steps, config.num_evals, per_step, initial_env_steps=prefill_steps * per_step)


def teacher_trainable(teacher: Teacher, initial_params: dict | None = None) -> Trainable:
    """The teacher as the engine sees it: a training step, a fresh prefilled state and an evaluation.

    ``initial_params``, placed as the state's parameters are (replicated), start the networks in place
    of a random initialisation (``--init-from``)."""
    config = teacher.config
    compiled = compile_teacher(teacher)
    evaluate = make_evaluator(
        teacher.env, teacher.spec, teacher.networks.act, config.eval_episodes, sensors=teacher.sensors
    )
    eval_key = evaluation_key(config.seed)

    def init():
        state = compiled.init(jax.random.PRNGKey(config.seed), initial_params)
        for _ in range(config.prefill_steps):
            state = compiled.prefill_step(state)
        return state

    return Trainable(
        name="teacher",
        step=teacher.training_step,
        init=init,
        shardings=compiled.shardings,
        mesh=teacher.mesh,
        evaluate=lambda state, epoch: summarize(
            evaluate(state.params["actor"], jax.random.fold_in(eval_key, epoch)).success
        ),
        params=lambda state: state.params,
        title=_title(config),
        pictures=lambda state: _maze_top_view(teacher, evaluate, state, eval_key),
    )


def _title(config: TeacherConfig) -> str:
    return f"CRL teacher on {config.env} (critic depth {config.critic_depth}{', sensors' if config.sensors else ''})"


def _maze_top_view(teacher: Teacher, evaluate, state: TrainState, key: jax.Array):
    """In a maze, where the trained policy goes says more than its score: the run's ``maze.png``
    draws the first episodes of an evaluation by the final policy."""
    env, config = teacher.env, teacher.config
    if not isinstance(env, MazeEnv):
        return None
    episodes = jax.device_get(evaluate(state.params["actor"], key))
    title = (
        f"CRL teacher (critic depth {config.critic_depth}) on {config.env}, final policy after "
        f"{int(state.env_steps):,} env steps"
    )
    return lambda out: write_maze_png(env.layout, env.scale, episodes.path, episodes.goal, out / "maze.png", title)


# What must agree between a run and the one it starts from: the parameters' shapes and layout.
# The sensors too: the actor's input is what they read.
INIT_FROM_FIELDS = ("env", "critic_depth", "actor_depth", "width", "repr_dim", "sensors")


def load_init_params(source: Path, teacher: Teacher) -> tuple[dict, dict]:
    """The best parameters of the teacher run ``source`` (packed or not), for a new run of ``teacher``
    to start from, replicated over its mesh as a training state's are; and where they came from.

    Refuses a path that is no teacher run, or a run of another environment or other network sizes."""
    source = Path(source)
    try:
        record = runs.read_config(source)
    except DistillError as err:
        raise DistillError(f"--init-from: {err}") from None
    if record.get("kind") != "teacher":
        raise DistillError(f"--init-from {source} is a {record.get('kind', 'unknown')} run, not a teacher run")
    # A field the recorded config lacks was added later, and that run had its default.
    recorded = {**dataclasses.asdict(TeacherConfig()), **record.get("config", {})}
    config = teacher.config

    def shown(value):
        return "none" if value == "" else value

    differ = [
        f"{name.replace('_', '-')} {shown(getattr(config, name))} here, {shown(recorded.get(name))} there"
        for name in INIT_FROM_FIELDS
        if recorded.get(name) != getattr(config, name)
    ]
    if differ:
        raise DistillError(f"cannot start from {source}: its networks differ from this run's ({'; '.join(differ)})")
    shape = jax.eval_shape(teacher.networks.init, jax.random.PRNGKey(0))
    abstract = with_shardings(abstract_of(shape), replicated(teacher.mesh, shape))
    step, params = load_params(source, abstract, "best")
    source_plan = (
        None
        if runs.packed_record(source)
        else schedule(runs.config_from_record(record, TeacherConfig, source, "teacher"))
    )
    origin = {"run": str(source), **runs.best_checkpoint_info(source, step, source_plan)}
    packed = record.get("packed")
    if isinstance(packed, dict) and packed.get("from"):
        origin["packed_from"] = packed["from"]
    return params, origin


def _has_checkpoint(out: Path) -> bool:
    root = Path(out) / "checkpoints" / "last"
    return root.is_dir() and any(p.name.isdigit() for p in root.iterdir())


def train_teacher(
    config: TeacherConfig | None,
    out: Path,
    resume: bool = False,
    show_progress: bool = True,
    checkpoint_minutes: float = 10.0,
    description: str | None = None,
    init_from: Path | None = None,
) -> dict:
    """Trains a teacher into ``out`` and returns the final evaluation.

    With ``resume`` the run in ``out`` continues from its latest checkpoint (from the beginning if it
    has none yet); ``config`` may then be None (the recorded one) or must equal the recorded one.

    ``init_from`` (a teacher run, packed or not, of the same environment and network sizes) starts a
    new run from that run's best parameters, with a fresh replay buffer, fresh optimiser states and
    alpha; config.json records where they came from. It cannot go with ``resume``: a resumed run
    continues from its own checkpoints (one killed before its first starts again from the same source).
    """
    out = Path(out)
    engine.check_checkpoint_minutes(checkpoint_minutes)
    recorded = runs.recorded_config(out, "teacher", TeacherConfig) if resume else None
    if config is None and recorded is None:
        raise DistillError("a new teacher run needs a config")
    teacher = make_teacher(config or recorded)
    config = teacher.config
    if recorded is not None:
        runs.check_unchanged(out, recorded.resolved(), config)
    initial_params, extra = None, {}
    if init_from is not None:
        if resume:
            raise DistillError(
                "--init-from starts a new run and cannot go with --resume; a run started from "
                "another resumes from its own checkpoints"
            )
        runs.check_out_dir(out, resume=False)
        # Loaded (and so checked) before anything is written.
        initial_params, origin = load_init_params(init_from, teacher)
        extra["init_from"] = origin
    elif resume:
        origin = runs.read_config(out).get("init_from")
        if isinstance(origin, dict) and not _has_checkpoint(out):
            initial_params, _ = load_init_params(Path(origin["run"]), teacher)
    runs.start_run(
        out,
        resume,
        "teacher",
        config,
        {"num_devices": teacher.mesh.size, "num_processes": jax.process_count(), **extra},
    )
    return _train_program(
        teacher_trainable(teacher, initial_params),
        config,
        [out],
        resume,
        show_progress,
        checkpoint_minutes,
        description or f"teacher {config.env} d{config.critic_depth}",
    )[0]


def _train_program(
    trainable: Trainable,
    config: TeacherConfig,
    outs: list[Path],
    resume: bool,
    show_progress: bool,
    checkpoint_minutes: float,
    description: str,
) -> list[dict]:
    """Runs one training program (one teacher, or seeds stacked) with its checkpoints and progress."""
    plan = schedule(config)
    checkpoints = [RunCheckpoints(out, keep=config.keep_checkpoints) for out in outs]
    progress = TrainingProgress(plan.total_env_steps, description, enabled=show_progress and is_writer())
    try:
        with progress:
            return engine.train_members(
                trainable,
                plan,
                outs,
                checkpoints,
                resume=resume,
                checkpoint_minutes=checkpoint_minutes,
                progress_fn=progress.advance_to,
            )
    finally:
        for c in checkpoints:
            c.close()


# ---- several seeds in one program ----------------------------------------------------------------


def stacked_teacher_trainable(teacher: Teacher, seeds: tuple[int, ...]) -> Trainable:
    """Teachers of the given seeds stacked on a leading axis and trained by one vmapped step.

    Each seed keeps its own parameters, optimiser states, environments, replay buffer and keys, drawn
    as its solo run draws them, so it learns what it would alone; a launch-bound GPU then runs N seeds
    in about the time of one. ``teacher`` must be made with ``runs_axis=RUNS_AXIS`` for two seeds or
    more; a stack of one runs the solo step on its only member (on a CPU, vmapping a size-1 axis made
    the step 21% slower through batched matrix products, and it has nothing to batch).
    """
    config = teacher.config
    solo = compile_teacher(teacher)
    shardings = stacked_shardings(solo.shardings)
    keys = jnp.stack([jax.random.PRNGKey(seed) for seed in seeds])
    if len(seeds) == 1:

        def add_axis(tree):
            return jax.tree.map(lambda x: x[None], tree)

        def init_one(keys):
            return add_axis(teacher.init(keys[0]))

        def prefill_one(state):
            return add_axis(teacher.prefill_step(member_of(state, 0)))

        def step(state):
            state, metrics = teacher.training_step(member_of(state, 0))
            return add_axis(state), add_axis(metrics)
    else:
        if teacher.runs_axis != RUNS_AXIS:
            raise ValueError("stacked teachers need make_teacher(..., runs_axis=RUNS_AXIS)")
        init_one = jax.vmap(teacher.init)
        prefill_one = jax.vmap(teacher.prefill_step, axis_name=RUNS_AXIS)
        step = jax.vmap(teacher.training_step, axis_name=RUNS_AXIS)
    init = jax.jit(init_one, out_shardings=shardings)
    prefill = jax.jit(prefill_one, in_shardings=(shardings,), out_shardings=shardings, donate_argnums=0)
    evaluate = make_evaluator(
        teacher.env, teacher.spec, teacher.networks.act, config.eval_episodes, sensors=teacher.sensors
    )
    evaluate_all = jax.jit(jax.vmap(evaluate))
    eval_keys = jnp.stack([evaluation_key(seed) for seed in seeds])

    def init_all():
        state = init(keys)
        for _ in range(config.prefill_steps):
            state = prefill(state)
        return state

    def evaluate_members(state, epoch):
        episodes = evaluate_all(state.params["actor"], jax.vmap(lambda k: jax.random.fold_in(k, epoch))(eval_keys))
        success = jax.device_get(episodes.success)
        return [summarize(success[i]) for i in range(len(seeds))]

    def pictures(state):
        return [_maze_top_view(teacher, evaluate, member_of(state, i), eval_keys[i]) for i in range(len(seeds))]

    return Trainable(
        name="teacher",
        step=step,
        init=init_all,
        shardings=shardings,
        mesh=teacher.mesh,
        evaluate=evaluate_members,
        params=lambda state: state.params,
        title=_title(config),
        pictures=pictures,
        members=len(seeds),
        member_shardings=solo.shardings,
    )


def seed_runs(out: Path, seeds) -> list[Path]:
    """Where ``train-teacher --seeds`` puts each seed's run: ``OUT/seed_S``."""
    return [Path(out) / f"seed_{seed}" for seed in seeds]


def check_seeds_fit(config: TeacherConfig, count: int) -> None:
    """Refuses, before anything is built, ``count`` stacked teachers that the device cannot hold."""
    needed, available = config.training_bytes() * count, available_bytes()
    if count > 1 and needed > available:
        raise DistillError(
            f"{count} seeds in one program at depth {config.critic_depth} (actor {config.actor_depth}, width "
            f"{config.width}) need an estimated {gigabytes(needed)} but {gigabytes(available)} is available; "
            "train fewer seeds at once, or one after another (without --parallel-seeds)"
        )


def train_teachers(
    configs: list[TeacherConfig],
    outs: list[Path],
    resume: bool = False,
    show_progress: bool = True,
    checkpoint_minutes: float = 10.0,
    description: str | None = None,
) -> list[dict]:
    """Trains teachers that differ only in their seed as one program, each into its own run directory
    (an ordinary teacher run: evaluate, compress, export, render, pack and resume read it as any other).

    With ``resume`` every run continues from the newest checkpoint all of them hold.
    """
    outs = [Path(o) for o in outs]
    engine.check_checkpoint_minutes(checkpoint_minutes)
    if not configs or len(configs) != len(outs):
        raise DistillError("stacked teachers need one run directory per seed")
    if resume:
        configs = [runs.recorded_config(o, "teacher", TeacherConfig) if c is None else c for c, o in zip(configs, outs)]
    seeds = tuple(c.seed for c in configs)
    if len(set(seeds)) != len(seeds):
        raise DistillError(f"--seeds lists a seed more than once: {list(seeds)}")
    base = dataclasses.replace(configs[0], seed=0)
    others = [c for c in configs if dataclasses.replace(c, seed=0) != base]
    if others:
        raise DistillError("teachers trained in one program must differ only in their seed")
    teacher = make_teacher(configs[0], runs_axis=RUNS_AXIS if len(seeds) > 1 else None)
    config = teacher.config
    resolved = [dataclasses.replace(config, seed=seed) for seed in seeds]
    if resume:
        for out, c in zip(outs, resolved):
            runs.check_unchanged(out, runs.recorded_config(out, "teacher", TeacherConfig).resolved(), c)
    check_seeds_fit(config, len(seeds))
    for out in outs:  # every directory is checked before any is written
        runs.check_out_dir(out, resume)
    for out, c in zip(outs, resolved):
        runs.start_run(
            out,
            resume,
            "teacher",
            c,
            {"num_devices": teacher.mesh.size, "num_processes": jax.process_count(), "parallel_seeds": list(seeds)},
        )
    return _train_program(
        stacked_teacher_trainable(teacher, seeds),
        config,
        outs,
        resume,
        show_progress,
        checkpoint_minutes,
        description or f"teacher {config.env} d{config.critic_depth} seeds {','.join(map(str, seeds))}",
    )


def load_teacher(run: Path, which: str = "best"):
    """Rebuilds a trained teacher's networks and parameters: (config, spec, networks, params, step). The
    networks' ``sensor_dim`` says whether the actor reads a sensor vector (``teachers.config.sensor_model``)."""
    return load_run_networks(run, "teacher", TeacherConfig, which)


__all__ = [
    "Teacher",
    "TrainState",
    "compile_teacher",
    "load_init_params",
    "load_teacher",
    "make_teacher",
    "seed_runs",
    "stacked_teacher_trainable",
    "train_teacher",
    "train_teachers",
]
