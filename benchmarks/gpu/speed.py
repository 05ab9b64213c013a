"""The speed stage: what the teacher's training costs on one GPU, the depth plan's inputs first.

Each point runs in its own process (a clean memory peak, and a cap on its time), in this order, so
that a call cut off by its deadline has measured what matters most:

1. whole training steps on ``ant_hardest_maze`` at depths 4 and 8, one seed and two stacked in one
   program (what the depth stage plans with);
2. the chip's float32 matrix ceiling and memory bandwidth;
3. depths 16 and 64, one seed and 4 stacked;
4. the SGD step alone (no physics to compile) over the block unroll, with and without XLA command
   buffers, and over the batch;
5. depths 256 and 1024 (actor 512) on ``humanoid_u_maze``: the time per 1M env steps from which the
   paper's 134-hour humanoid U-maze run is estimated.

``speed.json`` and ``speed.md`` are rewritten after every point. The deadline counts from the start of
the process; no point starts within 30 s of it, a point is capped at what is left, and a point that
runs out says whether it was compiling or running. A later call with the same ``--out`` measures
only the points not yet done.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.gpu.common import ROOT, device_name, seconds_left, stamp, write_json
from teachers.config import TOY_SETTINGS

COMMAND_BUFFER_FLAG = "--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL"
MAZE, DEEP_ENV = "ant_hardest_maze", "humanoid_u_maze"

PLANS = {
    "full": dict(
        env=MAZE,
        deep_env=DEEP_ENV,
        batch=512,
        plan_depths=(4, 8),
        plan_seeds=2,
        mid_depths=(16, 64),
        seeds=4,
        unroll_depth=64,
        unrolls=(1, 4, "all"),
        batch_depths=(16, 64),
        batches=(256, 512, 1024),
        deep=((256, 256), (1024, 512)),
        sgd_steps=200,
        train_steps=1,
        cap_s=300,
        overrides={},
    ),
    "reduced": dict(
        env="simple_u_maze",
        deep_env="simple_u_maze",
        batch=16,
        plan_depths=(4, 8),
        plan_seeds=2,
        mid_depths=(12,),
        seeds=2,
        unroll_depth=12,
        unrolls=(1, "all"),
        batch_depths=(8,),
        batches=(16, 32),
        deep=((16, 8),),
        sgd_steps=3,
        train_steps=1,
        cap_s=300,
        reduced=True,
        matmul_size=256,
        copy_floats=1 << 16,
        overrides={k: v for k, v in TOY_SETTINGS.items() if k not in ("batch_size", "total_steps")},
    ),
}


def phase(name: str) -> None:
    """Tells the parent what the point is doing, so that a point cut off can say which phase it was in."""
    print(json.dumps({"phase": name}), flush=True)


def peak_memory_gb() -> tuple[float, str]:
    """The device's peak bytes in use where it reports them (GPUs), else the process's peak RSS."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 1024**3, "device"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, "host RSS"


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
    from distill.nn.memory import tower_params

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
    return {
        "kind": "matmul",
        "device": device_name(),
        "matmul_size": n,
        "matmul_tflops": 2 * n**3 / sorted(times)[5] / 1e12,
        "copy_gb_per_s": 2 * big.nbytes / sorted(copies)[5] / 1e9,
    }


def _teacher(env: str, depth: int, actor_depth: int | None, unroll, batch: int, overrides: dict, runs_axis=None):
    from teachers.agent import make_teacher
    from teachers.config import teacher_config

    config = teacher_config(
        env, critic_depth=depth, actor_depth=actor_depth or depth, block_unroll=unroll, batch_size=batch, **overrides
    )
    return make_teacher(config, runs_axis=runs_axis)


