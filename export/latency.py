"""Batch-1 latency of exported ONNX files in onnxruntime (one intra-op thread), as p50/p99 microseconds."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from distill.eval.latency import percentiles
from export.onnx_graph import dense_chain_graph
from export.runtime import OnnxPolicy


def onnx_policy_latency(path: Path, calls: int = 5000) -> dict:
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
    return percentiles(times)


def _single_thread_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_session_latency(path: Path, calls: int = 5000) -> dict:
    """Latency of the bare onnxruntime session with IO binding: the floor a C++ controller sees."""
    session = _single_thread_session(path)
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
    return percentiles(times)


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
    session = _single_thread_session(path)
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
    pool = [(rng.standard_normal(reading_dim).astype(np.float32), rng.standard_normal(policy.goal_dim).astype(np.float32))
            for _ in range(64)]
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
    pool = [(rng.standard_normal(policies[0].state_dim).astype(np.float32),
             rng.standard_normal(policies[0].goal_dim).astype(np.float32)) for _ in range(64)]
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


def gemm_chain_onnx(path: Path, width: int, layers: int = 4) -> Path:
    """A graph of only ``layers`` chained [width, width] Gemms: the student's hidden matrix products.

    Its latency is the floor under any width-``width`` depth-4 student in onnxruntime on this CPU: the
    residual block's four Dense layers alone, without the input layer, LayerNorms, swishes or head.
    """
    rng = np.random.default_rng(0)
    dense = [{"kernel": rng.standard_normal((width, width)) / np.sqrt(width), "bias": np.zeros(width)} for _ in range(layers)]
    onnx.save(dense_chain_graph(dense), str(path))
    return path
