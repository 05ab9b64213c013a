"""int8 / fp16 variants of an export and the gate they must pass: real files, sessions and environments.

The gate tests use a hand-written point-mass controller (``action = tanh(k (goal - xy) - d v)``) as the
"fp32" file: unlike a tiny trained student it reliably reaches some goals of simple_u_maze, so losing
them is visible. A controller driving away from the goal is a variant that loses everything; the
same controller with a large, live but zero-weighted side branch is a slower fp32 file for which the
lean controller is a genuinely faster, equally good variant.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from distill.errors import DistillError
from export.onnx_graph import policy_graph, read_metadata, set_metadata
from export.parity import write_verified
from export.runtime import OnnxPolicy, PolicyInputError
from export.variants import VariantRefused, fp16_model, gate_variant, int8_model, visited_states
from tests.conftest import assert_one_line_error, run_cli, run_cli_in_process
from tests.test_export import DIMS, POLICY_INPUTS, SPEC, jax_policy, make_actor, random_policy_inputs

GATE_EPISODES = 8


def controller(path, gain: float, damping: float = 0.5, heavy_width: int = 0) -> onnx.ModelProto:
    """A PD controller for simple_u_maze as a distill policy file; ``heavy_width`` adds a costly branch times 0."""
    inits = [
        numpy_helper.from_array(np.array(v, dtype), n)
        for n, v, dtype in (
            ("starts", [0], np.int64),
            ("mid", [2], np.int64),
            ("ends", [4], np.int64),
            ("axes", [1], np.int64),
            ("gain", [gain], np.float32),
            ("damping", [damping], np.float32),
            ("zero", [0.0], np.float32),
        )
    ]
    nodes = [
        helper.make_node("Slice", ["obs", "starts", "mid", "axes"], ["xy"]),
        helper.make_node("Slice", ["obs", "mid", "ends", "axes"], ["v"]),
        helper.make_node("Sub", ["goal", "xy"], ["error"]),
        helper.make_node("Mul", ["error", "gain"], ["push"]),
        helper.make_node("Mul", ["v", "damping"], ["brake"]),
        helper.make_node("Sub", ["push", "brake"], ["pre"]),
    ]
    last = "pre"
    if heavy_width:
        rng = np.random.default_rng(0)
        h, in_dim = "obs", 4
        for i in range(6):
            w = (rng.standard_normal((in_dim, heavy_width)) / np.sqrt(in_dim)).astype(np.float32)
            inits += [
                numpy_helper.from_array(w, f"w{i}"),
                numpy_helper.from_array(np.zeros(heavy_width, np.float32), f"b{i}"),
            ]
            nodes += [
                helper.make_node("Gemm", [h, f"w{i}", f"b{i}"], [f"g{i}"]),
                helper.make_node("Tanh", [f"g{i}"], [f"h{i}"]),
            ]
            h, in_dim = f"h{i}", heavy_width
        inits.append(numpy_helper.from_array(np.zeros((heavy_width, 2), np.float32), "w_out"))
        nodes += [
            helper.make_node("MatMul", [h, "w_out"], ["side"]),
            helper.make_node("Mul", ["side", "zero"], ["nothing"]),
            helper.make_node("Add", ["pre", "nothing"], ["pre_plus"]),
        ]
        last = "pre_plus"
    nodes.append(helper.make_node("Tanh", [last], ["action"]))
    graph = helper.make_graph(
        nodes,
        "controller",
        [
            helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("goal", TensorProto.FLOAT, ["batch", 2]),
        ],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", 2])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    set_metadata(
        model,
        {
            "distill_format": "1",
            "kind": "policy",
            "env": "simple_u_maze",
            "state_dim": 4,
            "goal_dim": 2,
            "action_dim": 2,
            "action_low": -1.0,
            "action_high": 1.0,
        },
    )
    if path is not None:
        onnx.save(model, str(path))
    return model


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The fp32 controller file and the states it visits (the variant's action check runs on them)."""
    path = tmp_path_factory.mktemp("controller") / "fp32.onnx"
    controller(path, gain=2.0)
    return path, visited_states(path, episodes=2, seed=1)


def test_gate_refuses_a_variant_that_loses_too_much(reference, tmp_path):
    fp32, states = reference
    away = controller(None, gain=-2.0)  # pushes away from the goal: finite, in bounds, and useless
    out = tmp_path / "policy.onnx"
    out.write_bytes(b"an earlier export")
    with pytest.raises(VariantRefused) as err:
        gate_variant(fp32, away, "int8", out, episodes=GATE_EPISODES, calibration=states, latency_calls=500)
    message = str(err.value)
    assert "\n" not in message and "loses more than 2% closed loop" in message, message
    assert "time_at_goal 0.00 vs fp32" in message and "p50" in message and "nothing written" in message
    assert out.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.onnx"]  # no temporary file left either


def test_gate_with_no_allowed_loss_refuses_any_loss(reference, tmp_path):
    fp32, states = reference
    softer = controller(None, gain=2.0, damping=6.0)  # crawls: reaches the same goals later
    with pytest.raises(VariantRefused, match="loses more than 0%"):
        gate_variant(
            fp32,
            softer,
            "fp16",
            tmp_path / "p.onnx",
            episodes=GATE_EPISODES,
            calibration=states,
            max_loss=0.0,
            min_speedup=0.0,
            latency_calls=500,
        )
    assert not (tmp_path / "p.onnx").exists()