def measure_sgd(env: str, depth: int, unroll, batch: int, steps: int, overrides: dict) -> dict:
    """The SGD step alone (no physics to compile), on a replay buffer of random states."""
    import jax
    import jax.numpy as jnp

    from distill.nn.networks import resolve_block_unroll

    teacher = _teacher(env, depth, None, unroll, batch, overrides)
    config, spec = teacher.config, teacher.spec
    state = jax.jit(teacher.init)(jax.random.PRNGKey(0))
    rows, envs = state.buffer.traj_ids.shape
    buffer = state.buffer.replace(
        states=jax.random.normal(jax.random.PRNGKey(1), state.buffer.states.shape),
        actions=jax.random.uniform(jax.random.PRNGKey(2), state.buffer.actions.shape, minval=-1, maxval=1),
        steps=jnp.broadcast_to((jnp.arange(rows) % spec.episode_length)[:, None], (rows, envs)).astype(jnp.int32),
        traj_ids=jnp.broadcast_to(
            (jnp.arange(rows) // spec.episode_length)[:, None] * envs + jnp.arange(envs), (rows, envs)
        ).astype(jnp.int32),
        rows_written=jnp.asarray(rows, jnp.int32),
    )
    state = state.replace(buffer=buffer)

    def run(state):
        return jax.lax.scan(teacher.sgd_step, state, jax.random.split(state.key, steps))[0]

    phase("compiling")
    t0 = time.perf_counter()
    compiled = jax.jit(run, donate_argnums=0).lower(state).compile()
    compile_s = time.perf_counter() - t0
    phase("running")
    state = compiled(state)
    jax.block_until_ready(state.params)
    t0 = time.perf_counter()
    state = compiled(state)
    jax.block_until_ready(state.params)
    ms = 1000 * (time.perf_counter() - t0) / steps
    memory, memory_kind = peak_memory_gb()
    return {
        "kind": "sgd",
        "env": env,
        "depth": depth,
        "batch_size": batch,
        "block_unroll": resolve_block_unroll(unroll, depth),
        "block_unroll_setting": str(unroll),
        "sgd_step_ms": ms,
        "tflops": sgd_flops(config, spec) / (ms / 1000) / 1e12,
        "compile_s": compile_s,
        "peak_memory_gb": memory,
        "memory_kind": memory_kind,
        "device": device_name(),
    }


def measure_training(
    env: str, depth: int, actor_depth: int | None, unroll, batch: int, seeds: int, steps: int, overrides: dict
) -> dict:
    """Whole training steps (collect, insert, SGD at the configured ratio) in the engine's device loop,
    for one teacher or ``seeds`` stacked ones: compile, one step to warm up, then ``steps`` timed."""
    import jax

    from distill.nn.networks import resolve_block_unroll
    from distill.train.engine import make_run_steps
    from teachers.agent import RUNS_AXIS
    from teachers.train import stacked_teacher_trainable, teacher_trainable

    stacked = seeds > 1
    teacher = _teacher(env, depth, actor_depth, unroll, batch, overrides, runs_axis=RUNS_AXIS if stacked else None)
    config = teacher.config
    trainable = stacked_teacher_trainable(teacher, tuple(range(seeds))) if stacked else teacher_trainable(teacher)
    run_steps = make_run_steps(trainable)
    phase("compiling")
    state = trainable.init()
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    compiled = run_steps.lower(state, 1).compile()
    compile_s = time.perf_counter() - t0
    phase("running")
    state, metrics = compiled(state, 1)
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    state, metrics = compiled(state, steps)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - t0
    memory, memory_kind = peak_memory_gb()
    per_seed = steps * config.num_envs * config.unroll_length / seconds
    sgd_ms = 1000 * seconds / (steps * config.updates_per_step)
    return {
        "kind": "train",
        "env": env,
        "depth": depth,
        "actor_depth": config.actor_depth,
        "seeds": seeds,
        "batch_size": config.batch_size,
        "num_envs": config.num_envs,
        "updates_per_step": config.updates_per_step,
        "block_unroll": resolve_block_unroll(unroll, depth),
        "block_unroll_setting": str(unroll),
        "remat": config.remat,
        "env_steps_per_s": per_seed,
        "env_steps_per_s_total": per_seed * seeds,
        "sgd_step_ms": sgd_ms,
        "tflops": seeds * sgd_flops(config, teacher.spec) / (sgd_ms / 1000) / 1e12,
        "compile_s": compile_s,
        "peak_memory_gb": memory,
        "memory_kind": memory_kind,
        "device": device_name(),
    }


def speed_points(plan: dict) -> list[dict]:
    """The points in the order they run (the module's docstring says why)."""

    def train(depth, seeds, env=None, actor=None):
        name = (
            f"train {env or plan['env']} d{depth}"
            + (f"/{actor}" if actor else "")
            + (f" x{seeds} seeds" if seeds > 1 else "")
        )
        return {
            "kind": "train",
            "name": name,
            "env": env or plan["env"],
            "depth": depth,
            "actor_depth": actor,
            "seeds": seeds,
            "command_buffers": "best",
        }

    points = [train(d, s) for d in plan["plan_depths"] for s in (1, plan["plan_seeds"])]
    points.append({"kind": "matmul", "name": "matmul"})
    points += [train(d, s) for d in plan["mid_depths"] for s in (1, plan["seeds"])]
    for cb in (False, True):  # the unroll and command-buffer grid, on the SGD step alone
        points.append(
            {
                "kind": "sgd",
                "name": f"sgd unroll grid{' cb' if cb else ''}",
                "command_buffers": cb,
                "variants": [dict(depth=plan["unroll_depth"], unroll=u, batch=plan["batch"]) for u in plan["unrolls"]],
            }
        )
    points.append(
        {
            "kind": "sgd",
            "name": "sgd batch grid",
            "command_buffers": "best",
            "variants": [dict(depth=d, unroll="auto", batch=b) for d in plan["batch_depths"] for b in plan["batches"]],
        }
    )
    points += [train(depth, 1, env=plan["deep_env"], actor=actor) for depth, actor in plan["deep"]]
    return points


def best_command_buffers(records: list[dict]) -> bool:
    """Command buffers on if the SGD grid ran faster with them (fastest unroll each way); off until
    the grid has run (on an H100 they made the fully unrolled depth-64 step 3x slower)."""

    def fastest(cb):
        times = [
            r["sgd_step_ms"]
            for r in records
            if r.get("kind") == "sgd"
            and r.get("command_buffers") is cb
            and "error" not in r
            and r.get("group") == "unroll"
        ]
        return min(times) if times else None

    on, off = fastest(True), fastest(False)
    return on is not None and off is not None and on < off


def run_speed_point(point: dict, plan: dict, reduced: bool, cap_s: float, command_buffers: bool) -> list[dict]:
    """One point in its own process (a clean memory peak and a compile cap); one record per variant."""
    env = dict(os.environ)
    if command_buffers:
        env["XLA_FLAGS"] = with_command_buffers(env.get("XLA_FLAGS", ""))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu" / "campaign.py"), "--speed-point", json.dumps(point)]
    command += ["--reduced"] if reduced else []
    base = {"name": point["name"], "command_buffers": command_buffers}
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=cap_s, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired as err:
        lines = [json.loads(x) for x in _text(err.stdout).splitlines() if x.startswith("{")]
        phases = [x["phase"] for x in lines if "phase" in x]
        done = [x for x in lines if "phase" not in x]
        doing = f" (still {phases[-1]})" if phases else " (still starting)"
        return [{**base, **r} for r in done] + [{**base, "error": f"not done within {cap_s:.0f} s{doing}"}]
    records = [r for r in (json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")) if "phase" not in r]
    if result.returncode or not records:
        last = (result.stderr.strip().splitlines() or ["failed"])[-1][:300]
        return [{**base, **r} for r in records] + [{**base, "error": last}]
    return [{**base, **r} for r in records]


def _text(output) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")


def speed_point_worker(point_json: str, plan: dict) -> None:
    """Runs in the point's process: prints one JSON line per measured variant."""
    point = json.loads(point_json)
    if point["kind"] == "matmul":
        print(json.dumps(measure_matmul(plan.get("matmul_size", 8192), plan.get("copy_floats", 1 << 28))), flush=True)
        return
    if point["kind"] == "sgd":
        group = "unroll" if "unroll" in point["name"] else "batch"
        for v in point["variants"]:
            record = measure_sgd(plan["env"], v["depth"], v["unroll"], v["batch"], plan["sgd_steps"], plan["overrides"])
            print(json.dumps({**record, "group": group}), flush=True)
        return
    print(
        json.dumps(
            measure_training(
                point.get("env", plan["env"]),
                point["depth"],
                point.get("actor_depth"),
                "auto",
                plan["batch"],
                point["seeds"],
                plan["train_steps"],
                plan["overrides"],
            )
        ),
        flush=True,
    )


def stage_speed(plan: dict, out: Path, deadline_s: float = float("inf")) -> list[dict]:
    from benchmarks.gpu.common import check_writable

    out = check_writable(out, "the results folder")
    reduced = bool(plan.get("reduced"))
    path = out / "speed.json"
    records = json.loads(path.read_text()) if path.exists() else []
    # Points cut off by a call's deadline (not by their own cap) are measured again by the next call.
    records = [r for r in records if "(deadline)" not in r.get("error", "")]
    done = {r["name"] for r in records}
    for point in speed_points(plan):
        if point["name"] in done:
            continue
        left = seconds_left(deadline_s)
        if left < 30:
            stamp("speed", f"deadline reached; '{point['name']}' and later points are left for the next call")
            break
        stamp("speed", f"{point['name']} ({left:.0f} s left)")
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
        write_json(path, records)
        write_speed_report(out, records, plan, quiet=True)
    write_json(path, records)  # a call cut off before its first point still records what it holds
    write_speed_report(out, records, plan)
    return records


def write_speed_report(out: Path, records: list[dict], plan: dict, quiet: bool = False) -> None:
    """speed.md: the tables of speed.json, with the command that made them."""
    ceiling = next((r for r in records if r.get("kind") == "matmul" and "error" not in r), None)
    peak = ceiling["matmul_tflops"] if ceiling else None

    def share(r):
        return f"{100 * r['tflops'] / peak:.1f}%" if peak and "tflops" in r else "-"

    lines = [
        f"# Teacher speed on {records[0]['device'] if records and 'device' in records[0] else 'this device'}",
        "",
        f"Command: `OUT=... benchmarks/gpu/launch.sh speed{' --reduced' if plan.get('reduced') else ''}` "
        f"(`python benchmarks/gpu/campaign.py --stage speed`). Batch {plan['batch']} unless stated; training "
        "points at the preset's ratio (for the mazes: 512 envs, unroll 62, one SGD step per 40 transitions), "
        "one training step timed after the compiling one. Each point ran in its own process.",
        "",
    ]
    if ceiling:
        lines += [
            f"Measured ceilings: float32 matrix product {ceiling['matmul_tflops']:.1f} TFLOP/s (JAX's default "
            f"precision, {ceiling['matmul_size']}^3), memory {ceiling['copy_gb_per_s']:,.0f} GB/s (read + write).",
            "",
        ]
    lines += [
        "## Whole training steps (collection included)",
        "",
        "| env | depth (critic / actor) | seeds | unroll | env steps/s per seed | total | s per 1M env steps (one run) | "
        "ms / SGD step | TFLOP/s | of ceiling | compile s | peak memory GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if r.get("kind") == "train":
            lines.append(
                f"| {r['env']} | {r['depth']} / {r['actor_depth']} | {r['seeds']} | {r['block_unroll']} | "
                f"{r['env_steps_per_s']:,.0f} | {r['env_steps_per_s_total']:,.0f} | {1e6 / r['env_steps_per_s']:,.0f} | "
                f"{r['sgd_step_ms']:.2f} | {r['tflops']:.1f} | {share(r)} | {r['compile_s']:.1f} | "
                f"{r['peak_memory_gb']:.2f} ({r['memory_kind']}) |"
            )
        elif r.get("name", "").startswith("train") and "error" in r:
            lines.append(f"| {r['name']} | | | | {r['error']} | | | | | | | |")
    lines += [
        "",
        "## SGD step alone (no physics)",
        "",
        "| depth | batch | unroll | command buffers | ms / SGD step | TFLOP/s | of ceiling | compile s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if r.get("kind") == "sgd" or (r.get("name", "").startswith("sgd") and "error" in r):
            if "error" in r:
                lines.append(f"| {r['name']} | | | {'on' if r['command_buffers'] else 'off'} | {r['error']} | | | |")
                continue
            lines.append(
                f"| {r['depth']} | {r['batch_size']} | {r['block_unroll']} ({r['block_unroll_setting']}) | "
                f"{'on' if r['command_buffers'] else 'off'} | {r['sgd_step_ms']:.2f} | {r['tflops']:.1f} | "
                f"{share(r)} | {r['compile_s']:.1f} |"
            )
    runs_path = out / "speed.md"
    runs_path.parent.mkdir(parents=True, exist_ok=True)
    runs_path.write_text("\n".join(lines) + "\n")
    if not quiet:
        print("\n".join(lines), flush=True)
