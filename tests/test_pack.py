"""Packed runs: the best parameters and the run's record, read by every command as the original is."""

import json
import shutil

import jax
import numpy as np
import pytest

from distill.store.runs import read_metrics
from tests.conftest import TINY_TEACHER, assert_one_line_error, run_cli, run_cli_in_process

TINY_TEACHER_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY_TEACHER.items()] + ["--no-progress"]


@pytest.fixture(scope="module")
def packed_teacher(tiny_teacher_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed") / "teacher"
    result = run_cli("pack", str(tiny_teacher_run), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "packed teacher" in result.stdout and "MB" in result.stdout
    return out


def files_of(root):
    return {p.relative_to(root): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def assert_same_tree(a, b):
    leaves_a, leaves_b = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))
    assert jax.tree.structure(a) == jax.tree.structure(b) and len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def test_a_packed_run_holds_the_best_parameters_and_the_record_only(tiny_teacher_run, packed_teacher):
    from students.train import teacher_checkpoint_hash
    from teachers.train import load_teacher

    _, _, _, params, step = load_teacher(tiny_teacher_run)
    _, _, _, packed_params, packed_step = load_teacher(packed_teacher)
    assert packed_step == step
    assert_same_tree(params, packed_params)

    names = {str(p) for p in files_of(packed_teacher)}
    assert {"config.json", "metrics.jsonl", "learning_curve.png"} <= names
    assert not (packed_teacher / "checkpoints" / "last").exists()
    assert not any("tfevents" in name or "/state/" in f"/{name}" for name in names)
    assert sorted(p.name for p in (packed_teacher / "checkpoints" / "best").iterdir()) == [str(step)]
    assert (packed_teacher / "metrics.jsonl").read_bytes() == (tiny_teacher_run / "metrics.jsonl").read_bytes()
    assert (packed_teacher / "learning_curve.png").read_bytes() == (
        tiny_teacher_run / "learning_curve.png"
    ).read_bytes()
    # A student of either names the same teacher checkpoint.
    assert teacher_checkpoint_hash(packed_teacher) == teacher_checkpoint_hash(tiny_teacher_run)

    original = json.loads((tiny_teacher_run / "config.json").read_text())
    record = json.loads((packed_teacher / "config.json").read_text())
    packed = record.pop("packed")
    assert record == original
    best = max(read_metrics(tiny_teacher_run), key=lambda m: m["time_at_goal"])
    assert packed["from"] == str(tiny_teacher_run.absolute()) and packed["step"] == step
    assert (packed["env_steps"], packed["epoch"], packed["time_at_goal"]) == (
        best["env_steps"],
        best["epoch"],
        best["time_at_goal"],
    )
    last = read_metrics(tiny_teacher_run)[-1]
    assert (packed["final"]["env_steps"], packed["final"]["epoch"], packed["final"]["time_at_goal"]) == (
        last["env_steps"],
        last["epoch"],
        last["time_at_goal"],
    )
    # Nothing is left beside the packed run by its temporary copy.
    assert sorted(p.name for p in packed_teacher.parent.iterdir()) == ["teacher"]


@pytest.mark.slow  # whole commands on trained runs: CI runs it with the learning tests
def test_evaluate_and_render_a_packed_run_as_the_original(tiny_teacher_run, packed_teacher, tmp_path):
    from distill.app.render import render_target

    results = []
    for run in (tiny_teacher_run, packed_teacher):
        result = run_cli("evaluate", str(run), "--episodes", "4", "--json")
        assert result.returncode == 0, result.stderr
        results.append(json.loads(result.stdout))
    assert results[0] == results[1]
    pages = [
        render_target(run, tmp_path / f"{i}.html", episodes=1)
        for i, run in enumerate((tiny_teacher_run, packed_teacher))
    ]
    assert (tmp_path / "0.html").read_bytes() == (tmp_path / "1.html").read_bytes(), pages


def test_newer_final_parameters_travel_beside_the_best(tiny_teacher_run, tmp_path):
    """Parameters saved after the best (an epoch that scored lower, saved without its state) are what
    --checkpoint last reads, in the run and in its packed copy."""
    import shutil

    import jax

    from distill.app.pack import pack_run
    from distill.store.checkpoints import RunCheckpoints
    from teachers.train import load_teacher

    run = tmp_path / "run"
    shutil.copytree(tiny_teacher_run, run)
    _, _, _, params, step = load_teacher(run, "last")
    later = jax.tree.map(lambda x: x + 1.0, params)
    checkpoints = RunCheckpoints(run)
    checkpoints.save_params(step + 1, later, time_at_goal=-1.0)
    checkpoints.close()
    packed = pack_run(run, tmp_path / "packed")
    assert packed["final"]["step"] == step + 1 and not packed["final"]["same_as_best"]
    for where in (run, tmp_path / "packed"):
        _, _, _, final, final_step = load_teacher(where, "last")
        assert final_step == step + 1
        assert_same_tree(later, final)
    assert load_teacher(tmp_path / "packed")[4] == load_teacher(run)[4]  # the best stays the best


def test_a_packed_run_keeps_its_final_parameters_but_no_state_and_cannot_resume(tiny_teacher_run, packed_teacher):
    from teachers.train import load_teacher

    _, _, _, final, step = load_teacher(tiny_teacher_run, "last")
    _, _, _, packed_final, packed_step = load_teacher(packed_teacher, "last")
    assert packed_step == step
    assert_same_tree(final, packed_final)
    packed = json.loads((packed_teacher / "config.json").read_text())["packed"]
    # Final parameters that are also the best are kept once (under best); others in final/, without a state.
    same = packed["final"]["same_as_best"]
    assert same == (step == packed["step"])
    assert (packed_teacher / "checkpoints" / "final").exists() != same
    assert not any(p.name == "state" for p in (packed_teacher / "checkpoints").rglob("*"))
    before = files_of(packed_teacher)
    assert_one_line_error(
        run_cli_in_process("train-teacher", "--out", str(packed_teacher), "--resume", "--no-progress"),
        "cannot resume",
        "packed run",
        "--init-from",
    )
    assert files_of(packed_teacher) == before


def _report_figures(report: dict) -> dict:
    """A report less what depends on where runs lie or on timing."""
    drop = {"jax_latency", "run", "student_run", "teacher_run", "compress_seconds", "compress_cost_fraction", "seconds"}
    if isinstance(report, dict):
        return {k: _report_figures(v) for k, v in report.items() if k not in drop}
    return report


# Two whole compressions with their reports, then two exports with critics: most of a minute on a small
# machine, so CI runs it with the slow tests. The default suite still evaluates, renders and starts
# training from a packed run.
@pytest.mark.slow
def test_compress_and_export_of_a_packed_run_equal_the_original(tiny_teacher_run, packed_teacher, tmp_path):
    """Students of the original and the packed teacher (the teacher itself as --baseline-run) are the
    same bit for bit, with the same report; a packed student exports the same ONNX policy."""
    import onnxruntime as ort

    from distill.app.report import compress_and_report
    from export.student import export_student
    from students.config import student_config
    from students.train import load_student

    options = dict(
        student_depth=4,
        student_width=16,
        num_envs=8,
        unroll_length=10,
        batch_size=32,
        eval_episodes=4,
        iterations=2,
        steps=6,
    )
    students, reports = [], []
    for name, teacher in (("original", tiny_teacher_run), ("packed", packed_teacher)):
        out = tmp_path / name
        _, report = compress_and_report(
            student_config(teacher, **options),
            teacher,
            out,
            report_episodes=4,
            baseline_run=teacher,
            show_progress=False,
        )
        students.append(out)
        reports.append(report)
    assert_same_tree(load_student(students[0])[3], load_student(students[1])[3])
    assert _report_figures(reports[0]) == _report_figures(reports[1])
    assert reports[1]["scratch"]["given"] and reports[1]["teacher_train_seconds"] == reports[0]["teacher_train_seconds"]

    packed_student = tmp_path / "packed_student"
    result = run_cli("pack", str(students[0]), "--out", str(packed_student))
    assert result.returncode == 0, result.stderr
    assert {"report.json", "report.md", "report.png"} <= {p.name for p in packed_student.iterdir()}
    assert not (packed_student / "scratch_baseline").exists()
    exported = [
        export_student(run, tmp_path / f"{run.name}.onnx", critic=True) for run in (students[0], packed_student)
    ]
    rng = np.random.default_rng(0)
    for kind in ("policy", "critic"):
        sessions = [ort.InferenceSession(e[kind], providers=["CPUExecutionProvider"]) for e in exported]
        feeds = {i.name: rng.normal(size=(5, i.shape[1])).astype(np.float32) for i in sessions[0].get_inputs()}
        for a, b in zip(*(s.run(None, feeds) for s in sessions)):
            np.testing.assert_array_equal(a, b)
        metadata = [s.get_modelmeta().custom_metadata_map for s in sessions]
        assert metadata[0] == metadata[1]


@pytest.mark.slow  # whole commands on trained runs: CI runs it with the learning tests
def test_init_from_starts_from_the_packed_parameters_and_nothing_else(tiny_teacher_run, packed_teacher):
    """The new run's initial state holds the packed parameters bit for bit, and evaluating it gives the
    figures the original run recorded for its best epoch; optimisers and alpha start afresh."""
    from teachers.agent import make_teacher
    from teachers.config import teacher_config
    from teachers.train import load_init_params, load_teacher, teacher_trainable

    teacher = make_teacher(teacher_config("reacher", **TINY_TEACHER))
    params, origin = load_init_params(packed_teacher, teacher)
    packed = json.loads((packed_teacher / "config.json").read_text())["packed"]
    assert origin == {
        "run": str(packed_teacher),
        "packed_from": str(tiny_teacher_run.absolute()),
        **{k: packed[k] for k in ("step", "env_steps", "epoch", "time_at_goal")},
    }
    assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(params))
    # The original run is a source too, and tells the same story about its best checkpoint.
    assert load_init_params(tiny_teacher_run, teacher)[1] == {
        "run": str(tiny_teacher_run),
        **{k: packed[k] for k in ("step", "env_steps", "epoch", "time_at_goal")},
    }

    state = teacher_trainable(teacher, params).init()
    fresh = teacher_trainable(teacher).init()
    assert_same_tree(state.params, load_teacher(tiny_teacher_run)[3])
    assert_same_tree(
        (state.actor_opt, state.critic_opt, state.alpha_opt, state.log_alpha),
        (fresh.actor_opt, fresh.critic_opt, fresh.alpha_opt, fresh.log_alpha),
    )
    assert int(state.updates) == 0 and int(state.env_steps) == int(fresh.env_steps)
    assert not np.array_equal(*(np.asarray(s.params["actor"]["mean"]["kernel"]) for s in (state, fresh)))

    recorded = next(m for m in read_metrics(tiny_teacher_run) if m["epoch"] == packed["epoch"])
    evaluation = teacher_trainable(teacher, params).evaluate(state, packed["epoch"])
    assert evaluation == {k: recorded[k] for k in evaluation}


