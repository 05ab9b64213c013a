"""``distill sweep``: the paper's Figure 1 for any environment: one teacher per (depth, seed), trained
one after another under the same settings, then the score against depth and every learning curve.

``DIR/sweep_config.json`` records what the sweep is; each run lives in ``DIR/depth_D_seed_S`` as an
ordinary teacher run. Calling the sweep again on the same ``DIR`` with the same settings skips the
finished runs and resumes the unfinished one; other settings are refused, so nothing trained is
lost. ``DIR/sweep.json``, ``sweep.md`` and ``sweep.png`` are rewritten after every run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from distill.app import grid
from distill.errors import DistillError
from distill.store import runs
from teachers.config import TeacherConfig, teacher_config
from teachers.train import check_seeds_fit, schedule, train_teacher, train_teachers

SWEEP_CONFIG = "sweep_config.json"
# The teacher settings a sweep varies itself; every other setting is shared by all its runs.
VARIED = ("critic_depth", "actor_depth", "seed")


def parse_int_list(text: str, what: str) -> tuple[int, ...]:
    """``"4,8,16"`` -> (4, 8, 16), refusing empty lists, non-integers and repeats."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise DistillError(f"--{what} must list at least one value, got '{text}'")
    try:
        values = tuple(int(t) for t in items)
    except ValueError:
        raise DistillError(f"--{what} must be comma-separated integers, got '{text}'") from None
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise DistillError(f"--{what} lists {', '.join(map(str, repeated))} more than once")
    return values


def int_list(values, what: str) -> tuple[int, ...]:
    """A list option given as text (``"4,8,16"``) or as integers from Python, checked the same way."""
    if isinstance(values, str):
        return parse_int_list(values, what)
    values = tuple(values)
    if not values:
        raise DistillError(f"--{what} must list at least one value")
    if len(set(values)) != len(values):
        raise DistillError(f"--{what} lists a value more than once: {list(values)}")
    return values


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    env: str
    depths: tuple[int, ...]
    seeds: tuple[int, ...]
    base: TeacherConfig
    """The settings every run shares (its depth and seed are replaced per run)."""
    parallel_seeds: bool = False
    """Train each depth's seeds in one program (``train_teachers``) instead of one after another."""

    def config(self, depth: int, seed: int) -> TeacherConfig:
        return dataclasses.replace(self.base, critic_depth=depth, actor_depth=depth, seed=seed)

    def run_dir(self, out: Path, depth: int, seed: int) -> Path:
        return Path(out) / f"depth_{depth}_seed_{seed}"

    def record(self) -> dict:
        shared = {k: v for k, v in dataclasses.asdict(self.base).items() if k not in VARIED}
        return {"env": self.env, "depths": list(self.depths), "seeds": list(self.seeds), "settings": shared}


def make_plan(env: str, depths, seeds=(0,), parallel_seeds: bool = False, **overrides) -> SweepPlan:
    """Checks a whole sweep before anything trains: every run's config must be valid, and with
    ``parallel_seeds`` every depth's seeds must fit the device together."""
    depths, seeds = int_list(depths, "depths"), int_list(seeds, "seeds")
    bad = [d for d in depths if d <= 0 or d % 4]
    if bad:
        raise DistillError(f"--depths must be positive multiples of 4 (a residual block is 4 layers), got {bad}")
    for key in VARIED:
        if overrides.get(key) is not None:
            raise DistillError(f"a sweep sets {key} itself; use --depths and --seeds")
    base = teacher_config(env, **overrides)
    plan = SweepPlan(env, tuple(depths), tuple(seeds), base, parallel_seeds)
    for depth in plan.depths:
        for seed in plan.seeds:
            plan.config(depth, seed).validate()
        if parallel_seeds:
            check_seeds_fit(plan.config(depth, plan.seeds[0]).resolved(), len(plan.seeds))
    return plan


def _open_sweep_dir(out: Path, plan: SweepPlan) -> bool:
    """True if ``out`` already holds this sweep (to continue); starts a new one or refuses anything else."""
    defaults = {f.name: f.default for f in dataclasses.fields(TeacherConfig) if f.default is not dataclasses.MISSING}
    ignore = TeacherConfig.RETIRED_FIELDS + TeacherConfig.RUNTIME_FIELDS
    return grid.open_grid(out, SWEEP_CONFIG, plan.record(), "sweep", defaults=defaults, ignore=ignore)


def _finished(run: Path, config: TeacherConfig) -> bool:
    return runs.finished(run, schedule(config))


