"""Environment cost: env steps per second with random actions, for every registered environment.

Steps ``--num-envs`` environments in parallel (vmapped Brax pipelines, each env's own backend) with
uniform random actions under one jitted scan, after compilation, on the current default device.

    python benchmarks/env_throughput.py --num-envs 256 --json results/env_throughput.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_output import table_and_json  # noqa: E402


def measure(name: str, num_envs: int, steps: int) -> dict:
    import jax

    from distill.envs import get_spec
    from distill.envs.vector import vec_reset, vec_step

    spec = get_spec(name)
    env = spec.make()

    @jax.jit
    def rollout(vec, key):
        def one(vec, k):
            action = jax.random.uniform(k, (num_envs, spec.action_dim), minval=-1.0, maxval=1.0)
            return vec_step(env, spec.episode_length, vec, action), None

        return jax.lax.scan(one, vec, jax.random.split(key, steps))[0]

    vec = vec_reset(env, num_envs, jax.random.PRNGKey(0))
    t0 = time.perf_counter()
    vec = jax.block_until_ready(rollout(vec, jax.random.PRNGKey(1)))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(rollout(vec, jax.random.PRNGKey(2)))
    seconds = time.perf_counter() - t0
    return {"env": name, "backend": spec.backend, "num_envs": num_envs, "steps": steps,
            "env_steps_per_s": num_envs * steps / seconds, "compile_and_first_s": compile_s,
            "platform": jax.devices()[0].platform}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default=None, help="Comma-separated names (default: every registered environment).")
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100, help="Timed steps per environment slot.")
    parser.add_argument("--json", default="results/env_throughput.json")
    args = parser.parse_args()

    from distill.envs import REGISTRY

    names = args.envs.split(",") if args.envs else sorted(REGISTRY)
    records = []
    for name in names:
        records.append(measure(name, args.num_envs, args.steps))
        print(json.dumps(records[-1]), flush=True)

    table_and_json(
        f"environment steps/s, random actions, {args.num_envs} envs ({records[0]['platform']})",
        ["env", "backend", "env steps/s", "compile s"],
        [[r["env"], r["backend"], f"{r['env_steps_per_s']:,.0f}", f"{r['compile_and_first_s']:.1f}"] for r in records],
        records, args.json,
    )


if __name__ == "__main__":
    main()
