"""Students behind sensors: the spec, the history and latency, and that JAX and ONNX read alike."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill.data.sensors import empty_buffer, observe, parse_sensors, read, step_noise
from distill.envs import get_spec
from distill.errors import DistillError
from tests.conftest import SENSOR_SPEC, TINY_STUDENT_FLAGS, assert_one_line_error, run_cli, run_cli_in_process

SPEC = SENSOR_SPEC


# ---- the spec -------------------------------------------------------------------------------------


def test_spec_string_and_toml_file_give_one_canonical_model(tmp_path):
    reacher = get_spec("reacher")
    model = parse_sensors(SPEC, reacher)
    assert [s[0] for s in model.slices] == ["joint_cos", "joint_sin", "fingertip_xy"]
    assert (model.reading_dim, model.history, model.latency, model.sensor_dim) == (6, 3, 1, 18)
    np.testing.assert_array_equal(model.indices, [0, 1, 2, 3, 8, 9])
    toml = tmp_path / "robot.toml"
    toml.write_text('drop = ["joint_vel", "fingertip_vel"]\nnoise = 0.02\nhistory = 3\nlatency = 1\n')
    assert parse_sensors(str(toml), reacher) == model
    assert parse_sensors(model.describe(), reacher) == model  # the recorded form reads back as itself
    assert parse_sensors("", reacher) is None
    per_slice = parse_sensors("keep=fingertip_xy,joint_cos;noise=0.01,fingertip_xy:0.1", reacher)
    assert [(s[0], s[3]) for s in per_slice.slices] == [("joint_cos", 0.01), ("fingertip_xy", 0.1)]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("drop=nope", "no state slice 'nope'"),
        ("keep=joint_cos,nope", "no state slice 'nope'"),
        ("drop=joint_cos,joint_sin,joint_vel,fingertip_vel,fingertip_xy", "drops every slice"),
        ("noise=-0.1", "non-negative"),
        ("noise=fingertip_xy:-1", "non-negative"),
        ("noise=nan", "non-negative"),
        ("history=0", "history must lie in [1, 100]"),
        ("history=101", "history must lie in [1, 100]"),
        ("latency=-1", "latency must lie in [0, 100]"),
        ("latency=101", "latency must lie in [0, 100]"),
        ("history=2.5", "history must be an integer"),
        ("history", "malformed part 'history'"),
        ("history=3;history=4", "given twice"),
        ("colour=red", "unknown field 'colour'"),
        ("keep=joint_cos;drop=joint_sin", "not both"),
        ("drop=joint_vel;noise=joint_vel:0.1", "which the sensor model drops"),
    ],
)
def test_bad_specs_are_refused_in_one_line(text, fragment):
    with pytest.raises(DistillError) as err:
        parse_sensors(text, get_spec("reacher"))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_every_environment_names_its_whole_state():
    from distill.envs import REGISTRY

    for spec in REGISTRY.values():
        covered = [i for _, start, stop in spec.layout for i in range(start, stop)]
        assert covered == list(range(spec.state_dim)), spec.name


def test_envs_layout_command():
    result = run_cli("envs", "--layout", "ant", "--json")
    assert result.returncode == 0, result.stderr
    slices = {s["name"]: (s["start"], s["stop"]) for s in json.loads(result.stdout)["slices"]}
    assert slices == {
        "torso_xy": (0, 2),
        "torso_height": (2, 3),
        "orientation": (3, 7),
        "joint_pos": (7, 15),
        "torso_vel": (15, 21),
        "joint_vel": (21, 29),
    }
    assert_one_line_error(run_cli_in_process("envs", "--layout", "nope"), "unknown environment 'nope'")


# ---- history and latency --------------------------------------------------------------------------


@pytest.mark.parametrize("history, latency", [(1, 0), (3, 0), (1, 2), (3, 2)])
def test_history_stacks_oldest_first_and_latency_delays_by_exactly_L_steps(history, latency):
    model = parse_sensors(f"keep=fingertip_xy;history={history};latency={latency}", get_spec("reacher"))
    episodes, steps = 2, 7
    buffer = empty_buffer(model, episodes)
    for t in range(steps):
        obs = jnp.full((episodes, 12), float(t + 1))  # the state at step t reads t + 1 everywhere
        buffer, seen = observe(model, buffer, obs, 10, None, jnp.full((episodes,), t == 0))
        # Step t sees readings t-L-K+1 .. t-L; before the first reading, the first one stands in.
        want = [max(s, 0) + 1.0 for s in range(t - latency - history + 1, t - latency + 1)]
        np.testing.assert_array_equal(np.asarray(seen[0, :-2]).reshape(history, 2)[:, 0], want)
        np.testing.assert_array_equal(np.asarray(seen[:, -2:]), float(t + 1))  # the goal, undelayed


def test_a_new_episode_starts_a_fresh_history_in_its_own_row_only():
    model = parse_sensors("keep=fingertip_xy;history=2;latency=1", get_spec("reacher"))
    buffer = empty_buffer(model, 2)
    for t, fresh in enumerate([[True, True], [False, False], [False, True]]):
        obs = jnp.full((2, 12), float(t + 1))
        buffer, seen = observe(model, buffer, obs, 10, None, jnp.asarray(fresh))
    np.testing.assert_array_equal(np.asarray(seen[:, 0:4:2]), [[1.0, 2.0], [3.0, 3.0]])


def test_every_model_sees_the_same_noise_draws_of_a_key():
    reacher = get_spec("reacher")
    wide = parse_sensors("noise=0.1", reacher)
    narrow = parse_sensors("keep=fingertip_xy;noise=0.1", reacher)
    state = jnp.zeros((4, 10))
    noise = step_noise(jax.random.PRNGKey(3), 5, state.shape)
    np.testing.assert_array_equal(np.asarray(read(wide, state, noise))[:, -2:], np.asarray(read(narrow, state, noise)))
    assert not np.array_equal(noise, step_noise(jax.random.PRNGKey(3), 6, state.shape))


# ---- a real sensor student, its ONNX file and its closed loop --------------------------------------


@pytest.fixture(scope="module")
def sensor_student(sensor_student_run):
    return sensor_student_run


@pytest.fixture(scope="module")
def sensor_onnx(sensor_student, tmp_path_factory):
    from export.student import export_student

    path = tmp_path_factory.mktemp("sensors_onnx") / "policy.onnx"
    export_student(sensor_student, path)
    return path


def test_sensor_student_run_records_its_model(sensor_student):
    config = json.loads((sensor_student / "config.json").read_text())["config"]
    assert config["sensors"] == parse_sensors(SPEC, get_spec("reacher")).describe()
    report = json.loads((sensor_student / "report.json").read_text())
    assert report["student"]["sensors"]["history"] == 3
    assert "teacher (privileged: full state)" in (sensor_student / "report.md").read_text()


# Two more trainings (the student without history, CRL from scratch behind the sensors): CI runs it
# with the learning tests.
@pytest.mark.slow
def test_sensor_report_says_what_the_sensors_cost(tiny_teacher_run, tmp_path):
    sensor_student = tmp_path / "student"
    result = run_cli(
        "compress",
        str(tiny_teacher_run),
        "--student-depth",
        "4",
        "--out",
        str(sensor_student),
        "--sensors",
        SPEC,
        *TINY_STUDENT_FLAGS,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads((sensor_student / "config.json").read_text())["config"]
    report = json.loads((sensor_student / "report.json").read_text())
    assert report["student_no_history"]["sensors"]["history"] == 1  # the same student without history
    assert (sensor_student / "no_history" / "config.json").is_file()
    text = (sensor_student / "report.md").read_text()
    assert "teacher (privileged: full state)" in text and "same student without history" in text
    # The from-scratch baseline is CRL behind the same sensors, evaluated through them.
    assert report["scratch"]["sensors"]["spec"] == config["sensors"]
    assert (
        json.loads((sensor_student / "scratch_baseline" / "config.json").read_text())["config"]["sensors"]
        == config["sensors"]
    )
    assert "CRL from scratch (student size, same sensors)" in text


def test_onnx_file_reads_sensors_and_matches_the_jax_student_on_one_stream(sensor_student, sensor_onnx):
    from distill.data.sensors import history_push, history_start, sensor_vector
    from distill.nn.networks import deterministic_action
    from export.onnx_graph import read_metadata
    from export.runtime import OnnxPolicy
    from students.train import load_student

    metadata = read_metadata(sensor_onnx)
    assert metadata["inputs"] == ["sensors", "goal"] and metadata["sensor_dim"] == 18
    assert metadata["sensor_model"]["spec"] == parse_sensors(SPEC, get_spec("reacher")).describe()
    _, spec, networks, params, _ = load_student(sensor_student)
    model = parse_sensors(SPEC, spec)
    policy = OnnxPolicy(sensor_onnx)
    rng = np.random.default_rng(0)
    readings = rng.normal(size=(12, 6)).astype(np.float32)
    goal = rng.normal(size=2).astype(np.float32) * 0.1
    buffer = None
    for episode in range(2):
        policy.reset()
        for t, reading in enumerate(readings):
            action = policy(reading, goal)
            r = jnp.asarray(reading)[None]
            buffer = history_start(model, r) if t == 0 else history_push(model, buffer, r)
            # OnnxPolicy adds no delay, so its history is the JAX one without the latency.
            want_sensors = np.asarray(buffer[:, -model.history :].reshape(1, -1))[0]
            np.testing.assert_array_equal(policy._sensors, want_sensors)
            want = deterministic_action(
                networks.policy(params["actor"], jnp.concatenate([want_sensors, goal])[None])[0]
            )
            np.testing.assert_allclose(action, np.asarray(want)[0], atol=1e-5)
    assert sensor_vector(model, buffer).shape == (1, 18)


def test_batch_history_and_reset(sensor_onnx):
    from export.runtime import OnnxPolicy, PolicyInputError

    policy, single = OnnxPolicy(sensor_onnx), OnnxPolicy(sensor_onnx)
    rng = np.random.default_rng(1)
    stream = rng.normal(size=(5, 3, 6)).astype(np.float32)
    goals = rng.normal(size=(3, 2)).astype(np.float32) * 0.1
    batch_actions = [policy(readings, goals) for readings in stream]
    for row in range(3):  # each row of a batch is its own episode
        single.reset()
        for t in range(5):
            np.testing.assert_allclose(single(stream[t, row], goals[row]), batch_actions[t][row], atol=1e-6)
    with pytest.raises(PolicyInputError, match="history holds 3 episodes"):
        policy(stream[0, :2], goals[:2])
    policy.reset()  # forgets the history: the first reading fills it again
    fresh = OnnxPolicy(sensor_onnx)
    np.testing.assert_array_equal(policy(stream[4], goals), fresh(stream[4], goals))
    with pytest.raises(PolicyInputError, match="reading has shape"):
        fresh.reset() or fresh(np.zeros(10, np.float32), goals[0])
    before = fresh._sensors.copy()
    fresh(stream[0, 0], goals[0])
    with pytest.raises(PolicyInputError, match="reading contains NaN"):
        fresh(np.full(6, np.nan, np.float32), goals[0])
    np.testing.assert_array_equal(fresh._sensors[-6:], stream[0, 0])  # a refused reading never enters the history
    assert not np.array_equal(before, fresh._sensors)


def test_plain_file_has_no_sensor_model_and_reset_changes_nothing(tiny_student_onnx):
    from export.runtime import OnnxPolicy

    policy = OnnxPolicy(tiny_student_onnx)
    obs, goal = np.full(10, 0.1, np.float32), np.full(2, 0.05, np.float32)
    before = policy(obs, goal)
    policy.reset()
    assert policy.sensor_model is None and policy.sensor_dim == 0
    np.testing.assert_array_equal(policy(obs, goal), before)


def test_closed_loop_of_the_file_equals_the_jax_student_behind_the_same_sensors(sensor_student, sensor_onnx):
    from distill.app.evaluate import evaluate_target

    jax_eval = evaluate_target(sensor_student, 8, None, 0)
    onnx_eval = evaluate_target(sensor_onnx, 8, None, 0)
    assert jax_eval["sensors"] == onnx_eval["sensors"]
    for key in ("time_at_goal", "success_any", "time_at_goal_std"):
        assert jax_eval[key] == pytest.approx(onnx_eval[key], abs=1e-6)
    with pytest.raises(DistillError, match="--obs-noise does not apply"):
        evaluate_target(sensor_onnx, 8, None, 0, obs_noise=0.1)


def test_bad_sensor_option_writes_nothing(tiny_teacher_run, tmp_path):
    out = tmp_path / "student"
    for spec, fragment in (
        ("drop=nope", "no state slice 'nope'"),
        ("history=-1", "history must lie"),
        ("noise=-2", "non-negative"),
        ("keep=", "malformed part"),
    ):
        result = run_cli_in_process(
            "compress", str(tiny_teacher_run), "--out", str(out), "--sensors", spec, "--no-baseline"
        )
        assert_one_line_error(result, fragment)
        assert not out.exists()


def test_a_sensor_student_trains_longer_unless_told(tiny_teacher_run):
    from students.config import SENSOR_ITERATIONS, SENSOR_UPDATES, student_config

    sensed = student_config(tiny_teacher_run, sensors=SPEC)
    assert (sensed.iterations, sensed.updates_per_iteration) == (SENSOR_ITERATIONS, SENSOR_UPDATES)
    plain = student_config(tiny_teacher_run)
    assert (plain.iterations, plain.updates_per_iteration) == (6, 150)
    told = student_config(tiny_teacher_run, sensors=SPEC, steps=600)
    assert told.iterations * told.updates_per_iteration == 600 and told.iterations == 6
    assert student_config(tiny_teacher_run, sensors=SPEC, iterations=3).iterations == 3