def run_sweep(plan: SweepPlan, out: Path, show_progress: bool = True, checkpoint_minutes: float = 10.0) -> dict:
    """Trains every run of the sweep that is not finished yet, then writes the sweep's summary."""
    out = Path(out)
    _open_sweep_dir(out, plan)
    if plan.parallel_seeds:
        return _run_sweep_parallel(plan, out, show_progress, checkpoint_minutes)
    cells = [(d, s) for d in plan.depths for s in plan.seeds]
    for index, count, (depth, seed), resume in grid.pending(
        cells, lambda c: plan.run_dir(out, *c), lambda c: _finished(plan.run_dir(out, *c), plan.config(*c))
    ):
        grid.notice(f"sweep {index}/{count}: depth {depth}, seed {seed}" + (" (resuming)" if resume else ""))
        train_teacher(
            plan.config(depth, seed),
            plan.run_dir(out, depth, seed),
            resume=resume,
            show_progress=show_progress,
            checkpoint_minutes=checkpoint_minutes,
            description=f"sweep {index}/{count} d{depth} s{seed}",
        )
        write_summary(plan, out)
    return write_summary(plan, out)


def _run_sweep_parallel(plan: SweepPlan, out: Path, show_progress: bool, checkpoint_minutes: float) -> dict:
    """Each depth's seeds as one program; a depth whose runs all finished is skipped."""

    def cells(depth):
        return [(plan.run_dir(out, depth, s), plan.config(depth, s)) for s in plan.seeds]

    for index, count, depth, resume in grid.pending(
        plan.depths, lambda d: cells(d)[0][0], lambda d: all(_finished(r, c) for r, c in cells(d))
    ):
        started = [(run / "config.json").is_file() for run, _ in cells(depth)]
        if any(started) and not all(started):
            raise DistillError(
                f"the depth-{depth} runs in {out} were not all started together; "
                "continue this sweep without --parallel-seeds"
            )
        grid.notice(
            f"sweep depth {index}/{count}: depth {depth}, seeds {list(plan.seeds)} in one program"
            + (" (resuming)" if resume else "")
        )
        train_teachers(
            [c for _, c in cells(depth)],
            [r for r, _ in cells(depth)],
            resume=resume,
            show_progress=show_progress,
            checkpoint_minutes=checkpoint_minutes,
            description=f"sweep d{depth} seeds {len(plan.seeds)}",
        )
        write_summary(plan, out)
    return write_summary(plan, out)


def _run_summary(plan: SweepPlan, out: Path, depth: int, seed: int) -> dict | None:
    from distill.envs import get_spec
    from distill.nn.networks import count_params, make_crl_networks

    run = plan.run_dir(out, depth, seed)
    metrics = runs.read_metrics(run)
    if not metrics:
        return None
    config = plan.config(depth, seed)
    networks = make_crl_networks(
        get_spec(plan.env), actor_depth=depth, critic_depth=depth, width=config.width, repr_dim=config.repr_dim
    )
    params = jax.eval_shape(networks.init, jax.random.PRNGKey(0))
    wall = np.cumsum([m.get("epoch_seconds", 0.0) for m in metrics])
    last = metrics[-1]
    return {
        "depth": depth,
        "seed": seed,
        "run": run.name,
        "finished": _finished(run, config),
        "time_at_goal": last["time_at_goal"],
        "success_any": last["success_any"],
        "best_time_at_goal": max(m["time_at_goal"] for m in metrics),
        "env_steps": last["env_steps"],
        "wall_seconds": float(wall[-1]),
        "env_steps_per_s": float(np.mean([m["steps_per_s"] for m in metrics])),
        "params": {k: count_params(v) for k, v in params.items()},
        "curve": [
            {
                "env_steps": m["env_steps"],
                "wall_seconds": float(w),
                "time_at_goal": m["time_at_goal"],
                "success_any": m["success_any"],
            }
            for m, w in zip(metrics, wall)
        ],
    }


def write_summary(plan: SweepPlan, out: Path) -> dict:
    out = Path(out)
    rows = [r for d in plan.depths for s in plan.seeds if (r := _run_summary(plan, out, d, s))]
    by_depth = []
    for depth in plan.depths:
        done = [r for r in rows if r["depth"] == depth and r["finished"]]
        if not done:
            continue
        tag, succ = np.array([r["time_at_goal"] for r in done]), np.array([r["success_any"] for r in done])
        best = np.array([r["best_time_at_goal"] for r in done])
        by_depth.append(
            {
                "depth": depth,
                "seeds": len(done),
                "time_at_goal_mean": float(tag.mean()),
                "time_at_goal_std": float(tag.std()),
                "best_time_at_goal_mean": float(best.mean()),
                "best_time_at_goal_std": float(best.std()),
                "success_any_mean": float(succ.mean()),
                "success_any_std": float(succ.std()),
                "env_steps_per_s": float(np.mean([r["env_steps_per_s"] for r in done])),
                "wall_seconds": float(np.mean([r["wall_seconds"] for r in done])),
            }
        )
    summary = {**plan.record(), "episode_length": _episode_length(plan), "by_depth": by_depth, "runs": rows}
    return grid.write_summary(out, "sweep", summary, _markdown(summary), lambda path: _plot(path, summary))


