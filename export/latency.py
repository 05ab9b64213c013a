"""Every latency timer, as p50/p99 microseconds of batch-1 calls: jitted JAX policies (one thread when
``SINGLE_THREAD_XLA_FLAGS`` is set before JAX starts), ``OnnxPolicy`` and bare onnxruntime sessions
(one intra-op thread, ``export.runtime.single_thread_session``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import onnx

from export.onnx_graph import dense_chain_graph
from export.runtime import OnnxPolicy, single_thread_session

SINGLE_THREAD_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def percentiles(times: np.ndarray, tail: bool = False) -> dict:
    """p50 and p99 in microseconds of per-call times in seconds; with ``tail`` also p99.9 and the max."""
    result = {
        "p50_us": float(np.percentile(times, 50) * 1e6),
        "p99_us": float(np.percentile(times, 99) * 1e6),
        "calls": int(times.size),
    }
    if tail:
        result.update(p999_us=float(np.percentile(times, 99.9) * 1e6), max_us=float(np.max(times) * 1e6))
    return result


C_HARNESS = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "policy.h"

/* Times CALLS calls of the policy at batch 1, one by one, and writes each one's nanoseconds. */
int main(int argc, char **argv)
{
    long calls = atol(argv[1]), i, warmup = calls / 10 + 100;
    float input[DISTILL_INPUT_DIM], goal[DISTILL_GOAL_DIM], action[DISTILL_ACTION_DIM];
    double *ns = malloc(sizeof(double) * calls), sink = 0.0;
    struct timespec t0, t1;
    FILE *out = fopen(argv[2], "wb");
#ifdef DISTILL_HISTORY
    distill_state state;
    float *reading = input;
    distill_reset(&state);
#endif
    for (i = 0; i < DISTILL_INPUT_DIM; ++i) input[i] = 0.1f * (float)(i % 7) - 0.3f;
    for (i = 0; i < DISTILL_GOAL_DIM; ++i) goal[i] = 0.2f;
    if (!ns || !out) return 2;
    for (i = -warmup; i < calls; ++i) {
        clock_gettime(CLOCK_MONOTONIC, &t0);
#ifdef DISTILL_HISTORY
        distill_step(&state, reading, goal, action);
#else
        distill_act(input, goal, action);
#endif
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (i >= 0) ns[i] = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
        sink += action[0];
        input[0] += 1e-6f;
    }
    fwrite(ns, sizeof(double), (size_t)calls, out);
    fclose(out);
    printf("%g\n", sink);
    return 0;
}
"""


def c_policy_latency(folder: Path, calls: int = 100_000, flags: tuple[str, ...] | None = None) -> dict:
    """The C policy in ``folder`` (``policy.c``/``policy.h``) timed by a C harness: ``calls`` calls at
    batch 1 on one core, each timed with ``CLOCK_MONOTONIC``; p50/p99/p99.9/max in microseconds."""
    import os
    import subprocess
    import tempfile

    from export.c_policy import CFLAGS, build_c_program

    flags = CFLAGS if flags is None else flags
    with tempfile.TemporaryDirectory() as tmp:
        build = Path(tmp)
        binary, times_path = build_c_program(folder, build, "bench", C_HARNESS, flags), build / "times.bin"
        # One core for the harness, set on the running child: a preexec hook would fork this
        # multithreaded process by hand. The harness warms up before it times anything.
        core = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        child = subprocess.Popen([str(binary), str(calls), str(times_path)], stdout=subprocess.DEVNULL)
        if core is not None:
            os.sched_setaffinity(child.pid, {core})
        if child.wait() != 0:
            raise RuntimeError(f"the latency harness failed with status {child.returncode}")
        times = np.fromfile(times_path, dtype=np.float64) / 1e9
    return {**percentiles(times, tail=True), "flags": " ".join(flags), "core": core}


def deployment_latency(onnx_path: Path, c_folder: Path, calls: int = 100_000) -> list[dict]:
    """One student three ways, in one run, at batch 1 on one thread: the C policy (its own harness),
    ``OnnxPolicy`` and a bare onnxruntime session with IO binding; p50/p99/p99.9/max each."""
    return [
        {"model": "student (C, policy.c)", **c_policy_latency(c_folder, calls)},
        {"model": "student (OnnxPolicy)", **onnx_policy_latency(onnx_path, calls, tail=True)},
        {"model": "student (onnxruntime session, IO binding)", **onnx_session_latency(onnx_path, calls, tail=True)},
    ]


def jax_policy_latency(networks, actor_params, obs_dim: int, calls: int = 2000) -> dict:
    """Latency of one jitted deterministic-policy call at batch 1, result fetched to the host."""

    act = jax.jit(networks.act)

    obs = jnp.full((1, obs_dim), 0.1, jnp.float32)
    np.asarray(act(actor_params, obs))
    for _ in range(min(200, calls)):
        np.asarray(act(actor_params, obs))
    times = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        np.asarray(act(actor_params, obs))
        times[i] = time.perf_counter() - t0
    return percentiles(times)


