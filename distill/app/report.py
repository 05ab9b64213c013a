"""Teacher vs student vs same-depth CRL from scratch, on the same evaluation episodes.

Writes ``report.json`` (with top-level ``retention`` = student time_at_goal / teacher time_at_goal),
``report.md`` and ``report.png`` into the student's run directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from distill.data.sensors import SensorModel, empty_buffer
from distill.envs.maze import MazeEnv
from distill.errors import DistillError
from distill.eval.evaluation import evaluation_observer, make_evaluator, random_policy_baseline, summarize
from distill.eval.render import write_maze_panels
from distill.nn.networks import count_params, deterministic_action, pairwise_energy
from distill.store import runs
from export.latency import jax_policy_latency
from students.config import sensor_model
from students.train import compress, load_student
from students.train import schedule as student_schedule
from teachers.config import sensor_model as teacher_sensor_model
from teachers.train import load_teacher, train_teacher
from teachers.train import schedule as teacher_schedule


def _policy(networks):
    def policy(actor_params, obs):
        mean, _ = networks.policy(actor_params, obs)
        return deterministic_action(mean)

    return policy


def _evaluate(
    spec,
    env,
    networks,
    params,
    episodes: int,
    key,
    paths: dict | None = None,
    label: str = "",
    sensors: SensorModel | None = None,
) -> dict:
    """The policy's summary on the key's episodes (read through ``sensors`` if given); ``paths[label]``
    gets its first episodes' paths."""
    result = jax.device_get(
        make_evaluator(env, spec, _policy(networks), episodes, sensors=sensors)(params["actor"], key)
    )
    if paths is not None:
        paths[label] = (result.path, result.goal)
    return summarize(result.success)


def visited_observations(
    spec, env, networks, params, episodes: int, key, count: int = 4096, sensors: SensorModel | None = None
) -> tuple[jax.Array, jax.Array]:
    """Observations the student's own deterministic policy visits (where its errors matter), and what
    it read at each (the observation itself without ``sensors``)."""
    policy = _policy(networks)
    sensed = evaluation_observer(sensors, key, spec.state_dim, episodes) if sensors else None

    @jax.jit
    def rollout(key):
        env_state = jax.vmap(env.reset)(jax.random.split(key, episodes))

        def step(carry, t):
            env_state, buffer = carry
            buffer, seen = sensed(buffer, env_state.obs, t) if sensed else (buffer, env_state.obs)
            next_state = jax.vmap(env.step)(env_state, policy(params["actor"], seen))
            return (next_state, buffer), (env_state.obs, seen)

        carry = (env_state, empty_buffer(sensors, episodes))
        obs, seen = jax.lax.scan(step, carry, jnp.arange(spec.episode_length))[1]
        return obs.reshape(-1, spec.obs_dim), seen.reshape(-1, seen.shape[-1])

    obs, seen = rollout(key)
    pick = jax.random.choice(jax.random.fold_in(key, 1), obs.shape[0], (min(count, obs.shape[0]),), replace=False)
    return obs[pick], seen[pick]


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x, axis=1), axis=1).astype(np.float64)


def critic_agreement(spec, teacher, teacher_params, student, student_params, obs, batch: int = 256) -> dict:
    """Top-1 goal retrieval agreement and Spearman correlation of Q over a batch of goals."""
    obs = obs[:batch]
    state, goal = obs[:, : spec.state_dim], obs[:, spec.state_dim :]
    action = teacher.act(teacher_params["actor"], obs)

    def logits(nets, params):
        return np.asarray(
            pairwise_energy(nets.phi(params["sa_encoder"], state, action), nets.psi(params["goal_encoder"], goal))
        )

    t, s = logits(teacher, teacher_params), logits(student, student_params)
    rt, rs = _ranks(t), _ranks(s)
    rt -= rt.mean(1, keepdims=True)
    rs -= rs.mean(1, keepdims=True)
    spearman = (rt * rs).sum(1) / np.sqrt((rt**2).sum(1) * (rs**2).sum(1))
    return {
        "top1_agreement": float(np.mean(t.argmax(1) == s.argmax(1))),
        "q_rank_correlation": float(np.mean(spearman)),
        "goals_per_query": int(t.shape[1]),
    }


