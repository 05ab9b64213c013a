"""Seeds in one program against seeds one after another: the teacher's training step in the engine's
device loop, as a solo run has it and as ``train-teacher --seeds`` stacks it (one vmapped step).

Every variant is compiled first, then the variants are timed in interleaved rounds in one process, so
the ratios hold on a noisy machine. ``stacked 1`` is one seed through the stacked (vmapped) path: it
must not be slower than the solo path. ``stacked N`` reports env steps/s per seed and in total.

    python benchmarks/stacked_seeds.py --env reacher --seeds 1,2 --json results/engine/stacked_seeds.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_output import table_and_json  # noqa: E402


def compiled_variant(env: str, depth: int, seeds: int | None):
    """(run one tick, env steps per tick per seed) for the solo path (``seeds`` None) or ``seeds`` stacked."""
    import jax

    from distill.train.engine import make_run_steps
    from teachers.agent import RUNS_AXIS, make_teacher
    from teachers.config import teacher_config
    from teachers.train import stacked_teacher_trainable, teacher_trainable

    config = teacher_config(env, critic_depth=depth, actor_depth=depth)
    if seeds is None:
        trainable = teacher_trainable(make_teacher(config))
    else:
        teacher = make_teacher(config, runs_axis=RUNS_AXIS if seeds > 1 else None)
        trainable = stacked_teacher_trainable(teacher, tuple(range(seeds)))
    run_steps = make_run_steps(trainable)
    state = {"value": trainable.init()}

    def tick(steps: int) -> float:
        t0 = time.perf_counter()
        state["value"], metrics = run_steps(state["value"], steps)
        jax.block_until_ready(metrics)
        return time.perf_counter() - t0

    tick(1)  # compile
    resolved = make_teacher(config).config
    return tick, resolved.num_envs * resolved.unroll_length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="reacher")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--seeds", default="1,2", help="Stacked seed counts to time besides the solo path.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="Training steps per timed tick.")
    parser.add_argument("--json", default="results/engine/stacked_seeds.json")
    args = parser.parse_args()

    variants = {"solo": compiled_variant(args.env, args.depth, None)}
    for count in (int(c) for c in args.seeds.split(",")):
        variants[f"stacked {count}"] = compiled_variant(args.env, args.depth, count)
    seconds = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (tick, _) in variants.items():
            seconds[name].append(tick(args.steps))
    records = []
    solo_rate = None
    for name, (_, per_step) in variants.items():
        count = 1 if name == "solo" else int(name.split()[1])
        per_seed = args.steps * per_step / statistics.median(seconds[name])
        solo_rate = solo_rate or per_seed
        records.append(
            {
                "variant": name,
                "seeds": count,
                "env": args.env,
                "depth": args.depth,
                "env_steps_per_s_per_seed": per_seed,
                "env_steps_per_s_total": per_seed * count,
                "total_over_solo": per_seed * count / solo_rate,
                "tick_seconds": seconds[name],
            }
        )
    rows = [
        [
            r["variant"],
            f"{r['env_steps_per_s_per_seed']:,.0f}",
            f"{r['env_steps_per_s_total']:,.0f}",
            f"{r['total_over_solo']:.2f}",
        ]
        for r in records
    ]
    table_and_json(
        f"teacher training steps on {args.env}, depth {args.depth}: solo and stacked seeds (median of "
        f"{args.rounds} interleaved rounds)",
        ["variant", "env steps/s per seed", "total", "total / solo"],
        rows,
        records,
        args.json,
    )


if __name__ == "__main__":
    main()
