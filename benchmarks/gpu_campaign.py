"""The GPU campaign: what one GPU shows about depth, in stages of at most ten minutes each.

1. ``speed``: the teacher's speed on ``ant`` at the paper's ratio and batch 512: whole training steps
   at depths 4, 16 and 64 (one seed, and 4 seeds stacked in one program), the SGD step alone over the
   block unroll (1 / 4 / all) with and without XLA command buffers for loops (``WHILE`` and
   ``CONDITIONAL``), and over batch 256 / 512 / 1024, then depths 256 and 1024 (actor 512): env
   steps/s per seed and in total, ms per SGD step, achieved TFLOP/s against the chip's measured
   matrix ceiling, compile seconds and peak device memory. Each point runs in its own process with a
   compile cap, most telling first, and ``--deadline-s`` starts none past that many seconds, so a
   cut-off call keeps what it measured and the next call continues.
2. ``sweep``: ``distill sweep`` on ``ant_hardest_maze`` at depths 4 and 8 (the paper's pair: 62 against
   159 at 10M steps), 4M env steps each (``--sweep-steps`` sets them).
3. ``compress``: the depth-8 teacher distilled to depth 4 with the depth-4 run as the from-scratch
   baseline, exported to ONNX through the parity gate, and the file evaluated in closed loop.

Results go to ``--out`` (default ``results/gpu/<device>``) as JSON and Markdown. Every stage skips
what is already there, so calling the script again continues the campaign (the compress stage reads
the sweep's run directories, checkpoints included, so run it where they were kept). ``--reduced``
runs the same stages at toy sizes on a point-mass maze, to check the campaign end to end on a CPU.

    python benchmarks/gpu_campaign.py --stage speed --deadline-s 510   # one stage, within a time limit
    python benchmarks/gpu_campaign.py                                  # every stage
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


STAGES = ("speed", "sweep", "compress")
FULL = {
    # About 8 minutes on one H100: the SGD step alone over the unroll / command-buffer and batch grids
    # (quick to compile: no physics), then whole training steps at the paper's ratio, shallow first,
    # 4 seeds in one program, and the deep points last.
    "speed": dict(env="ant", batch=512, depths=dict(shallowest=4, shallow=16, mid=64), unrolls=(1, 4, "all"),
                  batches=(256, 512, 1024), seeds=4, deep=((256, 256), (1024, 512)), sgd_steps=200, train_steps=1,
                  cap_s=300, overrides={}),
    # 4M env steps per run: the whole stage took 489 s on an H100.
    "sweep": dict(env="ant_hardest_maze", depths=(4, 8), steps=4_000_000,
                  overrides=dict(num_evals=8, eval_episodes=64)),
    "compress": dict(student=dict(student_depth=4), report_episodes=128, onnx_episodes=64),
}
TINY_TEACHER = dict(num_envs=4, unroll_length=10, batch_size=16, updates_per_step=2, num_evals=1, eval_episodes=2,
                    replay_rows=60, prefill_rows=20, width=32, repr_dim=8)
REDUCED = {
    "speed": dict(env="simple_u_maze", batch=16, depths=dict(shallowest=4, shallow=8, mid=12), unrolls=(1, "all"),
                  batches=(16, 32), seeds=2, deep=((16, 8),), sgd_steps=3, train_steps=1, cap_s=300, reduced=True,
                  matmul_size=256, copy_floats=1 << 16,
                  overrides={k: v for k, v in TINY_TEACHER.items() if k != "batch_size"}),
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


# --- stage: speed --------------------------------------------------------------------------------

COMMAND_BUFFER_FLAG = "--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL"


def with_command_buffers(flags: str) -> str:
    """XLA_FLAGS with WHILE and CONDITIONAL added to XLA's default command-buffer types ('+' keeps
    the defaults), so whole loops are captured and replayed as CUDA graphs."""
    return " ".join(filter(None, [flags, COMMAND_BUFFER_FLAG]))


def sgd_flops(config, spec) -> float:
    """Matrix FLOPs of one SGD step (actor, alpha, critic) that the update needs, rematerialisation's
    recomputation not counted. Per sample, a forward pass of a tower costs 2 x (multiply-adds of its
    Dense layers); a backward pass to weights and inputs twice that, one to inputs only once.
    Actor loss: actor forward + backward (3), phi forward + backward to the action (2), psi forward (1).
    Critic loss: phi and psi forward + backward (3 each)."""
    from distill.memory import tower_params

    def tower(in_dim, out_dim, depth):
        return 2.0 * tower_params(in_dim, out_dim, config.width, depth)

    actor = tower(spec.obs_dim, 2 * spec.action_dim, config.actor_depth)
    phi = tower(spec.state_dim + spec.action_dim, config.repr_dim, config.critic_depth)
    psi = tower(spec.goal_dim, config.repr_dim, config.critic_depth)
    return config.batch_size * (3 * actor + 5 * phi + 4 * psi)


def measure_matmul(n: int = 8192, copy_floats: int = 1 << 28) -> dict:
    """The chip's own float32 matrix ceiling as JAX runs it (its default precision), and bandwidth."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    dot = jax.jit(lambda a, b: a @ b)
    dot(a, b).block_until_ready()
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        dot(a, b).block_until_ready()
        times.append(time.perf_counter() - t0)
    copy = jax.jit(lambda x: x * 1.0001)
    big = jax.random.normal(jax.random.PRNGKey(2), (copy_floats,), jnp.float32)
    copy(big).block_until_ready()
    copies = []
    for _ in range(10):
        t0 = time.perf_counter()
        copy(big).block_until_ready()
        copies.append(time.perf_counter() - t0)
    return {"kind": "matmul", "device": device_name(), "matmul_size": n, "matmul_tflops": 2 * n**3 / sorted(times)[5] / 1e12,
            "copy_gb_per_s": 2 * big.nbytes / sorted(copies)[5] / 1e9}


