"""The ``distill`` command line: a thin typer layer over the library functions."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Optional

import typer

from distill.app import options as opt
from distill.errors import DistillError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Teacher-student distillation for deep contrastive RL: train, compress, export.",
)


def _quiet_libraries() -> None:
    """Silences import-time chatter of optional backends so that errors and warnings stay one line."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=".*Brax System, piplines and environments.*")
    # Our own warnings (a student too wide to deploy) are one line too.
    warnings.showwarning = lambda message, *rest, **kw: typer.echo(f"warning: {message}", err=True)
    logging.getLogger().setLevel(logging.CRITICAL)
    logging.getLogger("absl").setLevel(logging.CRITICAL)


def flag_names(fn) -> dict[str, str]:
    """Each parameter of a typer command and the flag a user types for it (``which`` -> ``--checkpoint``)."""
    import inspect
    import typing

    hints = typing.get_type_hints(fn, include_extras=True)
    names = {}
    for name, parameter in inspect.signature(fn).parameters.items():
        infos = [parameter.default, *getattr(hints.get(name), "__metadata__", ())]
        # Inside Annotated, typer.Option's first declaration arrives as its ``default``.
        decls = [
            d
            for info in infos
            if hasattr(info, "param_decls")
            for d in (*(info.param_decls or ()), info.default)
            if isinstance(d, str) and d.startswith("--")
        ]
        names[name] = decls[0].split("/")[0] if decls else "--" + name.replace("_", "-")
    return names


def refuse_empty_choices(values: dict, names: dict[str, str]) -> None:
    """An empty or blank text option (``--env ''``) is a mistake, never a request for the default."""
    for name, value in values.items():
        if isinstance(value, str) and not value.strip():
            raise DistillError(f"{names.get(name, name)} must not be empty")


def one_line_errors(fn):
    """User errors become one line on stderr and exit code 2; Ctrl-C exits 130 keeping all files."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _quiet_libraries()
        try:
            refuse_empty_choices(kwargs, flag_names(fn))
            return fn(*args, **kwargs)
        except DistillError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: everything written so far is kept; rerun with --resume to continue", err=True)
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@one_line_errors
def envs(
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    layout: Optional[str] = typer.Option(
        None,
        "--layout",
        metavar="ENV",
        help="Show the named slices of ENV's state (what --sensors keeps, drops and noises).",
    ),
):
    """List the goal-conditioned environments and their dimensions, or one environment's state layout."""
    from distill.app.envs import environment_rows, layout_rows, print_environments, print_layout

    if layout is not None:
        spec, slices = layout_rows(layout)
        if json_out:
            typer.echo(
                json.dumps(
                    {
                        "env": spec.name,
                        "state_dim": spec.state_dim,
                        "goal_indices": list(spec.goal_indices),
                        "slices": slices,
                    },
                    indent=2,
                )
            )
        else:
            print_layout(spec, slices)
        return
    rows = environment_rows()
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
    else:
        print_environments(rows)


