"""``distill frontier``: students of several sizes, each measured as a robot would run it.

For every (depth, width) the frontier distils a student from one teacher (``students.train.compress``,
the library function behind ``distill compress``), exports it through the parity gate
(``export.student.export_student``) and evaluates the ONNX file in closed loop (``export.closed_loop``)
on the same episodes as the teacher, without and with observation noise. After the last point it times
every file at batch 1 on one onnxruntime thread, all in this one process and interleaved, so the
latencies compare. It ends with ``frontier.json``, ``frontier.md`` and ``frontier.png``: retention
(student / teacher time_at_goal) against p50 latency and against parameters, the Pareto front, and the
recommended student: the fastest within ``tolerance`` of the best retention (``recommend``).

It lives in the command layer because it ties the students and the export together, as the demo does.
``DIR/frontier_config.json`` records what the frontier is; each point is an ordinary student run in
``DIR/depth_D_width_W`` with its ``policy.onnx`` and ``frontier_point.json`` beside the checkpoints.
Calling it again on the same ``DIR`` with the same settings skips finished points and resumes the
unfinished student; other settings are refused, so nothing trained is lost.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import time
from pathlib import Path

import jax

from distill.app import grid
from distill.app.evaluate import load_run_policy
from distill.app.sweep import int_list
from distill.errors import DistillError
from distill.eval.evaluation import check_obs_noise, make_evaluator, summarize
from distill.nn.networks import count_params
from distill.store import runs
from export.closed_loop import evaluate_onnx
from export.latency import policy_and_session_latencies
from export.student import export_student
from students.config import student_config
from students.train import compress, load_student, schedule, teacher_checkpoint_hash

FRONTIER_CONFIG = "frontier_config.json"
POINT_FILE = "frontier_point.json"
TEACHER_FILE = "teacher_evaluation.json"
DEFAULT_DEPTHS = "0,4,8"
DEFAULT_WIDTHS = "64,128,256"
DEFAULT_TOLERANCE = 0.02
# Sensor noise the frontier reports retention at unless told otherwise: on reacher, the same sigma in
# every state unit (joint cos/sin, positions, velocities), as large as the success radius.
DEFAULT_OBS_NOISE = 0.05
DEFAULT_EPISODES = 128
DEFAULT_LATENCY_CALLS = 5000
# Student options a frontier passes to every point, with the `distill compress` flag of each.
STUDENT_OPTIONS = {
    "steps": "--steps",
    "iterations": "--iterations",
    "num_envs": "--num-envs",
    "unroll_length": "--unroll-length",
    "batch_size": "--batch-size",
    "eval_episodes": "--eval-episodes",
    "seed": "--seed",
}


@dataclasses.dataclass(frozen=True)
class FrontierPlan:
    """What a frontier is: one teacher, a grid of student sizes, shared settings and evaluation."""

    teacher_run: str
    """The teacher's run directory, as given."""
    env: str
    """The teacher's environment."""
    depths: tuple[int, ...]
    """Student depths (0 = input projection and heads only; otherwise multiples of 4)."""
    widths: tuple[int, ...]
    """Student widths."""
    options: tuple[tuple[str, int], ...] = ()
    """Student options given (``STUDENT_OPTIONS`` names), shared by every point; the rest are defaults."""
    episodes: int = DEFAULT_EPISODES
    """Closed-loop evaluation episodes, the same for the teacher and every student."""
    eval_seed: int = 0
    """Seed of the evaluation episodes and of the observation noise."""
    obs_noise: float = DEFAULT_OBS_NOISE
    """sigma of the Gaussian noise on the observed state for the noisy retention; 0 skips it."""

    def points(self) -> list[tuple[int, int]]:
        return [(d, w) for d in self.depths for w in self.widths]

    def config(self, depth: int, width: int):
        """The checked student config of one point, as ``distill compress`` would make it."""

        return student_config(Path(self.teacher_run), student_depth=depth, student_width=width, **dict(self.options))

    def run_dir(self, out: Path, depth: int, width: int) -> Path:
        return Path(out) / f"depth_{depth}_width_{width}"

    def record(self) -> dict:
        """The settings that make the points; a frontier in a directory keeps them."""

        shared = {
            k: v
            for k, v in dataclasses.asdict(self.config(self.depths[0], self.widths[0])).items()
            if k not in ("student_depth", "student_width", "teacher_run")
        }
        return {
            "teacher_run": os.path.normpath(self.teacher_run),
            "env": self.env,
            "teacher_checkpoint_sha256": teacher_checkpoint_hash(Path(self.teacher_run)),
            "depths": list(self.depths),
            "widths": list(self.widths),
            "episodes": self.episodes,
            "eval_seed": self.eval_seed,
            "obs_noise": self.obs_noise,
            "student_settings": shared,
        }

    def commands(self, depth: int, width: int, out: str = "runs/student", onnx: str = "policy.onnx") -> str:
        """The exact commands that train and export this point's student on their own."""
        flags = [f"--student-depth {depth}", f"--student-width {width}"]
        flags += [f"{STUDENT_OPTIONS[k]} {v}" for k, v in self.options]
        return (
            f"distill compress {shlex.quote(self.teacher_run)} {' '.join(flags)} --no-baseline --out {shlex.quote(out)}"
            f" && distill export {shlex.quote(out)} --out {shlex.quote(onnx)}"
        )


