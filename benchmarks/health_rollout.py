"""Random actions on robots with a health condition: how much of an episode is spent fallen or flipped.

Two measurements per environment, both from the same key:

- ``unterminated``: the environment stepped past every termination (as training did before episodes
  ended early): the share of steps with the torso outside its healthy height, the share of episodes
  that ever leave it, and the median first exit step;
- ``wrapper``: the training vector wrapper, which restarts a slot whose episode ends: the share of the
  states it hands to the replay that are unhealthy (0 by construction), how many episodes ended early,
  and the mean length of each slot's first episode.

Run on an older checkout (without ``healthy_z``) the first part gives the figures from before early
termination existed; pass ``--healthy`` there.

    python benchmarks/health_rollout.py --envs ant_hardest_maze,humanoid --episodes 64 --steps 1000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_output import env_names, table_and_json  # noqa: E402


def measure(name: str, episodes: int, steps: int, healthy: tuple[float, float] | None) -> dict:
    import jax
    import numpy as np

    from distill.envs import get_spec

    spec = get_spec(name)
    env = spec.make()
    low, high = healthy or env.healthy_z

    def actions(key):
        return jax.random.uniform(key, (episodes, spec.action_dim), minval=-1.0, maxval=1.0)

    @jax.jit
    def unterminated(key):
        k_reset, k_act = jax.random.split(key)
        state = jax.vmap(env.reset)(jax.random.split(k_reset, episodes))

        def step(state, k):
            state = jax.vmap(env.step)(state, actions(k))
            return state, state.pipeline_state.q[:, 2]

        return jax.lax.scan(step, state, jax.random.split(k_act, steps))[1]

    t0 = time.perf_counter()
    z = np.asarray(jax.device_get(unterminated(jax.random.PRNGKey(0))))
    unhealthy = (z < low) | (z > high)
    first = np.where(unhealthy.any(0), unhealthy.argmax(0) + 1, steps)
    record = {
        "env": name,
        "episodes": episodes,
        "steps": steps,
        "healthy_z": [low, high],
        "unterminated_unhealthy_steps": float(unhealthy.mean()),
        "unterminated_episodes_leaving": float(unhealthy.any(0).mean()),
        "unterminated_median_first_exit": float(np.median(first)),
        "min_torso_z": float(z.min()),
    }
    if healthy is None:
        from distill.envs.vector import episode_ends, vec_reset, vec_step

        @jax.jit
        def wrapped(key):
            k_reset, k_act = jax.random.split(key)
            vec = vec_reset(env, episodes, k_reset)

            def step(vec, k):
                new = vec_step(env, spec.episode_length, vec, actions(k))
                ended, early = episode_ends(vec, new, spec.episode_length)
                return new, (vec.env.pipeline_state.q[:, 2], ended, early)

            return jax.lax.scan(step, vec, jax.random.split(k_act, steps))[1]

        stored, ended, early = (np.asarray(x) for x in jax.device_get(wrapped(jax.random.PRNGKey(0))))
        first_end = np.where(ended.any(0), ended.argmax(0) + 1, steps)
        record.update(
            wrapper_unhealthy_states=float(((stored < low) | (stored > high)).mean()),
            wrapper_episodes_ended=int(ended.sum()),
            wrapper_ended_early=int(early.sum()),
            wrapper_first_episode_mean_length=float(first_end.mean()),
        )
    record["seconds"] = time.perf_counter() - t0
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default="ant_hardest_maze,humanoid")
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument(
        "--healthy", default=None, help="LOW,HIGH torso heights, for a checkout whose robots declare none."
    )
    parser.add_argument("--json", default="results/faithfulness/health_rollout.json")
    args = parser.parse_args()
    healthy = tuple(float(x) for x in args.healthy.split(",")) if args.healthy else None
    records = [measure(name, args.episodes, args.steps, healthy) for name in env_names(args.envs)]

    def cell(r, key, fmt):
        return format(r[key], fmt) if key in r else "-"

    rows = [
        [
            r["env"],
            cell(r, "unterminated_unhealthy_steps", ".3f"),
            cell(r, "unterminated_episodes_leaving", ".2f"),
            cell(r, "unterminated_median_first_exit", ".0f"),
            cell(r, "wrapper_unhealthy_states", ".4f"),
            f"{r['wrapper_ended_early']}/{r['wrapper_episodes_ended']}" if "wrapper_ended_early" in r else "-",
            cell(r, "wrapper_first_episode_mean_length", ".0f"),
        ]
        for r in records
    ]
    table_and_json(
        f"random actions, {args.episodes} episodes x {args.steps} steps",
        [
            "env",
            "steps unhealthy (no termination)",
            "episodes leaving",
            "median first exit",
            "replay states unhealthy",
            "ended early / ended",
            "first episode length",
        ],
        rows,
        records,
        args.json,
    )


if __name__ == "__main__":
    main()
