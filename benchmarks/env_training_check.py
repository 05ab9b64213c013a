"""Does the pipeline train on each environment? A short teacher run per environment, side by side.

Each run uses the same small budget (``--total-steps`` env steps, a depth-4 width-256 teacher, the
paper's update-to-data ratio) so that the table shows, for every environment, that the critic's
InfoNCE loss falls and nothing goes non-finite, what a training step costs there, and where the
deterministic policy stands after that little training. It is a smoke test at real sizes, not a
learning result: a maze needs millions of steps.

    python benchmarks/env_training_check.py --out runs/env_check --json results/envs/training_check.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_output import env_names, table_and_json  # noqa: E402

SHORT_RUN = dict(
    num_envs=64,
    unroll_length=50,
    batch_size=256,
    updates_per_step=0,
    num_evals=4,
    eval_episodes=16,
    replay_rows=2_000,
    prefill_rows=100,
)


def check(name: str, out: Path, total_steps: int) -> dict:
    from distill.store.runs import read_metrics
    from teachers.config import teacher_config
    from teachers.train import train_teacher

    run = out / name
    t0 = time.perf_counter()
    train_teacher(teacher_config(name, **SHORT_RUN, total_steps=total_steps), run, show_progress=False)
    seconds = time.perf_counter() - t0
    metrics = read_metrics(run)
    first, last = metrics[0], metrics[-1]
    finite = all(math.isfinite(v) for m in metrics for v in m.values() if isinstance(v, float))
    return {
        "env": name,
        "run": str(run),
        "env_steps": last["env_steps"],
        "sgd_updates": last["sgd_updates"],
        "critic_loss_first_epoch": first["critic_loss"],
        "critic_loss_last_epoch": last["critic_loss"],
        "critic_accuracy_first_epoch": first["critic/accuracy"],
        "critic_accuracy_last_epoch": last["critic/accuracy"],
        "time_at_goal": [m["time_at_goal"] for m in metrics],
        "success_any": [m["success_any"] for m in metrics],
        "all_finite": finite,
        "steps_per_s": last["steps_per_s"],
        "wall_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default=None, help="Comma-separated names (default: every registered environment).")
    parser.add_argument("--total-steps", type=int, default=64_000, help="Env steps per run.")
    parser.add_argument("--out", default="runs/env_check", help="Where the run directories go.")
    parser.add_argument("--json", default="results/envs/training_check.json")
    args = parser.parse_args()

    from distill.errors import DistillError

    names = env_names(args.envs)
    # Records of other environments already in the JSON are kept, so environments can be checked
    # a few at a time into one table.
    path = Path(args.json)
    kept = [r for r in json.loads(path.read_text()) if r["env"] not in names] if path.exists() else []
    records = []
    for name in names:
        try:
            records.append(check(name, Path(args.out), args.total_steps))
        except DistillError as err:
            sys.exit(f"error: {name}: {err}")
        print(json.dumps(records[-1]), flush=True)
    records = kept + records

    table_and_json(
        "short teacher runs (depth 4, width 256, UTD 1:40)",
        [
            "env",
            "env steps",
            "critic loss first -> last epoch",
            "critic accuracy",
            "finite",
            "env steps/s",
            "wall s",
            "time_at_goal by epoch",
            "success_any last",
        ],
        [
            [
                r["env"],
                f"{r['env_steps']:,}",
                f"{r['critic_loss_first_epoch']:.3f} -> {r['critic_loss_last_epoch']:.3f}",
                f"{r['critic_accuracy_first_epoch']:.3f} -> {r['critic_accuracy_last_epoch']:.3f}",
                "yes" if r["all_finite"] else "NO",
                f"{r['steps_per_s']:,.0f}",
                f"{r['wall_seconds']:.0f}",
                " ".join(f"{v:.0f}" for v in r["time_at_goal"]),
                f"{r['success_any'][-1]:.2f}",
            ]
            for r in records
        ],
        records,
        args.json,
    )


if __name__ == "__main__":
    main()
