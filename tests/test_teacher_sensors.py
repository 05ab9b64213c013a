"""CRL trained from scratch behind a student's sensors: the actor reads them, the critic the state."""

import json
import shutil

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from distill.data.sensors import parse_sensors
from distill.envs import get_spec
from distill.errors import DistillError
from distill.store.runs import read_metrics
from teachers.agent import make_teacher
from teachers.config import teacher_config
from teachers.train import load_teacher, train_teacher
from tests.conftest import TINY_TEACHER, assert_one_line_error, run_cli

SPEC = "drop=joint_vel,fingertip_vel;noise=0.02;history=3;latency=1"
# Reacher's state is 10 entries; dropping two 2-entry velocity slices leaves readings of 6.
READING, HISTORY = 6, 3


@pytest.fixture(scope="module")
def sensor_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("sensor_teacher") / "run"
    train_teacher(teacher_config("reacher", sensors=SPEC, **TINY_TEACHER), out, show_progress=False)
    return out


def test_sensor_teacher_records_its_model_and_its_actor_reads_the_sensor_vector(sensor_teacher):
    spec = get_spec("reacher")
    config = json.loads((sensor_teacher / "config.json").read_text())["config"]
    assert config["sensors"] == parse_sensors(SPEC, spec).describe()  # canonical, as a student records it
    assert [m["epoch"] for m in read_metrics(sensor_teacher)] == [1, 2]
    _, _, networks, params, _ = load_teacher(sensor_teacher)
    assert networks.sensor_dim == HISTORY * READING
    assert params["actor"]["tower"]["input"]["kernel"].shape[0] == HISTORY * READING + spec.goal_dim
    # The critic keeps reading the true state.
    assert params["sa_encoder"]["tower"]["input"]["kernel"].shape[0] == spec.state_dim + spec.action_dim


def test_actor_loss_reads_the_sensor_vector_and_the_critic_the_state():
    from distill.data.replay import Batch
    from distill.nn.networks import energy, make_crl_networks, sample_action
    from teachers.losses import actor_loss

    spec = get_spec("reacher")
    networks = make_crl_networks(spec, actor_depth=4, critic_depth=4, width=8, repr_dim=4, sensor_dim=5)
    params = networks.init(jax.random.PRNGKey(0))
    k_state, k_action, k_goal, k_seen, k_loss = jax.random.split(jax.random.PRNGKey(1), 5)
    batch = Batch(
        state=jax.random.normal(k_state, (6, spec.state_dim)),
        action=jax.random.uniform(k_action, (6, spec.action_dim), minval=-1, maxval=1),
        goal=jax.random.normal(k_goal, (6, spec.goal_dim)),
        weight=jax.numpy.ones(6),
    )
    seen = jax.random.normal(k_seen, (6, 5))
    critic = {"sa_encoder": params["sa_encoder"], "goal_encoder": params["goal_encoder"]}
    loss, _ = actor_loss(params["actor"], critic, networks, batch, 0.1, k_loss, seen)
    mean, log_std = networks.policy(params["actor"], jax.numpy.concatenate([seen, batch.goal], -1))
    action, log_prob = sample_action(k_loss, mean, log_std)
    q = energy(
        networks.phi(params["sa_encoder"], batch.state, action), networks.psi(params["goal_encoder"], batch.goal)
    )
    np.testing.assert_allclose(loss, np.mean(0.1 * log_prob - q), rtol=1e-5)


def test_replay_rows_hold_the_state_then_what_the_actor_read():
    spec = get_spec("reacher")
    teacher = make_teacher(teacher_config("reacher", sensors=SPEC, **TINY_TEACHER))
    state = jax.eval_shape(teacher.init, jax.random.PRNGKey(0))
    assert state.buffer.states.shape[-1] == spec.state_dim + HISTORY * READING
    assert state.readings.shape == (TINY_TEACHER["num_envs"], 1 + HISTORY, READING)  # latency + history readings


def test_a_plain_teacher_keeps_its_state_and_replay_as_they_were():
    """Without sensors nothing is added to the state, so plain runs' checkpoints keep their structure."""
    spec = get_spec("reacher")
    teacher = make_teacher(teacher_config("reacher", **TINY_TEACHER))
    assert teacher.sensors is None and teacher.networks.sensor_dim == 0
    state = jax.eval_shape(teacher.init, jax.random.PRNGKey(0))
    assert state.readings is None
    assert state.buffer.states.shape[-1] == spec.state_dim


def test_stacked_seeds_trace_behind_sensors():
    from distill.train.sharding import stacked_shardings
    from teachers.agent import RUNS_AXIS, state_shardings

    teacher = make_teacher(teacher_config("reacher", sensors=SPEC, **TINY_TEACHER), runs_axis=RUNS_AXIS)
    keys = jax.numpy.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)])
    state = jax.eval_shape(jax.vmap(teacher.init), keys)
    after, metrics = jax.eval_shape(jax.vmap(teacher.training_step, axis_name=RUNS_AXIS), state)
    assert after.readings.shape == (2, TINY_TEACHER["num_envs"], 1 + HISTORY, READING)
    one = jax.eval_shape(teacher.init, jax.random.PRNGKey(0))
    # Each seed's readings are split over devices by environment slot, as its environments are.
    assert stacked_shardings(state_shardings(one, teacher.mesh)).readings.spec == P(None, "data")


