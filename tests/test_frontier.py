"""`distill frontier`: a tiny frontier of two students runs end to end, resumes, and recommends by its rule."""

from __future__ import annotations

import json
import shlex
import shutil

import pytest

from distill.app.frontier import make_plan, pareto_front, recommend, run_frontier
from distill.errors import DistillError
from tests.conftest import assert_one_line_error, run_cli, run_cli_in_process

# Two students of the tiny teacher: depth 0 (projection and heads only) and depth 4, width 16.
TINY = dict(steps=6, iterations=2, num_envs=8, unroll_length=10, batch_size=32, eval_episodes=4)
EPISODES, NOISE, CALLS = 8, 0.05, 200


def tiny_plan(teacher_run, depths="0,4", widths="16", **overrides):
    return make_plan(teacher_run, depths, widths, episodes=EPISODES, obs_noise=NOISE, **{**TINY, **overrides})


def files(root):
    return {p.relative_to(root): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def frontier(plan, out, notices):
    return run_frontier(plan, out, latency_calls=CALLS, show_progress=False, notice=notices.append)


# Two tiny students trained, exported and evaluated, then a resume: over a minute, so CI runs it with
# the slow tests.
@pytest.mark.slow
def test_a_tiny_frontier_runs_end_to_end_and_resumes_without_retraining(tiny_teacher_run, tmp_path):
    from export.closed_loop import evaluate_onnx
    from students.train import load_student, schedule

    out, plan, notices = tmp_path / "frontier", tiny_plan(tiny_teacher_run), []
    summary = frontier(plan, out, notices)
    points = {(p["depth"], p["width"]): p for p in summary["points"]}
    assert list(points) == [(0, 16), (4, 16)]
    teacher = json.loads((out / "teacher_evaluation.json").read_text())
    assert summary["teacher"] == teacher and teacher["plain"]["episodes"] == EPISODES and "noisy" in teacher
    for (depth, width), p in points.items():
        run = out / f"depth_{depth}_width_{width}"
        assert p["run"] == run.name and (run / "policy.onnx").is_file() and p["parity_max_abs_error"] < 1e-4
        assert p["retention"] == pytest.approx(p["time_at_goal"] / teacher["plain"]["time_at_goal"])
        assert p["noisy_retention"] == pytest.approx(p["noisy_time_at_goal"] / teacher["noisy"]["time_at_goal"])
        assert 0 < p["p50_us"] <= p["p99_us"] and 0 < p["session_p50_us"] and p["calls"] == CALLS
        config, _, _, params, _ = load_student(run)
        assert (config.student_depth, config.student_width) == (depth, width)
        assert ("blocks" in params["actor"]["tower"]) == (depth > 0)  # depth 0: projection and heads only
    # The closed loop ran on the frontier's episodes: evaluating the file again gives the same figures.
    again = evaluate_onnx(out / "depth_4_width_16" / "policy.onnx", None, EPISODES, 0)
    assert again == points[(4, 16)]["closed_loop"]
    assert points[(4, 16)]["params"] > points[(0, 16)]["params"]
    chosen = recommend(summary["points"], 0.02)
    assert (summary["recommendation"]["depth"], summary["recommendation"]["width"]) == (
        chosen["depth"],
        chosen["width"],
    )
    assert summary["recommendation"]["command"] in (out / "frontier.md").read_text()
    assert (out / "frontier.png").stat().st_size > 10_000
    assert sum("training the student" in n for n in notices) == 2

    # A second call retrains, re-exports and re-evaluates nothing; only the latencies are measured again.
    before, notices = files(out / "depth_0_width_16") | files(out / "depth_4_width_16"), []
    frontier(plan, out, notices)
    assert not [n for n in notices if "training" in n or "exporting" in n or "evaluating the teacher" in n]
    assert files(out / "depth_0_width_16") | files(out / "depth_4_width_16") == before

    # A student killed after recording its last epoch but before its last checkpoint resumes, alone.
    second = out / "depth_4_width_16"
    final_step = schedule(plan.config(4, 16)).steps
    for kind in ("last", "best"):
        shutil.rmtree(second / "checkpoints" / kind / str(final_step), ignore_errors=True)
    (second / "frontier_point.json").unlink()
    first_files, notices = files(out / "depth_0_width_16"), []
    summary = frontier(plan, out, notices)
    assert [n for n in notices if "training" in n] == [
        "frontier 2/2 (depth 4, width 16): training the student (resuming)"
    ]
    assert files(out / "depth_0_width_16") == first_files
    assert [json.loads(line)["epoch"] for line in (second / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert len(summary["points"]) == 2

    # Other settings on the same directory are refused in one line, and nothing is lost.
    kept = files(out)
    result = run_cli(
        "frontier",
        str(tiny_teacher_run),
        "--depths",
        "0,4",
        "--widths",
        "16,32",
        "--out",
        str(out),
        *[x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))],
        "--episodes",
        str(EPISODES),
        "--obs-noise",
        str(NOISE),
        "--no-progress",
    )
    assert_one_line_error(result, "holds a frontier with other settings", "widths")
    assert files(out) == kept


def test_the_recommended_command_makes_the_same_student(tiny_teacher_run, tmp_path):
    """The command a frontier prints for a point, parsed by the real command line, gives that point's config."""
    import typer

    from distill.app.cli import app
    from students.config import run_student_config

    plan = tiny_plan(tiny_teacher_run, seed=3)
    compress_part = plan.commands(4, 16, out=str(tmp_path / "student")).split(" && ")[0]
    args = shlex.split(compress_part)
    assert args[:2] == ["distill", "compress"]
    command = typer.main.get_command(app).commands["compress"]
    params = command.make_context("compress", args[2:]).params
    assert params["baseline"] is False
    options = {
        k: params[k]
        for k in (
            "env",
            "steps",
            "dagger",
            "student_depth",
            "student_width",
            "iterations",
            "num_envs",
            "unroll_length",
            "batch_size",
            "eval_episodes",
            "policy_loss",
            "policy_weight",
            "representation_weight",
            "relational_weight",
            "temperature",
            "critic_guidance_weight",
            "seed",
        )
    }
    assert run_student_config(params["out"], False, params["teacher_run"], **options) == plan.config(4, 16)


# A hand-made table: p50 in us, retention as a fraction of the teacher.
TABLE = [
    {"depth": 0, "width": 64, "retention": 0.900, "p50_us": 10.0, "params": 1_000},
    {"depth": 0, "width": 256, "retention": 0.955, "p50_us": 15.0, "params": 5_000},
    {"depth": 4, "width": 64, "retention": 0.960, "p50_us": 20.0, "params": 8_000},
    {"depth": 4, "width": 128, "retention": 0.968, "p50_us": 30.0, "params": 40_000},
    {"depth": 4, "width": 256, "retention": 0.975, "p50_us": 45.0, "params": 300_000},
    {"depth": 8, "width": 256, "retention": 0.970, "p50_us": 80.0, "params": 600_000},
    {"depth": 8, "width": 512, "retention": None, "p50_us": 5.0, "params": 2_000_000},  # no retention: ignored
]


def pick(tolerance, table=TABLE):
    chosen = recommend(table, tolerance)
    return None if chosen is None else (chosen["depth"], chosen["width"])


def test_recommend_takes_the_fastest_within_the_tolerance_of_the_best_retention():
    assert pick(0.02) == (0, 256)  # best 0.975; 0.955 is exactly 2 points below and the fastest such
    assert pick(0.01) == (4, 128)  # 0.968 >= 0.965, faster than 0.975 and 0.970
    assert pick(0.0) == (4, 256)
    assert pick(0.019) == (4, 64)
    assert pick(1.0) == (0, 64)  # anything goes: the fastest
    # Equal latency: fewer parameters win.
    tie = [{**TABLE[2], "p50_us": 15.0}, TABLE[1], TABLE[4]]
    assert pick(0.02, tie) == (0, 256)
    assert pick(0.02, [TABLE[-1]]) is None and pick(0.02, []) is None
    for bad in (-0.01, 1.5, float("nan")):
        with pytest.raises(DistillError, match="--tolerance must lie in"):
            recommend(TABLE, bad)


def test_pareto_front_keeps_the_points_nothing_beats():
    front = [(p["depth"], p["width"]) for p in pareto_front(TABLE)]
    assert front == [(0, 64), (0, 256), (4, 64), (4, 128), (4, 256)]  # depth 8: slower than d4 w256 and worse
    by_params = [(p["depth"], p["width"]) for p in pareto_front(TABLE, cost="params")]
    assert by_params == [(0, 64), (0, 256), (4, 64), (4, 128), (4, 256)]


@pytest.mark.parametrize(
    "depths, widths, extra, message",
    [
        ("", "16", {}, "--depths must list at least one value"),
        ("0,6", "16", {}, "non-negative multiples of 4"),
        ("-4", "16", {}, "non-negative multiples of 4"),
        ("4,4", "16", {}, "--depths lists 4 more than once"),
        ("4,x", "16", {}, "comma-separated integers"),
        ("4", "16,16", {}, "--widths lists 16 more than once"),
        ("4", "0", {}, "--widths must be positive"),
        ("4", "-8", {}, "--widths must be positive"),
        ("4", "1.5", {}, "comma-separated integers"),
        ("4", "16", {"obs_noise": -0.1}, "--obs-noise must be a finite, non-negative"),
        ("4", "16", {"obs_noise": float("inf")}, "--obs-noise must be a finite, non-negative"),
        ("4", "16", {"episodes": 0}, "--episodes must be positive"),
        ("4", "16", {"steps": 0}, "--steps must be positive"),
    ],
)
def test_bad_frontiers_are_refused_before_anything_runs(tiny_teacher_run, depths, widths, extra, message, tmp_path):
    with pytest.raises(DistillError, match=message):
        make_plan(tiny_teacher_run, depths, widths, **{**TINY, **extra})
    assert not list(tmp_path.iterdir())


def test_bad_frontiers_through_the_command_line(tiny_teacher_run, tiny_student_run, tmp_path):
    out = tmp_path / "frontier"
    teacher = str(tiny_teacher_run)
    assert_one_line_error(
        run_cli_in_process("frontier", teacher, "--depths", "4,6", "--out", str(out)), "non-negative multiples of 4"
    )
    assert_one_line_error(
        run_cli_in_process("frontier", teacher, "--tolerance", "1.5", "--out", str(out)),
        "--tolerance must lie in [0, 1]",
    )
    assert_one_line_error(
        run_cli_in_process("frontier", teacher, "--obs-noise", "-0.1", "--out", str(out)), "--obs-noise"
    )
    assert_one_line_error(
        run_cli_in_process("frontier", str(tiny_student_run), "--out", str(out)), "is a student run, not a teacher run"
    )
    assert not out.exists()
