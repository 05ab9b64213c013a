"""``distill demo``: the whole pipeline on the embedded default environment, in one command.

teacher -> depth-4 student (DAgger) -> ONNX export with parity gate -> closed-loop ONNX evaluation
-> latency benchmark -> a short table and ``demo_report.md`` with plots. Every stage writes into its
own folder under --out and is skipped when its result is already there, so an interrupted demo
continues where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from distill.app.evaluate import evaluate_target
from distill.app.kinds import finished
from distill.envs import DEFAULT_ENV
from distill.errors import DistillError
from distill.store import runs

QUICK_TEACHER = dict(
    num_envs=16,
    unroll_length=20,
    batch_size=64,
    updates_per_step=4,
    total_steps=16 * 20 * 8,
    num_evals=2,
    eval_episodes=8,
    replay_rows=200,
    prefill_rows=40,
    width=64,
    repr_dim=16,
)
# The student the reacher frontier recommends (results/frontier/reacher: depth 4, width 128 keeps 0.967
# of the teacher at a third of its latency), half the width of the default teacher.
STUDENT_DEPTH, STUDENT_WIDTH = 4, 128
QUICK_STUDENT_WIDTH = 32
QUICK_STUDENT = dict(
    iterations=2, num_envs=16, unroll_length=20, updates_per_iteration=4, batch_size=64, eval_episodes=8, num_evals=1
)


def _stage(name: str, say) -> float:
    say(f"[demo] {name}")
    return time.perf_counter()


def run_demo(
    out: Path,
    quick: bool = False,
    seed: int = 0,
    episodes: int = 128,
    baseline: bool = False,
    show_progress: bool = True,
    say=print,
) -> dict:
    from distill.app.report import build_report

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DistillError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    episodes = min(episodes, 8) if quick else episodes
    timings = {}

    teacher_dir, student_dir, onnx_path = out / "teacher", out / "student", out / "policy.onnx"
    t0 = _stage("1/5 training the teacher", say)
    _train_teacher(teacher_dir, quick, seed, show_progress)
    timings["teacher_s"] = time.perf_counter() - t0

    width = QUICK_STUDENT_WIDTH if quick else STUDENT_WIDTH
    t0 = _stage(f"2/5 compressing it into a depth-{STUDENT_DEPTH} student of width {width}", say)
    _train_student(teacher_dir, student_dir, width, quick, seed, show_progress)
    report = build_report(student_dir, episodes=episodes, seed=seed, baseline=baseline, show_progress=show_progress)
    timings["compress_s"] = time.perf_counter() - t0

    t0 = _stage(
        "3/5 exporting to ONNX and to C (parity gates: checker, onnxruntime, reference evaluator; C compiler)", say
    )
    from export.c_policy import write_c_policy
    from export.student import export_student

    export = export_student(student_dir, onnx_path, critic=True)
    c_dir = out / "policy_c"
    if not (c_dir / "policy.json").is_file():
        shutil.rmtree(c_dir, ignore_errors=True)  # a C export cut off before its rename leaves nothing to keep
        write_c_policy(student_dir, c_dir)
    timings["export_s"] = time.perf_counter() - t0

    t0 = _stage("4/5 closed-loop evaluation of the ONNX policy in the environment", say)
    from export.closed_loop import evaluate_c

    onnx_eval = evaluate_target(onnx_path, episodes=episodes, env=None, seed=seed)
    jax_eval = evaluate_target(student_dir, episodes=episodes, env=None, seed=seed)
    c_eval = evaluate_c(c_dir, episodes=episodes, seed=seed)
    timings["closed_loop_s"] = time.perf_counter() - t0

    t0 = _stage("5/5 latency at batch 1, one thread", say)
    from export.latency import c_policy_latency

    latency = _latency(teacher_dir, student_dir, onnx_path, out / "latency.json", quick)
    c_latency = c_policy_latency(c_dir, 10_000 if quick else 100_000)
    timings["latency_s"] = time.perf_counter() - t0

    summary = {
        "env": DEFAULT_ENV,
        "episodes": episodes,
        "seed": seed,
        "retention": report["retention"],
        "teacher": report["teacher"],
        "student": report["student"],
        "onnx": {
            **onnx_eval,
            "parity_max_abs_error": export["policy_parity_max_abs_error"],
            "critic_parity_max_abs_error": export.get("critic_parity_max_abs_error"),
        },
        "student_jax_eval": jax_eval,
        "c": {**c_eval, "latency": c_latency, "policy_c_bytes": (c_dir / "policy.c").stat().st_size},
        "compression": _compression(report),
        "latency": latency,
        "timings": timings,
    }
    runs.atomic_write_text(out / "demo.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    _write_report(out, summary)
    return summary


def _train_teacher(teacher_dir: Path, quick: bool, seed: int, show_progress: bool) -> None:
    """The demo's teacher: skipped when finished, resumed when cut off."""
    from teachers.config import teacher_config
    from teachers.train import train_teacher

    if not _finished(teacher_dir):
        config = teacher_config(DEFAULT_ENV, seed=seed, **(QUICK_TEACHER if quick else {}))
        train_teacher(config, teacher_dir, resume=(teacher_dir / "config.json").exists(), show_progress=show_progress)


