import json

import numpy as np
import pytest

from distill.errors import DistillError
from distill.store.runs import read_metrics
from teachers.config import teacher_config
from teachers.train import train_teacher
from tests.conftest import ROOT, TINY_TEACHER, cli_process, kill_after_first_checkpoint, run_cli


def tiny_flags(**overrides):
    values = dict(TINY_TEACHER)
    values.update(overrides)
    flags = []
    for key, value in values.items():
        flags += [f"--{key.replace('_', '-')}", str(value)]
    return flags


def test_run_directory_contents(tiny_teacher_run):
    config = json.loads((tiny_teacher_run / "config.json").read_text())
    assert config["kind"] == "teacher" and config["seed"] == 0
    assert config["config"]["updates_per_step"] == 2  # resolved, not the 0 placeholder
    assert {"jax", "flax", "brax", "orbax-checkpoint", "python"} <= set(config["versions"])
    metrics = read_metrics(tiny_teacher_run)
    assert [m["epoch"] for m in metrics] == [1, 2]
    for key in (
        "env_steps",
        "steps_per_s",
        "critic_loss",
        "actor_loss",
        "alpha",
        "time_at_goal",
        "success_any",
        "episode_ends",
        "early_terminations",
    ):
        assert key in metrics[-1]
    # The reacher never ends an episode early.
    assert all(m["early_terminations"] == 0 for m in metrics)
    assert metrics[-1]["env_steps"] > metrics[0]["env_steps"]
    assert (tiny_teacher_run / "learning_curve.png").stat().st_size > 1000
    assert (tiny_teacher_run / "checkpoints" / "last" / "2").is_dir()
    assert any((tiny_teacher_run / "checkpoints" / "best").iterdir())


# Kept for CI's slow set: the default suite must fit in 15 minutes on 2 cores.
@pytest.mark.slow
def test_resume_continues_exactly_where_the_run_stopped(tmp_path):
    """Kill a run after its first checkpoint, resume it, and compare with an uninterrupted run."""
    flags = tiny_flags(num_evals=3, total_steps=8 * 10 * 8)
    full = run_cli("train-teacher", "--out", str(tmp_path / "full"), "--no-progress", *flags)
    assert full.returncode == 0, full.stderr

    out = tmp_path / "interrupted"
    kill_after_first_checkpoint([cli_process("train-teacher", "--out", str(out), "--no-progress", *flags)], out)
    done = [m["epoch"] for m in read_metrics(out)]
    assert done and done[-1] < 3

    resumed = run_cli("train-teacher", "--out", str(out), "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    a, b = read_metrics(tmp_path / "full"), read_metrics(out)
    assert [m["epoch"] for m in b] == [1, 2, 3]
    assert [m["env_steps"] for m in b] == [m["env_steps"] for m in a]
    assert [m["sgd_updates"] for m in b] == [m["sgd_updates"] for m in a]
    np.testing.assert_allclose([m["critic_loss"] for m in b], [m["critic_loss"] for m in a], rtol=1e-5)


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    # An absurd learning rate makes the real networks overflow within a few updates.
    config = teacher_config(
        "reacher", **{**TINY_TEACHER, "num_evals": 6, "total_steps": 8 * 10 * 40, "learning_rate": 1e30}
    )
    with pytest.raises(DistillError, match="non-finite"):
        train_teacher(config, tmp_path / "run", show_progress=False)
    assert (tmp_path / "run" / "config.json").is_file()


@pytest.mark.slow  # whole commands on trained runs: CI runs it with the learning tests
def test_a_run_saved_with_unrolled_blocks_loads_and_evaluates_to_its_recorded_figures(tmp_path):
    """tests/data/legacy_unrolled_teacher was trained with the unrolled layout (block_0, block_1, ...)
    that runs had before the stacked one was the only one; it loads, converted, and evaluates as then."""
    from distill.nn.networks import count_params
    from teachers.train import load_teacher

    legacy = ROOT / "tests" / "data" / "legacy_unrolled_teacher"
    config, _, _, params, _ = load_teacher(legacy)
    assert params["actor"]["tower"]["blocks"]["block"]["dense_0"]["kernel"].shape == (2, 16, 16)
    assert count_params(params) > 0 and not hasattr(config, "unrolled_blocks")
    result = run_cli("evaluate", str(legacy), "--episodes", "16", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads((legacy / "expected_evaluation.json").read_text())


def test_default_batch_is_the_papers_and_cpu_presets_keep_theirs():
    from teachers.config import TeacherConfig

    assert TeacherConfig().batch_size == 512 and teacher_config("ant").batch_size == 512
    assert teacher_config("reacher").batch_size == 256 and teacher_config("simple_u_maze").batch_size == 256
