"""Bad input gives a one-line error and a non-zero exit, and never destroys what exists."""

import json
import shutil

import jax
import pytest

from distill.eval.evaluation import make_evaluator, summarize
from distill.nn.networks import deterministic_action
from distill.store.runs import read_metrics
from teachers.train import load_teacher
from tests.conftest import TINY_TEACHER, assert_one_line_error, run_cli, run_cli_in_process


@pytest.mark.parametrize(
    "flags, fragments",
    [
        (["--critic-depth", "6"], ["--critic-depth", "multiple of 4"]),
        (["--actor-depth", "0"], ["--actor-depth", "positive multiple of 4"]),
        (["--env", "walker"], ["unknown environment 'walker'", "reacher"]),
        (["--width", "-3"], ["--width must be positive"]),
        (["--num-envs", "0"], ["--num-envs must be positive"]),
        (["--total-steps", "0"], ["--total-steps must be positive"]),
        (["--batch-size", "100000", "--num-envs", "4", "--prefill-rows", "10"], ["cannot be filled"]),
    ],
)
def test_bad_training_input(tmp_path, flags, fragments):
    result = run_cli_in_process("train-teacher", "--out", str(tmp_path / "run"), "--no-progress", *flags)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    "command, fragments",
    [
        (["train-teacher", "--env", ""], ["--env must not be empty"]),
        (["train-teacher", "--env", "  "], ["--env must not be empty"]),
        (["train-teacher", "--block-unroll", ""], ["--block-unroll must not be empty"]),
        (["sweep", "--env", "reacher", "--depths", ""], ["--depths must not be empty"]),
    ],
)
def test_an_empty_choice_is_refused_and_leaves_nothing(tmp_path, command, fragments):
    result = run_cli_in_process(*command, "--out", str(tmp_path / "run"), "--no-progress")
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "run").exists()


def test_a_sensor_file_that_sets_nothing_is_refused_and_leaves_nothing(tiny_teacher_run, tmp_path):
    empty = tmp_path / "sensors.toml"
    empty.write_text("# nothing set\n")
    for command in (["train-teacher", "--total-steps", "400"], ["compress", str(tiny_teacher_run)]):
        result = run_cli_in_process(*command, "--sensors", str(empty), "--out", str(tmp_path / "run"), "--no-progress")
        assert_one_line_error(result, "sensors.toml sets nothing", "keep, drop, noise, history, latency")
        assert not (tmp_path / "run").exists()


def test_an_old_demo_folder_is_read_or_refused_in_one_line(tiny_teacher_run, tmp_path):
    """A demo folder made by an older version: a retired setting is dropped when its run is read; a
    setting this version does not know is a one-line error, not a traceback."""
    from distill.app.kinds import finished

    demo = tmp_path / "demo"
    shutil.copytree(tiny_teacher_run, demo / "teacher")
    record = json.loads((demo / "teacher" / "config.json").read_text())
    record["config"]["unrolled_blocks"] = False  # retired since
    (demo / "teacher" / "config.json").write_text(json.dumps(record))
    assert finished(demo / "teacher")
    record["config"]["a_setting_from_the_future"] = 1
    (demo / "teacher" / "config.json").write_text(json.dumps(record))
    before = sorted(p.relative_to(demo) for p in demo.rglob("*"))
    result = run_cli_in_process("demo", "--out", str(demo), "--quick", "--no-progress")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert lines[-1].startswith("error: ") and "config.json does not describe a teacher" in lines[-1]
    assert "a_setting_from_the_future" in lines[-1] and all(line.startswith("[demo]") for line in lines[:-1])
    assert sorted(p.relative_to(demo) for p in demo.rglob("*")) == before


