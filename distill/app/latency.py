"""``distill latency``: batch-1, single-thread policy latency of teacher and student runs, JAX vs
onnxruntime, in one table (``distill demo`` runs it in a fresh process, JAX limited to one thread)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import onnx

from distill.nn.networks import count_params, make_crl_networks
from export.latency import (
    SINGLE_THREAD_XLA_FLAGS,
    gemm_chain_onnx,
    jax_policy_latency,
    onnx_session_latency,
    plot_latency,
    policy_vs_bare_session_latency,
)
from export.onnx_graph import policy_graph, set_metadata

ONNX_POLICY_ROW = "student (onnxruntime, OnnxPolicy)"
BARE_SESSION_ROW = "student (onnxruntime, bare IO-bound session)"


def latency_report(
    teacher_run: Path | None,
    student_run: Path | None,
    onnx_path: Path | None,
    deep_depth: int = 1024,
    calls: int = 2000,
) -> list[dict]:
    """Teacher (its depth and ``deep_depth``) and student in JAX, and the student in onnxruntime.

    Without runs, randomly initialised reacher-sized networks stand in (latency does not depend on the
    weights). Call with JAX limited to one thread (``SINGLE_THREAD_XLA_FLAGS``) for robot-like numbers.
    """
    records = []

    def add(name, depth, width, params, result):
        records.append({"model": name, "depth": depth, "width": width, "params": params, **result})

    spec, teacher, t_params, t_depth, width = _teacher_for_latency(teacher_run)
    teacher_latency = jax_policy_latency(teacher, t_params["actor"], teacher.policy_input_dim, calls)
    add("teacher (JAX)", t_depth, width, count_params(t_params["actor"]), teacher_latency)

    deep = make_crl_networks(spec, actor_depth=deep_depth, critic_depth=4, width=width)
    deep_actor = jax.jit(lambda k: deep.actor.init(k, jnp.zeros((1, spec.obs_dim)))["params"])(jax.random.PRNGKey(1))
    deep_latency = jax_policy_latency(deep, deep_actor, spec.obs_dim, max(50, calls // 20))
    add(f"teacher depth {deep_depth} (JAX)", deep_depth, width, count_params(deep_actor), deep_latency)

    s_config, student, s_params, s_depth, s_width = _student_for_latency(student_run, spec)
    s_count = count_params(s_params["actor"])
    add(
        "student (JAX)",
        s_depth,
        s_width,
        s_count,
        jax_policy_latency(student, s_params["actor"], student.policy_input_dim, calls),
    )

    with tempfile.TemporaryDirectory() as tmp:
        if onnx_path is None:
            onnx_path = _student_onnx(spec, student, s_params, s_config, Path(tmp) / "student.onnx")
        # OnnxPolicy and the bare IO-bound session run interleaved, so their ratio is not skewed by drift.
        paired = policy_vs_bare_session_latency(onnx_path, calls * 2)
        add(
            ONNX_POLICY_ROW,
            s_depth,
            s_width,
            s_count,
            {**paired["policy"], "p50_ratio_to_bare_session": paired["p50_ratio"]},
        )
        add(BARE_SESSION_ROW, s_depth, s_width, s_count, paired["bare"])
        run_only = onnx_session_latency(onnx_path, calls * 2)
        add("student (onnxruntime, IO binding, run only)", s_depth, s_width, s_count, run_only)
        floor = onnx_session_latency(gemm_chain_onnx(Path(tmp) / "gemm_chain.onnx", s_width), calls * 2)
        add(f"floor: 4 chained {s_width}x{s_width} Gemms (onnxruntime)", 4, s_width, 4 * s_width * (s_width + 1), floor)
    return records


def _teacher_for_latency(teacher_run: Path | None):
    """The run's teacher, or a randomly initialised reacher-sized one: (spec, networks, params, actor
    depth, width)."""
    from distill.envs import get_spec

    if teacher_run is not None:
        from teachers.train import load_teacher

        t_config, spec, teacher, t_params, _ = load_teacher(teacher_run)
        return spec, teacher, t_params, t_config.actor_depth, t_config.width
    spec, depth, width = get_spec("reacher"), 4, 256
    teacher = make_crl_networks(spec, actor_depth=depth, critic_depth=depth, width=width)
    return spec, teacher, teacher.init(jax.random.PRNGKey(0)), depth, width


def _student_for_latency(student_run: Path | None, spec):
    """The run's student, or a randomly initialised depth-4 width-256 one: (config or None, networks,
    params, depth, width)."""
    if student_run is not None:
        from students.train import load_student

        s_config, _, student, s_params, _ = load_student(student_run)
        return s_config, student, s_params, s_config.student_depth, s_config.student_width
    student = make_crl_networks(spec, actor_depth=4, critic_depth=4, width=256)
    return None, student, student.init(jax.random.PRNGKey(2)), 4, 256


def _student_onnx(spec, student, s_params, s_config, path: Path) -> Path:
    """The student's policy as an ONNX file at ``path`` (no parity gate: only its speed is measured)."""
    model = policy_graph(
        jax.device_get(s_params["actor"]),
        state_dim=spec.state_dim,
        goal_dim=spec.goal_dim,
        action_dim=spec.action_dim,
        sensor_dim=student.sensor_dim,
    )
    set_metadata(model, {"env": spec.name})
    if student.sensor_dim:
        from students.config import sensor_model

        set_metadata(model, {"sensor_model": sensor_model(s_config).to_json()})
    onnx.save(model, path)
    return path


