"""The GPU campaign: what one GPU shows about depth, in three stages of at most ten minutes each.

1. ``throughput``: the teacher's training step at the paper's update-to-data ratio on ant and
   humanoid at critic depths 4 to 1024, with the residual blocks scanned and unrolled: env steps/s,
   compile seconds and peak device memory. Each point runs in its own process (a clean memory peak,
   and a cap on compile time for the unrolled deep networks).
2. ``sweep``: ``distill sweep`` on ``ant_hardest_maze`` at depths 4 and 8 (the paper's pair: 62 against
   159 at 10M steps), 4M env steps each (``--sweep-steps`` sets them).
3. ``compress``: the depth-8 teacher distilled to depth 4 with the depth-4 run as the from-scratch
   baseline, exported to ONNX through the parity gate, and the file evaluated in closed loop.

Results go to ``--out`` (default ``results/gpu/<device>``) as JSON, Markdown and plots. Every stage
skips what is already there, so calling the script again continues the campaign (the compress stage
reads the sweep's run directories, checkpoints included, so run it where they were kept); ``--deadline-s``
stops the throughput stage from starting points past that many seconds, so a call fits a time limit.
Throughput points run from the shallowest depth up, scanned and unrolled side by side (unrolled
compile time grows with depth). ``--reduced`` runs
the same stages at toy sizes on a point-mass maze, to check the campaign end to end on a CPU.

    python benchmarks/gpu_campaign.py                       # every stage
    python benchmarks/gpu_campaign.py --stage throughput    # one stage
    python benchmarks/gpu_campaign.py --reduced --out runs/campaign
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_output import table_and_json  # noqa: E402

STAGES = ("throughput", "sweep", "compress")
FULL = {
    # One training step at the paper's ratio is 31,744 env steps and 794 SGD steps: one timed step suffices.
    "throughput": dict(envs=("ant", "humanoid"), depths=(4, 16, 64, 256, 1024), modes=("scan", "unrolled"),
                       steps=1, cap_s=150, overrides={}),
    # 4M env steps per run: the whole stage took 489 s on an H100.
    "sweep": dict(env="ant_hardest_maze", depths=(4, 8), steps=4_000_000,
                  overrides=dict(num_evals=8, eval_episodes=64)),
    "compress": dict(student=dict(student_depth=4), report_episodes=128, onnx_episodes=64),
}
TINY_TEACHER = dict(num_envs=4, unroll_length=10, batch_size=16, updates_per_step=2, num_evals=1, eval_episodes=2,
                    replay_rows=60, prefill_rows=20, width=32, repr_dim=8)
REDUCED = {
    "throughput": dict(envs=("simple_u_maze",), depths=(4, 8), modes=("scan", "unrolled"), steps=1, cap_s=300,
                       overrides=TINY_TEACHER),
    "sweep": dict(env="simple_u_maze", depths=(4, 8), steps=160, overrides=TINY_TEACHER),
    "compress": dict(student=dict(student_depth=4, student_width=16, iterations=2, num_envs=4, unroll_length=10,
                                  batch_size=16, eval_episodes=2, steps=4), report_episodes=2, onnx_episodes=2),
}


def device_name() -> str:
    import jax

    device = jax.devices()[0]
    return getattr(device, "device_kind", device.platform).replace(" ", "_")


def peak_memory_gb() -> tuple[float, str]:
    """The device's peak bytes in use where it reports them (GPUs), else the process's peak RSS."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 1024**3, "device"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, "host RSS"


# --- stage 1: throughput -------------------------------------------------------------------------


