"""The GPU campaign: what one GPU shows about depth, in stages of at most ten minutes each.

1. ``speed``: the teacher's speed on ``ant`` at the paper's ratio and batch 512: whole training steps
   at depths 4, 16 and 64 (one seed, and 4 seeds stacked in one program), the SGD step alone over the
   block unroll (1 / 4 / all) with and without XLA command buffers for loops (``WHILE`` and
   ``CONDITIONAL``), and over batch 256 / 512 / 1024, then depths 256 and 1024 (actor 512): env
   steps/s per seed and in total, ms per SGD step, achieved TFLOP/s against the chip's measured
   matrix ceiling, compile seconds and peak device memory. Each point runs in its own process with a
   compile cap, most telling first, and ``--deadline-s`` starts none past that many seconds, so a
   cut-off call keeps what it measured and the next call continues.
2. ``depth``: does depth pay, in one call of at most 9 minutes on one H100: ``ant_hardest_maze`` at
   depths 4 and 8 (the paper's pair: 40-62 against 109-159 at 8-10M env steps), 2 seeds per depth in
   one program, batch 512, at the largest env-step budget that fits 6 minutes at the rates the speed
   stage measured (``depth_budget``; a stated fallback without them); then the best deep seed
   compressed to depth 4 with the same seed's depth-4 run as the from-scratch baseline, exported
   through the parity gate and evaluated as an ONNX file in closed loop; the sweep plot, maze top
   views and critic maps for the farthest goal; the deep teacher, the student and the scratch run
   packed. What comes back lies in ``<out>/depth``: depth.json, depth.md, student.onnx, teacher.tar,
   student.tar, scratch.tar and pictures.tar (the runs themselves train in ``--work``).
   ``--unpack DIR`` is the CPU user's half: it extracts the packed runs, refuses any that fails its
   recorded evaluation, and fills in the ONNX file's latency on this CPU.

Results go to ``--out`` (default ``results/gpu/<device>``) as JSON and Markdown. Every stage skips
what is already there, so calling the script again continues the campaign (the depth stage's runs,
checkpoints included, stay in ``--work``). A results folder holding results recorded on another card
is refused (one line, exit status 2) before anything is written. ``--reduced``
runs the same stages at toy sizes on a point-mass maze, to check the campaign end to end on a CPU.

    python benchmarks/gpu_campaign.py --stage speed --deadline-s 510   # one stage, within a time limit
    python benchmarks/gpu_campaign.py --stage depth --speed-json results/gpu/<device>/speed.json --out OUT
    python benchmarks/gpu_campaign.py --unpack results/gpu/<device>/depth   # on the CPU, after copying it back
    python benchmarks/gpu_campaign.py --reduced --out runs/campaign
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


STAGES = ("speed", "depth")
FULL = {
    # About 8 minutes on one H100: the SGD step alone over the unroll / command-buffer and batch grids
    # (quick to compile: no physics), then whole training steps at the paper's ratio, shallow first,
    # 4 seeds in one program, and the deep points last.
    "speed": dict(env="ant", batch=512, depths=dict(shallowest=4, shallow=16, mid=64), unrolls=(1, 4, "all"),
                  batches=(256, 512, 1024), seeds=4, deep=((256, 256), (1024, 512)), sgd_steps=200, train_steps=1,
                  cap_s=300, overrides={}),
    # At most 9 minutes on one H100: 6 for the sweep (compiling included), the rest for compressing,
    # exporting, the closed loop, the pictures and packing. Budget rule: see depth_budget. The fallback,
    # 1M env steps per run, fits the 6 minutes even if stacking seeds gains nothing: the first H100
    # sweep took 489 s all told for 8M env steps (two runs of 4M at depths 4 and 8), and four runs of
    # 1M are half that.
    "depth": dict(env="ant_hardest_maze", depths=(4, 8), seeds=(0, 1), teacher_depth=None, target_steps=10_000_000,
                  fallback_steps=1_000_000, sweep_s=360, compile_s=60, overhead=0.2,
                  overrides=dict(batch_size=512, num_evals=8, eval_episodes=64),
                  student=dict(student_depth=4, eval_episodes=64), report_episodes=64, onnx_episodes=32,
                  critic_points=8),
}
TINY_TEACHER = dict(num_envs=4, unroll_length=10, batch_size=16, updates_per_step=2, num_evals=1, eval_episodes=2,
                    replay_rows=60, prefill_rows=20, width=32, repr_dim=8)
REDUCED = {
    "speed": dict(env="simple_u_maze", batch=16, depths=dict(shallowest=4, shallow=8, mid=12), unrolls=(1, "all"),
                  batches=(16, 32), seeds=2, deep=((16, 8),), sgd_steps=3, train_steps=1, cap_s=300, reduced=True,
                  matmul_size=256, copy_floats=1 << 16,
                  overrides={k: v for k, v in TINY_TEACHER.items() if k != "batch_size"}),
    "depth": dict(env="simple_u_maze", depths=(4, 8), seeds=(0, 1), teacher_depth=None, target_steps=320,
                  fallback_steps=160, sweep_s=60, compile_s=20, overhead=0.2, overrides=TINY_TEACHER,
                  student=dict(student_depth=4, student_width=16, iterations=2, num_envs=4, unroll_length=10,
                               batch_size=16, eval_episodes=2, steps=4), report_episodes=2, onnx_episodes=2,
                  critic_points=2),
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
    _write_json(path, records)  # a call cut off before its first point still records what it holds
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


# --- stage: depth ---------------------------------------------------------------------------------
#
# The sweep's env-step budget comes from the speed stage's measured rates. For each depth of the plan
# the rate is read at the shallowest measured depth at or above it (a deeper network is never faster,
# so this errs short): the per-seed rate of a stacked measurement of at least as many seeds, else the
# one-seed rate divided by STACKED_SLOWDOWN times the seed count over one (stacking assumed to gain
# nothing: n seeds in one program as slow as n runs one after another). Without such a measurement (no
# speed.json, another card, another robot or batch) the budget is the plan's stated fallback.
STACKED_SLOWDOWN = 1.0


class CampaignError(Exception):
    """Bad input to the campaign: one line on stderr, exit status 2."""


def recorded_devices(out: Path) -> set[str]:
    """The devices named by the results already in ``out`` (speed.json records, depth/depth.json)."""
    devices = set()
    speed = out / "speed.json"
    if speed.is_file():
        try:
            devices |= {r["device"] for r in json.loads(speed.read_text()) if isinstance(r, dict) and r.get("device")}
        except (json.JSONDecodeError, TypeError):
            pass
    for path in (out / "depth" / "depth.json", out / "compress.json"):
        if path.is_file():
            try:
                device = json.loads(path.read_text()).get("device")
            except (json.JSONDecodeError, AttributeError):
                device = None
            if device:
                devices.add(device)
    return devices


def check_results_device(out: Path, device: str) -> None:
    """A results folder recorded on another card is never written to."""
    others = sorted(recorded_devices(out) - {device})
    if others:
        raise CampaignError(f"{out} holds results recorded on {', '.join(others)}, not on this {device}; "
                            "nothing was written (give another --out)")


def _env_matches(measured: str, wanted: str) -> bool:
    """The speed stage measures the robot (``ant``); its rate stands for the robot's mazes too."""
    return measured == wanted or wanted.startswith(measured + "_")