def _train_student(teacher_dir: Path, student_dir: Path, width: int, quick: bool, seed: int, show_progress: bool):
    """The demo's student: skipped when finished, resumed when cut off."""
    from students.config import StudentConfig
    from students.train import compress

    if not _finished(student_dir):
        config = StudentConfig(
            student_depth=STUDENT_DEPTH, student_width=width, seed=seed, **(QUICK_STUDENT if quick else {})
        )
        resume = (student_dir / "config.json").exists()
        compress(config, teacher_dir, student_dir, resume=resume, show_progress=show_progress)


def _compression(report: dict) -> dict:
    """Parameters of teacher and student, all three networks and the deployed actor alone."""
    teacher, student = report["teacher"]["params"], report["student"]["params"]
    total_t, total_s = sum(teacher.values()), sum(student.values())
    return {
        "teacher_params": total_t,
        "student_params": total_s,
        "ratio": total_t / total_s,
        "teacher_actor_params": teacher["actor"],
        "student_actor_params": student["actor"],
        "actor_ratio": teacher["actor"] / student["actor"],
        "teacher_width": report["teacher"]["width"],
        "student_width": report["student"]["width"],
    }


def _finished(run: Path) -> bool:
    """A run of the demo that has finished (a folder that holds none yet is not)."""
    return (run / "config.json").is_file() and finished(run)