def test_sensor_teacher_evaluates_through_its_sensors(sensor_teacher):
    from distill.app.evaluate import evaluate_target
    from distill.eval.evaluation import evaluation_key, make_evaluator, summarize

    result = evaluate_target(sensor_teacher, 4, None, 0)
    assert result["sensors"] == parse_sensors(SPEC, get_spec("reacher")).describe()
    # The last epoch's recorded evaluation is the same program on the same key: it read the sensors too.
    config, spec, networks, params, _ = load_teacher(sensor_teacher, "last")
    last = read_metrics(sensor_teacher)[-1]

    def policy(actor_params, obs):
        return jax.numpy.tanh(networks.policy(actor_params, obs)[0])

    evaluate = make_evaluator(
        spec.make(backend=config.backend),
        spec,
        policy,
        config.eval_episodes,
        sensors=parse_sensors(config.sensors, spec),
    )
    key = evaluation_key(config.seed, last["epoch"])
    assert summarize(evaluate(params["actor"], key).success)["time_at_goal"] == pytest.approx(last["time_at_goal"])


@pytest.mark.slow  # whole commands on trained runs: CI runs it with the learning tests
def test_sensor_teacher_resumes_after_its_first_epoch(sensor_teacher, tmp_path):
    """The run as a kill after the first epoch's checkpoint leaves it: its readings come back with it."""
    out = tmp_path / "run"
    shutil.copytree(sensor_teacher, out)
    steps = sorted(int(p.name) for p in (out / "checkpoints" / "last").iterdir() if p.name.isdigit())
    shutil.rmtree(out / "checkpoints" / "last" / str(steps[-1]))
    train_teacher(None, out, resume=True, show_progress=False)
    full, resumed = read_metrics(sensor_teacher), read_metrics(out)
    assert [m["epoch"] for m in resumed] == [1, 2]
    assert resumed[0] == full[0]  # the first epoch was restored, not trained again
    assert [m["env_steps"] for m in resumed] == [m["env_steps"] for m in full]
    np.testing.assert_allclose([m["critic_loss"] for m in resumed], [m["critic_loss"] for m in full], rtol=1e-5)
    np.testing.assert_allclose([m["actor_loss"] for m in resumed], [m["actor_loss"] for m in full], rtol=1e-5)


def test_a_run_cannot_start_from_a_teacher_behind_other_sensors(sensor_teacher):
    from teachers.train import load_init_params

    plain = make_teacher(teacher_config("reacher", **TINY_TEACHER))
    with pytest.raises(DistillError, match="sensors none here, keep="):
        load_init_params(sensor_teacher, plain)


def test_a_teacher_behind_sensors_cannot_be_distilled(sensor_teacher, tmp_path):
    from students.agent import make_distiller
    from students.config import StudentConfig

    out = tmp_path / "student"
    result = run_cli("compress", str(sensor_teacher), "--out", str(out), "--no-baseline", "--no-progress")
    assert_one_line_error(result, "trained behind sensors", "without --sensors")
    assert not out.exists()
    with pytest.raises(DistillError, match="trained behind sensors"):
        make_distiller(StudentConfig(), sensor_teacher)


def test_unknown_sensor_slice_is_refused_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "teacher"
    result = run_cli("train-teacher", "--out", str(out), "--sensors", "drop=nope", "--no-progress")
    assert_one_line_error(result, "no state slice 'nope'")
    assert not out.exists()


def test_a_plain_checkpoint_saved_before_the_readings_field_resumes(tmp_path):
    """Runs saved before the state had readings have no entry for them; without sensors they are None
    and the rest of the state restores exactly."""
    import dataclasses

    from distill.store.checkpoints import RunCheckpoints, abstract_of
    from distill.train.sharding import with_shardings
    from teachers.agent import compile_teacher

    compiled = compile_teacher(make_teacher(teacher_config("reacher", **TINY_TEACHER)))
    state = compiled.init(jax.random.PRNGKey(3))
    # Orbax writes a dataclass's fields as a dict's keys: this is what such a run saved.
    before = {f.name: getattr(state, f.name) for f in dataclasses.fields(state) if f.name != "readings"}
    ckpt = RunCheckpoints(tmp_path, keep=2)
    ckpt.save_last(1, before, state.params)
    shape = jax.eval_shape(compiled.teacher.init, jax.random.PRNGKey(0))
    step, restored = ckpt.restore_state(with_shardings(abstract_of(shape), compiled.shardings))
    ckpt.close()
    assert step == 1 and restored.readings is None
    for a, b in zip(jax.tree.leaves(jax.device_get(state)), jax.tree.leaves(jax.device_get(restored))):
        np.testing.assert_array_equal(a, b)
