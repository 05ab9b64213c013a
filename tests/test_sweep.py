"""`distill sweep`: a tiny depth sweep on the point-mass U maze, interrupted and continued."""

from __future__ import annotations

import json

import pytest

from distill.app.sweep import make_plan, parse_int_list
from distill.errors import DistillError
from tests.conftest import (
    TINY_ENV_TEACHER,
    assert_one_line_error,
    cli_process,
    kill_after_first_checkpoint,
    run_cli,
    run_cli_in_process,
)

# Two epochs per run, so that a run has a checkpoint before it is finished.
TINY = {**TINY_ENV_TEACHER, "num_evals": 2, "total_steps": 4 * 10 * 6}
TINY_FLAGS = [x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))] + ["--no-progress"]
SWEEP = ["sweep", "--env", "simple_u_maze", "--depths", "4,8", *TINY_FLAGS]


# Two short trainings, a kill and a resume: about a minute, so CI runs it with the slow tests.
@pytest.mark.slow
def test_a_sweep_interrupted_in_its_second_run_continues_without_retraining_the_first(tmp_path):
    out = tmp_path / "sweep"
    first, second = out / "depth_4_seed_0", out / "depth_8_seed_0"
    proc = cli_process(*SWEEP, "--out", str(out))
    kill_after_first_checkpoint([proc], second)
    finished_metrics = (first / "metrics.jsonl").read_text()
    assert len(finished_metrics.splitlines()) == 2
    # The summary already holds the finished run.
    partial = json.loads((out / "sweep.json").read_text())
    assert [r["run"] for r in partial["runs"] if r["finished"]] == ["depth_4_seed_0"]

    result = run_cli(*SWEEP, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "sweep 2/2: depth 8, seed 0 (resuming)" in result.stderr
    assert "sweep 1/2" not in result.stderr
    assert (first / "metrics.jsonl").read_text() == finished_metrics
    assert [m["epoch"] for m in map(json.loads, (second / "metrics.jsonl").read_text().splitlines())] == [1, 2]

    summary = json.loads((out / "sweep.json").read_text())
    assert summary["env"] == "simple_u_maze" and summary["depths"] == [4, 8] and summary["seeds"] == [0]
    assert [(d["depth"], d["seeds"]) for d in summary["by_depth"]] == [(4, 1), (8, 1)]
    runs = {r["depth"]: r for r in summary["runs"]}
    assert runs[8]["params"]["sa_encoder"] > runs[4]["params"]["sa_encoder"]  # two residual blocks, not one
    for r in runs.values():
        assert r["finished"] and r["env_steps"] == TINY["total_steps"] and len(r["curve"]) == 2
        assert r["env_steps_per_s"] > 0 and r["wall_seconds"] > 0
    assert (out / "sweep.png").stat().st_size > 10_000
    assert "| 8 | 1 |" in (out / "sweep.md").read_text()
    assert result.stdout.splitlines()[-1] == f"wrote {out / 'sweep.md'}"

    # Once finished, a rerun trains nothing; other settings are refused with everything kept.
    again = run_cli(*SWEEP, "--out", str(out))
    assert again.returncode == 0 and "sweep 1/2" not in again.stderr and "sweep 2/2" not in again.stderr
    other = [a if a != "4,8" else "4,16" for a in SWEEP]
    assert_one_line_error(run_cli(*other, "--out", str(out)), "holds a sweep with other settings", "depths")
    assert (first / "metrics.jsonl").read_text() == finished_metrics
    assert json.loads((out / "sweep.json").read_text())["depths"] == [4, 8]


@pytest.mark.parametrize(
    "depths, seeds, message",
    [
        ("4,6", "0", "positive multiples of 4"),
        ("", "0", "at least one value"),
        ("4,4", "0", "lists 4 more than once"),
        ("4,8", "1,1", "lists 1 more than once"),
        ("4,x", "0", "comma-separated integers"),
        ("0,4", "0", "positive multiples of 4"),
    ],
)
def test_bad_sweeps_are_refused_before_anything_trains(depths, seeds, message, tmp_path):
    with pytest.raises(DistillError, match=message):
        make_plan("simple_u_maze", depths, seeds, **TINY)
    assert not list(tmp_path.iterdir())


def test_bad_sweep_through_the_command_line(tmp_path):
    out = tmp_path / "sweep"
    assert_one_line_error(
        run_cli_in_process("sweep", "--env", "simple_u_maze", "--depths", "4,6", "--out", str(out)),
        "positive multiples of 4",
    )
    assert_one_line_error(
        run_cli_in_process("sweep", "--env", "walker", "--out", str(out)), "unknown environment 'walker'"
    )
    assert not out.exists()
    (out / "mine").mkdir(parents=True)
    assert_one_line_error(run_cli_in_process(*SWEEP, "--out", str(out)), "already exists and is not empty")
    assert (out / "mine").is_dir()


def test_depth_lists_parse():
    assert parse_int_list("4, 8,16", "depths") == (4, 8, 16)


def test_a_sweep_recorded_before_a_setting_existed_continues_at_that_settings_default(tmp_path):
    from distill.store.runs import check_grid_dir

    record = {"env": "simple_u_maze", "depths": [4, 8], "settings": {"width": 32, "unrolled_blocks": False}}
    older = {"env": "simple_u_maze", "depths": [4, 8], "settings": {"width": 32}}
    (tmp_path / "sweep_config.json").write_text(json.dumps(older))
    assert check_grid_dir(tmp_path, "sweep_config.json", record, "sweep", defaults={"unrolled_blocks": False})
    changed = {**record, "settings": {"width": 32, "unrolled_blocks": True}}
    with pytest.raises(
        DistillError, match="holds a sweep with other settings .*unrolled_blocks: True here, False there"
    ):
        check_grid_dir(tmp_path, "sweep_config.json", changed, "sweep", defaults={"unrolled_blocks": False})