def _latency(teacher_dir: Path, student_dir: Path, onnx_path: Path, json_path: Path, quick: bool) -> list[dict]:
    """Runs the latency benchmark in a fresh process so that JAX is limited to one thread."""
    from export.latency import SINGLE_THREAD_XLA_FLAGS

    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + SINGLE_THREAD_XLA_FLAGS).strip())
    cmd = [
        sys.executable,
        "-m",
        "distill.app.cli",
        "latency",
        "--teacher-run",
        str(teacher_dir),
        "--student-run",
        str(student_dir),
        "--onnx",
        str(onnx_path),
        "--json",
        str(json_path),
    ]
    if quick:
        cmd += ["--calls", "100", "--deep-depth", "64"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise DistillError(f"latency benchmark failed: {tail}")
    return json.loads(json_path.read_text())


def _write_report(out: Path, s: dict) -> None:
    onnx_lat = next(r for r in s["latency"] if "OnnxPolicy" in r["model"])
    student_lat = next(r for r in s["latency"] if r["model"] == "student (JAX)")
    teacher_lat = next(r for r in s["latency"] if r["model"] == "teacher (JAX)")
    deep = max((r for r in s["latency"] if "teacher depth" in r["model"]), key=lambda r: r["depth"])
    rows = [
        (
            "teacher (JAX)",
            s["teacher"]["depth"],
            s["teacher"]["time_at_goal"],
            s["teacher"]["success_any"],
            sum(s["teacher"]["params"].values()),
            teacher_lat,
        ),
        (
            "student (JAX)",
            s["student"]["depth"],
            s["student_jax_eval"]["time_at_goal"],
            s["student_jax_eval"]["success_any"],
            sum(s["student"]["params"].values()),
            student_lat,
        ),
        (
            "student (ONNX)",
            s["student"]["depth"],
            s["onnx"]["time_at_goal"],
            s["onnx"]["success_any"],
            sum(s["student"]["params"].values()),
            onnx_lat,
        ),
        (
            "student (C)",
            s["student"]["depth"],
            s["c"]["time_at_goal"],
            s["c"]["success_any"],
            sum(s["student"]["params"].values()),
            s["c"]["latency"],
        ),
    ]
    lines = [
        f"# distill demo: {s['env']}",
        "",
        f"{s['episodes']} deterministic evaluation episodes, seed {s['seed']}; latency at batch 1 on one thread.",
        "",
        "| policy | depth | time_at_goal | success_any | parameters | p50 us | p99 us |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, depth, tag, succ, params, lat in rows:
        lines.append(
            f"| {name} | {depth} | {tag:.1f} | {succ:.3f} | {params:,} | {lat['p50_us']:.1f} | {lat['p99_us']:.1f} |"
        )
    lines += [
        f"| teacher at depth {deep['depth']} (JAX, latency only) | {deep['depth']} | - | - | {deep['params']:,} (actor) | {deep['p50_us']:.0f} | {deep['p99_us']:.0f} |",
        "",
        f"- Retention (student / teacher time_at_goal): **{s['retention']:.3f}**",
        f"- Compression: {_compression_text(s['compression'])}",
        f"- ONNX parity: max |onnx - jax| = {s['onnx']['parity_max_abs_error']:.1e} over batch sizes 1, 2, 7, 1024",
        f"- Depth-{deep['depth']} teacher vs ONNX student latency: {deep['p50_us'] / onnx_lat['p50_us']:.0f}x",
        "- Stage times (s): " + ", ".join(f"{k[:-2]} {v:.0f}" for k, v in s["timings"].items()),
        "",
        "## Calling the student from C",
        "",
        f"`policy_c/` holds `policy.h`, `policy.c` ({s['c']['policy_c_bytes'] / 1e3:.0f} kB: the weights as "
        "`static const float` arrays) and `policy.json`, the contract. C99, `<math.h>` and `<string.h>` only, no allocation:",
        "",
        "```c",
        '#include "policy.h"   /* cc -std=c99 -O2 -c policy.c; link with -lm */',
        "",
        "void control_tick(const float *state, const float *goal_xy, float *motor)",
        "{",
        "    /* state: DISTILL_OBS_DIM floats in the order policy.h lists; goal_xy: DISTILL_GOAL_DIM */",
        "    float action[DISTILL_ACTION_DIM];",
        "    int i;",
        "    distill_act(state, goal_xy, action);              /* in [-1, 1], tanh inside */",
        "    for (i = 0; i < DISTILL_ACTION_DIM; ++i) motor[i] = action[i];",
        "}",
        "```",
        "",
        "A student behind sensors keeps its history in a `distill_state`: `distill_reset(&state)` at an episode's "
        "start, then `distill_step(&state, reading, goal, action)` every tick. `distill loop-check policy_c "
        "--rate 1000` runs it at a fixed rate on the robot computer.",
        "",
        "![teacher learning curve](teacher/learning_curve.png)",
        "![student vs teacher](student/report.png)",
        "![latency](latency.png)",
        "",
    ]
    runs.atomic_write_text(out / "demo_report.md", "\n".join(lines))


def _compression_text(c: dict) -> str:
    return (
        f"teacher {c['teacher_params']:,} parameters (width {c['teacher_width']}) -> student {c['student_params']:,} "
        f"(width {c['student_width']}), {c['ratio']:.1f}x fewer; the deployed actor {c['teacher_actor_params']:,} -> "
        f"{c['student_actor_params']:,}, {c['actor_ratio']:.1f}x fewer"
    )


def print_summary(s: dict) -> None:
    from rich.table import Table

    from distill.app.console import print_table

    lat = {r["model"]: r for r in s["latency"]}
    table = Table(title=f"distill demo on {s['env']} ({s['episodes']} episodes)")
    for col in ("policy", "depth", "time_at_goal", "success_any", "parameters", "p50 us", "p99 us"):
        table.add_column(col, justify="right")
    table.add_row(
        "teacher (JAX)",
        str(s["teacher"]["depth"]),
        f"{s['teacher']['time_at_goal']:.1f}",
        f"{s['teacher']['success_any']:.3f}",
        f"{sum(s['teacher']['params'].values()):,}",
        f"{lat['teacher (JAX)']['p50_us']:.1f}",
        f"{lat['teacher (JAX)']['p99_us']:.1f}",
    )
    table.add_row(
        "student (JAX)",
        str(s["student"]["depth"]),
        f"{s['student_jax_eval']['time_at_goal']:.1f}",
        f"{s['student_jax_eval']['success_any']:.3f}",
        f"{sum(s['student']['params'].values()):,}",
        f"{lat['student (JAX)']['p50_us']:.1f}",
        f"{lat['student (JAX)']['p99_us']:.1f}",
    )
    onnx_lat = lat["student (onnxruntime, OnnxPolicy)"]
    table.add_row(
        "student (ONNX)",
        str(s["student"]["depth"]),
        f"{s['onnx']['time_at_goal']:.1f}",
        f"{s['onnx']['success_any']:.3f}",
        f"{sum(s['student']['params'].values()):,}",
        f"{onnx_lat['p50_us']:.1f}",
        f"{onnx_lat['p99_us']:.1f}",
    )
    table.add_row(
        "student (C)",
        str(s["student"]["depth"]),
        f"{s['c']['time_at_goal']:.1f}",
        f"{s['c']['success_any']:.3f}",
        f"{sum(s['student']['params'].values()):,}",
        f"{s['c']['latency']['p50_us']:.1f}",
        f"{s['c']['latency']['p99_us']:.1f}",
    )
    print_table(table)
    print(f"retention {s['retention']:.3f}; ONNX parity {s['onnx']['parity_max_abs_error']:.1e}")
    print(f"compression: {_compression_text(s['compression'])}")