def depth_budget(plan: dict, speed_records: list[dict] | None, device: str, source: str = "speed.json") -> dict:
    """The sweep's env steps per run: what fits ``plan['sweep_s']`` at the measured rates, capped at
    ``plan['target_steps']``, or ``plan['fallback_steps']`` where the measurement is missing or does
    not match. Returns total_steps, budget_source ('measured' or 'fallback') and the reason in words."""
    from teachers.config import teacher_config

    config = teacher_config(plan["env"], **plan["overrides"]).resolved()
    per_step = config.num_envs * config.unroll_length
    seeds = len(plan["seeds"])

    def fallback(reason: str) -> dict:
        steps = plan["fallback_steps"]
        return {"total_steps": steps, "budget_source": "fallback",
                "budget_reason": f"{reason}; using the stated conservative budget of {steps:,} env steps per run"}

    if speed_records is None:
        return fallback(f"no speed measurement ({source} is missing)")
    usable = [r for r in speed_records if isinstance(r, dict) and r.get("kind") == "train" and "error" not in r
              and r.get("env_steps_per_s", 0) > 0]
    if not usable:
        return fallback(f"{source} has no whole-training-step measurement")
    cards = {r.get("device") for r in usable}
    usable = [r for r in usable if r.get("device") == device]
    if not usable:
        return fallback(f"{source} was measured on {', '.join(sorted(map(str, cards)))}, not on this {device}")
    usable = [r for r in usable if _env_matches(r.get("env", ""), plan["env"])
              and r.get("batch_size") == config.batch_size]
    if not usable:
        return fallback(f"{source} has no measurement of {plan['env']} (or its robot) at batch {config.batch_size}")
    rates, compile_s, notes = {}, 0.0, []
    for depth in plan["depths"]:
        deeper = sorted({r["depth"] for r in usable if r["depth"] >= depth})
        if not deeper:
            return fallback(f"{source} has no measurement at depth {depth} or deeper")
        at = [r for r in usable if r["depth"] == deeper[0]]
        stacked = [r for r in at if r.get("seeds", 1) >= seeds > 1]
        if stacked:
            record = min(stacked, key=lambda r: r["env_steps_per_s"])
            rate = record["env_steps_per_s"]
            how = f"{record['seeds']} stacked seeds"
        else:
            record = min(at, key=lambda r: r["env_steps_per_s"])
            rate = record["env_steps_per_s"] / (STACKED_SLOWDOWN * seeds if seeds > 1 else 1)
            how = f"one seed / {STACKED_SLOWDOWN * seeds:g}" if seeds > 1 else "one seed"
        rates[depth] = rate
        compile_s += max(plan["compile_s"], 2 * record.get("compile_s", 0.0))
        notes.append(f"depth {depth}: {rate:,.0f} env steps/s per seed (measured at depth {deeper[0]}, {how})")
    training_s = (plan["sweep_s"] - compile_s) * (1 - plan["overhead"])
    fits = training_s / sum(1 / r for r in rates.values()) if training_s > 0 else 0
    steps = min(plan["target_steps"], int(fits // per_step) * per_step)
    if steps < per_step * max(1, plan["overrides"].get("num_evals", 1)):
        return fallback(f"the measured rates leave no room in {plan['sweep_s']} s ({'; '.join(notes)})")
    capped = " (the plan's target)" if steps == plan["target_steps"] else ""
    return {"total_steps": steps, "budget_source": "measured", "rates": {str(k): v for k, v in rates.items()},
            "budget_reason": f"{source} on {device}: {'; '.join(notes)}; {plan['sweep_s']} s for the sweep less "
                             f"{compile_s:.0f} s of compiling and {100 * plan['overhead']:.0f}% for evaluations "
                             f"fits {fits:,.0f} env steps per run; {steps:,}{capped}"}


def read_speed(path: Path) -> list[dict] | None:
    try:
        records = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return records if isinstance(records, list) else None


def far_goal(env_name: str) -> tuple[float, float]:
    """The goal cell centre farthest (straight line) from the maze's start cell."""
    from distill.envs import get_spec

    env = get_spec(env_name).make()
    goals = np.asarray(env.goals)
    far = goals[np.argmax(np.linalg.norm(goals - np.asarray(env.start)[None, :2], axis=1))]
    return float(far[0]), float(far[1])


def _tar(path: Path, members: dict[str, Path]) -> Path:
    """``path`` (a .tar) holding each ``members`` file or directory under its name."""
    import tarfile

    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w") as tar:
        for name, source in members.items():
            if source.exists():
                tar.add(source, arcname=name)
    os.replace(tmp, path)
    return path


def _seed_figures(summary: dict, depth: int) -> dict:
    rows = [r for r in summary["runs"] if r["depth"] == depth and r["finished"]]
    tag = [r["time_at_goal"] for r in rows]
    return {"depth": depth, "time_at_goal": float(np.mean(tag)) if tag else None,
            "seeds": {str(r["seed"]): r["time_at_goal"] for r in rows},
            "success_any": float(np.mean([r["success_any"] for r in rows])) if rows else None,
            "parameters": sum(rows[0]["params"].values()) if rows else None,
            "env_steps": rows[0]["env_steps"] if rows else None}


def stage_depth(plan: dict, out: Path, work: Path, speed_path: Path, reduced: bool) -> dict:
    """The sweep (seeds in one program), compress / export / closed loop of the best deep seed, the
    pictures and the packed runs; everything brought back lies in ``out/depth`` (a few files)."""
    from distill.commands.render import critic_map_target
    from distill.commands.pack import pack_run
    from export.closed_loop import evaluate_onnx
    from export.student import export_student
    from students.config import student_config
    from students.report import compress_and_report
    from teachers.sweep import make_plan, run_sweep

    dest = out / "depth"
    done = dest / "depth.json"
    if done.is_file() and json.loads(done.read_text()).get("complete"):
        print(f"depth: done already ({done}); nothing to redo", flush=True)
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    device = device_name()
    sweep_dir = work / "sweep"
    recorded = sweep_dir / "sweep_config.json"
    if recorded.exists():  # a continued stage keeps the budget it started with
        budget = json.loads((work / "budget.json").read_text())
    else:
        budget = depth_budget(plan, read_speed(speed_path), device, str(speed_path.name if speed_path.parent == out
                                                                        else speed_path))
        _write_json(work / "budget.json", budget)
    print(f"depth: budget {budget['total_steps']:,} env steps per run ({budget['budget_source']}): "
          f"{budget['budget_reason']}", flush=True)

    sweep = make_plan(plan["env"], plan["depths"], plan["seeds"], parallel_seeds=True,
                      total_steps=budget["total_steps"], **plan["overrides"])
    summary = run_sweep(sweep, sweep_dir, show_progress=False, checkpoint_minutes=2.0)
    sweep_s = time.perf_counter() - t0
    deep, shallow = plan.get("teacher_depth") or max(plan["depths"]), plan["student"]["student_depth"]
    deep_runs = [r for r in summary["runs"] if r["depth"] == deep and r["finished"]]
    best = max(deep_runs, key=lambda r: (r["time_at_goal"], -r["seed"]))
    teacher = sweep.run_dir(sweep_dir, deep, best["seed"])
    scratch = sweep.run_dir(sweep_dir, shallow, best["seed"])
    print(f"depth: best depth-{deep} seed {best['seed']} (time_at_goal {best['time_at_goal']:.1f}); "
          f"compressing it to depth {shallow} against {scratch.name}", flush=True)

    student = work / "student"
    if not (student / "report.json").is_file():
        options = dict(plan["student"])
        steps = options.pop("steps", None)
        config = student_config(teacher, steps=steps, **options)
        compress_and_report(config, teacher, student, resume=(student / "config.json").exists(),
                            report_episodes=plan["report_episodes"], show_progress=False, baseline_run=scratch)
    report = json.loads((student / "report.json").read_text())
    onnx = work / "student.onnx"
    if not onnx.is_file():
        export_student(student, onnx, gate_episodes=plan["onnx_episodes"])
    closed_loop = evaluate_onnx(onnx, None, plan["onnx_episodes"], seed=0)

    pictures = work / "pictures"
    pictures.mkdir(parents=True, exist_ok=True)
    goal = far_goal(plan["env"])
    goal_text = f"{goal[0]:g},{goal[1]:g}"
    for name, run in (("critic_teacher", teacher), ("critic_scratch", scratch)):
        if not (pictures / f"{name}.png").is_file():
            critic_map_target(run, goal_text, pictures / f"{name}.png", points_per_cell=plan["critic_points"])

    packed = work / "packed"
    for name, run in (("teacher", teacher), ("student", student), ("scratch", scratch)):
        if not (packed / name / "config.json").is_file():
            pack_run(run, packed / name)
            strip_machine_paths(packed / name, work, out)
    for name in ("report.md", "report.json"):
        shutil.copy2(student / name, pictures / name)
    strip_machine_paths(pictures, work, out)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("teacher", "student", "scratch"):
        _tar(dest / f"{name}.tar", {name: packed / name})
    _tar(dest / "pictures.tar", {
        "sweep.png": sweep_dir / "sweep.png", "sweep.md": sweep_dir / "sweep.md", "sweep.json": sweep_dir / "sweep.json",
        "report.md": pictures / "report.md", "report.json": pictures / "report.json", "report.png": student / "report.png",
        "report_maze.png": student / "report_maze.png", "teacher_maze.png": teacher / "maze.png",
        "scratch_maze.png": scratch / "maze.png",
        "critic_teacher.png": pictures / "critic_teacher.png", "critic_scratch.png": pictures / "critic_scratch.png"})
    shutil.copy2(onnx, dest / "student.onnx")

    teacher_fig, scratch_fig = _seed_figures(summary, deep), _seed_figures(summary, shallow)
    result = {
        "device": device, "env": plan["env"], "depths": list(plan["depths"]), "seeds": list(plan["seeds"]),
        "reduced": reduced, "complete": True,
        "command": "python benchmarks/gpu_campaign.py --stage depth" + (" --reduced" if reduced else ""),
        **budget, "batch_size": summary["settings"]["batch_size"],
        "sweep": {"by_depth": summary["by_depth"], "runs": [{k: r[k] for k in ("depth", "seed", "time_at_goal",
                  "success_any", "best_time_at_goal", "env_steps", "wall_seconds", "env_steps_per_s", "curve")}
                  for r in summary["runs"]]},
        "teacher": {**teacher_fig, "run": teacher.name, "best_seed": best["seed"]},
        "scratch": {**scratch_fig, "run": scratch.name},
        "report": {"episodes": report["episodes"], "retention": report["retention"],
                   **{k: {m: report[k][m] for m in ("time_at_goal", "success_any", "depth")}
                      | {"parameters": sum(report[k]["params"].values())}
                      for k in ("teacher", "student", "scratch") if k in report and "skipped" not in report[k]}},
        "onnx_closed_loop": closed_loop, "onnx_bytes": onnx.stat().st_size,
        "critic_goal": list(goal), "files": sorted(p.name for p in dest.iterdir() if p.is_file()) + ["depth.json", "depth.md"],
        "sweep_seconds": sweep_s, "stage_seconds": time.perf_counter() - t0,
    }
    result["files"] = sorted(set(result["files"]))
    _write_json(done, result)
    write_depth_report(dest, result)
    print(f"depth: teacher d{deep} {teacher_fig['time_at_goal']:.1f}, scratch d{shallow} "
          f"{scratch_fig['time_at_goal']:.1f}, retention {report['retention']:.3f}; ONNX closed loop "
          f"{closed_loop['time_at_goal']:.1f}; {result['stage_seconds']:.0f} s -> {dest}", flush=True)
    return result


def strip_machine_paths(run: Path, work: Path, out: Path) -> None:
    """Packed runs travel into the repository: the paths they record (the run they came from, orbax's
    commit notes, a student's teacher, the command line) lose the machine's folders: paths inside the
    stage's work folder become relative to it, and the work and results folders read <work>, <out>."""
    work, out = str(Path(work).absolute()), str(Path(out).absolute())
    for path in run.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md", ".txt", ".jsonl") and path.stat().st_size < 1 << 22:
            text = path.read_text(errors="replace")
            new = text.replace(work + os.sep, "").replace(work, "<work>").replace(out, "<out>")
            if new != text:
                path.write_text(new)


def _fmt(value, spec=".1f") -> str:
    return "-" if value is None else format(value, spec)


def write_depth_report(dest: Path, r: dict) -> None:
    """depth.md: the issue's table (ONNX p50 is filled in on the CPU by ``--unpack``)."""
    t, s, rep = r["teacher"], r["scratch"], r["report"]
    p50 = r.get("cpu", {}).get("onnx_p50_us")
    per_seed = lambda f: ", ".join(f"seed {k}: {v:.1f}" for k, v in f["seeds"].items())  # noqa: E731
    lines = [f"# Depth pays? {r['env']} on {r['device']}", "",
             f"Command: `{r['command']}`. Depths {r['depths']}, seeds {r['seeds']} (each depth's seeds in one program), "
             f"batch {r['batch_size']}, {t['env_steps']:,} env steps per run. Budget ({r['budget_source']}): "
             f"{r['budget_reason']}.", "",
             "| policy | depth | parameters | time_at_goal (mean over seeds, and each seed) | success_any | ONNX p50 on this CPU |",
             "|---|---|---|---|---|---|",
             f"| deep teacher (sweep, last evaluation) | {t['depth']} | {t['parameters']:,} | {_fmt(t['time_at_goal'])} "
             f"({per_seed(t)}) | {_fmt(t['success_any'], '.2f')} | - |",
             f"| CRL from scratch (sweep, last evaluation) | {s['depth']} | {s['parameters']:,} | {_fmt(s['time_at_goal'])} "
             f"({per_seed(s)}) | {_fmt(s['success_any'], '.2f')} | - |"]
    for name, label in (("teacher", f"deep teacher, seed {t['best_seed']}"), ("student", "student"),
                        ("scratch", f"CRL from scratch, seed {t['best_seed']}")):
        if name in rep:
            row = rep[name]
            lines.append(f"| {label} (report's {rep['episodes']} episodes) | {row['depth']} | {row['parameters']:,} | "
                         f"{row['time_at_goal']:.1f} | {row['success_any']:.2f} | - |")
    c = r["onnx_closed_loop"]
    lines.append(f"| student ONNX file (closed loop, {c['episodes']} episodes) | {rep['student']['depth']} | "
                 f"{rep['student']['parameters']:,} | {c['time_at_goal']:.1f} | {c['success_any']:.2f} | "
                 f"{_fmt(p50, '.0f') + ' us' if p50 is not None else 'filled on the CPU'} |")
    ratio = (s["time_at_goal"] / t["time_at_goal"]) if t["time_at_goal"] else None
    lines += ["", f"- Retention (student / teacher, report's episodes): {rep['retention']:.3f}; scratch / teacher "
              f"(sweep means): {_fmt(ratio, '.3f')}. The goal: teacher at least 2x scratch, retention at least 0.9 "
              "with scratch at or below 0.7 of the teacher.",
              f"- Critic maps for the goal at {r['critic_goal']} (the goal cell farthest from the start): "
              "`critic_teacher.png`, `critic_scratch.png` in `pictures.tar`, with the sweep plot and the maze top views.",
              "- Packed runs: `teacher.tar`, `student.tar`, `scratch.tar` (`--unpack` extracts and checks them).", ""]
    if r.get("cpu"):
        lines += [f"- Unpacked on the CPU: {r['cpu']['checked']}", ""]
    runs_text = "\n".join(lines)
    (dest / "depth.md").write_text(runs_text)


def unpack_depth(dest: Path) -> dict:
    """The CPU user's half: extracts the packed runs beside the tars, refuses any that fails its
    recorded evaluation, measures the ONNX file's latency here, and fills depth.md's last column."""
    import tarfile

    from distill.commands.pack import verify_packed_run
    from export.latency import onnx_policy_latency

    result = json.loads((dest / "depth.json").read_text())
    checks = []
    for name in ("teacher", "student", "scratch"):
        run = dest / "runs" / name
        if not run.is_dir():
            with tarfile.open(dest / f"{name}.tar") as tar:
                tar.extractall(dest / "runs", filter="data")
        check = verify_packed_run(run)
        checks.append(f"{name} {check['time_at_goal']:.1f} against {check['recorded_time_at_goal']:.1f} recorded")
    latency = onnx_policy_latency(dest / "student.onnx")
    result["cpu"] = {"onnx_p50_us": latency["p50_us"], "onnx_p99_us": latency.get("p99_us"),
                     "checked": "recorded evaluations reproduced: " + "; ".join(checks)}
    _write_json(dest / "depth.json", result)
    write_depth_report(dest, result)
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
    parser.add_argument("--work", default=None,
                        help="Where the depth stage trains its runs (default runs/gpu_campaign/<device>).")
    parser.add_argument("--speed-json", default=None,
                        help="The speed stage's measurements that size the depth stage (default <out>/speed.json).")
    parser.add_argument("--unpack", default=None, metavar="DIR",
                        help="On the CPU: extract and check the packed runs of a depth stage's folder, add ONNX latency.")
    parser.add_argument("--reduced", action="store_true", help="Toy sizes on a point-mass maze (a CPU check).")
    parser.add_argument("--deadline-s", type=float, default=float("inf"),
                        help="Start no speed point after this many seconds (the rest waits for a later call).")
    parser.add_argument("--speed-point", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    plans = REDUCED if args.reduced else FULL

    if args.speed_point:
        speed_point_worker(json.loads(args.speed_point), plans["speed"])
        return
    if args.unpack:
        from distill.errors import DistillError

        try:
            result = unpack_depth(Path(args.unpack))
        except (DistillError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        print(f"unpacked: {result['cpu']['checked']}; ONNX p50 {result['cpu']['onnx_p50_us']:.0f} us", flush=True)
        return
    device = device_name()
    out = Path(args.out) if args.out else ROOT / "results" / "gpu" / device
    try:
        check_results_device(out, device)
    except CampaignError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    out.mkdir(parents=True, exist_ok=True)
    stages = STAGES if args.stage == "all" else (args.stage,)
    t0 = time.perf_counter()
    if "speed" in stages:
        stage_speed(plans["speed"], out, args.reduced, time.monotonic() + args.deadline_s)
    if "depth" in stages:
        work = Path(args.work) if args.work else ROOT / "runs" / "gpu_campaign" / device
        speed = Path(args.speed_json) if args.speed_json else out / "speed.json"
        stage_depth(plans["depth"], out, work, speed, args.reduced)
    print(f"campaign stages {', '.join(stages)} done in {time.perf_counter() - t0:.0f} s -> {out}", flush=True)


if __name__ == "__main__":
    main()
