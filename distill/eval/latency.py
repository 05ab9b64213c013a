"""Batch-1 inference latency of jitted JAX policies, reported as p50/p99 microseconds.

Timings of ONNX files live in ``export.latency``; the benchmark that loads teacher and student runs
is ``distill latency`` (``distill.app.latency``).
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


SINGLE_THREAD_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def percentiles(times: np.ndarray) -> dict:
    """p50 and p99 in microseconds of per-call times in seconds."""
    return {"p50_us": float(np.percentile(times, 50) * 1e6), "p99_us": float(np.percentile(times, 99) * 1e6),
            "calls": int(times.size)}


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
    ax.barh(names, [r["p99_us"] - r["p50_us"] for r in records], left=[r["p50_us"] for r in records],
            color="tab:orange", alpha=0.6, label="p99")
    ax.set_xscale("log")
    # Bars start at the axis' left edge, so put it well below the fastest p50 or that bar vanishes.
    ax.set_xlim(left=min(r["p50_us"] for r in records) / 3)
    ax.set_xlabel("microseconds per call, batch 1, one thread (log scale)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