def make_plan(
    teacher_run: Path,
    depths="0,4,8",
    widths="64,128,256",
    episodes: int = DEFAULT_EPISODES,
    eval_seed: int = 0,
    obs_noise: float = DEFAULT_OBS_NOISE,
    **options,
) -> FrontierPlan:
    """Checks a whole frontier before anything trains: the teacher, the grid and every point's config."""

    depths, widths = int_list(depths, "depths"), int_list(widths, "widths")
    bad = [d for d in depths if d < 0 or d % 4]
    if bad:
        raise DistillError(
            f"--depths must be non-negative multiples of 4 (0 = input projection and heads only; "
            f"a residual block is 4 layers), got {bad}"
        )
    bad = [w for w in widths if w <= 0]
    if bad:
        raise DistillError(f"--widths must be positive, got {bad}")
    if episodes <= 0:
        raise DistillError(f"--episodes must be positive, got {episodes}")
    obs_noise = check_obs_noise(obs_noise)
    unknown = set(options) - set(STUDENT_OPTIONS)
    if unknown:
        raise DistillError(f"a frontier does not take {', '.join(sorted(unknown))}")
    given = tuple((k, int(v)) for k, v in options.items() if v is not None)
    record = runs.read_config(Path(teacher_run), kind="teacher")
    if not runs.read_metrics(Path(teacher_run)):
        raise DistillError(f"the teacher in {teacher_run} has not finished an epoch yet")
    plan = FrontierPlan(
        str(teacher_run), record["config"]["env"], tuple(depths), tuple(widths), given, episodes, eval_seed, obs_noise
    )
    for depth, width in plan.points():
        plan.config(depth, width)
    return plan


# ---- the recommendation and the Pareto front (pure functions of the measured table) ---------------


def pareto_front(points: list[dict], cost: str = "p50_us", value: str = "retention") -> list[dict]:
    """The points no other point beats: none is at most as costly and at least as good, and strictly
    better in one of the two. Points without a value are left out. Sorted by cost."""
    ok = [p for p in points if p.get(value) is not None and p.get(cost) is not None]

    def dominated(p):
        return any(
            q[cost] <= p[cost] and q[value] >= p[value] and (q[cost] < p[cost] or q[value] > p[value]) for q in ok
        )

    return sorted((p for p in ok if not dominated(p)), key=lambda p: (p[cost], -p[value]))


def recommend(
    points: list[dict], tolerance: float = DEFAULT_TOLERANCE, cost: str = "p50_us", value: str = "retention"
) -> dict | None:
    """The fastest point whose retention is within ``tolerance`` of the best retention.

    ``tolerance`` is absolute: 0.02 is two points of retention (best 0.98 admits 0.96). Ties in
    latency go to fewer parameters, then to the higher retention. None if no point has a retention.
    """
    if not 0.0 <= tolerance <= 1.0 or math.isnan(tolerance):
        raise DistillError(f"--tolerance must lie in [0, 1], got {tolerance}")
    ok = [p for p in points if p.get(value) is not None and p.get(cost) is not None]
    if not ok:
        return None
    best = max(p[value] for p in ok)
    # A hair of slack so that a retention exactly `tolerance` below the best counts despite rounding.
    within = [p for p in ok if p[value] >= best - tolerance - 1e-12]
    return min(within, key=lambda p: (p[cost], p.get("params", 0), -p[value]))


# ---- running the points ------------------------------------------------------------------------