def compress_and_report(
    config,
    teacher_run: Path,
    out: Path,
    resume: bool = False,
    report_episodes: int = 128,
    baseline: bool = True,
    show_progress: bool = True,
    checkpoint_minutes: float = 10.0,
    baseline_run: Path | None = None,
):
    """``distill compress``: distils (or resumes distilling), then writes the report; returns both.

    ``baseline_run``, a teacher run of the same environment (say a sweep's depth-4 run), stands in for
    the from-scratch network of the report instead of training one.
    """
    if report_episodes <= 0:
        raise DistillError(f"--report-episodes must be positive, got {report_episodes}")
    if baseline_run is not None:
        if not baseline:
            raise DistillError("--baseline-run names the from-scratch baseline; it cannot go with --no-baseline")
        check_baseline_run(baseline_run, teacher_run)
    final = compress(
        config, teacher_run, out, resume=resume, show_progress=show_progress, checkpoint_minutes=checkpoint_minutes
    )
    return final, build_report(
        out, episodes=report_episodes, baseline=baseline, show_progress=show_progress, baseline_run=baseline_run
    )


def check_baseline_run(baseline_run: Path, teacher_run: Path) -> None:
    """A baseline must be a trained CRL run (a teacher run) of the teacher's environment."""
    record = runs.read_config(Path(baseline_run))
    if record.get("kind") != "teacher":
        raise DistillError(
            f"--baseline-run {baseline_run} is a {record.get('kind', 'unknown')} run; the baseline must be "
            "a network trained from scratch by CRL (a teacher run)"
        )
    env, teacher_env = record["config"]["env"], runs.read_config(Path(teacher_run), kind="teacher")["config"]["env"]
    if env != teacher_env:
        raise DistillError(f"--baseline-run {baseline_run} was trained on '{env}', the teacher on '{teacher_env}'")
    if not runs.read_metrics(Path(baseline_run)):
        raise DistillError(f"--baseline-run {baseline_run} has not finished an epoch yet")


def build_report(
    student_run: Path,
    episodes: int = 128,
    seed: int = 0,
    baseline: bool = True,
    show_progress: bool = False,
    baseline_run: Path | None = None,
) -> dict:
    student_run = Path(student_run)
    record = runs.read_config(student_run, kind="student")
    s_config, spec, student, s_params, s_step = load_student(student_run)
    teacher_run = Path(record["teacher"]["run"])
    t_config, _, teacher, t_params, t_step = load_teacher(teacher_run)
    env = spec.make(backend=t_config.backend)
    key = jax.random.PRNGKey(seed)

    paths = {}
    sensors = sensor_model(s_config)
    rows = _policy_rows(
        spec, env, (t_config, teacher, t_params), (s_config, student, s_params), sensors, episodes, key, paths
    )
    teacher_eval, student_eval = rows["teacher"], rows["student"]
    rows["random"] = random_policy_baseline(env, spec, episodes, seed)
    if sensors is not None:
        rows["student"]["sensors"] = sensors.to_json()
        if baseline and sensors.history > 1:
            rows["student_no_history"] = _no_history_student(
                student_run, s_config, sensors, spec, env, episodes, key, show_progress, paths
            )

    if baseline_run is not None:
        check_baseline_run(baseline_run, teacher_run)
        rows["scratch"] = {**_evaluate_run(Path(baseline_run), spec, env, episodes, key, paths), "given": True}
    elif baseline:
        rows["scratch"] = _scratch_baseline(
            student_run, t_config, s_config, spec, env, episodes, key, show_progress, paths
        )

    report = {
        "env": spec.name,
        "episodes": episodes,
        "seed": seed,
        "teacher_run": str(teacher_run),
        "student_run": str(student_run),
        "retention": student_eval["time_at_goal"] / max(teacher_eval["time_at_goal"], 1e-9),
        "compress_seconds": _train_seconds(student_run),
        "teacher_train_seconds": _train_seconds(teacher_run),
        **rows,
    }
    _add_finals_and_budgets(report, teacher_run, student_run)
    if report["compress_seconds"] and report["teacher_train_seconds"]:
        report["compress_cost_fraction"] = report["compress_seconds"] / report["teacher_train_seconds"]
    if isinstance(env, MazeEnv):
        title = f"{spec.name}: the same {len(next(iter(paths.values()))[1])} evaluation episodes for every policy"
        write_maze_panels(env.layout, env.scale, paths, student_run / "report_maze.png", title)
        report["maze_paths"] = "report_maze.png"
    runs.atomic_write_text(student_run / "report.json", json.dumps(report, indent=2, sort_keys=True) + "\n")
    _write_markdown(student_run, report)
    _plot(student_run, report)
    return report


