"""Batch-1 latency of exported ONNX files in onnxruntime (one intra-op thread), as p50/p99 microseconds."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from distill.latency import percentiles
from export.onnx_graph import dense_chain_graph
from export.runtime import OnnxPolicy


def onnx_policy_latency(path: Path, calls: int = 5000) -> dict:
    """Latency of ``OnnxPolicy`` at batch 1 (one intra-op thread), input checks included."""
    policy = OnnxPolicy(path)
    obs = np.full((policy.state_dim,), 0.1, np.float32)
    goal = np.full((policy.goal_dim,), 0.1, np.float32)
    for _ in range(500):
        policy(obs, goal)
    times = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        policy(obs, goal)
        times[i] = time.perf_counter() - t0
    return percentiles(times)


def onnx_session_latency(path: Path, calls: int = 5000) -> dict:
    """Latency of the bare onnxruntime session with IO binding: the floor a C++ controller sees."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
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


def gemm_chain_onnx(path: Path, width: int, layers: int = 4) -> Path:
    """A graph of only ``layers`` chained [width, width] Gemms: the student's hidden matrix products.

    Its latency is the floor under any width-``width`` depth-4 student in onnxruntime on this CPU: the
    residual block's four Dense layers alone, without the input layer, LayerNorms, swishes or head.
    """
    rng = np.random.default_rng(0)
    dense = [{"kernel": rng.standard_normal((width, width)) / np.sqrt(width), "bias": np.zeros(width)} for _ in range(layers)]
    onnx.save(dense_chain_graph(dense), str(path))
    return path