def test_resume_without_a_run_or_checkpoint(tmp_path):
    assert_one_line_error(
        run_cli_in_process("train-teacher", "--out", str(tmp_path / "nothing"), "--resume"), "cannot resume"
    )
    # A run killed before its first checkpoint: --resume starts it from the beginning, with a notice.
    run = tmp_path / "unstarted"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"kind": "teacher", "config": {"env": "reacher", **TINY_TEACHER}}))
    result = run_cli("train-teacher", "--out", str(run), "--resume", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "no checkpoint yet; starting that run from the beginning" in result.stderr
    assert [m["epoch"] for m in read_metrics(run)] == [1, 2]
    assert read_metrics(run)[-1]["env_steps"] == TINY_TEACHER["total_steps"]


def test_resume_with_a_changed_config_is_refused(tiny_teacher_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_teacher_run, run)
    before = {p.relative_to(run): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    result = run_cli_in_process("train-teacher", "--out", str(run), "--resume", "--critic-depth", "8", "--no-progress")
    assert_one_line_error(result, "changed config", "--critic-depth 8 (the run has 4)")
    assert before == {p.relative_to(run): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    # Giving the recorded value again is not a change.
    same = run_cli("train-teacher", "--out", str(run), "--resume", "--critic-depth", "4", "--no-progress")
    assert same.returncode == 0, same.stderr


# In a fresh process: were the refusal to go, these runs would be too big for the test process to survive.
@pytest.mark.parametrize(
    "flags, fragments",
    [
        (["--critic-depth", "1000000"], ["needs an estimated", "GB to train but", "available"]),
        (["--width", "300000"], ["needs an estimated", "at width 300000"]),
    ],
)
def test_networks_that_cannot_fit_are_refused_at_once(tmp_path, flags, fragments):
    import time

    t0 = time.perf_counter()
    result = run_cli("train-teacher", "--out", str(tmp_path / "run"), "--no-progress", *flags, timeout=120)
    assert_one_line_error(result, *fragments)
    assert time.perf_counter() - t0 < 60
    assert not (tmp_path / "run").exists()


def test_existing_output_directory_is_never_overwritten(tiny_teacher_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_teacher_run, run)
    before = {p.relative_to(run): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    assert_one_line_error(run_cli_in_process("train-teacher", "--out", str(run), "--no-progress"), "already exists")
    after = {p.relative_to(run): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    assert before == after


def test_resume_from_corrupt_checkpoint(tiny_teacher_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_teacher_run, run)
    for path in (run / "checkpoints" / "last").rglob("*"):
        if path.is_file():
            path.write_bytes(b"not a checkpoint")
    assert_one_line_error(
        run_cli_in_process("train-teacher", "--out", str(run), "--resume", "--no-progress"), "checkpoint"
    )


def test_evaluate_bad_inputs(tiny_teacher_run, tmp_path):
    assert_one_line_error(run_cli_in_process("evaluate", str(tmp_path / "missing")), "does not exist")
    (tmp_path / "not_a_run").mkdir()
    assert_one_line_error(run_cli_in_process("evaluate", str(tmp_path / "not_a_run")), "not a run directory")
    assert_one_line_error(run_cli_in_process("evaluate", str(tiny_teacher_run), "--episodes", "0"), "--episodes")


def test_bad_input_in_a_fresh_process_is_one_line_too(tiny_teacher_run, tmp_path):
    # The other refusals run in the test process, whose libraries are long imported; a user's fresh
    # process imports them for the first time, and whatever that prints would show here.
    assert_one_line_error(
        run_cli("compress", str(tiny_teacher_run), "--env", "ant", "--out", str(tmp_path / "s")), "mismatch"
    )
    assert_one_line_error(
        run_cli("export", str(tiny_teacher_run), "--out", str(tmp_path / "p.onnx")), "not a student run"
    )
    assert not list(tmp_path.iterdir())


def test_evaluate_a_teacher_run(tiny_teacher_run):
    result = run_cli("evaluate", str(tiny_teacher_run), "--episodes", "4", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    # The same evaluation in this process: the best checkpoint's deterministic policy, 4 episodes, seed 0.
    config, spec, networks, params, step = load_teacher(tiny_teacher_run)
    evaluate = make_evaluator(
        spec.make(backend=config.backend),
        spec,
        lambda actor, obs: deterministic_action(networks.policy(actor, obs)[0]),
        4,
    )
    expected = summarize(evaluate(params["actor"], jax.random.PRNGKey(0)).success)
    assert expected["episodes"] == 4 and spec.name == "reacher"
    assert {k: record[k] for k in expected} == pytest.approx(expected, abs=1e-6)
    assert record["env"] == "reacher" and record["seed"] == 0
    assert record["policy"] == f"teacher (best checkpoint, step {step})"


def test_envs_lists_dimensions():
    result = run_cli("envs", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["reacher"]["default"] and rows["reacher"]["action_dim"] == 2
    assert {"ant", "humanoid"} <= set(rows)
    assert any("maze" in name for name in rows)