def _policy_rows(spec, env, teacher_parts, student_parts, sensors, episodes, key, paths) -> dict:
    """The teacher's and the student's rows: closed-loop scores on the same episodes, sizes, latency,
    and how far the student's actions and critic are from the teacher's on states the student visits."""
    t_config, teacher, t_params = teacher_parts
    s_config, student, s_params = student_parts
    teacher_eval = _evaluate(
        spec, env, teacher, t_params, episodes, key, paths, f"teacher (depth {t_config.critic_depth})"
    )
    student_label = f"student (depth {s_config.student_depth}" + (", sensors)" if sensors else ")")
    student_eval = _evaluate(spec, env, student, s_params, episodes, key, paths, student_label, sensors)
    obs, seen = visited_observations(
        spec, env, student, s_params, min(episodes, 32), jax.random.fold_in(key, 7), sensors=sensors
    )
    t_action = teacher.act(t_params["actor"], obs)
    s_action = student.act(s_params["actor"], seen)
    action_error = np.abs(np.asarray(t_action - s_action))

    rows = {
        "teacher": {
            **teacher_eval,
            "depth": t_config.critic_depth,
            "actor_depth": t_config.actor_depth,
            "width": t_config.width,
            "params": {k: count_params(v) for k, v in t_params.items()},
            "jax_latency": jax_policy_latency(teacher, t_params["actor"], spec.obs_dim),
        },
        "student": {
            **student_eval,
            "depth": s_config.student_depth,
            "actor_depth": s_config.student_depth,
            "width": s_config.student_width,
            "params": {k: count_params(v) for k, v in s_params.items()},
            "jax_latency": jax_policy_latency(student, s_params["actor"], student.policy_input_dim),
            "action_error": {
                "mean_abs": float(action_error.mean()),
                "max_abs": float(action_error.max()),
                "states": int(action_error.shape[0]),
            },
            "critic_agreement": critic_agreement(spec, teacher, t_params, student, s_params, obs),
        },
    }
    return rows


def _add_finals_and_budgets(report: dict, teacher_run: Path, student_run: Path) -> None:
    """Teacher and scratch are scored on their best checkpoints; the paper's code reports final
    parameters, so their last training evaluation stands beside them, and every run's budget."""
    scratch_run = report.get("scratch", {}).get("run")
    for name, run in (("teacher", teacher_run), ("scratch", scratch_run)):
        if run is not None and name in report and "skipped" not in report[name]:
            report[name]["checkpoint"] = "best"
            report[name]["final"] = _final_evaluation(Path(run))
    report["budgets"] = {
        name: _budget(Path(run))
        for name, run in (("teacher", teacher_run), ("student", student_run), ("scratch", scratch_run))
        if run is not None
    }


def _final_evaluation(run: Path) -> dict | None:
    """A run's last training evaluation: what its final parameters scored (own episodes)."""
    metrics = runs.read_metrics(run)
    if not metrics:
        return None
    last = metrics[-1]
    return {k: last.get(k) for k in ("epoch", "env_steps", "time_at_goal", "success_any")}


def _budget(run: Path) -> dict:
    """What a run spent: env steps collected, SGD updates and seconds of training."""
    metrics = runs.read_metrics(run)
    last = metrics[-1] if metrics else {}
    return {"env_steps": last.get("env_steps"), "sgd_updates": last.get("sgd_updates"), "seconds": _train_seconds(run)}


def _train_seconds(run: Path) -> float | None:
    """Seconds spent in a run's epochs (training and evaluation, compile of the loop included)."""
    metrics = runs.read_metrics(run)
    return float(sum(m.get("epoch_seconds", 0.0) for m in metrics)) or None


