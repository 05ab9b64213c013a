"""Compile time, step time and peak host memory of the teacher's jitted update versus depth.

Each (depth, mode) is measured in its own process so that peak RSS belongs to that depth alone.
``scan`` is the toolkit's network as ``--block-unroll auto`` builds it on this backend (on a CPU a
plain loop over the stacked blocks); ``unrolled`` is the same blocks with no loop (``--block-unroll
all``), straight-line code as the paper's Python loop builds it. Unrolled depths stop after the first one that
exceeds --unrolled-cap seconds, since deeper ones only take longer.

    python benchmarks/compile_depth.py --depths 4,64,256,1024 --json results/compile_depth.json
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def measure(depth: int, mode: str, env: str, width: int, batch: int, repeats: int, remat: bool) -> dict:
    """Runs inside the worker process: builds the real teacher and times its jitted SGD update."""
    import jax

    from teachers.agent import make_teacher
    from teachers.config import teacher_config

    config = teacher_config(
        env,
        critic_depth=depth,
        actor_depth=depth,
        width=width,
        batch_size=batch,
        num_envs=batch,
        unroll_length=10,
        replay_rows=20,
        prefill_rows=20,
        updates_per_step=1,
        remat=remat,
        block_unroll="all" if mode == "unrolled" else "auto",
    )
    teacher = make_teacher(config)
    remat = teacher.config.remat  # resolved: the automatic choice when not forced
    state = jax.jit(teacher.init)(jax.random.PRNGKey(0))
    prefill = jax.jit(teacher.prefill_step)
    state = prefill(prefill(state))
    update = jax.jit(teacher.sgd_step, donate_argnums=0)
    key = jax.random.PRNGKey(1)

    t0 = time.perf_counter()
    compiled = update.lower(state, key).compile()
    compile_s = time.perf_counter() - t0
    state, metrics = compiled(state, key)
    jax.block_until_ready(metrics)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        state, metrics = compiled(state, jax.random.fold_in(key, i))
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    return {
        "depth": depth,
        "mode": mode,
        "remat": remat,
        "width": width,
        "batch": batch,
        "compile_s": compile_s,
        "step_s": sorted(times)[len(times) // 2],
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "device": str(jax.devices()[0].platform),
    }


def run_worker(args, depth: int, mode: str, cap: float) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--depths",
        str(depth),
        "--mode",
        mode,
        "--env",
        args.env,
        "--width",
        str(args.width),
        "--batch",
        str(args.batch),
        "--repeats",
        str(args.repeats),
    ] + ({True: ["--remat"], False: ["--no-remat"], None: []}[args.remat])
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=cap, env=env, check=True)
    except subprocess.TimeoutExpired:
        return {
            "depth": depth,
            "mode": mode,
            "compile_s": None,
            "step_s": None,
            "peak_rss_gb": None,
            "status": f"timed out after {cap:.0f} s",
        }
    except subprocess.CalledProcessError as err:
        tail = (err.stderr or "").strip().splitlines()[-1:] or ["failed"]
        return {
            "depth": depth,
            "mode": mode,
            "compile_s": None,
            "step_s": None,
            "peak_rss_gb": None,
            "status": f"failed: {tail[0][:200]}",
        }
    record = json.loads(out.stdout.strip().splitlines()[-1])
    record["status"] = "ok"
    record["wall_s"] = time.perf_counter() - t0
    return record


def print_table(records: list[dict]) -> None:
    from rich.table import Table

    from distill.app.console import print_table as show_table

    table = Table(title="teacher SGD update (actor + alpha + critic) vs depth")
    for col in ("depth", "mode", "compile s", "step s", "peak RSS GB", "status"):
        table.add_column(col, justify="right")
    fmt = lambda v, f: "-" if v is None else format(v, f)
    for r in records:
        table.add_row(
            str(r["depth"]),
            r["mode"],
            fmt(r["compile_s"], ".1f"),
            fmt(r["step_s"], ".3f"),
            fmt(r["peak_rss_gb"], ".2f"),
            r["status"],
        )
    show_table(table)
    scan = {r["depth"]: r for r in records if r["mode"] == "scan" and r["status"] == "ok"}
    if len(scan) >= 2:
        lo, hi = min(scan), max(scan)
        print(f"compile time ratio depth {hi} / depth {lo} (scan): {scan[hi]['compile_s'] / scan[lo]['compile_s']:.2f}")


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for mode, marker in (("scan", "o"), ("unrolled", "s")):
        rows = [r for r in records if r["mode"] == mode and r["status"] == "ok"]
        if rows:
            axes[0].plot([r["depth"] for r in rows], [r["compile_s"] for r in rows], marker=marker, label=mode)
            axes[1].plot([r["depth"] for r in rows], [r["peak_rss_gb"] for r in rows], marker=marker, label=mode)
    for ax, label in zip(axes, ("compile seconds", "peak host RSS (GB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("depth (Dense layers in residual blocks)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", default="4,64,256,1024")
    parser.add_argument(
        "--unrolled-depths",
        default=None,
        help="Depths for the unrolled reference (default: --depths; 'none' skips it).",
    )
    parser.add_argument(
        "--unrolled-cap", type=float, default=240.0, help="Seconds before an unrolled compile is abandoned."
    )
    parser.add_argument("--env", default="reacher")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--remat",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Force rematerialisation on or off (default: the teacher's automatic choice).",
    )
    parser.add_argument("--json", default="results/compile_depth.json")
    parser.add_argument("--mode", default="scan", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]

    if args.worker:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            record = measure(depths[0], args.mode, args.env, args.width, args.batch, args.repeats, args.remat)
        print(json.dumps(record))
        return

    records = []
    for depth in depths:
        records.append(run_worker(args, depth, "scan", cap=3600))
        print(json.dumps(records[-1]), flush=True)
    spec = args.depths if args.unrolled_depths is None else args.unrolled_depths
    unrolled_depths = [] if spec == "none" else [int(d) for d in spec.split(",")]
    for depth in unrolled_depths:
        records.append(run_worker(args, depth, "unrolled", cap=args.unrolled_cap))
        print(json.dumps(records[-1]), flush=True)
        if records[-1]["status"] != "ok":
            break
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=2) + "\n")
    plot(records, path.with_suffix(".png"))
    print_table(records)
    print(f"wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