# Kept for CI's slow set: the default suite must fit in 15 minutes on 2 cores.
@pytest.mark.slow
def test_train_teacher_init_from_a_packed_run_records_its_origin(packed_teacher, tmp_path):
    run = tmp_path / "run"
    result = run_cli("train-teacher", "--out", str(run), "--init-from", str(packed_teacher), *TINY_TEACHER_FLAGS)
    assert result.returncode == 0, result.stderr
    origin = json.loads((run / "config.json").read_text())["init_from"]
    packed = json.loads((packed_teacher / "config.json").read_text())["packed"]
    assert origin["run"] == str(packed_teacher) and origin["packed_from"] == packed["from"]
    assert (origin["step"], origin["env_steps"]) == (packed["step"], packed["env_steps"])
    assert [m["epoch"] for m in read_metrics(run)] == [1, 2]

    # Killed before its first checkpoint, it starts again from the same source, not from random networks.
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(run / "config.json", again / "config.json")
    result = run_cli("train-teacher", "--out", str(again), "--resume", "--no-progress")
    assert result.returncode == 0, result.stderr
    timing = ("steps_per_s", "epoch_seconds")
    assert [{k: v for k, v in m.items() if k not in timing} for m in read_metrics(again)] == [
        {k: v for k, v in m.items() if k not in timing} for m in read_metrics(run)
    ]
    assert_one_line_error(
        run_cli_in_process(
            "train-teacher", "--out", str(run), "--resume", "--init-from", str(packed_teacher), "--no-progress"
        ),
        "--init-from",
        "--resume",
    )