def _scratch_baseline(student_run, t_config, s_config, spec, env, episodes, key, show_progress, paths) -> dict:
    """CRL at the student's depth and width, with the teacher's env-step budget and settings.

    It uses the next seed, so that where the teacher is itself that shallow (the CPU default) the
    baseline is an independent run rather than a replay of the teacher. A student behind sensors is
    matched by CRL behind the same sensors (its critic, used only in training, reads the state), so
    that the comparison says what distillation is worth to a robot that reads only those sensors.
    """
    import dataclasses

    if s_config.student_depth == 0:
        return {"skipped": "CRL from scratch needs a depth of at least 4"}
    out = student_run / "scratch_baseline"
    config = dataclasses.replace(
        t_config,
        critic_depth=s_config.student_depth,
        actor_depth=s_config.student_depth,
        width=s_config.student_width,
        seed=t_config.seed + 1,
        remat=None,
        sensors=s_config.sensors,
    )
    if not runs.finished(out, teacher_schedule(config)):
        try:
            train_teacher(config, out, resume=(out / "config.json").exists(), show_progress=show_progress)
        except DistillError as err:
            return {"skipped": str(err)}
    return _evaluate_run(out, spec, env, episodes, key, paths)


def _no_history_student(student_run, s_config, sensors, spec, env, episodes, key, show_progress, paths) -> dict:
    """The same student, distilled the same way from the same sensors but reading only the latest
    one (history 1): what the history is worth."""
    import dataclasses

    out = student_run / "no_history"
    single = dataclasses.replace(sensors, history=1)
    config = dataclasses.replace(s_config, sensors=single.describe())
    if not runs.finished(out, student_schedule(config)):
        try:
            compress(
                config,
                Path(s_config.teacher_run),
                out,
                resume=(out / "config.json").exists(),
                show_progress=show_progress,
            )
        except DistillError as err:
            return {"skipped": str(err)}
    n_config, _, networks, params, _ = load_student(out)
    label = f"student (depth {n_config.student_depth}, sensors, history 1)"
    return {
        **_evaluate(spec, env, networks, params, episodes, key, paths, label, single),
        "depth": n_config.student_depth,
        "width": n_config.student_width,
        "params": {k: count_params(v) for k, v in params.items()},
        "sensors": single.to_json(),
        "run": str(out),
    }


def _evaluate_run(run: Path, spec, env, episodes, key, paths) -> dict:
    """A CRL run trained from scratch, on the report's episodes (through its sensors if it has any)."""
    b_config, _, networks, params, _ = load_teacher(run)
    sensors = teacher_sensor_model(b_config)
    label = f"CRL from scratch (depth {b_config.critic_depth}" + (", sensors)" if sensors else ")")
    row = {
        **_evaluate(spec, env, networks, params, episodes, key, paths, label, sensors),
        "depth": b_config.critic_depth,
        "width": b_config.width,
        "params": {k: count_params(v) for k, v in params.items()},
        "env_steps": runs.read_metrics(run)[-1]["env_steps"],
        "run": str(run),
    }
    if sensors is not None:
        row["sensors"] = sensors.to_json()
    return row


