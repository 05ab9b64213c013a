"""Batch-1 inference latency of policies: jitted JAX and onnxruntime, reported as p50/p99 microseconds."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from distill.networks import deterministic_action


def _percentiles(times: np.ndarray) -> dict:
    return {"p50_us": float(np.percentile(times, 50) * 1e6), "p99_us": float(np.percentile(times, 99) * 1e6),
            "calls": int(times.size)}


def jax_policy_latency(networks, actor_params, obs_dim: int, calls: int = 2000) -> dict:
    """Latency of one jitted deterministic-policy call at batch 1, result fetched to the host."""

    @jax.jit
    def act(params, obs):
        mean, _ = networks.policy(params, obs)
        return deterministic_action(mean)

    obs = jnp.full((1, obs_dim), 0.1, jnp.float32)
    np.asarray(act(actor_params, obs))
    for _ in range(min(200, calls)):
        np.asarray(act(actor_params, obs))
    times = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        np.asarray(act(actor_params, obs))
        times[i] = time.perf_counter() - t0
    return _percentiles(times)


def onnx_policy_latency(path: Path, calls: int = 5000) -> dict:
    """Latency of ``OnnxPolicy`` at batch 1 (one intra-op thread), input checks included."""
    from export.runtime import OnnxPolicy

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
    return _percentiles(times)


def onnx_session_latency(path: Path, calls: int = 5000) -> dict:
    """Latency of the bare onnxruntime session with IO binding: the floor a C++ controller sees."""
    import onnxruntime as ort

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
    return _percentiles(times)


def gemm_chain_onnx(path: Path, width: int, layers: int = 4) -> Path:
    """A graph of only ``layers`` chained [width, width] Gemms: the student's hidden matrix products.

    Its latency is the floor under any width-``width`` depth-4 student in onnxruntime on this CPU: the
    residual block's four Dense layers alone, without the input layer, LayerNorms, swishes or head.
    """
    import onnx

    from export.onnx_graph import dense_chain_graph

    rng = np.random.default_rng(0)
    dense = [{"kernel": rng.standard_normal((width, width)) / np.sqrt(width), "bias": np.zeros(width)} for _ in range(layers)]
    onnx.save(dense_chain_graph(dense), str(path))
    return path


SINGLE_THREAD_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def latency_report(teacher_run: Path | None, student_run: Path | None, onnx_path: Path | None,
                   deep_depth: int = 1024, calls: int = 2000) -> list[dict]:
    """Teacher (its depth and ``deep_depth``) and student in JAX, and the student in onnxruntime.

    Without runs, randomly initialised reacher-sized networks stand in (latency does not depend on the
    weights). Call with JAX limited to one thread (``SINGLE_THREAD_XLA_FLAGS``) for robot-like numbers.
    """
    import tempfile

    from distill.envs import get_spec
    from distill.networks import count_params
    from distill.networks import make_crl_networks

    records = []

    def add(name, depth, width, params, result):
        records.append({"model": name, "depth": depth, "width": width, "params": params, **result})

    if teacher_run is not None:
        from teachers.train import load_teacher

        t_config, spec, teacher, t_params, _ = load_teacher(teacher_run)
        t_depth, width = t_config.actor_depth, t_config.width
    else:
        spec, t_depth, width = get_spec("reacher"), 4, 256
        teacher = make_crl_networks(spec, actor_depth=t_depth, critic_depth=t_depth, width=width)
        t_params = teacher.init(jax.random.PRNGKey(0))
    add("teacher (JAX)", t_depth, width, count_params(t_params["actor"]),
        jax_policy_latency(teacher, t_params["actor"], spec.obs_dim, calls))

    deep = make_crl_networks(spec, actor_depth=deep_depth, critic_depth=4, width=width)
    deep_actor = jax.jit(lambda k: deep.actor.init(k, jnp.zeros((1, spec.obs_dim)))["params"])(jax.random.PRNGKey(1))
    add(f"teacher depth {deep_depth} (JAX)", deep_depth, width, count_params(deep_actor),
        jax_policy_latency(deep, deep_actor, spec.obs_dim, max(50, calls // 20)))

    if student_run is not None:
        from students.train import load_student

        s_config, _, student, s_params, _ = load_student(student_run)
        s_depth, s_width = s_config.student_depth, s_config.student_width
    else:
        s_depth, s_width = 4, 256
        student = make_crl_networks(spec, actor_depth=s_depth, critic_depth=s_depth, width=s_width)
        s_params = student.init(jax.random.PRNGKey(2))
    add("student (JAX)", s_depth, s_width, count_params(s_params["actor"]),
        jax_policy_latency(student, s_params["actor"], spec.obs_dim, calls))

    if onnx_path is None:
        import onnx

        from export.onnx_graph import policy_graph, set_metadata

        model = policy_graph(jax.device_get(s_params["actor"]), state_dim=spec.state_dim, goal_dim=spec.goal_dim,
                             action_dim=spec.action_dim)
        set_metadata(model, {"env": spec.name})
        onnx_path = Path(tempfile.mkdtemp()) / "student.onnx"
        onnx.save(model, onnx_path)
    add("student (onnxruntime, OnnxPolicy)", s_depth, s_width, count_params(s_params["actor"]),
        onnx_policy_latency(onnx_path, calls * 2))
    add("student (onnxruntime, IO binding)", s_depth, s_width, count_params(s_params["actor"]),
        onnx_session_latency(onnx_path, calls * 2))
    floor = gemm_chain_onnx(Path(tempfile.mkdtemp()) / "gemm_chain.onnx", s_width)
    add(f"floor: 4 chained {s_width}x{s_width} Gemms (onnxruntime)", 4, s_width, 4 * s_width * (s_width + 1),
        onnx_session_latency(floor, calls * 2))
    return records


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


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m distill.latency`` (and benchmarks/latency.py)."""
    import argparse
    import json
    import os

    parser = argparse.ArgumentParser(description="Batch-1, single-thread policy latency: teacher vs student, JAX vs ONNX.")
    parser.add_argument("--teacher-run", type=Path)
    parser.add_argument("--student-run", type=Path)
    parser.add_argument("--onnx", type=Path)
    parser.add_argument("--deep-depth", type=int, default=1024)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=Path("results/latency.json"))
    args = parser.parse_args(argv)
    if SINGLE_THREAD_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
        print("note: set XLA_FLAGS='%s' before starting Python for single-threaded JAX numbers" % SINGLE_THREAD_XLA_FLAGS)
    records = latency_report(args.teacher_run, args.student_run, args.onnx, args.deep_depth, args.calls)
    from rich.console import Console
    from rich.table import Table

    table = Table(title="policy latency at batch 1, one thread")
    for col in ("model", "depth", "width", "actor params", "p50 us", "p99 us"):
        table.add_column(col, justify="right")
    for r in records:
        table.add_row(r["model"], str(r["depth"]), str(r["width"]), f"{r['params']:,}", f"{r['p50_us']:.1f}", f"{r['p99_us']:.1f}")
    Console().print(table)
    deep = next(r for r in records if r["depth"] == args.deep_depth and "teacher" in r["model"])
    onnx_rec = next(r for r in records if "OnnxPolicy" in r["model"])
    print(f"depth-{args.deep_depth} teacher (JAX) / student (onnxruntime) p50: {deep['p50_us'] / onnx_rec['p50_us']:.0f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(records, indent=2) + "\n")
    plot_latency(records, args.json.with_suffix(".png"))
    print(f"wrote {args.json} and {args.json.with_suffix('.png')}")


if __name__ == "__main__":
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        import distill.envs  # noqa: F401  (quiet import of the physics backends)
    main()