def _episode_length(plan: SweepPlan) -> int:
    from distill.envs import get_spec

    return get_spec(plan.env).episode_length


def _markdown(s: dict) -> str:
    settings = s["settings"]
    lines = [
        f"# Depth sweep: {s['env']}",
        "",
        f"Depths {s['depths']} (actor and critic), seeds {s['seeds']}; every run {settings['total_steps']:,} env steps, "
        f"width {settings['width']}, batch {settings['batch_size']}, {settings['num_envs']} envs. "
        f"Final parameters: the last evaluation, as the paper's code reports; best checkpoint: the highest "
        f"evaluation of the run, the parameters `compress` and `export` read ({settings['eval_episodes']} "
        f"deterministic episodes each; time_at_goal out of {s['episode_length']}).",
        "",
        "| depth | seeds | final parameters: time_at_goal (mean ± std) | best checkpoint: time_at_goal (mean ± std) | "
        "success_any, final (mean ± std) | env steps/s | wall time per run |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in s["by_depth"]:
        best = (
            f"{d['best_time_at_goal_mean']:.1f} ± {d['best_time_at_goal_std']:.1f}"
            if "best_time_at_goal_mean" in d
            else "-"
        )
        lines.append(
            f"| {d['depth']} | {d['seeds']} | {d['time_at_goal_mean']:.1f} ± {d['time_at_goal_std']:.1f} | {best} | "
            f"{d['success_any_mean']:.2f} ± {d['success_any_std']:.2f} | {d['env_steps_per_s']:,.0f} | "
            f"{d['wall_seconds'] / 60:.1f} min |"
        )
    lines += [
        "",
        "| run | finished | env steps | time_at_goal (final / best checkpoint) | success_any | parameters (actor + critic) | env steps/s | wall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in s["runs"]:
        lines.append(
            f"| {r['run']} | {'yes' if r['finished'] else 'no'} | {r['env_steps']:,} | {r['time_at_goal']:.1f} / "
            f"{r['best_time_at_goal']:.1f} | {r['success_any']:.2f} | {sum(r['params'].values()):,} | "
            f"{r['env_steps_per_s']:,.0f} | {r['wall_seconds'] / 60:.1f} min |"
        )
    lines += ["", "![sweep](sweep.png)", ""]
    return "\n".join(lines)


def _plot(path: Path, s: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    colors = {d: plt.cm.viridis(i / max(len(s["depths"]) - 1, 1)) for i, d in enumerate(s["depths"])}
    for ax, key in zip(axes[0], ("time_at_goal", "success_any")):
        for r in s["runs"]:
            if r["finished"]:
                ax.plot(r["depth"], r[key], "o", color=colors[r["depth"]], alpha=0.5)
        if s["by_depth"]:
            d = [b["depth"] for b in s["by_depth"]]
            ax.errorbar(
                d,
                [b[f"{key}_mean"] for b in s["by_depth"]],
                yerr=[b[f"{key}_std"] for b in s["by_depth"]],
                color="k",
                capsize=4,
                lw=1.5,
                label="final parameters: mean ± std over seeds",
            )
            if key == "time_at_goal" and all("best_time_at_goal_mean" in b for b in s["by_depth"]):
                ax.errorbar(
                    d,
                    [b["best_time_at_goal_mean"] for b in s["by_depth"]],
                    yerr=[b["best_time_at_goal_std"] for b in s["by_depth"]],
                    color="tab:red",
                    capsize=4,
                    lw=1,
                    ls="--",
                    label="best checkpoint: mean ± std",
                )
            ax.legend(fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(s["depths"], [str(d) for d in s["depths"]])
        ax.set_xlabel("depth (actor and critic)")
        ax.set_title(f"{key} (final parameters{' and best checkpoint' if key == 'time_at_goal' else ''})")
    for ax, x, label in ((axes[1][0], "env_steps", "env steps"), (axes[1][1], "wall_seconds", "wall-clock seconds")):
        for r in s["runs"]:
            ax.plot(
                [c[x] for c in r["curve"]],
                [c["time_at_goal"] for c in r["curve"]],
                color=colors[r["depth"]],
                label=f"depth {r['depth']}" if r["seed"] == s["seeds"][0] else None,
                marker=".",
            )
        ax.set_xlabel(label)
        ax.set_ylabel("time_at_goal")
        ax.legend(fontsize=8)
        ax.set_title(f"learning curves against {label}")
    fig.suptitle(f"{s['env']}: depth sweep")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["SweepPlan", "int_list", "make_plan", "parse_int_list", "run_sweep", "write_summary"]
