"""The shared training engine: device loops, mid-epoch checkpoints, resume at any step, TensorBoard."""

from __future__ import annotations

import shutil

import jax
import numpy as np
import pytest

from distill.errors import DistillError
from distill.store.checkpoints import load_params
from distill.store.runs import read_metrics
from distill.train.engine import make_run_steps, make_schedule
from teachers.agent import make_teacher
from teachers.config import teacher_config
from teachers.train import teacher_trainable, train_teacher
from tests.conftest import TINY_TEACHER


def test_schedule_epochs_cover_every_step_once():
    plan = make_schedule(steps=10, epochs=4, env_steps_per_step=5, initial_env_steps=7)
    assert plan.steps_per_epoch == 3 and plan.epochs == 4
    assert [plan.epoch_end(e) for e in range(1, 5)] == [3, 6, 9, 10]
    assert [plan.epochs_done(s) for s in (0, 2, 3, 9, 10)] == [0, 0, 1, 3, 4]
    assert plan.total_env_steps == 57
    # More epochs than steps: one step per epoch, never an empty epoch.
    assert make_schedule(steps=10, epochs=6, env_steps_per_step=1).epochs == 5


def test_device_loop_equals_single_steps_and_averages_metrics():
    teacher = make_teacher(teacher_config("reacher", **TINY_TEACHER))
    trainable = teacher_trainable(teacher)
    run_steps = make_run_steps(trainable)
    state = trainable.init()
    copy = jax.tree.map(lambda x: x.copy(), state)
    looped, mean_metrics = run_steps(state, 3)
    step = jax.jit(trainable.step)
    per_step = []
    for _ in range(3):
        copy, metrics = step(copy)
        per_step.append(metrics)
    for a, b in zip(jax.tree.leaves(looped.params), jax.tree.leaves(copy.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(looped.updates) == int(copy.updates) == 3 * teacher.config.updates_per_step
    for key, value in mean_metrics.items():
        np.testing.assert_allclose(value, np.mean([m[key] for m in per_step]), rtol=1e-5, atol=1e-6)


def test_resume_from_a_mid_epoch_checkpoint_is_exact(tmp_path):
    # One epoch of 4 training steps; a checkpoint after every device loop, as a long epoch gets them.
    config = teacher_config("reacher", **{**TINY_TEACHER, "num_evals": 1})
    out = tmp_path / "run"
    train_teacher(config, out, show_progress=False, checkpoint_minutes=1e-9)
    steps = sorted(int(p.name) for p in (out / "checkpoints" / "last").iterdir())
    assert steps[-1] == 4 and any(s < 4 for s in steps)  # mid-epoch checkpoints were written
    abstract = jax.eval_shape(lambda: make_teacher(config).networks.init(jax.random.PRNGKey(0)))
    _, uninterrupted = load_params(out, abstract, "last")

    # As if killed right after the earliest mid-epoch checkpoint: later ones and the epoch's record gone.
    first = steps[0]
    for s in steps[1:]:
        shutil.rmtree(out / "checkpoints" / "last" / str(s))
    shutil.rmtree(out / "checkpoints" / "best")
    final = train_teacher(None, out, resume=True, show_progress=False)
    assert first < 4
    assert (
        final["env_steps"] == TINY_TEACHER["total_steps"]
        and final["sgd_updates"] == 4 * TINY_TEACHER["updates_per_step"]
    )
    assert [m["epoch"] for m in read_metrics(out)] == [1]
    _, resumed = load_params(out, abstract, "last")
    for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def read_scalars(run) -> dict[str, list[tuple[int, float]]]:
    """Scalars of a run's TensorBoard event files (TFRecord framing around Event protos)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(run.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            event = Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_events_hold_the_epoch_evaluations(tiny_teacher_run):
    scalars = read_scalars(tiny_teacher_run)
    metrics = read_metrics(tiny_teacher_run)
    assert scalars["eval/time_at_goal"] == [(m["env_steps"], pytest.approx(m["time_at_goal"])) for m in metrics]
    assert [step for step, _ in scalars["train/critic_loss"]][-1] == metrics[-1]["env_steps"]


def test_bad_checkpoint_interval(tmp_path):
    with pytest.raises(DistillError, match="--checkpoint-minutes must be positive"):
        train_teacher(teacher_config("reacher", **TINY_TEACHER), tmp_path / "run", checkpoint_minutes=0)
    assert not (tmp_path / "run").exists()
