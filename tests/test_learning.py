"""Slow learning tests: run with `make test-slow` (pytest -m slow); CI runs them after the default suite."""

import pytest

from distill.envs import get_spec
from distill.eval.evaluation import random_policy_baseline
from teachers.config import teacher_config
from teachers.train import train_teacher


@pytest.fixture(scope="module")
def reacher_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("learning") / "teacher"
    return out, train_teacher(teacher_config("reacher"), out, show_progress=False)


@pytest.mark.slow
def test_reacher_teacher_learns_with_its_defaults(reacher_teacher):
    _, final = reacher_teacher
    spec = get_spec("reacher")
    random = random_policy_baseline(spec.make(), spec, num_episodes=128, seed=0)
    assert final["success_any"] >= 0.8
    assert final["time_at_goal"] >= 5 * max(random["time_at_goal"], 1.0)


@pytest.mark.slow
def test_depth4_student_keeps_90_percent_of_the_reacher_teacher(reacher_teacher, tmp_path):
    from distill.app.report import build_report
    from students.config import StudentConfig
    from students.train import compress

    teacher, _ = reacher_teacher
    compress(StudentConfig(student_depth=4), teacher, tmp_path / "student", show_progress=False)
    report = build_report(tmp_path / "student", baseline=False)
    assert report["retention"] >= 0.9
