"""What the depth stage leaves in ``$OUT`` after every epoch: ``depth.json`` (the record, every run's
curve, final parameters beside best checkpoints), ``depth.md``, ``depth.png`` and one tar per run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from benchmarks.gpu.common import strip_machine_paths, write_json, write_tar


def run_dir(work: Path, depth: int, seed: int) -> Path:
    return Path(work) / "runs" / f"depth_{depth}_seed_{seed}"


def run_figures(out: Path) -> dict:
    """A run's curve, its final evaluation (final parameters) and its best checkpoint's."""
    from distill.store import runs

    metrics = runs.read_metrics(out)
    if not metrics:
        return {"run": out.name, "epochs": 0, "curve": []}
    last = metrics[-1]
    best = max(metrics, key=lambda m: (m["time_at_goal"], -m["epoch"]))
    return {
        "run": out.name,
        "epochs": last["epoch"],
        "env_steps": last["env_steps"],
        "final": {k: last[k] for k in ("epoch", "env_steps", "time_at_goal", "success_any")},
        "best": {k: best[k] for k in ("epoch", "env_steps", "time_at_goal", "success_any")},
        "env_steps_per_s": float(np.mean([m["steps_per_s"] for m in metrics])),
        "curve": [{k: m[k] for k in ("epoch", "env_steps", "time_at_goal", "success_any")} for m in metrics],
    }


def compare(runs_by_depth: dict[int, list[dict]]) -> dict:
    """Each depth's mean over seeds at the env steps every run has reached: the final parameters
    there (that epoch's evaluation) and the best checkpoint up to there."""
    epochs = [r["epochs"] for rows in runs_by_depth.values() for r in rows]
    common = min(epochs) if epochs else 0
    result = {"common_epoch": common, "by_depth": {}}
    if not common:
        return result
    for depth, rows in runs_by_depth.items():
        at = [next(c for c in r["curve"] if c["epoch"] == common) for r in rows]
        best = [max(c["time_at_goal"] for c in r["curve"] if c["epoch"] <= common) for r in rows]
        result["common_env_steps"] = at[0]["env_steps"]
        result["by_depth"][str(depth)] = {
            "final_time_at_goal_mean": float(np.mean([a["time_at_goal"] for a in at])),
            "final_time_at_goal": [a["time_at_goal"] for a in at],
            "final_success_any_mean": float(np.mean([a["success_any"] for a in at])),
            "best_time_at_goal_mean": float(np.mean(best)),
            "best_time_at_goal": best,
        }
    depths = sorted(runs_by_depth)
    deep, shallow = result["by_depth"][str(depths[-1])], result["by_depth"][str(depths[0])]
    for which in ("final", "best"):
        s = shallow[f"{which}_time_at_goal_mean"]
        result[f"{which}_ratio_deep_over_shallow"] = deep[f"{which}_time_at_goal_mean"] / s if s else None
    return result


def write_outputs(plan, record: dict, work: Path, out: Path, programs_written: list) -> dict:
    """depth.json, depth.md, depth.png and the tars of ``programs_written``'s runs, into ``out``."""
    runs_by_depth = {d: [run_figures(run_dir(work, d, s)) for s in plan.seeds] for d in plan.depths}
    result = {
        **record,
        "runs": [dict(r, depth=d, seed=s) for d in plan.depths for s, r in zip(plan.seeds, runs_by_depth[d])],
        "comparison": compare(runs_by_depth),
    }
    for program in programs_written:
        for seed, run in zip(plan.seeds, program.outs):
            travel_copy(run, work, out / f"d{program.depth}_s{seed}.tar")
    write_json(out / "depth.json", result)
    (out / "depth.md").write_text(depth_markdown(result))
    plot(result, out / "depth.png")
    return result


def travel_copy(run: Path, work: Path, tar: Path) -> None:
    """One run as it travels home: config, metrics, pictures, best and newest parameters (no state),
    with this machine's folders left out of its text files."""
    from distill.store.checkpoints import newest_params_dir

    stage = work / "travel" / run.name
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    for path in run.iterdir():
        if path.is_file() and path.suffix in (".json", ".jsonl", ".png", ".md"):
            shutil.copy2(path, stage / path.name)
    best = newest_params_dir(run, "best")
    final = newest_params_dir(run, "last")
    for kind, found in (("best", best), ("final", final)):
        if found is not None:
            shutil.copytree(
                found[0] / str(found[1]),
                stage / "checkpoints" / kind / str(found[1]),
                ignore=shutil.ignore_patterns("state"),
            )
    strip_machine_paths(stage, work, tar.parent)
    write_tar(tar, {run.name: stage})


def depth_markdown(r: dict) -> str:
    c = r["comparison"]
    lines = [
        f"# Depth on {r['env']} ({r['device']})",
        "",
        f"Depths {r['depths']} with seeds {r['seeds']} stacked in one program per depth; batch "
        f"{r['overrides'].get('batch_size')}; epochs of {r['epoch_steps']} training steps, each followed by "
        f"{r['overrides'].get('eval_episodes')} deterministic evaluation episodes (time_at_goal out of 1000). "
        f"Target {r['target_steps']:,} env steps per run.",
        "",
    ]
    for call in r.get("calls", []):
        plan = call.get("plan", {})
        lines.append(
            f"- Call {call['call']}: deadline {call['deadline_s']:.0f} s; planned {plan.get('rounds', '-')} "
            f"rounds to {plan.get('env_steps_per_run_at_deadline', 0):,} env steps per run; "
            f"{call.get('epochs_run', 0)} rounds run; stopped by {call.get('stopped', 'the limit (cut)')}."
        )
    lines += [
        "",
        "| run | epochs | env steps | final time_at_goal | best time_at_goal (epoch) | success_any (final) | "
        "env steps/s per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["runs"]:
        if not row["epochs"]:
            lines.append(f"| {row['run']} | 0 | - | - | - | - | - |")
            continue
        f, b = row["final"], row["best"]
        lines.append(
            f"| {row['run']} | {row['epochs']} | {row['env_steps']:,} | {f['time_at_goal']:.1f} | "
            f"{b['time_at_goal']:.1f} ({b['epoch']}) | {f['success_any']:.2f} | {row['env_steps_per_s']:,.0f} |"
        )
    if c.get("common_epoch"):
        lines += [
            "",
            f"At the env steps every run reached ({c['common_env_steps']:,}, epoch {c['common_epoch']}), "
            "mean over seeds:",
            "",
        ]
        lines += comparison_lines(c)
    lines += ["![curves](depth.png)", ""]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = {d: plt.cm.viridis(i / max(len(r["depths"]) - 1, 1)) for i, d in enumerate(sorted(r["depths"]))}
    for row in r["runs"]:
        if row["curve"]:
            ax.plot(
                [c["env_steps"] for c in row["curve"]],
                [c["time_at_goal"] for c in row["curve"]],
                marker=".",
                color=colors[row["depth"]],
                alpha=0.8 if row["seed"] == r["seeds"][0] else 0.45,
                label=f"depth {row['depth']}, seed {row['seed']}",
            )
    ax.set_xlabel("env steps per run")
    ax.set_ylabel("time_at_goal (final parameters of each epoch)")
    ax.set_title(f"{r['env']} on {r['device']}: depth {max(r['depths'])} against {min(r['depths'])}")
    ax.grid(alpha=0.3)
    if r["runs"] and any(row["curve"] for row in r["runs"]):
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def comparison_lines(c: dict) -> list[str]:
    """The depths side by side at the env steps every run reached: final parameters and best checkpoint."""
    lines = [
        "| depth | final parameters: time_at_goal (seeds) | best checkpoint: time_at_goal (seeds) |",
        "|---|---|---|",
    ]
    for depth, d in c["by_depth"].items():
        final = ", ".join(f"{v:.1f}" for v in d["final_time_at_goal"])
        best = ", ".join(f"{v:.1f}" for v in d["best_time_at_goal"])
        lines.append(
            f"| {depth} | {d['final_time_at_goal_mean']:.1f} ({final}) | {d['best_time_at_goal_mean']:.1f} ({best}) |"
        )

    def ratio(v):
        return "-" if v is None else f"{v:.2f}x"

    return lines + [
        "",
        f"Deep over shallow: {ratio(c['final_ratio_deep_over_shallow'])} on final parameters, "
        f"{ratio(c['best_ratio_deep_over_shallow'])} on best checkpoints (the goal: at least 2x).",
        "",
    ]