def use_one_thread() -> bool:
    """Limits JAX to one thread, as a robot's control loop would be; effective only before JAX has
    started its CPU backend (a fresh ``distill latency`` process). Returns whether it is in force."""
    flags = os.environ.get("XLA_FLAGS", "")
    if SINGLE_THREAD_XLA_FLAGS in flags:
        return True
    import jax._src.xla_bridge as bridge

    if bridge._backends:  # the backend already runs with the flags it started with
        return False
    os.environ["XLA_FLAGS"] = (flags + " " + SINGLE_THREAD_XLA_FLAGS).strip()
    return True


def print_latency(records: list[dict], deep_depth: int) -> None:
    from rich.table import Table

    from distill.app.console import print_table

    table = Table(title="policy latency at batch 1, one thread")
    for col in ("model", "depth", "width", "actor params", "p50 us", "p99 us", "p50 / bare session"):
        table.add_column(col, justify="right")
    for r in records:
        ratio = f"{r['p50_ratio_to_bare_session']:.3f}" if "p50_ratio_to_bare_session" in r else ""
        table.add_row(
            r["model"],
            str(r["depth"]),
            str(r["width"]),
            f"{r['params']:,}",
            f"{r['p50_us']:.1f}",
            f"{r['p99_us']:.1f}",
            ratio,
        )
    print_table(table)
    deep = next(r for r in records if r["depth"] == deep_depth and "teacher" in r["model"])
    onnx_rec = next(r for r in records if r["model"] == ONNX_POLICY_ROW)
    print(f"depth-{deep_depth} teacher (JAX) / student (onnxruntime) p50: {deep['p50_us'] / onnx_rec['p50_us']:.0f}x")
    print(f"OnnxPolicy / bare IO-bound session p50 (interleaved): {onnx_rec['p50_ratio_to_bare_session']:.3f}")


def print_deployment(rows: list[dict]) -> None:
    """The C policy, OnnxPolicy and a bare session on one student: p50, p99, p99.9 and max."""
    from rich.table import Table

    from distill.app.console import print_table

    table = Table(title=f"one student three ways, batch 1, one core ({rows[0]['calls']:,} calls each)")
    for col in ("policy", "p50 us", "p99 us", "p99.9 us", "max us"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["model"], f"{r['p50_us']:.2f}", f"{r['p99_us']:.2f}", f"{r['p999_us']:.2f}", f"{r['max_us']:.0f}"
        )
    print_table(table)


def write_latency(records: list[dict], json_path: Path) -> Path:
    """``json_path`` and the plot beside it (same name, .png)."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(records, indent=2) + "\n")
    plot_latency(records, json_path.with_suffix(".png"))
    return json_path