def measure_point(env: str, depth: int, mode: str, steps: int, overrides: dict) -> dict:
    """One teacher training step configuration, timed in the engine's device loop after compiling."""
    from teachers.config import teacher_config
    from teachers.train import make_teacher
    from throughput import time_teacher_steps

    teacher = make_teacher(teacher_config(env, critic_depth=depth, actor_depth=depth, **overrides),
                           unrolled=(mode == "unrolled"))
    config = teacher.config
    compile_s, seconds = time_teacher_steps(teacher, steps)
    memory, memory_kind = peak_memory_gb()
    return {"env": env, "depth": depth, "mode": mode, "device": device_name(), "num_envs": config.num_envs,
            "batch_size": config.batch_size, "updates_per_step": config.updates_per_step,
            "env_steps_per_s": steps * config.num_envs * config.unroll_length / seconds,
            "sgd_step_ms": 1000 * seconds / (steps * config.updates_per_step),
            "compile_and_first_step_s": compile_s, "peak_memory_gb": memory, "memory_kind": memory_kind}


def throughput_points(plan: dict) -> list[tuple[str, int, str]]:
    """Every (env, depth, mode), shallowest depth first, scanned and unrolled side by side."""
    return [(env, depth, mode) for depth in plan["depths"] for env in plan["envs"] for mode in plan["modes"]]


def stage_throughput(plan: dict, out: Path, reduced: bool, deadline: float = float("inf")) -> list[dict]:
    path = out / "throughput.json"
    records = json.loads(path.read_text()) if path.exists() else []
    done = {(r["env"], r["depth"], r["mode"]) for r in records if "deadline" not in r.get("error", "")}
    records = [r for r in records if (r["env"], r["depth"], r["mode"]) in done]
    for env, depth, mode in throughput_points(plan):
        if (env, depth, mode) in done:
            continue
        left = deadline - time.monotonic()
        if left < 30:
            print(f"throughput: deadline reached; {env} depth {depth} {mode} and later points are left for "
                  "the next call", flush=True)
            break
        records.append(_point_in_subprocess(env, depth, mode, plan, reduced, cap_s=min(plan["cap_s"], left)))
        print(json.dumps(records[-1]), flush=True)
        _write_json(path, records)
    records.sort(key=lambda r: (r["env"], r["mode"], r["depth"]))
    rows = [[r["env"], str(r["depth"]), r["mode"], *(
        [f"{r['env_steps_per_s']:,.0f}", f"{r['sgd_step_ms']:.1f}", f"{r['compile_and_first_step_s']:.1f}",
         f"{r['peak_memory_gb']:.2f} ({r['memory_kind']})"] if "error" not in r else [r["error"], "-", "-", "-"])]
        for r in records]
    table_and_json("teacher throughput at the paper's update-to-data ratio",
                   ["env", "depth", "blocks", "env steps/s", "ms / SGD step", "compile s", "peak memory GB"],
                   rows, records, str(path))
    return records


def _point_in_subprocess(env: str, depth: int, mode: str, plan: dict, reduced: bool, cap_s: float) -> dict:
    command = [sys.executable, __file__, "--point", json.dumps([env, depth, mode])] + (["--reduced"] if reduced else [])
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=cap_s, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                    [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])})
    except subprocess.TimeoutExpired:
        # A point cut short by the call's deadline rather than its own cap is tried again next call.
        why = f"not done within {cap_s:.0f} s" + (" (deadline)" if cap_s < plan["cap_s"] else "")
        return {"env": env, "depth": depth, "mode": mode, "error": why}
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode or not lines:
        last = (result.stderr.strip().splitlines() or ["failed"])[-1][:200]
        return {"env": env, "depth": depth, "mode": mode, "error": last}
    return json.loads(lines[-1])


# --- stage 2: sweep ------------------------------------------------------------------------------


def stage_sweep(plan: dict, out: Path, steps: int | None = None) -> dict:
    from teachers.sweep import make_plan, run_sweep

    total_steps = steps or plan["steps"]
    sweep_dir = out / "sweep"
    recorded = sweep_dir / "sweep_config.json"
    if recorded.exists():  # a continued campaign keeps the budget it started with
        total_steps = json.loads(recorded.read_text())["settings"]["total_steps"]
    sweep = make_plan(plan["env"], plan["depths"], (0,), total_steps=total_steps, **plan["overrides"])
    return run_sweep(sweep, sweep_dir, show_progress=False, checkpoint_minutes=2.0)