def _student_finished(run: Path, config) -> bool:
    return runs.finished(run, schedule(config))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def evaluate_teacher(plan: FrontierPlan) -> dict:
    """The teacher on the frontier's episodes, without and (if asked) with observation noise."""

    policy = load_run_policy(Path(plan.teacher_run))
    env = policy.spec.make(backend=policy.backend)
    key = jax.random.PRNGKey(plan.eval_seed)
    result = {
        "plain": summarize(
            make_evaluator(env, policy.spec, policy.apply, plan.episodes)(policy.actor_params, key).success
        ),
        "params": count_params(policy.actor_params),
    }
    if plan.obs_noise:
        noisy = make_evaluator(env, policy.spec, policy.apply, plan.episodes, plan.obs_noise)
        result["noisy"] = summarize(noisy(policy.actor_params, key).success)
    config = runs.read_config(Path(plan.teacher_run), kind="teacher")["config"]
    result.update({"depth": config["critic_depth"], "actor_depth": config["actor_depth"], "width": config["width"]})
    return result


def _run_point(
    plan: FrontierPlan,
    out: Path,
    depth: int,
    width: int,
    label: str,
    show_progress: bool,
    checkpoint_minutes: float,
    notice,
) -> dict:
    """Trains (or resumes), exports and evaluates one point; returns its record."""

    run, config = plan.run_dir(out, depth, width), plan.config(depth, width)
    record = _read_json(run / POINT_FILE)
    if record is not None and _student_finished(run, config) and (run / "policy.onnx").is_file():
        return record
    if not _student_finished(run, config):
        resume = (run / "config.json").is_file()
        notice(f"{label}: training the student" + (" (resuming)" if resume else ""))
        compress(
            config,
            Path(plan.teacher_run),
            run,
            resume=resume,
            show_progress=show_progress,
            checkpoint_minutes=checkpoint_minutes,
            description=f"{label} d{depth} w{width}",
        )
    notice(f"{label}: exporting to ONNX (parity gate) and evaluating it in closed loop")
    t0 = time.perf_counter()
    exported = export_student(run, run / "policy.onnx")
    plain = evaluate_onnx(run / "policy.onnx", plan.env, plan.episodes, plan.eval_seed)
    noisy = (
        evaluate_onnx(run / "policy.onnx", plan.env, plan.episodes, plan.eval_seed, plan.obs_noise)
        if plan.obs_noise
        else None
    )
    _, _, _, params, step = load_student(run)
    metrics = runs.read_metrics(run)
    record = {
        "depth": depth,
        "width": width,
        "run": run.name,
        "onnx": f"{run.name}/policy.onnx",
        "params": count_params(params["actor"]),
        "params_all_networks": count_params(params),
        "checkpoint_step": int(step),
        "parity_max_abs_error": exported["policy_parity_max_abs_error"],
        "closed_loop": plain,
        "closed_loop_noisy": noisy,
        "train_seconds": float(sum(m.get("epoch_seconds", 0.0) for m in metrics)),
        "export_and_evaluate_seconds": time.perf_counter() - t0,
    }
    runs.atomic_write_text(run / POINT_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def run_frontier(
    plan: FrontierPlan,
    out: Path,
    tolerance: float = DEFAULT_TOLERANCE,
    latency_calls: int = DEFAULT_LATENCY_CALLS,
    show_progress: bool = True,
    checkpoint_minutes: float = 10.0,
    notice=grid.notice,
) -> dict:
    """Every point of the frontier not done yet, then the latencies of all and the summary."""
    out = Path(out)
    if not 0.0 <= tolerance <= 1.0 or math.isnan(tolerance):
        raise DistillError(f"--tolerance must lie in [0, 1], got {tolerance}")
    if latency_calls < 20:
        raise DistillError(f"--latency-calls must be at least 20, got {latency_calls}")
    grid.open_grid(out, FRONTIER_CONFIG, plan.record(), "frontier", nested="student_settings")
    teacher = _read_json(out / TEACHER_FILE)
    if teacher is None:
        notice(
            f"frontier: evaluating the teacher on {plan.episodes} episodes"
            + (f", also with observation noise sigma {plan.obs_noise:g}" if plan.obs_noise else "")
        )
        teacher = evaluate_teacher(plan)
        runs.atomic_write_text(out / TEACHER_FILE, json.dumps(teacher, indent=2, sort_keys=True) + "\n")
    cells = plan.points()
    records = []
    for index, (depth, width) in enumerate(cells, 1):
        label = f"frontier {index}/{len(cells)} (depth {depth}, width {width})"
        records.append(_run_point(plan, out, depth, width, label, show_progress, checkpoint_minutes, notice))
    notice(f"frontier: timing {len(cells)} ONNX policies at batch 1 on one thread, interleaved")
    latencies = policy_and_session_latencies([out / r["onnx"] for r in records], latency_calls)
    return write_summary(plan, out, teacher, records, latencies, tolerance, latency_calls)


def _retention(student: dict | None, teacher: dict | None) -> float | None:
    if not student or not teacher or teacher["time_at_goal"] <= 0:
        return None
    return student["time_at_goal"] / teacher["time_at_goal"]


def write_summary(
    plan: FrontierPlan,
    out: Path,
    teacher: dict,
    records: list[dict],
    latencies: list[dict],
    tolerance: float,
    latency_calls: int,
) -> dict:
    out = Path(out)
    points = []
    for record, latency in zip(records, latencies):
        point = {
            **record,
            **latency,
            "time_at_goal": record["closed_loop"]["time_at_goal"],
            "success_any": record["closed_loop"]["success_any"],
            "retention": _retention(record["closed_loop"], teacher["plain"]),
            "noisy_time_at_goal": (record.get("closed_loop_noisy") or {}).get("time_at_goal"),
            "noisy_retention": _retention(record.get("closed_loop_noisy"), teacher.get("noisy")),
            "command": plan.commands(
                record["depth"],
                record["width"],
                out=f"runs/student_d{record['depth']}_w{record['width']}",
                onnx=f"policy_d{record['depth']}_w{record['width']}.onnx",
            ),
        }
        points.append(point)
    front = {(p["depth"], p["width"]) for p in pareto_front(points)}
    params_front = {(p["depth"], p["width"]) for p in pareto_front(points, cost="params")}
    for p in points:
        p["pareto"] = (p["depth"], p["width"]) in front
        p["pareto_params"] = (p["depth"], p["width"]) in params_front
    chosen = recommend(points, tolerance)
    best = max((p["retention"] for p in points if p["retention"] is not None), default=None)
    summary = {
        "teacher_run": plan.teacher_run,
        "env": plan.env,
        "episodes": plan.episodes,
        "eval_seed": plan.eval_seed,
        "obs_noise": plan.obs_noise,
        "tolerance": tolerance,
        "depths": list(plan.depths),
        "widths": list(plan.widths),
        "student_options": dict(plan.options),
        "teacher": teacher,
        "best_retention": best,
        "latency": {
            "calls_per_policy": latencies[0]["calls"] if latencies else 0,
            "threads": 1,
            "batch": 1,
            "how": "OnnxPolicy (input checks included) and a bare onnxruntime session with IO binding, "
            "one intra-op thread, every file in one process, interleaved in 20 rounds",
        },
        "points": points,
        "recommendation": None
        if chosen is None
        else {
            "depth": chosen["depth"],
            "width": chosen["width"],
            "run": chosen["run"],
            "retention": chosen["retention"],
            "p50_us": chosen["p50_us"],
            "p99_us": chosen["p99_us"],
            "params": chosen["params"],
            "command": chosen["command"],
            "rule": f"the fastest p50 (OnnxPolicy) among students with retention >= best - {tolerance:g}",
        },
        "shared": SHARED,
        "not_shared": NOT_SHARED,
    }
    grid.write_summary(out, "frontier", summary, _markdown(summary), lambda path: _plot(path, summary))
    return summary


SHARED = [
    "the teacher's evaluation: run once, on the frontier's episodes, with and without observation noise",
    "the evaluation episodes: every student's ONNX file starts from the teacher's starts and goals (same seed), "
    "and sees the same noise draws at the same steps",
]
NOT_SHARED = [
    "DAgger rollouts and teacher labels: each student acts in its own rollouts after the first round, and the "
    "teacher labels the states that student visited, so they differ between students. Only the first round "
    "(beta = 1, the teacher acting alone) is the same for students of one seed; it is recomputed per student "
    "(a few seconds) rather than cached, so that every point is an ordinary `distill compress` run",
]


def _fmt(value, spec: str = ".3f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def _markdown(s: dict) -> str:
    t = s["teacher"]
    noise = s["obs_noise"]
    lines = [
        f"# Retention-latency frontier: {s['env']}",
        "",
        f"Teacher `{s['teacher_run']}` (depth {t['depth']}, width {t['width']}, {t['params']:,} actor parameters): "
        f"time_at_goal {t['plain']['time_at_goal']:.2f}/{t['plain']['episode_length']}"
        + (f", {t['noisy']['time_at_goal']:.2f} with observation noise sigma {noise:g}" if t.get("noisy") else "")
        + f", over {s['episodes']} deterministic episodes (seed {s['eval_seed']}).",
        "",
        "Every student is evaluated as its ONNX file in closed loop on the same episodes. Retention = student / "
        "teacher time_at_goal; noisy retention = the same with Gaussian noise on the observed state (not the goal) "
        "for both" + (f", sigma {noise:g}." if noise else " (skipped: --obs-noise 0)."),
        f"Latency: {s['latency']['how']}; {s['latency']['calls_per_policy']:,} calls per policy. "
        "p50/p99 are OnnxPolicy's; the session's p50 is the floor a C++ controller would see.",
        "",
        "| depth | width | actor parameters | time_at_goal | retention | noisy retention | p50 (us) | p99 (us) | session p50 (us) | Pareto |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in s["points"]:
        mark = (
            "**recommended**"
            if s["recommendation"]
            and (p["depth"], p["width"]) == (s["recommendation"]["depth"], s["recommendation"]["width"])
            else ""
        )
        lines.append(
            f"| {p['depth']} | {p['width']} | {p['params']:,} | {p['time_at_goal']:.2f} | {_fmt(p['retention'])} | "
            f"{_fmt(p['noisy_retention'])} | {p['p50_us']:.1f} | {p['p99_us']:.1f} | {p['session_p50_us']:.1f} | "
            f"{'yes' if p['pareto'] else ''} {mark} |"
        )
    lines.append("")
    r = s["recommendation"]
    if r is None:
        lines.append("No recommendation: the teacher's time_at_goal is 0, so no retention is defined.")
    else:
        lines += [
            f"**Recommendation** ({r['rule']}, best retention {s['best_retention']:.3f}): depth {r['depth']}, "
            f"width {r['width']}: retention {r['retention']:.3f}, p50 {r['p50_us']:.1f} us, p99 {r['p99_us']:.1f} us, "
            f"{r['params']:,} parameters. It is made on its own by:",
            "",
            "```bash",
            r["command"],
            "```",
        ]
    lines += ["", "Shared between the points (exact):", ""] + [f"- {x}" for x in s["shared"]]
    lines += ["", "Not shared:", ""] + [f"- {x}" for x in s["not_shared"]]
    lines += ["", "![frontier](frontier.png)", ""]
    return "\n".join(lines)


def _plot(path: Path, s: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    points = [p for p in s["points"] if p["retention"] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    depths = sorted({p["depth"] for p in s["points"]})
    colors = {d: plt.cm.viridis(i / max(len(depths) - 1, 1)) for i, d in enumerate(depths)}
    rec = s["recommendation"]
    for ax, cost, front_key, label in (
        (axes[0], "p50_us", "pareto", "p50 latency, batch 1, one thread (us)"),
        (axes[1], "params", "pareto_params", "actor parameters"),
    ):
        for p in points:
            ax.plot(
                p[cost],
                p["retention"],
                "o",
                color=colors[p["depth"]],
                ms=8,
                label=f"depth {p['depth']}"
                if p["width"] == min(q["width"] for q in points if q["depth"] == p["depth"])
                else None,
            )
            ax.annotate(
                f"d{p['depth']} w{p['width']}",
                (p[cost], p["retention"]),
                textcoords="offset points",
                xytext=(5, 4),
                fontsize=7,
            )
            if p["noisy_retention"] is not None:
                ax.plot(p[cost], p["noisy_retention"], "o", mfc="none", color=colors[p["depth"]], ms=8)
        front = sorted((p for p in points if p[front_key]), key=lambda p: p[cost])
        if front:
            ax.step(
                [p[cost] for p in front],
                [p["retention"] for p in front],
                where="post",
                color="k",
                lw=1,
                label="Pareto front",
            )
        if rec is not None:
            chosen = next(p for p in points if (p["depth"], p["width"]) == (rec["depth"], rec["width"]))
            ax.plot(chosen[cost], chosen["retention"], "*", color="red", ms=16, label="recommended")
            ax.axhline(
                s["best_retention"] - s["tolerance"],
                color="red",
                ls=":",
                lw=1,
                label=f"best - tolerance ({s['tolerance']:g})",
            )
        ax.axhline(1.0, color="gray", ls="--", lw=1, label="teacher")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("retention (student / teacher time_at_goal)")
        ax.legend(fontsize=7)
    title = f"{s['env']}: students of a depth-{s['teacher']['depth']} teacher"
    if s["obs_noise"]:
        title += f" (hollow: with observation noise sigma {s['obs_noise']:g})"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["FrontierPlan", "make_plan", "pareto_front", "recommend", "run_frontier", "write_summary"]
