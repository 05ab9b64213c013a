"""distill export, the closed-loop ONNX evaluation and the reduced demo, end to end."""

import json

import numpy as np
import onnx
import pytest

from distill.nn.networks import deterministic_action
from export.onnx_graph import read_metadata
from export.runtime import OnnxCritic, OnnxPolicy
from students.train import load_student
from tests.conftest import assert_one_line_error, run_cli, run_cli_in_process


def test_export_writes_gated_files_with_metadata(tiny_student_onnx, tiny_student_run, tiny_teacher_run):
    model = onnx.load(str(tiny_student_onnx))
    assert model.ir_version <= 9 and {o.domain: o.version for o in model.opset_import}[""] == 17
    assert [i.name for i in model.graph.input] == ["obs", "goal"] and model.graph.output[0].name == "action"
    meta = read_metadata(tiny_student_onnx)
    student_cfg = json.loads((tiny_student_run / "config.json").read_text())
    assert meta["env"] == "reacher" and meta["goal_indices"] == [8, 9]
    assert meta["backend"] == student_cfg["config"]["backend"]
    assert meta["student_depth"] == 4 and meta["student_width"] == 16
    assert meta["teacher_depth"] == 4 and meta["teacher_width"] == 32
    assert meta["teacher_checkpoint_sha256"] == student_cfg["teacher"]["checkpoint_sha256"]
    assert 0 <= meta["parity_max_abs_error"] <= 1e-5
    assert meta["action_low"] == -1.0 and meta["action_high"] == 1.0
    assert sorted(p.name for p in tiny_student_onnx.parent.iterdir()) == [
        "policy.critic.json",
        "policy.critic.onnx",
        "policy.json",
        "policy.onnx",
    ]  # each beside its contract
    assert json.loads(tiny_student_onnx.with_name("policy.critic.json").read_text())["critic"]["energy"].startswith(
        "q = "
    )
    critic = OnnxCritic(tiny_student_onnx.with_name("policy.critic.onnx"))
    q = critic(np.zeros((3, 10), np.float32), np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32))
    assert q.shape == (3,) and np.all(q <= 0)


def test_closed_loop_onnx_matches_the_jax_student(tiny_student_onnx, tiny_student_run):
    onnx_eval = run_cli("evaluate", str(tiny_student_onnx), "--episodes", "8", "--json", "--seed", "3")
    jax_eval = run_cli("evaluate", str(tiny_student_run), "--episodes", "8", "--json", "--seed", "3")
    assert onnx_eval.returncode == 0, onnx_eval.stderr
    assert jax_eval.returncode == 0, jax_eval.stderr
    a, b = json.loads(onnx_eval.stdout), json.loads(jax_eval.stdout)
    assert a["episodes"] == b["episodes"] == 8
    # Same start states and goals, actions equal to ~1e-6: the episodes agree up to rare boundary steps.
    assert abs(a["time_at_goal"] - b["time_at_goal"]) <= 1.0
    assert abs(a["success_any"] - b["success_any"]) <= 1 / 8


def test_export_bad_inputs(tiny_teacher_run, tiny_student_onnx, tmp_path):
    assert_one_line_error(
        run_cli_in_process("export", str(tmp_path / "missing"), "--out", str(tmp_path / "p.onnx")), "does not exist"
    )
    assert_one_line_error(
        run_cli_in_process("export", str(tiny_teacher_run), "--out", str(tmp_path / "p.onnx")), "not a student run"
    )


def test_unwritable_output_path(tiny_student_run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli_in_process("export", str(tiny_student_run), "--out", str(blocker / "sub" / "p.onnx"))
    assert_one_line_error(result, "cannot write")
    assert blocker.read_text() == ""


def test_evaluate_rejects_foreign_onnx_and_wrong_env(tiny_student_onnx, tmp_path):
    foreign = tmp_path / "foreign.onnx"
    model = onnx.load(str(tiny_student_onnx))
    del model.metadata_props[:]
    onnx.save(model, str(foreign))
    assert_one_line_error(run_cli_in_process("evaluate", str(foreign), "--episodes", "2"), "metadata")
    assert_one_line_error(
        run_cli_in_process("evaluate", str(tiny_student_onnx), "--env", "ant", "--episodes", "2"), "not for 'ant'"
    )
    assert_one_line_error(run_cli_in_process("evaluate", str(tmp_path / "none.onnx")), "does not exist")


def test_render_an_onnx_file_that_does_not_name_its_env(tiny_student_onnx, tmp_path):
    unnamed = tmp_path / "unnamed.onnx"
    model = onnx.load(str(tiny_student_onnx))
    kept = [p for p in model.metadata_props if p.key != "env"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(unnamed))
    out = tmp_path / "viewer.html"
    assert_one_line_error(
        run_cli_in_process("render", str(unnamed), "--out", str(out)), "does not name its environment", "--env"
    )
    assert not out.exists()
    result = run_cli("render", str(unnamed), "--env", "reacher", "--out", str(out), "--episodes", "1")
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0


def test_runtime_policy_acts_like_the_file_says(tiny_student_onnx, tiny_student_run):
    policy = OnnxPolicy(tiny_student_onnx)
    obs, goal = np.full(10, 0.2, np.float32), np.array([0.1, -0.1], np.float32)
    action = policy(obs, goal)
    _, _, student, params, _ = load_student(tiny_student_run)
    want = deterministic_action(student.policy(params["actor"], np.concatenate([obs, goal])[None])[0])[0]
    assert action.shape == (2,) and np.all(np.abs(action) <= 1)
    np.testing.assert_allclose(action, want, atol=1e-5)
    with pytest.raises(ValueError, match="NaN"):
        policy(np.full(10, np.nan, np.float32), np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="shape"):
        policy(np.zeros(11, np.float32), np.zeros(2, np.float32))


# The whole pipeline end to end in a reduced size (90 s): CI runs it with the learning tests.
@pytest.mark.slow
def test_demo_reduced_size(tmp_path):
    out = tmp_path / "demo"
    result = run_cli("demo", "--quick", "--out", str(out), "--no-progress", timeout=900)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "demo.json").read_text())
    assert summary["onnx"]["parity_max_abs_error"] <= 1e-5
    assert abs(summary["onnx"]["time_at_goal"] - summary["student_jax_eval"]["time_at_goal"]) <= 1.0
    models = {r["model"] for r in summary["latency"]}
    assert {"teacher (JAX)", "student (JAX)", "student (onnxruntime, OnnxPolicy)"} <= models
    for name in ("demo_report.md", "latency.png", "policy.onnx", "student/report.png", "teacher/learning_curve.png"):
        assert (out / name).is_file(), name
    assert "student (ONNX)" in result.stdout
    # The demo shows compression: a narrower student, with both sizes and their ratio in its table.
    compression = summary["compression"]
    assert compression["student_width"] < compression["teacher_width"]
    assert compression["ratio"] == compression["teacher_params"] / compression["student_params"] > 1
    assert "fewer" in (out / "demo_report.md").read_text() and "compression:" in result.stdout