def test_pack_bad_input(tiny_teacher_run, packed_teacher, tmp_path):
    out = tmp_path / "out" / "packed"
    assert_one_line_error(run_cli_in_process("pack", str(tmp_path / "missing"), "--out", str(out)), "does not exist")
    unstarted = tmp_path / "unstarted"
    unstarted.mkdir()
    (unstarted / "config.json").write_text(
        json.dumps({"kind": "teacher", "config": {"env": "reacher", **TINY_TEACHER}})
    )
    assert_one_line_error(run_cli_in_process("pack", str(unstarted), "--out", str(out)), "no best checkpoint")
    assert_one_line_error(run_cli_in_process("pack", str(packed_teacher), "--out", str(out)), "already a packed run")
    assert not (tmp_path / "out").exists()

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    assert_one_line_error(
        run_cli_in_process("pack", str(tiny_teacher_run), "--out", str(taken)), "already exists", "not empty"
    )
    assert [p.name for p in taken.iterdir()] == ["notes.txt"] and (taken / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken", "unstarted"]


def test_init_from_bad_input(packed_teacher, tmp_path):
    def refused(source, *fragments, flags=()):
        out = tmp_path / "new"
        assert_one_line_error(
            run_cli_in_process(
                "train-teacher", "--out", str(out), "--init-from", str(source), *TINY_TEACHER_FLAGS, *flags
            ),
            *fragments,
        )
        assert not out.exists()

    refused(packed_teacher, "networks differ", "critic-depth 8 here, 4 there", flags=["--critic-depth", "8"])
    refused(packed_teacher, "networks differ", "width 64 here, 32 there", flags=["--width", "64"])
    other_env = tmp_path / "other_env"
    shutil.copytree(packed_teacher, other_env)
    record = json.loads((other_env / "config.json").read_text())
    record["config"]["env"] = "simple_u_maze"
    (other_env / "config.json").write_text(json.dumps(record))
    refused(other_env, "networks differ", "env reacher here, simple_u_maze there")
    refused(tmp_path / "nowhere", "--init-from", "does not exist")
    student = tmp_path / "student"
    student.mkdir()
    (student / "config.json").write_text(json.dumps({"kind": "student", "config": {}}))
    refused(student, "is a student run, not a teacher run")
