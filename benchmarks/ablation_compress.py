"""Ablation of the distillation recipe on one teacher: which losses and which data collection matter.

    python benchmarks/ablation_compress.py --teacher-run runs/demo/teacher --out results/ablation

Variants (all depth-4 students of the same teacher, same seed and budget):
  policy-only        action matching alone (no representation losses)
  policy+repr        + phi/psi regression + relational softmax KL (the default)
  policy+repr+guide  + the teacher-critic guidance term -Q_teacher(s, pi_student(s, g), g)
  cloning            the default losses, but the teacher always acts (plain cloning on teacher rollouts)
  kl, both           the policy loss as KL between the tanh-Gaussians, or KL + MSE, instead of MSE
Prints a table and writes JSON with retention, action error, critic agreement and wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = {
    "policy-only": dict(representation_weight=0.0, relational_weight=0.0),
    "policy+repr": dict(),
    "policy+repr+guide": dict(critic_guidance_weight=0.1),
    "cloning": dict(beta_start=1.0, beta_decay=1.0),
    "kl": dict(policy_loss="kl"),
    "both": dict(policy_loss="both"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher-run", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("results/ablation"))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--student-depth", type=int, default=4)
    parser.add_argument("--episodes", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with contextlib.redirect_stdout(io.StringIO()):
        import distill.envs  # noqa: F401
    from distill.app.report import build_report
    from students.config import StudentConfig
    from students.train import compress

    records = []
    for name in args.variants.split(","):
        run = args.out / name
        config = dataclasses.replace(StudentConfig(student_depth=args.student_depth, seed=args.seed), **VARIANTS[name])
        final = compress(config, args.teacher_run, run, resume=(run / "config.json").exists(), show_progress=False)
        report = build_report(run, episodes=args.episodes, seed=args.seed, baseline=False)
        s = report["student"]
        records.append(
            {
                "variant": name,
                "teacher_time_at_goal": report["teacher"]["time_at_goal"],
                "student_time_at_goal": s["time_at_goal"],
                "student_success_any": s["success_any"],
                "retention": report["retention"],
                "action_mean_abs_error": s["action_error"]["mean_abs"],
                "top1_agreement": s["critic_agreement"]["top1_agreement"],
                "q_rank_correlation": s["critic_agreement"]["q_rank_correlation"],
                "compress_seconds": final.get("compress_seconds"),
            }
        )
        print(json.dumps(records[-1]), flush=True)

    from rich.table import Table

    from distill.app.console import print_table

    table = Table(title=f"distillation ablation (teacher time_at_goal {records[0]['teacher_time_at_goal']:.1f})")
    for col in (
        "variant",
        "student time_at_goal",
        "success_any",
        "retention",
        "|da| mean",
        "top-1 agree",
        "Q rank corr",
        "seconds",
    ):
        table.add_column(col, justify="right")
    for r in records:
        table.add_row(
            r["variant"],
            f"{r['student_time_at_goal']:.1f}",
            f"{r['student_success_any']:.3f}",
            f"{r['retention']:.3f}",
            f"{r['action_mean_abs_error']:.4f}",
            f"{r['top1_agreement']:.3f}",
            f"{r['q_rank_correlation']:.3f}",
            f"{r['compress_seconds']:.0f}",
        )
    print_table(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.json").write_text(json.dumps(records, indent=2) + "\n")
    print(f"wrote {args.out / 'ablation.json'}")


if __name__ == "__main__":
    main()
