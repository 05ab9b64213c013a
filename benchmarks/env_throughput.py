"""Environment cost, and the floor a policy must clear, for every registered environment.

Steps ``--num-envs`` environments in parallel (vmapped Brax pipelines, each env's own backend) with
uniform random actions under one jitted scan, after compilation, on the current default device.
Then ``--random-episodes`` whole episodes of uniformly random actions give time_at_goal (steps
within the success radius, per episode) and success_any (episodes that ever reach the goal).

    python benchmarks/env_throughput.py --num-envs 256 --json results/env_throughput.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_output import env_names, table_and_json  # noqa: E402


def measure(name: str, num_envs: int, steps: int, random_episodes: int) -> dict:
    import jax

    from distill.envs import get_spec
    from distill.envs.vector import vec_reset, vec_step
    from distill.eval.evaluation import random_policy_baseline

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
    record = {
        "env": name,
        "backend": spec.backend,
        "num_envs": num_envs,
        "steps": steps,
        "env_steps_per_s": num_envs * steps / seconds,
        "compile_and_first_s": compile_s,
        "episode_length": spec.episode_length,
        "platform": jax.devices()[0].platform,
    }
    if random_episodes:
        random = random_policy_baseline(env, spec, random_episodes, seed=0)
        record["random_policy"] = {k: random[k] for k in ("time_at_goal", "success_any", "episodes")}
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default=None, help="Comma-separated names (default: every registered environment).")
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100, help="Timed steps per environment slot.")
    parser.add_argument(
        "--random-episodes",
        type=int,
        default=64,
        help="Episodes of random actions for the random-policy baseline (0 skips it).",
    )
    parser.add_argument("--json", default="results/env_throughput.json")
    args = parser.parse_args()

    names = env_names(args.envs)
    if args.num_envs <= 0 or args.steps <= 0 or args.random_episodes < 0:
        sys.exit("error: --num-envs and --steps must be positive, --random-episodes not negative")
    records = []
    for name in names:
        records.append(measure(name, args.num_envs, args.steps, args.random_episodes))
        print(json.dumps(records[-1]), flush=True)

    def random_cells(r):
        random = r.get("random_policy")
        return [f"{random['time_at_goal']:.1f}", f"{random['success_any']:.2f}"] if random else ["-", "-"]

    table_and_json(
        f"environment steps/s, random actions, {args.num_envs} envs ({records[0]['platform']}); "
        f"random policy over {args.random_episodes} episodes",
        [
            "env",
            "backend",
            "env steps/s",
            "us / env step",
            "compile s",
            "episode",
            "random time_at_goal",
            "random success_any",
        ],
        [
            [
                r["env"],
                r["backend"],
                f"{r['env_steps_per_s']:,.0f}",
                f"{1e6 / r['env_steps_per_s']:.1f}",
                f"{r['compile_and_first_s']:.1f}",
                str(r["episode_length"]),
                *random_cells(r),
            ]
            for r in records
        ],
        records,
        args.json,
    )


if __name__ == "__main__":
    main()