@app.command("train-teacher")
@one_line_errors
def train_teacher_cmd(
    out: Path = typer.Option(..., "--out", help="Run directory to create (or to continue with --resume)."),
    env: Optional[str] = typer.Option(None, "--env", help="Environment name (default reacher); see `distill envs`."),
    critic_depth: Optional[int] = typer.Option(None, help="Critic depth, a positive multiple of 4 (default 4)."),
    actor_depth: Optional[int] = typer.Option(None, help="Actor depth, a positive multiple of 4 (default 4)."),
    width: opt.Width = None,
    repr_dim: opt.ReprDim = None,
    num_envs: opt.TeacherNumEnvs = None,
    batch_size: opt.TeacherBatchSize = None,
    total_steps: opt.TotalSteps = None,
    unroll_length: opt.TeacherUnrollLength = None,
    updates_per_step: opt.UpdatesPerStep = None,
    num_evals: opt.NumEvals = None,
    eval_episodes: opt.TeacherEvalEpisodes = None,
    replay_rows: opt.ReplayRows = None,
    prefill_rows: opt.PrefillRows = None,
    remat: opt.Remat = None,
    block_unroll: opt.BlockUnroll = None,
    sensors: Optional[str] = typer.Option(
        None,
        "--sensors",
        metavar="SPEC",
        help="What the actor reads instead of the state, e.g. 'drop=joint_vel,torso_vel;noise=0.02;history=3;latency=1', "
        "or a .toml file with those fields (slices: `distill envs --layout ENV`). The critic, used only in training, "
        "reads the true state. Such a run is CRL from scratch behind a student's sensors, not a teacher to distil "
        "(a teacher labels from the true state).",
    ),
    seed: Optional[int] = typer.Option(None, help="Random seed (default 0)."),
    seeds: Optional[str] = typer.Option(
        None,
        "--seeds",
        help="Train several seeds in one program, e.g. 0,1,2,3: one vmapped step, each seed written to OUT/seed_S as an ordinary run.",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    init_from: Optional[Path] = typer.Option(
        None,
        "--init-from",
        help="Start from this teacher run's best parameters (a packed run, say; same environment and network sizes), with a fresh replay buffer and optimiser.",
    ),
    checkpoint_minutes: opt.CheckpointMinutes = 10.0,
    progress: opt.Progress = True,
    coordinator: Optional[str] = typer.Option(
        None, envvar="JAX_COORDINATOR_ADDRESS", help="Multi-process run: HOST:PORT of process 0."
    ),
    num_processes: Optional[int] = typer.Option(
        None, envvar="JAX_NUM_PROCESSES", help="Multi-process run: how many processes."
    ),
    process_id: Optional[int] = typer.Option(
        None, envvar="JAX_PROCESS_ID", help="Multi-process run: this process's id, 0 to N-1."
    ),
    distributed: bool = typer.Option(
        False, "--distributed", help="Multi-process run on a cluster JAX detects (SLURM, Open MPI, TPU)."
    ),
    coordinator_timeout: int = typer.Option(120, help="Seconds to wait for the other processes before giving up."),
):
    """Train a deep contrastive RL teacher."""
    from distill.train.distributed import initialize

    # Before anything that touches a JAX device, including importing the environments.
    initialize(coordinator, num_processes, process_id, detect=distributed, timeout_s=coordinator_timeout)
    from distill.app.sweep import parse_int_list
    from teachers.config import run_teacher_config
    from teachers.train import seed_runs, train_teacher, train_teachers

    settings = dict(
        critic_depth=critic_depth,
        actor_depth=actor_depth,
        width=width,
        repr_dim=repr_dim,
        num_envs=num_envs,
        batch_size=batch_size,
        total_steps=total_steps,
        unroll_length=unroll_length,
        updates_per_step=updates_per_step,
        num_evals=num_evals,
        eval_episodes=eval_episodes,
        replay_rows=replay_rows,
        prefill_rows=prefill_rows,
        remat=remat,
        block_unroll=block_unroll,
        sensors=sensors,
    )
    if seeds is None:
        config = run_teacher_config(out, resume, env, seed=seed, **settings)
        results = [
            (
                out,
                train_teacher(
                    config,
                    out,
                    resume=resume,
                    show_progress=progress,
                    checkpoint_minutes=checkpoint_minutes,
                    init_from=init_from,
                ),
            )
        ]
    else:
        if seed is not None:
            raise DistillError("give either --seed or --seeds, not both")
        if init_from is not None:
            raise DistillError("--init-from starts one run; give it with --seed, not --seeds")
        seed_list = parse_int_list(seeds, "seeds")
        outs = seed_runs(out, seed_list)
        configs = [run_teacher_config(o, resume, env, seed=s, **settings) for o, s in zip(outs, seed_list)]
        results = list(
            zip(
                outs,
                train_teachers(
                    configs, outs, resume=resume, show_progress=progress, checkpoint_minutes=checkpoint_minutes
                ),
            )
        )
    for run, final in results:
        typer.echo(
            f"teacher trained: time_at_goal {final['time_at_goal']:.1f}/{final['episode_length']}, "
            f"success_any {final['success_any']:.2f} after {final['env_steps']:,} env steps -> {run}"
        )


@app.command()
@one_line_errors
def sweep(
    out: Path = typer.Option(
        ..., "--out", help="Sweep directory: one teacher run per (depth, seed) inside; rerun to continue."
    ),
    env: str = typer.Option(..., "--env", help="Environment name; see `distill envs`."),
    depths: str = typer.Option("4,8,16", help="Comma-separated depths of actor and critic, multiples of 4."),
    seeds: str = typer.Option("0", help="Comma-separated seeds."),
    total_steps: opt.TotalSteps = None,
    width: opt.Width = None,
    repr_dim: opt.ReprDim = None,
    num_envs: opt.TeacherNumEnvs = None,
    batch_size: opt.TeacherBatchSize = None,
    unroll_length: opt.TeacherUnrollLength = None,
    updates_per_step: opt.UpdatesPerStep = None,
    num_evals: opt.NumEvals = None,
    eval_episodes: opt.TeacherEvalEpisodes = None,
    replay_rows: opt.ReplayRows = None,
    prefill_rows: opt.PrefillRows = None,
    remat: opt.Remat = None,
    block_unroll: opt.BlockUnroll = None,
    parallel_seeds: bool = typer.Option(
        False,
        "--parallel-seeds",
        help="Train each depth's seeds in one program (one vmapped step): on a GPU, N seeds in little more than the time of one.",
    ),
    checkpoint_minutes: opt.CheckpointMinutes = 10.0,
    progress: opt.Progress = True,
):
    """Train one teacher per depth and seed, then plot score against depth and all learning curves."""
    from distill.app.sweep import make_plan, run_sweep

    plan = make_plan(
        env,
        depths,
        seeds,
        total_steps=total_steps,
        width=width,
        repr_dim=repr_dim,
        num_envs=num_envs,
        batch_size=batch_size,
        unroll_length=unroll_length,
        updates_per_step=updates_per_step,
        num_evals=num_evals,
        eval_episodes=eval_episodes,
        replay_rows=replay_rows,
        prefill_rows=prefill_rows,
        remat=remat,
        block_unroll=block_unroll,
        parallel_seeds=parallel_seeds,
    )
    summary = run_sweep(plan, out, show_progress=progress, checkpoint_minutes=checkpoint_minutes)
    for d in summary["by_depth"]:
        typer.echo(
            f"depth {d['depth']:>4}: time_at_goal {d['time_at_goal_mean']:.1f} ± {d['time_at_goal_std']:.1f}, "
            f"success_any {d['success_any_mean']:.2f} over {d['seeds']} seed(s)"
        )
    typer.echo(f"wrote {Path(out) / 'sweep.md'}")


@app.command()
@one_line_errors
def frontier(
    teacher_run: opt.TeacherRun,
    out: Path = typer.Option(
        ..., "--out", help="Frontier directory: one student run per (depth, width) inside; rerun to continue."
    ),
    depths: str = typer.Option(
        "0,4,8", help="Comma-separated student depths: 0 (input projection and heads only) or multiples of 4."
    ),
    widths: str = typer.Option("64,128,256", help="Comma-separated student widths."),
    steps: opt.Steps = None,
    iterations: opt.Iterations = None,
    num_envs: opt.StudentNumEnvs = None,
    unroll_length: opt.StudentUnrollLength = None,
    batch_size: opt.StudentBatchSize = None,
    eval_episodes: opt.StudentEvalEpisodes = None,
    seed: opt.StudentSeed = None,
    episodes: int = typer.Option(
        128, "--episodes", help="Closed-loop episodes for the teacher and every ONNX student (the same ones)."
    ),
    eval_seed: int = typer.Option(0, "--eval-seed", help="Seed of those episodes and of the observation noise."),
    obs_noise: float = typer.Option(
        0.05,
        "--obs-noise",
        help="Also report retention with Gaussian noise of this sigma on the observed state (0 skips it).",
    ),
    tolerance: float = typer.Option(
        0.02,
        "--tolerance",
        help="Recommend the fastest student within this much retention of the best (0.02 = 2 points).",
    ),
    latency_calls: int = typer.Option(5000, help="Timed calls per policy, in 20 interleaved rounds."),
    checkpoint_minutes: opt.CheckpointMinutes = 10.0,
    progress: opt.Progress = True,
):
    """Students of several depths and widths: retention against ONNX latency, the Pareto front and a recommendation."""
    from distill.app.frontier import make_plan, recommend, run_frontier

    recommend([], tolerance)  # refuses a tolerance outside [0, 1] before anything runs
    plan = make_plan(
        teacher_run,
        depths,
        widths,
        episodes=episodes,
        eval_seed=eval_seed,
        obs_noise=obs_noise,
        steps=steps,
        iterations=iterations,
        num_envs=num_envs,
        unroll_length=unroll_length,
        batch_size=batch_size,
        eval_episodes=eval_episodes,
        seed=seed,
    )
    summary = run_frontier(
        plan,
        out,
        tolerance=tolerance,
        latency_calls=latency_calls,
        show_progress=progress,
        checkpoint_minutes=checkpoint_minutes,
    )
    for p in summary["points"]:
        retention = "-" if p["retention"] is None else f"{p['retention']:.3f}"
        noisy = "" if p["noisy_retention"] is None else f", noisy {p['noisy_retention']:.3f}"
        typer.echo(
            f"depth {p['depth']:>3} width {p['width']:>4}: retention {retention}{noisy}, "
            f"p50 {p['p50_us']:.1f} us, p99 {p['p99_us']:.1f} us, {p['params']:,} parameters"
        )
    chosen = summary["recommendation"]
    if chosen is not None:
        typer.echo(
            f"recommended: depth {chosen['depth']}, width {chosen['width']} (retention {chosen['retention']:.3f}, "
            f"p50 {chosen['p50_us']:.1f} us): {chosen['command']}"
        )
    typer.echo(f"wrote {Path(out) / 'frontier.md'}")


@app.command()
@one_line_errors
def compress(
    teacher_run: opt.TeacherRun,
    out: Path = typer.Option(..., "--out", help="Student run directory to create (or continue with --resume)."),
    student_depth: Optional[int] = typer.Option(
        None, help="Student depth: a non-negative multiple of 4 (0 = projection and heads only; default 4)."
    ),
    student_width: Optional[int] = typer.Option(None, help="Student width (default: the teacher's)."),
    steps: opt.Steps = None,
    iterations: opt.Iterations = None,
    num_envs: opt.StudentNumEnvs = None,
    unroll_length: opt.StudentUnrollLength = None,
    batch_size: opt.StudentBatchSize = None,
    eval_episodes: opt.StudentEvalEpisodes = None,
    env: Optional[str] = typer.Option(None, "--env", help="Expected environment; must match the teacher's."),
    policy_loss: Optional[str] = typer.Option(
        None, help="'mse' on deterministic actions (default), 'kl' between tanh-Gaussians, or 'both'."
    ),
    policy_weight: Optional[float] = typer.Option(None, help="Weight of the policy term (default 1)."),
    representation_weight: Optional[float] = typer.Option(
        None, help="Weight of direct phi/psi regression (0 = off; default 1)."
    ),
    relational_weight: Optional[float] = typer.Option(
        None, help="Weight of the relational softmax KL over goals (0 = off; default 1)."
    ),
    temperature: Optional[float] = typer.Option(None, help="Temperature tau of the relational softmax (default 1)."),
    critic_guidance_weight: Optional[float] = typer.Option(
        None, help="Weight of -Q_teacher(s, pi_student) in the actor loss (default 0)."
    ),
    sensors: Optional[str] = typer.Option(
        None,
        "--sensors",
        metavar="SPEC",
        help="What the student reads instead of the state, e.g. 'drop=joint_vel,torso_vel;noise=0.02;history=3;latency=1', "
        "or a .toml file with those fields (slices: `distill envs --layout ENV`). The teacher labels from the true state.",
    ),
    dagger: Optional[bool] = typer.Option(
        None, "--dagger/--no-dagger", help="DAgger (student acts; default) or plain cloning on teacher rollouts."
    ),
    seed: opt.StudentSeed = None,
    baseline: bool = typer.Option(
        True, "--baseline/--no-baseline", help="Also train CRL from scratch at the student's size for the report."
    ),
    baseline_run: Optional[Path] = typer.Option(
        None,
        "--baseline-run",
        help="Use this existing teacher run (e.g. a sweep's depth-4 run) as the from-scratch baseline instead of training one.",
    ),
    report_episodes: int = typer.Option(128, help="Deterministic episodes per policy in the final report."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted compression in --out."),
    checkpoint_minutes: opt.CheckpointMinutes = 10.0,
    progress: opt.Progress = True,
):
    """Distil a deep teacher into a shallow student (policy with DAgger, critic representations)."""
    from distill.app.report import compress_and_report
    from students.config import run_student_config

    config = run_student_config(
        out,
        resume,
        teacher_run,
        env=env,
        steps=steps,
        dagger=dagger,
        student_depth=student_depth,
        student_width=student_width,
        iterations=iterations,
        num_envs=num_envs,
        unroll_length=unroll_length,
        batch_size=batch_size,
        eval_episodes=eval_episodes,
        policy_loss=policy_loss,
        policy_weight=policy_weight,
        representation_weight=representation_weight,
        relational_weight=relational_weight,
        temperature=temperature,
        critic_guidance_weight=critic_guidance_weight,
        seed=seed,
        sensors=sensors,
    )
    final, report = compress_and_report(
        config,
        teacher_run,
        out,
        resume=resume,
        report_episodes=report_episodes,
        baseline=baseline,
        show_progress=progress,
        checkpoint_minutes=checkpoint_minutes,
        baseline_run=baseline_run,
    )
    typer.echo(
        f"student trained in {final['compress_seconds']:.0f} s: time_at_goal {report['student']['time_at_goal']:.1f} vs teacher "
        f"{report['teacher']['time_at_goal']:.1f} (retention {report['retention']:.3f}) -> {out}/report.md"
    )


@app.command("export")
@one_line_errors
def export_cmd(
    student_run: Path = typer.Argument(..., help="The student's run directory."),
    out: Path = typer.Option(
        ..., "--out", help="The .onnx file to write (--format c: the folder for policy.h, policy.c and policy.json)."
    ),
    format: str = typer.Option(
        "onnx",
        "--format",
        help="'onnx' (one verified ONNX file) or 'c' (dependency-free C99 files, behind the same parity gate).",
    ),
    critic: bool = typer.Option(False, "--critic", help="Also write <out>.critic.onnx (phi, psi and Q)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (17-20; 17 loads in onnxruntime >= 1.16)."),
    which: opt.Which = "best",
    int8: bool = typer.Option(
        False,
        "--int8",
        help="Write a static int8 quantisation instead, only if it keeps 98% of fp32's closed-loop time_at_goal and is faster at batch 1.",
    ),
    fp16: bool = typer.Option(
        False, "--fp16", help="Write float16 weights instead, under the same conditions as --int8."
    ),
    gate_episodes: int = typer.Option(
        128, "--gate-episodes", help="Closed-loop episodes on which --int8/--fp16 must match fp32."
    ),
):
    """Export a student, parity-gated against the JAX student: one ONNX file, or C99 files for a controller."""
    from export.student import export_student
    from export.variants import describe_gate, precision_from_flags

    if format not in ("onnx", "c"):
        raise DistillError(f"--format must be 'onnx' or 'c', got '{format}'")
    if format == "c":
        from export.c_policy import write_c_policy

        if critic or int8 or fp16:
            raise DistillError("--format c writes the policy alone in float32: leave out --critic, --int8 and --fp16")
        summary = write_c_policy(student_run, out, which=which)
        typer.echo(
            f"wrote {', '.join(summary['files'])} in {out} (max |c - jax| = {summary['max_abs_error']:.1e}; "
            f"policy.c {summary['policy_c_bytes'] / 1e6:.1f} MB; contract {summary['contract_sha256'][:12]})"
        )
        return

    summary = export_student(
        student_run,
        out,
        critic=critic,
        opset=opset,
        which=which,
        precision=precision_from_flags(int8, fp16),
        gate_episodes=gate_episodes,
        say=typer.echo,
    )
    parity = f"max |onnx - jax| = {summary['policy_parity_max_abs_error']:.1e}"
    if "variant_gate" in summary:
        typer.echo(describe_gate(summary["variant_gate"]))
        parity = f"{summary['precision']}, from the fp32 graph with {parity}"
    typer.echo(f"wrote {summary['policy']} ({parity})")
    if critic:
        typer.echo(f"wrote {summary['critic']} (max |onnx - jax| = {summary['critic_parity_max_abs_error']:.1e})")


@app.command()
@one_line_errors
def pack(
    run: Path = typer.Argument(..., help="A teacher or student run directory."),
    out: Path = typer.Option(..., "--out", help="The packed run directory to create (must not exist, or be empty)."),
):
    """Pack a run to travel: config, metrics, pictures and the best parameters, without training state."""
    from distill.app.pack import pack_run

    try:
        summary = pack_run(run, out)
    except KeyboardInterrupt:  # the partial copy is gone, so the usual "rerun with --resume" does not apply
        typer.echo("interrupted: nothing was written", err=True)
        raise typer.Exit(130) from None
    typer.echo(
        f"packed {summary['kind']} {run} (best checkpoint, step {summary['step']}, "
        f"{summary['env_steps']:,} env steps) -> {out}: {summary['bytes'] / 1e6:.1f} MB"
    )


@app.command()
@one_line_errors
def evaluate(
    run: Path = typer.Argument(
        ..., help="A teacher or student run directory, an exported .onnx file, or a C export folder."
    ),
    episodes: int = typer.Option(128, "--episodes", help="Deterministic evaluation episodes."),
    env: Optional[str] = typer.Option(None, "--env", help="Environment (needed only for an .onnx file)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the evaluation episodes."),
    which: opt.Which = "best",
    obs_noise: float = typer.Option(
        0.0,
        "--obs-noise",
        help="Gaussian noise of this sigma on the state the policy observes (not on the goal); seeded by --seed.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Evaluate a policy: time_at_goal and success_any over deterministic episodes."""
    from distill.app.evaluate import evaluate_target

    result = evaluate_target(run, episodes=episodes, env=env, seed=seed, which=which, obs_noise=obs_noise)
    if json_out:
        typer.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        noise = f" with observation noise sigma {result['obs_noise']:g}" if result["obs_noise"] else ""
        if "sensors" in result:
            noise = f" through its sensors ({result['sensors']})"
        typer.echo(
            f"{result['policy']} on {result['env']}{noise}: time_at_goal {result['time_at_goal']:.2f}/{result['episode_length']} "
            f"(std {result['time_at_goal_std']:.2f}), success_any {result['success_any']:.3f} over {result['episodes']} episodes"
        )


@app.command()
@one_line_errors
def render(
    target: Path = typer.Argument(..., help="A teacher or student run directory, or an exported .onnx file."),
    out: Path = typer.Option(..., "--out", help="The .html file to write (Brax's interactive viewer)."),
    env: Optional[str] = typer.Option(
        None, "--env", help="Environment (needed only for an .onnx file that does not name it)."
    ),
    episodes: int = typer.Option(4, "--episodes", help="Deterministic episodes, shown one after the other."),
    seed: int = typer.Option(0, "--seed", help="Seed of the episodes' starts and goals."),
    png: bool = typer.Option(
        False, "--png", help="Also write the maze's top view (walls, start, goals, paths) as <out>.png."
    ),
    which: opt.Which = "best",
):
    """Draw a policy's deterministic episodes: an HTML viewer, and a top view for mazes."""
    from distill.app.render import render_target

    written = render_target(target, out, env=env, episodes=episodes, seed=seed, png=png, which=which)
    for path in written.values():
        typer.echo(f"wrote {path}")


@app.command("critic-map")
@one_line_errors
def critic_map_cmd(
    run: Path = typer.Argument(..., help="A teacher or student run directory on a maze."),
    goal: str = typer.Option(..., "--goal", help="The goal's x,y on the maze floor, e.g. 8,4."),
    out: Path = typer.Option(..., "--out", help="The .png file to write."),
    which: opt.Which = "best",
):
    """Draw the critic's Q(s, pi(s, g), g) over a maze's free floor for one goal."""
    from distill.app.render import critic_map_target

    typer.echo(f"wrote {critic_map_target(run, goal, out, which=which)}")


@app.command()
@one_line_errors
def demo(
    out: Path = typer.Option(
        Path("runs/demo"), "--out", help="Where every stage writes; an interrupted demo continues here."
    ),
    quick: bool = typer.Option(
        False, "--quick", help="A reduced-size pipeline (about a minute) to check the installation."
    ),
    episodes: int = typer.Option(128, "--episodes", help="Evaluation episodes."),
    baseline: bool = typer.Option(
        False, "--baseline/--no-baseline", help="Also train same-size CRL from scratch for the report."
    ),
    seed: int = typer.Option(0, "--seed"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """The whole pipeline on the default environment: teacher -> student -> ONNX -> checks -> latency."""
    from distill.app.demo import print_summary, run_demo

    if episodes <= 0:
        raise DistillError(f"--episodes must be positive, got {episodes}")
    summary = run_demo(
        out,
        quick=quick,
        seed=seed,
        episodes=episodes,
        baseline=baseline,
        show_progress=progress,
        say=lambda text: typer.echo(text, err=True),
    )
    print_summary(summary)
    typer.echo(f"report: {out}/demo_report.md")


@app.command()
@one_line_errors
def latency(
    teacher_run: Optional[Path] = typer.Option(
        None, "--teacher-run", help="A teacher run (default: a random reacher-sized teacher)."
    ),
    student_run: Optional[Path] = typer.Option(
        None, "--student-run", help="A student run (default: a random depth-4 student)."
    ),
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="The student's exported file (default: exported here)."),
    deep_depth: int = typer.Option(1024, "--deep-depth", help="Also time a teacher actor this deep."),
    calls: int = typer.Option(2000, "--calls", help="Timed calls per policy."),
    json_path: Path = typer.Option(
        Path("results/latency.json"), "--json", help="Where the figures (and a PNG beside) go."
    ),
    c_policy: Optional[Path] = typer.Option(
        None,
        "--c-policy",
        help="Also time this C export (with --onnx, of the same student): C harness, OnnxPolicy and a bare session, p50 to max.",
    ),
    deployment_calls: int = typer.Option(100_000, "--deployment-calls", help="Calls per policy in that comparison."),
):
    """Policy latency at batch 1 on one thread: teacher and student in JAX, the student in onnxruntime (and C)."""
    from distill.app.latency import latency_report, print_latency, use_one_thread, write_latency

    if calls <= 0 or deep_depth <= 0 or deep_depth % 4:
        raise DistillError(
            f"--calls must be positive and --deep-depth a positive multiple of 4, got {calls} and {deep_depth}"
        )
    if not use_one_thread():
        typer.echo("note: JAX had already started; its figures use every thread", err=True)
    if c_policy is not None and onnx is None:
        raise DistillError("--c-policy compares the C export with the same student's ONNX file: give --onnx too")
    records = latency_report(teacher_run, student_run, onnx, deep_depth, calls)
    print_latency(records, deep_depth)
    if c_policy is not None:
        from distill.app.latency import print_deployment
        from export.latency import deployment_latency

        deployment = deployment_latency(onnx, c_policy, deployment_calls)
        print_deployment(deployment)
        records += deployment
    path = write_latency(records, json_path)
    typer.echo(f"wrote {path} and {path.with_suffix('.png')}")


@app.command("loop-check")
@one_line_errors
def loop_check_cmd(
    policy: Path = typer.Argument(..., help="An exported .onnx file, or a folder written by `export --format c`."),
    rate: float = typer.Option(1000.0, "--rate", help="Control rate in Hz."),
    seconds: float = typer.Option(10.0, "--seconds", help="How long the loop runs."),
    readings: Optional[Path] = typer.Option(
        None, "--readings", help="Recorded readings (.npy, one row a tick); random ones otherwise."
    ),
    json_out: opt.JsonOut = False,
):
    """Run a policy at a fixed control rate: deadline overruns, jitter p99 and the worst tick."""
    from export.loop_check import loop_check

    result = loop_check(policy, rate, seconds, readings)
    if json_out:
        typer.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    typer.echo(
        f"{result['kind']} policy at {result['rate_hz']:g} Hz ({result['period_us']:.0f} us a tick), "
        f"{result['ticks']:,} ticks on {result['readings']} readings: {result['overruns']} overruns "
        f"({100 * result['overrun_share']:.2f}%), jitter p99 {result['jitter_p99_us']:.1f} us, worst tick "
        f"{result['worst_tick_us']:.0f} us, call p50 {result['call_p50_us']:.1f} us"
    )


@app.command()
@one_line_errors
def doctor(
    lock: Optional[Path] = typer.Option(
        None, help="The lock to compare with (default: constraints.txt of this checkout)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of lines."),
):
    """Python, the key packages, JAX's devices and compile cache; exits 1 where a version differs from the lock."""
    from distill.app.doctor import diagnose, report_lines

    report = diagnose(lock)
    typer.echo(json.dumps(report, indent=2) if json_out else "\n".join(report_lines(report)))
    if report["differences"]:
        raise typer.Exit(1)


def main() -> None:
    # Reuse compiled XLA programs across runs (a deep teacher's training step takes a while to compile).
    cache_home = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(cache_home, "distill", "xla"))
    app()


if __name__ == "__main__":
    main()