def _write_markdown(run: Path, r: dict) -> None:
    lines = [
        f"# Distillation report: {r['env']}",
        "",
        f"Same {r['episodes']} deterministic evaluation episodes (seed {r['seed']}) for every policy. The teacher "
        "and CRL from scratch are their best checkpoints; their final parameters are below the table.",
        "",
        "| policy | depth | width | parameters | time_at_goal | success_any | JAX latency p50 / p99 (us) |",
        "|---|---|---|---|---|---|---|",
    ]
    sensed = "sensors" in r["student"]
    for name in ("teacher", "student", "student_no_history", "scratch"):
        row = r.get(name)
        if not row or "skipped" in row:
            continue
        lat = row.get("jax_latency")
        lat_text = f"{lat['p50_us']:.0f} / {lat['p99_us']:.0f}" if lat else "-"
        label = {
            "scratch": f"CRL from scratch ({'given run' if row.get('given') else 'student size'}{_scratch_sensors(r)})",
            "teacher": "teacher (privileged: full state)" if sensed else "teacher",
            "student": f"student (sensors, history {r['student']['sensors']['history']})" if sensed else "student",
            "student_no_history": "same student without history (history 1)",
        }.get(name, name)
        lines.append(
            f"| {label} | {row['depth']} | {row['width']} | {sum(row['params'].values()):,} | "
            f"{row['time_at_goal']:.1f} | {row['success_any']:.3f} | {lat_text} |"
        )
    lines.append(
        f"| random actions | - | - | - | {r['random']['time_at_goal']:.1f} | {r['random']['success_any']:.3f} | - |"
    )
    s = r["student"]
    lines += [
        "",
        f"**Retention** (student / teacher time_at_goal): **{r['retention']:.3f}**",
        "",
    ]
    for name in ("teacher", "scratch"):
        final = (r.get(name) or {}).get("final")
        if final:
            lines.append(
                f"- {name.capitalize()}'s final parameters: time_at_goal {final['time_at_goal']:.1f} in its last "
                f"training evaluation (epoch {final['epoch']}, {final['env_steps']:,} env steps; its own episodes)"
            )
    if sensed:
        model = s["sensors"]
        kept = ", ".join(f"{x['name']} (noise {x['noise']:g})" for x in model["slices"])
        lines += [
            f"- Sensors: the student reads {kept}; history {model['history']}, latency {model['latency']} steps: "
            f"{model['reading_dim']} entries a reading, {model['sensor_dim']} in its input (`{model['spec']}`)"
        ]
        nh = r.get("student_no_history")
        if nh and "skipped" not in nh:
            lines.append(
                f"- Without history the same student keeps {nh['time_at_goal'] / max(r['teacher']['time_at_goal'], 1e-9):.3f} "
                f"of the teacher, against {r['retention']:.3f} with it"
            )
        elif nh:
            lines.append(f"- Same student without history: skipped ({nh['skipped']})")
    lines += [
        f"- Action error vs teacher on the student's visited states: mean |da| {s['action_error']['mean_abs']:.4f}, max {s['action_error']['max_abs']:.3f}",
        f"- Critic agreement: top-1 goal retrieval {s['critic_agreement']['top1_agreement']:.3f}, "
        f"rank correlation of Q {s['critic_agreement']['q_rank_correlation']:.3f} over {s['critic_agreement']['goals_per_query']} goals",
    ]
    if r.get("budgets"):
        lines.append(
            "- Budgets: "
            + "; ".join(
                f"{name} {b['env_steps'] or 0:,} env steps, {b['sgd_updates'] or 0:,} SGD updates, {b['seconds'] or 0:.0f} s"
                for name, b in r["budgets"].items()
            )
        )
    if "scratch" in r and r["scratch"].get("given"):
        lines.append(f"- CRL from scratch is the given run {r['scratch']['run']}")
    if r.get("compress_cost_fraction"):
        lines.append(
            f"- Compression took {r['compress_seconds']:.0f} s, {100 * r['compress_cost_fraction']:.1f}% of the teacher's {r['teacher_train_seconds']:.0f} s of training"
        )
    if "scratch" in r and "skipped" in r["scratch"]:
        lines.append(f"- CRL from scratch: skipped ({r['scratch']['skipped']})")
    lines += ["", "![comparison](report.png)", ""]
    if r.get("maze_paths"):
        lines += ["Where each policy goes (same episodes, same colours):", "", f"![paths]({r['maze_paths']})", ""]
    runs.atomic_write_text(run / "report.md", "\n".join(lines))


def _scratch_sensors(r: dict) -> str:
    """How the from-scratch run read the state, beside the student: ', same sensors', ', sensors' or ''."""
    scratch = (r.get("scratch") or {}).get("sensors")
    if scratch is None:
        return ""
    return ", same sensors" if scratch["spec"] == r["student"].get("sensors", {}).get("spec") else ", sensors"


def _plot(run: Path, r: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ("teacher", "student", "student_no_history", "scratch") if n in r and "skipped" not in r[n]]
    labels = {
        "teacher": f"teacher d{r['teacher']['depth']}",
        "student": f"student d{r['student']['depth']}",
        "student_no_history": "student, history 1",
        "scratch": "CRL scratch",
    }
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    palette = {"teacher": "tab:blue", "student": "tab:orange", "student_no_history": "tab:red", "scratch": "tab:gray"}
    colors = [palette[n] for n in names]
    for ax, key in zip(axes, ("time_at_goal", "success_any")):
        ax.bar([labels[n] for n in names], [r[n][key] for n in names], color=colors)
        ax.axhline(r["random"][key], color="k", ls="--", lw=1, label="random")
        ax.set_title(key)
        ax.legend()
    fig.suptitle(f"{r['env']}: retention {r['retention']:.2f}")
    fig.tight_layout()
    fig.savefig(run / "report.png", dpi=100)
    plt.close(fig)


__all__ = ["build_report", "critic_agreement"]
