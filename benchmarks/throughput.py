"""Training throughput (environment steps per second, SGD included) of the teacher vs depth.

Measures the real jitted training step (collect, relabel, update) after compilation, on the
current default device(s). ``--preset public-cpu`` is the configuration the paper's public code was
measured with on a 2-core CPU (ant, 32 envs, batch 64, unroll 62, 499 SGD steps per training step),
so that the figures stand beside those.

    python benchmarks/throughput.py --depths 4,16,64 --json results/throughput.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PRESETS = {
    "reacher": dict(env="reacher"),
    "public-cpu": dict(env="ant", num_envs=32, batch_size=64, unroll_length=62, updates_per_step=499,
                       replay_rows=1000, prefill_rows=62),
}


def measure(depth: int, preset: str, steps: int) -> dict:
    import jax

    from teachers.config import teacher_config
    from teachers.train import compile_teacher, make_teacher

    overrides = dict(PRESETS[preset])
    env = overrides.pop("env")
    config = teacher_config(env, critic_depth=depth, actor_depth=depth, **overrides)
    compiled = compile_teacher(make_teacher(config))
    config = compiled.teacher.config
    state = compiled.init(jax.random.PRNGKey(0))
    t0 = time.perf_counter()
    state = compiled.prefill_step(state)
    state, metrics = compiled.training_step(state)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled.training_step(state)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - t0
    env_steps = steps * config.num_envs * config.unroll_length
    return {
        "preset": preset,
        "env": env,
        "depth": depth,
        "devices": len(jax.devices()),
        "platform": jax.devices()[0].platform,
        "num_envs": config.num_envs,
        "batch_size": config.batch_size,
        "updates_per_step": config.updates_per_step,
        "compile_and_first_step_s": compile_s,
        "env_steps_per_s": env_steps / seconds,
        "sgd_step_ms": 1000 * seconds / (steps * config.updates_per_step),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", default="4,16,64")
    parser.add_argument("--preset", default="reacher", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=3, help="Timed training steps per depth.")
    parser.add_argument("--json", default="results/throughput.json")
    args = parser.parse_args()

    records = []
    for depth in [int(d) for d in args.depths.split(",")]:
        with contextlib.redirect_stdout(io.StringIO()):
            records.append(measure(depth, args.preset, args.steps))
        print(json.dumps(records[-1]), flush=True)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"teacher training throughput ({args.preset}, {records[0]['platform']} x{records[0]['devices']})")
    for col in ("depth", "env steps/s", "ms / SGD step", "compile + first step s", "peak RSS GB"):
        table.add_column(col, justify="right")
    for r in records:
        table.add_row(str(r["depth"]), f"{r['env_steps_per_s']:,.0f}", f"{r['sgd_step_ms']:.1f}",
                      f"{r['compile_and_first_step_s']:.1f}", f"{r['peak_rss_gb']:.2f}")
    Console().print(table)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
