"""The committed packed teacher (tests/data) loads and passes its recorded evaluation; a packed run
whose recorded figure its parameters do not reproduce is refused with both figures."""

from __future__ import annotations

import json
import shutil

import pytest

from distill.app.pack import verify_packed_run, verify_tolerance
from distill.errors import DistillError
from distill.store.runs import packed_record
from tests.conftest import ROOT

PACKED_TEACHER = ROOT / "tests" / "data" / "packed_u_maze_teacher"


def test_the_committed_packed_teacher_passes_its_recorded_evaluation():
    record = packed_record(PACKED_TEACHER)
    result = verify_packed_run(PACKED_TEACHER)
    assert result["kind"] == "teacher" and result["epoch"] == record["epoch"] and result["episodes"] == 4
    # On the kind of machine that trained it the recorded evaluation comes back exactly.
    assert result["time_at_goal"] == pytest.approx(record["time_at_goal"], abs=1e-6)


def test_a_packed_run_that_fails_its_recorded_evaluation_is_refused_with_both_figures(tmp_path):
    run = tmp_path / "teacher"
    shutil.copytree(PACKED_TEACHER, run)
    path = run / "config.json"
    record = json.loads(path.read_text())
    record["packed"]["time_at_goal"] = 900.0
    path.write_text(json.dumps(record))
    with pytest.raises(DistillError, match=r"fails its recorded evaluation: time_at_goal 0\.00 .* against 900\.00"):
        verify_packed_run(run)


def test_the_tolerance_is_a_quarter_of_the_figure_or_a_twentieth_of_an_episode():
    assert verify_tolerance(0.0, 1000) == 50.0
    assert verify_tolerance(400.0, 1000) == 100.0


def test_a_run_that_is_not_packed_is_refused(tmp_path):
    with pytest.raises(DistillError, match="is not a packed run"):
        (tmp_path / "config.json").write_text(json.dumps({"kind": "teacher", "config": {}}))
        verify_packed_run(tmp_path)


# The CPU user's commands on a committed packed run, as from a fresh clone: a minute or two of compiling.
@pytest.mark.slow
def test_the_cpu_commands_work_on_the_committed_packed_teacher(tmp_path):
    from tests.conftest import TINY_STUDENT_FLAGS, run_cli

    run = tmp_path / "teacher"
    shutil.copytree(PACKED_TEACHER, run)  # where a user would keep it; the repository's copy stays as it is
    evaluated = run_cli("evaluate", str(run), "--episodes", "4", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    rendered = run_cli("render", str(run), "--out", str(tmp_path / "teacher.html"), "--episodes", "1", "--png")
    assert rendered.returncode == 0, rendered.stderr
    assert (tmp_path / "teacher.png").stat().st_size > 0
    mapped = run_cli("critic-map", str(run), "--goal", "4,12", "--out", str(tmp_path / "critic.png"))
    assert mapped.returncode == 0, mapped.stderr
    student = tmp_path / "student"
    compressed = run_cli(
        "compress", str(run), "--student-depth", "4", "--out", str(student), "--no-baseline", *TINY_STUDENT_FLAGS
    )
    assert compressed.returncode == 0, compressed.stderr
    exported = run_cli("export", str(student), "--out", str(tmp_path / "student.onnx"))
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "student.onnx").stat().st_size > 0
