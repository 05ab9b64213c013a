import jax
import numpy as np
import pytest

from distill.errors import DistillError
from distill.store.checkpoints import RunCheckpoints, abstract_of, load_params
from teachers.agent import compile_teacher, make_teacher
from teachers.config import teacher_config
from teachers.train import load_teacher
from tests.conftest import TINY_TEACHER


@pytest.fixture(scope="module")
def compiled():
    return compile_teacher(make_teacher(teacher_config("reacher", **TINY_TEACHER)))


def restore_target(compiled):
    abstract = abstract_of(jax.eval_shape(compiled.teacher.init, jax.random.PRNGKey(0)))
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, compiled.shardings)


def test_train_state_round_trip_is_exact(compiled, tmp_path):
    state = compiled.prefill_step(compiled.init(jax.random.PRNGKey(3)))
    state, _ = jax.jit(compiled.teacher.training_step)(state)
    expected = jax.device_get(state)
    ckpt = RunCheckpoints(tmp_path, keep=2)
    ckpt.save(1, state, state.params, time_at_goal=1.0)
    step, restored = ckpt.restore_state(restore_target(compiled))
    ckpt.close()
    assert step == 1
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(jax.device_get(restored))):
        np.testing.assert_array_equal(a, b)
    # The params item alone restores too (what compression and export read).
    _, params = load_params(tmp_path, abstract_of(expected.params), which="best")
    for a, b in zip(jax.tree.leaves(expected.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)


def test_states_with_empty_arrays_round_trip(tmp_path):
    """MJX's physics state holds arrays of size zero, which orbax alone refuses to save."""
    import jax.numpy as jnp

    state = {"q": jnp.arange(6.0).reshape(2, 3), "act": jnp.zeros((2, 0)), "sensors": jnp.zeros((0,), jnp.int32)}
    ckpt = RunCheckpoints(tmp_path, keep=2)
    ckpt.save(1, state, {"w": jnp.ones(2)}, time_at_goal=0.0)
    step, restored = ckpt.restore_state(abstract_of(state))
    ckpt.close()
    assert step == 1
    for key, value in state.items():
        assert restored[key].shape == value.shape and restored[key].dtype == value.dtype
        np.testing.assert_array_equal(np.asarray(restored[key]), np.asarray(value))


def test_keeps_last_few_and_the_best(compiled, tmp_path):
    state = compiled.init(jax.random.PRNGKey(0))
    ckpt = RunCheckpoints(tmp_path, keep=2)
    for step, score in [(1, 5.0), (2, 9.0), (3, 1.0), (4, 2.0)]:
        ckpt.save(step, state, state.params, time_at_goal=score)
    assert ckpt.last.all_steps() == [3, 4]
    assert ckpt.best.all_steps() == [2]
    ckpt.close()


def test_corrupt_checkpoint_is_a_one_line_error(tiny_teacher_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_teacher_run, run)
    for path in (run / "checkpoints" / "best").rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(b"\x00garbage" * 3)
    with pytest.raises(DistillError, match="corrupt or unreadable|does not match"):
        load_teacher(run)


def test_mismatched_checkpoint_is_a_one_line_error(tiny_teacher_run, tmp_path):
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_teacher_run, run)
    record = json.loads((run / "config.json").read_text())
    record["config"]["width"] = 48  # the networks no longer match the stored arrays
    (run / "config.json").write_text(json.dumps(record))
    with pytest.raises(DistillError, match="does not match"):
        load_teacher(run)


def test_unknown_checkpoint_kind_is_refused_by_the_library(tiny_teacher_run):
    with pytest.raises(DistillError, match="--checkpoint must be one of best, last, got 'middle'"):
        load_teacher(tiny_teacher_run, which="middle")