# --- stage 3: compress, export, closed loop -------------------------------------------------------


def stage_compress(plan: dict, out: Path, sweep_plan: dict) -> dict:
    from export.closed_loop import evaluate_onnx
    from export.student import export_student
    from students.config import student_config
    from students.report import compress_and_report

    path = out / "compress.json"
    if path.exists():
        return json.loads(path.read_text())
    sweep_dir = out / "sweep"
    teacher = sweep_dir / f"depth_{max(sweep_plan['depths'])}_seed_0"
    baseline = sweep_dir / f"depth_{min(sweep_plan['depths'])}_seed_0"
    student_run = out / "student"
    options = dict(plan["student"])
    steps = options.pop("steps", None)
    config = student_config(teacher, steps=steps, **options)
    _, report = compress_and_report(config, teacher, student_run, resume=(student_run / "config.json").exists(),
                                    report_episodes=plan["report_episodes"], show_progress=False,
                                    baseline_run=baseline)
    onnx_path = out / "student.onnx"
    exported = export_student(student_run, onnx_path)
    closed_loop = evaluate_onnx(onnx_path, None, plan["onnx_episodes"], seed=0)
    result = {"device": device_name(), "teacher_run": teacher.name, "baseline_run": baseline.name,
              "retention": report["retention"],
              **{k: {m: report[k][m] for m in ("time_at_goal", "success_any", "depth")}
                 for k in ("teacher", "student", "scratch") if k in report and "skipped" not in report[k]},
              "export": {k: exported[k] for k in exported if isinstance(exported[k], (int, float, str, bool))},
              "onnx_closed_loop": closed_loop}
    _write_json(path, result)
    return result


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", default="all", choices=("all", *STAGES))
    parser.add_argument("--out", default=None, help="Results directory (default results/gpu/<device>).")
    parser.add_argument("--reduced", action="store_true", help="Toy sizes on a point-mass maze (a CPU check).")
    parser.add_argument("--deadline-s", type=float, default=float("inf"),
                        help="Start no throughput point after this many seconds (the rest waits for a later call).")
    parser.add_argument("--sweep-steps", type=int, default=None,
                        help="Env steps per sweep run (default 4M, which fits the stage in ten minutes on an H100).")
    parser.add_argument("--point", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    plans = REDUCED if args.reduced else FULL

    if args.point:
        env, depth, mode = json.loads(args.point)
        plan = plans["throughput"]
        print(json.dumps(measure_point(env, depth, mode, plan["steps"], plan["overrides"])), flush=True)
        return
    out = Path(args.out) if args.out else ROOT / "results" / "gpu" / device_name()
    out.mkdir(parents=True, exist_ok=True)
    stages = STAGES if args.stage == "all" else (args.stage,)
    t0 = time.perf_counter()
    if "throughput" in stages:
        stage_throughput(plans["throughput"], out, args.reduced, time.monotonic() + args.deadline_s)
    if "sweep" in stages:
        summary = stage_sweep(plans["sweep"], out, args.sweep_steps)
        for d in summary["by_depth"]:
            print(f"sweep: depth {d['depth']}: time_at_goal {d['time_at_goal_mean']:.1f}, "
                  f"success_any {d['success_any_mean']:.2f}", flush=True)
    if "compress" in stages:
        result = stage_compress(plans["compress"], out, plans["sweep"])
        print(f"compress: retention {result['retention']:.3f}; ONNX closed loop time_at_goal "
              f"{result['onnx_closed_loop']['time_at_goal']:.1f}", flush=True)
    print(f"campaign stages {', '.join(stages)} done in {time.perf_counter() - t0:.0f} s -> {out}", flush=True)


if __name__ == "__main__":
    main()
