"""What sensors cost a student: retention of students of one teacher under several sensor models.

    python benchmarks/sensor_retention.py --run full=runs/s_full --run "velocities dropped, history 1"=runs/s_k1 ... \
        --json results/sensors/reacher.json

Each ``--run LABEL=DIR`` is a finished ``distill compress`` run of the same teacher; its ``report.json``
(the teacher and the student on the same evaluation episodes) gives the figures. Prints a Markdown table
and writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def collect(runs: list[tuple[str, Path]]) -> dict:
    rows, teacher = [], None
    for label, run in runs:
        report = json.loads((run / "report.json").read_text())
        config = json.loads((run / "config.json").read_text())["config"]
        if teacher is None:
            teacher = {
                "run": report["teacher_run"],
                **{k: report["teacher"][k] for k in ("time_at_goal", "success_any", "depth", "width")},
            }
        elif report["teacher_run"] != teacher["run"]:
            raise SystemExit(f"error: {run} distils {report['teacher_run']}, not {teacher['run']}")
        student = report["student"]
        rows.append(
            {
                "label": label,
                "run": str(run),
                "sensors": config.get("sensors", ""),
                "time_at_goal": student["time_at_goal"],
                "success_any": student["success_any"],
                "retention": report["retention"],
                "depth": student["depth"],
                "width": student["width"],
                "input": student.get("sensors", {}).get("sensor_dim"),
                "sgd_updates": report["budgets"]["student"]["sgd_updates"],
                "env_steps": report["budgets"]["student"]["env_steps"],
            }
        )
    return {
        "env": report["env"],
        "episodes": report["episodes"],
        "seed": report["seed"],
        "teacher": teacher,
        "students": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, metavar="LABEL=DIR")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    pairs = []
    for item in args.run:
        label, sep, run = item.partition("=")
        if not sep:
            raise SystemExit(f"error: --run takes LABEL=DIR, got {item!r}")
        pairs.append((label, Path(run)))
    result = collect(pairs)
    t = result["teacher"]
    print(
        f"{result['env']}: teacher (depth {t['depth']}, width {t['width']}, full state) time_at_goal {t['time_at_goal']:.1f}, "
        f"success_any {t['success_any']:.3f}; {result['episodes']} episodes, seed {result['seed']}"
    )
    print("| student reads | time_at_goal | success_any | retention | SGD updates |")
    print("|---|---|---|---|---|")
    for r in result["students"]:
        print(
            f"| {r['label']} | {r['time_at_goal']:.1f} | {r['success_any']:.3f} | {r['retention']:.3f} | {r['sgd_updates']:,} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
