"""What a sensor student's history costs at batch 1: ``OnnxPolicy`` of a student with a sensor model
(one reading per call, history stacked inside) against a plain student of the same size.

    python benchmarks/sensor_latency.py --plain plain.onnx --sensed sensed.onnx --json results/sensors/latency.json

Both policies run in one process, one intra-op thread each, in alternating blocks of calls, so that
machine noise falls on both alike. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

BLOCK = 500


def _inputs(policy, rng):
    dim = policy.reading_dim if policy.sensor_model else policy.state_dim
    return rng.normal(size=dim).astype(np.float32), (0.1 * rng.normal(size=policy.goal_dim)).astype(np.float32)


def measure(plain_path: Path, sensed_path: Path, calls: int, seed: int = 0) -> dict:
    from export.latency import percentiles
    from export.runtime import OnnxPolicy

    rng = np.random.default_rng(seed)
    policies = {"plain": OnnxPolicy(plain_path), "sensed": OnnxPolicy(sensed_path)}
    if policies["sensed"].sensor_model is None:
        raise SystemExit(f"error: {sensed_path} has no sensor model")
    inputs = {name: _inputs(p, rng) for name, p in policies.items()}
    times = {name: [] for name in policies}
    for policy in policies.values():
        policy.reset()
    for name, policy in policies.items():  # warm-up
        for _ in range(BLOCK):
            policy(*inputs[name])
    while len(times["plain"]) < calls:
        for name, policy in policies.items():
            x, goal = inputs[name]
            for _ in range(BLOCK):
                t0 = time.perf_counter()
                policy(x, goal)
                times[name].append(time.perf_counter() - t0)
    rows = {name: percentiles(np.asarray(ts)) for name, ts in times.items()}
    sensed = policies["sensed"]
    return {
        "plain": {**rows["plain"], "file": str(plain_path), "input": policies["plain"].state_dim},
        "sensed": {
            **rows["sensed"],
            "file": str(sensed_path),
            "reading": sensed.reading_dim,
            "history": sensed.history,
            "input": sensed.sensor_dim,
        },
        "history_cost_p50_us": rows["sensed"]["p50_us"] - rows["plain"]["p50_us"],
        "history_cost_p99_us": rows["sensed"]["p99_us"] - rows["plain"]["p99_us"],
        "calls": calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plain", type=Path, required=True, help="A student exported without a sensor model.")
    parser.add_argument("--sensed", type=Path, required=True, help="A student of the same size with a sensor model.")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = measure(args.plain, args.sensed, args.calls)
    print("| policy | input | p50 us | p99 us |")
    print("|---|---|---|---|")
    for name in ("plain", "sensed"):
        row = result[name]
        print(f"| {name} | {row['input']} | {row['p50_us']:.2f} | {row['p99_us']:.2f} |")
    print(
        f"history cost: {result['history_cost_p50_us']:+.2f} us at p50, {result['history_cost_p99_us']:+.2f} us at p99"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