def test_gate_ships_a_faster_equal_variant_and_records_both(reference, tmp_path):
    _, states = reference
    slow_fp32 = tmp_path / "slow.onnx"
    controller(slow_fp32, gain=2.0, heavy_width=512)
    lean = controller(None, gain=2.0)
    out = tmp_path / "policy.onnx"
    record = gate_variant(slow_fp32, lean, "int8", out, episodes=GATE_EPISODES, calibration=states, latency_calls=1000)
    meta = read_metadata(out)
    assert meta["precision"] == "int8" and meta["variant_gate"] == record and record["shipped"]
    fp32, int8 = record["fp32"], record["int8"]
    for side in (fp32, int8):
        assert {"time_at_goal", "success_any", "p50_us", "p99_us"} <= set(side)
    assert fp32["time_at_goal"] > 0 and int8["time_at_goal"] == fp32["time_at_goal"] and record["retention"] == 1.0
    assert record["speedup"] > 1.0 and int8["p50_us"] < fp32["p50_us"]
    assert int8["max_abs_action_error_vs_fp32"] == 0.0
    assert OnnxPolicy(out)(np.zeros(4, np.float32), np.ones(2, np.float32)).shape == (2,)


@pytest.fixture(scope="module")
def small_fp32(tmp_path_factory):
    nets, params = make_actor(depth=4, width=32)
    path = tmp_path_factory.mktemp("small_fp32") / "policy.onnx"
    write_verified(policy_graph(params, **DIMS), path, jax_policy(nets, params), POLICY_INPUTS, {"env": "reacher"})
    return path


def test_int8_and_fp16_files_act_like_fp32_and_refuse_non_finite_inputs(small_fp32, tmp_path):
    obs, goal = random_policy_inputs(512, seed=3)
    want = OnnxPolicy(small_fp32)(obs, goal)
    int8_path, fp16_path = tmp_path / "int8.onnx", tmp_path / "fp16.onnx"
    onnx.save(int8_model(small_fp32, {"obs": obs, "goal": goal}), str(int8_path))
    onnx.save(fp16_model(small_fp32), str(fp16_path))
    assert {n.op_type for n in onnx.load(str(int8_path)).graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    np.testing.assert_allclose(OnnxPolicy(fp16_path)(obs, goal), want, atol=1e-2)
    assert np.abs(OnnxPolicy(int8_path)(obs, goal) - want).max() < 0.25

    # Quantisation turns a NaN into an ordinary integer: the file alone would act on it...
    bad = np.full((1, SPEC.state_dim), 0.3, np.float32)
    bad[0, 0] = np.nan
    session = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
    assert np.isfinite(session.run(None, {"obs": bad, "goal": np.zeros((1, SPEC.goal_dim), np.float32)})[0]).all()
    # ...so OnnxPolicy's single-call path checks the inputs themselves, at every position.
    policy = OnnxPolicy(int8_path)
    for value in (np.nan, np.inf, -np.inf):
        for name, dim in (("obs", SPEC.state_dim), ("goal", SPEC.goal_dim)):
            for i in range(dim):
                o, g = np.full(SPEC.state_dim, 0.3, np.float32), np.full(SPEC.goal_dim, -0.2, np.float32)
                (o if name == "obs" else g)[i] = value
                with pytest.raises(PolicyInputError, match=f"{name} contains NaN or inf .first at index \\[{i}\\]"):
                    policy(o, g)
    assert np.isfinite(policy(np.full(SPEC.state_dim, 0.3, np.float32), np.zeros(SPEC.goal_dim, np.float32))).all()


@pytest.mark.slow  # whole commands on trained runs: CI runs it with the learning tests
def test_export_variant_end_to_end(tiny_student_run, tmp_path):
    """The command ships the int8 file with both sides recorded, or refuses in one line with the figures."""
    out = tmp_path / "policy.onnx"
    result = run_cli("export", str(tiny_student_run), "--out", str(out), "--int8", "--gate-episodes", "8")
    if result.returncode == 0:
        meta = read_metadata(out)
        assert meta["precision"] == "int8" and "parity" not in meta
        gate = meta["variant_gate"]
        assert gate["retention"] >= 0.98 and gate["speedup"] > 1.0
        assert {"time_at_goal", "p50_us"} <= set(gate["fp32"]) and {"time_at_goal", "p50_us"} <= set(gate["int8"])
        assert "int8: time_at_goal" in result.stdout
    else:
        assert_one_line_error(result, "int8 variant refused", "time_at_goal", "p50")
        assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_variant_bad_flags(tiny_student_run, tmp_path):
    out = tmp_path / "p.onnx"
    assert_one_line_error(
        run_cli_in_process("export", str(tiny_student_run), "--out", str(out), "--int8", "--fp16"),
        "one of --int8 and --fp16",
    )
    assert_one_line_error(
        run_cli_in_process("export", str(tiny_student_run), "--out", str(out), "--fp16", "--gate-episodes", "0"),
        "positive",
    )
    assert not out.exists()


def test_gate_refuses_a_tolerance_outside_0_1(reference, tmp_path):
    fp32, states = reference
    with pytest.raises(DistillError, match="in \\[0, 1\\]"):
        gate_variant(fp32, controller(None, gain=2.0), "int8", tmp_path / "p.onnx", calibration=states, max_loss=1.5)


def test_int8_needs_hidden_layers(tmp_path):
    nets, params = make_actor(depth=0, width=16)
    path = tmp_path / "shallow.onnx"
    write_verified(policy_graph(params, **DIMS), path, jax_policy(nets, params), POLICY_INPUTS, {"env": "reacher"})
    obs, goal = random_policy_inputs(16, seed=0)
    with pytest.raises(DistillError, match="no hidden layers"):
        int8_model(path, {"obs": obs, "goal": goal})