def _teacher(env: str, depth: int, actor_depth: int | None, unroll, batch: int, overrides: dict, runs_axis=None):
    from teachers.config import teacher_config
    from teachers.train import make_teacher

    config = teacher_config(env, critic_depth=depth, actor_depth=actor_depth or depth, block_unroll=unroll,
                            batch_size=batch, **overrides)
    return make_teacher(config, runs_axis=runs_axis)


def measure_sgd(env: str, depth: int, unroll, batch: int, steps: int, overrides: dict) -> dict:
    """The SGD step alone (no physics to compile), on a replay buffer of random states."""
    import jax
    import jax.numpy as jnp

    from distill.networks import resolve_block_unroll

    teacher = _teacher(env, depth, None, unroll, batch, overrides)
    config, spec = teacher.config, teacher.spec
    state = jax.jit(teacher.init)(jax.random.PRNGKey(0))
    rows, envs = state.buffer.traj_ids.shape
    buffer = state.buffer.replace(
        states=jax.random.normal(jax.random.PRNGKey(1), state.buffer.states.shape),
        actions=jax.random.uniform(jax.random.PRNGKey(2), state.buffer.actions.shape, minval=-1, maxval=1),
        steps=jnp.broadcast_to((jnp.arange(rows) % spec.episode_length)[:, None], (rows, envs)).astype(jnp.int32),
        traj_ids=jnp.broadcast_to((jnp.arange(rows) // spec.episode_length)[:, None] * envs + jnp.arange(envs),
                                  (rows, envs)).astype(jnp.int32),
        rows_written=jnp.asarray(rows, jnp.int32))
    state = state.replace(buffer=buffer)

    def run(state):
        return jax.lax.scan(teacher.sgd_step, state, jax.random.split(state.key, steps))[0]

    t0 = time.perf_counter()
    compiled = jax.jit(run, donate_argnums=0).lower(state).compile()
    compile_s = time.perf_counter() - t0
    state = compiled(state)
    jax.block_until_ready(state.params)
    t0 = time.perf_counter()
    state = compiled(state)
    jax.block_until_ready(state.params)
    ms = 1000 * (time.perf_counter() - t0) / steps
    memory, memory_kind = peak_memory_gb()
    return {"kind": "sgd", "env": env, "depth": depth, "batch_size": batch,
            "block_unroll": resolve_block_unroll(unroll, depth), "block_unroll_setting": str(unroll),
            "sgd_step_ms": ms, "tflops": sgd_flops(config, spec) / (ms / 1000) / 1e12, "compile_s": compile_s,
            "peak_memory_gb": memory, "memory_kind": memory_kind, "device": device_name()}


def measure_training(env: str, depth: int, actor_depth: int | None, unroll, batch: int, seeds: int, steps: int,
                     overrides: dict) -> dict:
    """Whole training steps (collect, insert, SGD at the configured ratio) in the engine's device loop,
    for one teacher or ``seeds`` stacked ones: compile, one step to warm up, then ``steps`` timed."""
    import jax

    from distill.engine import make_run_steps
    from distill.networks import resolve_block_unroll
    from teachers.train import RUNS_AXIS, stacked_teacher_trainable, teacher_trainable

    stacked = seeds > 1
    teacher = _teacher(env, depth, actor_depth, unroll, batch, overrides, runs_axis=RUNS_AXIS if stacked else None)
    config = teacher.config
    trainable = stacked_teacher_trainable(teacher, tuple(range(seeds))) if stacked else teacher_trainable(teacher)
    run_steps = make_run_steps(trainable)
    state = trainable.init()
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    compiled = run_steps.lower(state, 1).compile()
    compile_s = time.perf_counter() - t0
    state, metrics = compiled(state, 1)
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    state, metrics = compiled(state, steps)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - t0
    memory, memory_kind = peak_memory_gb()
    per_seed = steps * config.num_envs * config.unroll_length / seconds
    sgd_ms = 1000 * seconds / (steps * config.updates_per_step)
    return {"kind": "train", "env": env, "depth": depth, "actor_depth": config.actor_depth, "seeds": seeds,
            "batch_size": config.batch_size, "num_envs": config.num_envs, "updates_per_step": config.updates_per_step,
            "block_unroll": resolve_block_unroll(unroll, depth), "block_unroll_setting": str(unroll),
            "remat": config.remat, "env_steps_per_s": per_seed, "env_steps_per_s_total": per_seed * seeds,
            "sgd_step_ms": sgd_ms, "tflops": seeds * sgd_flops(config, teacher.spec) / (sgd_ms / 1000) / 1e12,
            "compile_s": compile_s, "peak_memory_gb": memory, "memory_kind": memory_kind, "device": device_name()}


def speed_points(plan: dict) -> list[dict]:
    """The speed stage's measurements, most telling first, so a cut-off call keeps them: whole training
    steps shallow to mid depth (one seed, then the stacked seeds), the unroll / command-buffer grid and
    the batch grid on the SGD step alone, then the deep points."""
    batch, d = plan["batch"], plan["depths"]
    mid = d["mid"]
    points = [{"kind": "matmul", "name": "matmul"}]
    for depth in (d["shallowest"], d["shallow"]):
        points.append({"kind": "train", "name": f"train d{depth}", "depth": depth, "seeds": 1, "command_buffers": "best"})
    points.append({"kind": "train", "name": f"train d{d['shallow']} x{plan['seeds']} seeds", "depth": d["shallow"],
                   "seeds": plan["seeds"], "command_buffers": "best"})
    points.append({"kind": "train", "name": f"train d{mid}", "depth": mid, "seeds": 1, "command_buffers": "best"})
    points.append({"kind": "train", "name": f"train d{mid} x{plan['seeds']} seeds", "depth": mid,
                   "seeds": plan["seeds"], "command_buffers": "best"})
    for cb in (False, True):  # the unroll and command-buffer grid, on the SGD step alone
        points.append({"kind": "sgd", "name": f"sgd unroll grid{' cb' if cb else ''}", "command_buffers": cb,
                       "variants": [dict(depth=mid, unroll=u, batch=batch) for u in plan["unrolls"]]})
    points.append({"kind": "sgd", "name": "sgd batch grid", "command_buffers": "best",
                   "variants": [dict(depth=depth, unroll="auto", batch=b) for depth in (d["shallow"], mid)
                                for b in plan["batches"]]})
    for depth, actor in plan["deep"]:
        points.append({"kind": "train", "name": f"train d{depth}", "depth": depth, "actor_depth": actor, "seeds": 1,
                       "command_buffers": "best"})
    return points


def best_command_buffers(records: list[dict]) -> bool:
    """Command buffers on if the SGD grid ran faster with them (fastest unroll each way); off until
    the grid has run (on an H100 they made the fully unrolled depth-64 step 3x slower)."""
    def fastest(cb):
        times = [r["sgd_step_ms"] for r in records if r.get("kind") == "sgd" and r.get("command_buffers") is cb
                 and "error" not in r and r.get("group") == "unroll"]
        return min(times) if times else None

    on, off = fastest(True), fastest(False)
    return on is not None and off is not None and on < off


def run_speed_point(point: dict, plan: dict, reduced: bool, cap_s: float, command_buffers: bool) -> list[dict]:
    """One point in its own process (a clean memory peak and a compile cap); one record per variant."""
    env = dict(os.environ)
    if command_buffers:
        env["XLA_FLAGS"] = with_command_buffers(env.get("XLA_FLAGS", ""))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    command = [sys.executable, __file__, "--speed-point", json.dumps(point)] + (["--reduced"] if reduced else [])
    base = {"name": point["name"], "command_buffers": command_buffers}
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=cap_s, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired as err:
        done = [json.loads(x) for x in (err.stdout or b"").decode(errors="replace").splitlines() if x.startswith("{")]
        return [{**base, **r} for r in done] + [{**base, "error": f"not done within {cap_s:.0f} s"}]
    records = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    if result.returncode or not records:
        last = (result.stderr.strip().splitlines() or ["failed"])[-1][:300]
        return [{**base, **r} for r in records] + [{**base, "error": last}]
    return [{**base, **r} for r in records]


def speed_point_worker(point: dict, plan: dict) -> None:
    """Runs in the point's process: prints one JSON line per measured variant."""
    if point["kind"] == "matmul":
        print(json.dumps(measure_matmul(plan.get("matmul_size", 8192), plan.get("copy_floats", 1 << 28))), flush=True)
        return
    if point["kind"] == "sgd":
        group = "unroll" if "unroll" in point["name"] else "batch"
        for v in point["variants"]:
            record = measure_sgd(plan["env"], v["depth"], v["unroll"], v["batch"], plan["sgd_steps"], plan["overrides"])
            print(json.dumps({**record, "group": group}), flush=True)
        return
    print(json.dumps(measure_training(plan["env"], point["depth"], point.get("actor_depth"), "auto", plan["batch"],
                                      point["seeds"], plan["train_steps"], plan["overrides"])), flush=True)


def stage_speed(plan: dict, out: Path, reduced: bool, deadline: float = float("inf")) -> list[dict]:
    path = out / "speed.json"
    records = json.loads(path.read_text()) if path.exists() else []
    # Points cut off by a call's deadline (not by their own cap) are measured again by the next call.
    records = [r for r in records if "(deadline)" not in r.get("error", "")]
    done = {r["name"] for r in records}
    for point in speed_points(plan):
        if point["name"] in done:
            continue
        left = deadline - time.monotonic()
        if left < 30:
            print(f"speed: deadline reached; '{point['name']}' and later points are left for the next call", flush=True)
            break
        cb = point.get("command_buffers", False)
        if cb == "best":
            cb = best_command_buffers(records)
        cap = min(plan["cap_s"], left)
        new = run_speed_point(point, plan, reduced, cap, cb)
        if cap < plan["cap_s"]:
            new = [{**r, "error": r["error"] + " (deadline)"} if "error" in r else r for r in new]
        records += new
        for r in new:
            print(json.dumps(r), flush=True)
        _write_json(path, records)
    write_speed_report(out, records, plan)
    return records


def write_speed_report(out: Path, records: list[dict], plan: dict) -> None:
    """speed.md: the tables of speed.json, with the command that made them."""
    ceiling = next((r for r in records if r.get("kind") == "matmul" and "error" not in r), None)
    peak = ceiling["matmul_tflops"] if ceiling else None

    def share(r):
        return f"{100 * r['tflops'] / peak:.1f}%" if peak and "tflops" in r else "-"

    lines = [f"# Teacher speed on {records[0]['device'] if records and 'device' in records[0] else 'this device'}", "",
             f"Command: `python benchmarks/gpu_campaign.py --stage speed{' --reduced' if plan.get('reduced') else ''}`. "
             f"Environment `{plan['env']}`, {plan['batch']} per batch unless stated; training points at the paper's ratio "
             "(512 envs, unroll 62, one SGD step per 40 transitions). Each point ran in its own process.", ""]
    if ceiling:
        lines += [f"Measured ceilings: float32 matrix product {ceiling['matmul_tflops']:.1f} TFLOP/s (JAX's default "
                  f"precision, {ceiling['matmul_size']}^3), memory {ceiling['copy_gb_per_s']:,.0f} GB/s (read + write).", ""]
    lines += ["## SGD step alone (no physics)", "",
              "| depth | batch | unroll | command buffers | ms / SGD step | TFLOP/s | of ceiling | compile s |",
              "|---|---|---|---|---|---|---|---|"]
    for r in records:
        if r.get("kind") == "sgd" or (r.get("name", "").startswith("sgd") and "error" in r):
            if "error" in r:
                lines.append(f"| {r['name']} | | | {'on' if r['command_buffers'] else 'off'} | {r['error']} | | | |")
                continue
            lines.append(f"| {r['depth']} | {r['batch_size']} | {r['block_unroll']} ({r['block_unroll_setting']}) | "
                         f"{'on' if r['command_buffers'] else 'off'} | {r['sgd_step_ms']:.2f} | {r['tflops']:.1f} | "
                         f"{share(r)} | {r['compile_s']:.1f} |")
    lines += ["", "## Whole training steps", "",
              "| depth (critic / actor) | seeds | unroll | command buffers | env steps/s per seed | total | ms / SGD step | "
              "TFLOP/s | of ceiling | compile s | peak memory GB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if r.get("kind") == "train":
            lines.append(f"| {r['depth']} / {r['actor_depth']} | {r['seeds']} | {r['block_unroll']} | "
                         f"{'on' if r['command_buffers'] else 'off'} | {r['env_steps_per_s']:,.0f} | "
                         f"{r['env_steps_per_s_total']:,.0f} | {r['sgd_step_ms']:.2f} | {r['tflops']:.1f} | {share(r)} | "
                         f"{r['compile_s']:.1f} | {r['peak_memory_gb']:.2f} ({r['memory_kind']}) |")
        elif r.get("name", "").startswith("train") and "error" in r:
            lines.append(f"| {r['name']} | | | {'on' if r['command_buffers'] else 'off'} | {r['error']} | | | | | | |")
    runs_path = out / "speed.md"
    runs_path.parent.mkdir(parents=True, exist_ok=True)
    runs_path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


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
                        help="Start no speed point after this many seconds (the rest waits for a later call).")
    parser.add_argument("--sweep-steps", type=int, default=None,
                        help="Env steps per sweep run (default 4M, which fits the stage in ten minutes on an H100).")
    parser.add_argument("--speed-point", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    plans = REDUCED if args.reduced else FULL

    if args.speed_point:
        speed_point_worker(json.loads(args.speed_point), plans["speed"])
        return
    out = Path(args.out) if args.out else ROOT / "results" / "gpu" / device_name()
    out.mkdir(parents=True, exist_ok=True)
    stages = STAGES if args.stage == "all" else (args.stage,)
    t0 = time.perf_counter()
    if "speed" in stages:
        stage_speed(plans["speed"], out, args.reduced, time.monotonic() + args.deadline_s)
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
