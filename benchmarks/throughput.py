"""Training throughput (environment steps per second, SGD included) of teachers and students vs depth.

Two measurements:

- ``--mode run`` (default): whole runs through the public API, ``train_teacher`` and ``compress``, as
  a user gets them (device loops, host round trips, progress); env steps/s is read from each run's
  ``metrics.jsonl`` over the epochs after the first (which compiles). The student at depth d is
  distilled from the teacher at depth d just trained.
- ``--mode step``: the teacher's jitted training step alone, in the engine's device loop, after
  compilation. ``--preset public-cpu`` is the configuration the paper's public code was measured with
  on a 2-core CPU (ant, 32 envs, batch 64, unroll 62, 499 SGD steps per training step).

    python benchmarks/throughput.py --depths 4,16 --json results/throughput.json
    python benchmarks/throughput.py --mode step --preset public-cpu --depths 4
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_output import table_and_json  # noqa: E402

PRESETS = {
    "reacher": dict(env="reacher"),
    "public-cpu": dict(
        env="ant", num_envs=32, batch_size=64, unroll_length=62, updates_per_step=499, replay_rows=1000, prefill_rows=62
    ),
}


def time_teacher_steps(teacher, steps: int) -> tuple[float, float]:
    """(compile and first step, ``steps`` more) seconds of a teacher's training step in the engine's
    device loop, from a prefilled state."""
    import jax

    from distill.train.engine import make_run_steps
    from teachers.train import teacher_trainable

    trainable = teacher_trainable(teacher)
    run_steps = make_run_steps(trainable)
    state = trainable.init()
    t0 = time.perf_counter()
    state, metrics = run_steps(state, 1)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state, metrics = run_steps(state, steps)
    jax.block_until_ready(metrics)
    return compile_s, time.perf_counter() - t0


def measure_step(depth: int, preset: str, steps: int) -> dict:
    import jax

    from teachers.agent import make_teacher
    from teachers.config import teacher_config

    overrides = dict(PRESETS[preset])
    env = overrides.pop("env")
    teacher = make_teacher(teacher_config(env, critic_depth=depth, actor_depth=depth, **overrides))
    config = teacher.config
    compile_s, seconds = time_teacher_steps(teacher, steps)
    return {
        "mode": "step",
        "preset": preset,
        "env": env,
        "depth": depth,
        "devices": len(jax.devices()),
        "platform": jax.devices()[0].platform,
        "num_envs": config.num_envs,
        "batch_size": config.batch_size,
        "updates_per_step": config.updates_per_step,
        "compile_and_first_step_s": compile_s,
        "teacher_env_steps_per_s": steps * config.num_envs * config.unroll_length / seconds,
        "sgd_step_ms": 1000 * seconds / (steps * config.updates_per_step),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    }


def _rate_after_first_epoch(run: Path) -> float:
    """env steps/s over the epochs after the first, counting training and evaluation time alike."""
    from distill.store.runs import read_metrics

    metrics = read_metrics(run)
    later = metrics[1:]
    return (metrics[-1]["env_steps"] - metrics[0]["env_steps"]) / sum(m["epoch_seconds"] for m in later)


def measure_run(depth: int, epochs: int, steps_per_epoch: int, rounds_per_epoch: int) -> dict:
    import jax

    from students.config import StudentConfig
    from students.train import compress
    from teachers.config import teacher_config
    from teachers.train import train_teacher

    tmp = Path(tempfile.mkdtemp(prefix="distill-throughput-"))
    base = teacher_config("reacher", critic_depth=depth, actor_depth=depth)
    per_step = base.num_envs * base.unroll_length
    config = teacher_config(
        "reacher",
        critic_depth=depth,
        actor_depth=depth,
        num_evals=epochs,
        eval_episodes=8,
        total_steps=base.prefill_rows * base.num_envs + epochs * steps_per_epoch * per_step,
    )
    train_teacher(config, tmp / "teacher", show_progress=False)
    student = StudentConfig(
        student_depth=depth, iterations=epochs * rounds_per_epoch, num_evals=epochs, eval_episodes=8
    )
    compress(student, tmp / "teacher", tmp / "student", show_progress=False)
    return {
        "mode": "run",
        "env": "reacher",
        "depth": depth,
        "devices": len(jax.devices()),
        "platform": jax.devices()[0].platform,
        "teacher_env_steps_per_s": _rate_after_first_epoch(tmp / "teacher"),
        "student_env_steps_per_s": _rate_after_first_epoch(tmp / "student"),
        "teacher_updates_per_step": config.resolved().updates_per_step,
        "student_updates_per_round": student.updates_per_iteration,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", default="run", choices=("run", "step"))
    parser.add_argument("--depths", default="4,16")
    parser.add_argument("--preset", default="reacher", choices=sorted(PRESETS), help="--mode step only.")
    parser.add_argument("--steps", type=int, default=3, help="--mode step: timed training steps per depth.")
    parser.add_argument("--epochs", type=int, default=4, help="--mode run: epochs per run (the first is not timed).")
    parser.add_argument("--steps-per-epoch", type=int, default=4, help="--mode run: teacher training steps per epoch.")
    parser.add_argument("--rounds-per-epoch", type=int, default=2, help="--mode run: student DAgger rounds per epoch.")
    parser.add_argument("--json", default="results/throughput.json")
    args = parser.parse_args()

    records = []
    for depth in [int(d) for d in args.depths.split(",")]:
        with contextlib.redirect_stdout(io.StringIO()):
            if args.mode == "step":
                records.append(measure_step(depth, args.preset, args.steps))
            else:
                records.append(measure_run(depth, args.epochs, args.steps_per_epoch, args.rounds_per_epoch))
        print(json.dumps(records[-1]), flush=True)

    columns = ["depth", "teacher env steps/s"] + (
        ["student env steps/s"] if args.mode == "run" else ["ms / SGD step", "compile + first step s"]
    )
    rows = []
    for r in records:
        cells = [str(r["depth"]), f"{r['teacher_env_steps_per_s']:,.0f}"]
        if args.mode == "run":
            cells.append(f"{r['student_env_steps_per_s']:,.0f}")
        else:
            cells += [f"{r['sgd_step_ms']:.1f}", f"{r['compile_and_first_step_s']:.1f}"]
        rows.append(cells + [f"{r['peak_rss_gb']:.2f}"])
    table_and_json(
        f"training throughput ({args.mode}, {records[0]['platform']} x{records[0]['devices']})",
        columns + ["peak RSS GB"],
        rows,
        records,
        args.json,
    )


if __name__ == "__main__":
    main()