def plot_latency(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    names = [r["model"] for r in records]
    ax.barh(names, [r["p50_us"] for r in records], color="tab:blue", label="p50")
    ax.barh(
        names,
        [r["p99_us"] - r["p50_us"] for r in records],
        left=[r["p50_us"] for r in records],
        color="tab:orange",
        alpha=0.6,
        label="p99",
    )
    ax.set_xscale("log")
    # Bars start at the axis' left edge, so put it well below the fastest p50 or that bar vanishes.
    ax.set_xlim(left=min(r["p50_us"] for r in records) / 3)
    ax.set_xlabel("microseconds per call, batch 1, one thread (log scale)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def onnx_policy_latency(path: Path, calls: int = 5000, tail: bool = False) -> dict:
    """Latency of ``OnnxPolicy`` at batch 1 (one intra-op thread), input checks included; a policy with a
    sensor model gets one reading per call and stacks its history as in a control loop."""
    policy = OnnxPolicy(path)
    policy.reset()
    obs = np.full((policy.reading_dim if policy.sensor_model else policy.state_dim,), 0.1, np.float32)
    goal = np.full((policy.goal_dim,), 0.1, np.float32)
    for _ in range(500):
        policy(obs, goal)
    times = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        policy(obs, goal)
        times[i] = time.perf_counter() - t0
    return percentiles(times, tail)


def onnx_session_latency(path: Path, calls: int = 5000, tail: bool = False) -> dict:
    """Latency of the bare onnxruntime session with IO binding: the floor a C++ controller sees."""
    session = single_thread_session(path)
    binding = session.io_binding()
    for inp in session.get_inputs():
        binding.bind_cpu_input(inp.name, np.full((1, inp.shape[1]), 0.1, np.float32))
    for out in session.get_outputs():
        binding.bind_output(out.name)
    for _ in range(500):
        session.run_with_iobinding(binding)
    times = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        session.run_with_iobinding(binding)
        times[i] = time.perf_counter() - t0
    return percentiles(times, tail)


def policy_vs_bare_session_latency(path: Path, calls: int = 5000, seed: int = 0) -> dict:
    """``OnnxPolicy(obs, goal)`` against a bare IO-bound session on the same file, interleaved call by call.

    The bare session is what a Python caller gets with no checks at all: numpy buffers bound to the
    session once, then per call the observation and goal copied in, ``run_with_iobinding`` and the
    action copied out, written inline in the timing loop (no function call around it). The two are
    timed alternately, and which goes first swaps every call, so drifts of the machine (other jobs,
    frequency, caches) hit both alike. Inputs are redrawn every 64 calls from a normal distribution.
    A policy with a sensor model gets one reading per call and stacks its history; the bare session is
    handed the stacked vector, as a caller that kept the history itself would.
    Returns ``{"policy": {p50_us, p99_us, calls}, "bare": {...}, "p50_ratio": policy / bare}``.
    """
    policy = OnnxPolicy(path)
    policy.reset()
    session = single_thread_session(path)
    first = "sensors" if policy.sensor_model else "obs"
    reading_dim = policy.reading_dim if policy.sensor_model else policy.state_dim
    obs_buffer = np.zeros((1, policy.sensor_dim or policy.state_dim), np.float32)
    goal_buffer = np.zeros((1, policy.goal_dim), np.float32)
    action_buffer = np.zeros((1, policy.action_dim), np.float32)
    binding = session.io_binding()
    for name, buffer in ((first, obs_buffer), ("goal", goal_buffer)):
        binding.bind_input(name, "cpu", 0, np.float32, list(buffer.shape), buffer.ctypes.data)
    binding.bind_output("action", "cpu", 0, np.float32, list(action_buffer.shape), action_buffer.ctypes.data)
    obs_view, goal_view, action_view = obs_buffer[0], goal_buffer[0], action_buffer[0]
    run = session.run_with_iobinding

    rng = np.random.default_rng(seed)
    pool = [
        (rng.standard_normal(reading_dim).astype(np.float32), rng.standard_normal(policy.goal_dim).astype(np.float32))
        for _ in range(64)
    ]
    # What the bare session is handed: for a sensor policy, the history a first reading fills.
    bare_inputs = [np.resize(reading, obs_buffer.shape[1]) for reading, _ in pool]
    warmup = 500
    policy_times, bare_times = np.empty(calls + warmup), np.empty(calls + warmup)
    clock = time.perf_counter
    for i in range(calls + warmup):
        obs, goal = pool[i % 64]
        bare_obs = bare_inputs[i % 64]
        if i & 1:
            t0 = clock()
            policy(obs, goal)
            t1 = clock()
        t2 = clock()
        obs_view[...] = bare_obs
        goal_view[...] = goal
        run(binding)
        action_view.copy()
        t3 = clock()
        if not i & 1:
            t0 = clock()
            policy(obs, goal)
            t1 = clock()
        policy_times[i], bare_times[i] = t1 - t0, t3 - t2
    policy.reset()  # a sensor policy's history is then the one the bare session was handed
    np.testing.assert_allclose(policy(obs, goal), action_view, atol=1e-6)  # both ran the same network
    result = {"policy": percentiles(policy_times[warmup:]), "bare": percentiles(bare_times[warmup:])}
    result["p50_ratio"] = result["policy"]["p50_us"] / result["bare"]["p50_us"]
    return result


def interleaved_policy_latency(paths: Sequence[Path], calls: int = 5000) -> list[dict]:
    """``OnnxPolicy`` latency of several files at batch 1, measured call by call in rotating order.

    Each round calls every policy once, starting one further along each round, so no file always
    runs first (or right after a given other) and the machine's drifts hit all of them alike.
    """
    policies = [OnnxPolicy(p) for p in paths]
    if len({(p.state_dim, p.goal_dim) for p in policies}) != 1:
        raise ValueError("files to compare must read the same observation and goal sizes")
    rng = np.random.default_rng(0)
    pool = [
        (
            rng.standard_normal(policies[0].state_dim).astype(np.float32),
            rng.standard_normal(policies[0].goal_dim).astype(np.float32),
        )
        for _ in range(64)
    ]
    warmup, n = 500, len(policies)
    times = np.empty((n, calls + warmup))
    clock = time.perf_counter
    for i in range(calls + warmup):
        obs, goal = pool[i % 64]
        for k in range(n):
            j = (i + k) % n
            t0 = clock()
            policies[j](obs, goal)
            times[j, i] = clock() - t0
    return [percentiles(t[warmup:]) for t in times]


def policy_and_session_latencies(paths: list[Path], calls: int = 5000, rounds: int = 20) -> list[dict]:
    """Batch-1, one-thread latency of every file, in this process, interleaved.

    Each file gets an ``OnnxPolicy`` (what a controller calls: input checks included) and a bare
    onnxruntime session with IO binding (the floor). After a warm-up, ``rounds`` rounds each time
    ``calls / rounds`` calls of every file in turn (the order rotating every round), so that a change
    in the machine's load during the measurement touches every file alike.
    """
    if calls < rounds:
        raise ValueError(f"need at least {rounds} calls (one per round), got {calls}")
    per_round = calls // rounds
    timers = []
    for path in paths:
        policy = OnnxPolicy(path)
        obs = np.full((policy.state_dim,), 0.1, np.float32)
        goal = np.full((policy.goal_dim,), 0.1, np.float32)
        session = single_thread_session(path)
        binding = session.io_binding()
        bound = {"obs": obs[None].copy(), "goal": goal[None].copy()}  # kept alive while bound
        for name, value in bound.items():
            binding.bind_cpu_input(name, value)
        for output in session.get_outputs():
            binding.bind_output(output.name)
        timers.append(
            (
                (lambda p=policy, o=obs, g=goal: p(o, g)),
                (lambda s=session, b=binding, _keep=bound: s.run_with_iobinding(b)),
            )
        )
    times = [[np.empty(per_round * rounds), np.empty(per_round * rounds)] for _ in paths]
    for policy_call, session_call in timers:
        for _ in range(500):
            policy_call()
            session_call()
    clock = time.perf_counter
    for r in range(rounds):
        for j in range(len(paths)):
            i = (j + r) % len(paths)
            for k, call in enumerate(timers[i]):
                out = times[i][k]
                for c in range(r * per_round, (r + 1) * per_round):
                    t0 = clock()
                    call()
                    out[c] = clock() - t0
    results = []
    for policy_times, session_times in times:
        p, s = percentiles(policy_times), percentiles(session_times)
        results.append(
            {
                "p50_us": p["p50_us"],
                "p99_us": p["p99_us"],
                "session_p50_us": s["p50_us"],
                "session_p99_us": s["p99_us"],
                "calls": p["calls"],
            }
        )
    return results


def gemm_chain_onnx(path: Path, width: int, layers: int = 4) -> Path:
    """A graph of only ``layers`` chained [width, width] Gemms: the student's hidden matrix products.

    Its latency is the floor under any width-``width`` depth-4 student in onnxruntime on this CPU: the
    residual block's four Dense layers alone, without the input layer, LayerNorms, swishes or head.
    """
    rng = np.random.default_rng(0)
    dense = [
        {"kernel": rng.standard_normal((width, width)) / np.sqrt(width), "bias": np.zeros(width)} for _ in range(layers)
    ]
    onnx.save(dense_chain_graph(dense), str(path))
    return path
