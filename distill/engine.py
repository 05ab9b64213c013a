"""The training engine every run shares: epochs of on-device steps, evaluation, metrics, checkpoints, resume.

An agent (a CRL teacher, a distiller, anything later that trains) hands the engine a ``Trainable``: a
pure, jittable ``step(state) -> (state, metrics)``, the shardings of its state, how to build a fresh
state and how to evaluate one. The engine owns everything around it, in the shape of Brax's SAC
trainer:

- steps run on the device in one jitted loop per progress tick, so metrics come back to the host once
  per tick (about every ``tick_seconds``), not once per step;
- after every epoch: evaluation, a line in ``metrics.jsonl``, TensorBoard scalars, the learning-curve
  plot, and checkpoints (``last`` to resume, ``best`` by time_at_goal);
- a ``last`` checkpoint also at least every ``checkpoint_minutes`` inside long epochs;
- a non-finite metric stops the run and keeps the last good checkpoint;
- resume from the latest checkpoint, at any step, with the metrics log cut back to match;
- in a multi-process run every process steps and checkpoints (orbax writes each process's shards),
  and only process 0 writes files of its own or shows progress.

Checkpoints are numbered by training steps done, so a resume knows exactly where it stands.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from distill import runs
from distill.checkpoints import RunCheckpoints, abstract_of
from distill.errors import DistillError
from distill.sharding import with_shardings

# progress(env_steps, latest_record, updates=sgd_updates_or_None), e.g. TrainingProgress.advance_to.
ProgressFn = Callable[..., None]


def _sgd_updates(state) -> int | None:
    """The state's count of SGD updates (per member of a stacked state), for progress that shows time
    per update; None if it keeps none."""
    updates = getattr(state, "updates", None)
    return None if updates is None else int(np.ravel(updates)[0])


def _env_steps(state) -> int:
    """Env steps taken by one run (members of a stacked state advance together)."""
    return int(np.ravel(state.env_steps)[0])


def member_of(tree, index: int | None):
    """Member ``index`` of a stacked pytree; the tree itself when ``index`` is None (a single run)."""
    return tree if index is None else jax.tree.map(lambda x: x[index], tree)


def stack_members(trees: list, shardings=None):
    """The members' pytrees stacked on a new leading axis, placed with ``shardings`` if given."""
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
    return stacked if shardings is None else jax.device_put(stacked, shardings)


@dataclasses.dataclass
class _Member:
    """One run directory a training program writes: its checkpoints, metrics and TensorBoard."""

    out: Path
    checkpoints: RunCheckpoints
    index: int | None
    records: list = dataclasses.field(default_factory=list)
    board: Any = None


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How a run's training steps fall into epochs; the last epoch may be shorter."""

    steps: int
    """Training steps of the whole run (teacher: collect + updates; student: DAgger rounds)."""
    steps_per_epoch: int
    env_steps_per_step: int
    """Environment steps one training step collects."""
    initial_env_steps: int = 0
    """Environment steps taken before the first training step (the teacher's replay prefill)."""

    @property
    def epochs(self) -> int:
        return math.ceil(self.steps / self.steps_per_epoch)

    @property
    def total_env_steps(self) -> int:
        return self.initial_env_steps + self.steps * self.env_steps_per_step

    def epoch_end(self, epoch: int) -> int:
        return min(epoch * self.steps_per_epoch, self.steps)

    def epochs_done(self, steps_done: int) -> int:
        return self.epochs if steps_done >= self.steps else steps_done // self.steps_per_epoch


def make_schedule(steps: int, epochs: int, env_steps_per_step: int, initial_env_steps: int = 0) -> Schedule:
    steps = max(1, steps)
    return Schedule(steps, math.ceil(steps / max(1, min(epochs, steps))), env_steps_per_step, initial_env_steps)


@dataclasses.dataclass(frozen=True)
class Trainable:
    """What an agent gives the engine. Every function but ``step`` runs on the host."""

    name: str
    """Used in messages: 'teacher', 'student'."""
    step: Callable[[Any], tuple[Any, dict]]
    """Pure and jittable: one training step; metrics are scalars."""
    init: Callable[[], Any]
    """A fresh state, ready for the first training step (the teacher prefills its replay here)."""
    shardings: Any
    """Shardings of the state (a pytree of NamedSharding like the state)."""
    mesh: Mesh
    evaluate: Callable[[Any, int], dict]
    """(state, epoch) -> summary with time_at_goal and success_any."""
    params: Callable[[Any], Any]
    """The networks to checkpoint for loading (compress, export, evaluate)."""
    title: str
    """Title of the learning-curve plot."""
    describe: Callable[[Any, int], dict] = lambda state, steps_done: {}
    """Extra per-epoch record fields from the state and the steps done (e.g. the student's round)."""
    pictures: Callable[[Any], Callable[[Path], None] | None] = lambda state: None
    """Called on every process when training ends; its device work (say, episodes to draw) runs
    there, and the drawing function it returns, if any, runs on process 0 with the run directory.
    With ``members``, it returns one such function (or None) per member."""
    members: int = 0
    """0: the state is one run's. N > 0: the state holds N runs stacked on a leading axis (say, N
    seeds trained by one vmapped step); ``step`` advances them all, ``evaluate`` returns one summary
    per member, and each member is saved to, and resumed from, its own run directory."""
    member_shardings: Any = None
    """With ``members``: the shardings of one member's state (what its checkpoints hold)."""


def is_writer() -> bool:
    """Process 0 writes run files and shows progress; in a single-process run that is the only one."""
    return jax.process_index() == 0


def make_run_steps(trainable: Trainable) -> Callable:
    """``run_steps(state, n) -> (state, mean metrics)``: n training steps in one jitted device loop.

    The trip count is an argument, not a compile-time constant, so ticks of any length share one
    compiled program.
    """

    def run_steps(state, n):
        metrics_shape = jax.eval_shape(trainable.step, state)[1]
        zeros = jax.tree.map(lambda m: jnp.zeros(m.shape, jnp.float32), metrics_shape)

        def body(_, carry):
            state, total = carry
            state, metrics = trainable.step(state)
            return state, jax.tree.map(lambda t, m: t + m.astype(jnp.float32), total, metrics)

        state, total = jax.lax.fori_loop(0, n, body, (state, zeros))
        return state, jax.tree.map(lambda t: t / n, total)

    scalar = NamedSharding(trainable.mesh, P())
    return jax.jit(run_steps, in_shardings=(trainable.shardings, scalar), out_shardings=(trainable.shardings, scalar),
                   donate_argnums=0)


class _Ticker:
    """Sizes device loops so the host hears back about every ``seconds``, whatever a step costs."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.step_seconds: float | None = None
        self.calls = 0

    def next(self, remaining: int) -> int:
        if self.step_seconds is None:  # the first call compiles: keep it to one step, then measure
            return 1
        return max(1, min(remaining, int(self.seconds / max(self.step_seconds, 1e-9))))

    def record(self, steps: int, seconds: float) -> None:
        self.calls += 1
        if self.calls > 1:
            self.step_seconds = seconds / steps


class _TensorBoard:
    """TensorBoard event files beside metrics.jsonl (tensorboardX comes with brax)."""

    def __init__(self, out: Path, purge_step: int | None):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:  # pragma: no cover - brax depends on it
            self.writer = None
            return
        self.writer = SummaryWriter(logdir=str(out), purge_step=purge_step, flush_secs=30)

    def scalars(self, prefix: str, values: dict, step: int) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _non_finite(metrics: dict) -> list[str]:
    return sorted(k for k, v in metrics.items() if not np.all(np.isfinite(v)))


def check_checkpoint_minutes(minutes: float) -> None:
    if not minutes > 0:
        raise DistillError(f"--checkpoint-minutes must be positive, got {minutes}")


def train(
    trainable: Trainable,
    schedule: Schedule,
    out: Path,
    checkpoints: RunCheckpoints,
    resume: bool = False,
    checkpoint_minutes: float = 10.0,
    progress_fn: ProgressFn | None = None,
    tick_seconds: float = 2.0,
    notice: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
) -> dict:
    """Runs ``trainable`` through ``schedule`` in ``out``; returns the last epoch's record."""
    return train_members(trainable, schedule, [out], [checkpoints], resume, checkpoint_minutes, progress_fn,
                         tick_seconds, notice)[0]


def _restore_members(trainable: Trainable, members: list[_Member], notice) -> tuple[int, Any]:
    """(steps done, state) from the members' latest common checkpoint, or (0, None) to start afresh."""
    latest = [m.checkpoints.latest_step() for m in members]
    if any(step is None for step in latest):
        if is_writer():
            where = ", ".join(str(m.out) for m, step in zip(members, latest) if step is None)
            notice(f"note: {where} has no checkpoint yet; starting {'that run' if len(members) == 1 else 'these runs'} "
                   "from the beginning")
        return 0, None
    # Members are saved one after another, so a kill can fall between two of them: all go back to the
    # newest step every member holds.
    step = min(latest)
    stacked = jax.eval_shape(trainable.init)
    if not trainable.members:
        abstract = with_shardings(abstract_of(stacked), trainable.shardings)
        return members[0].checkpoints.restore_state(abstract, step)
    one = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), stacked)
    abstract = with_shardings(abstract_of(one), trainable.member_shardings)
    states = []
    for member in members:
        if step not in member.checkpoints.last.all_steps():
            raise DistillError(f"cannot resume {member.out}: it no longer holds step {step}, the newest step "
                               "every run of this program holds")
        states.append(member.checkpoints.restore_state(abstract, step)[1])
    return step, stack_members(states, trainable.shardings)


def train_members(
    trainable: Trainable,
    schedule: Schedule,
    outs: list[Path],
    checkpoints: list[RunCheckpoints],
    resume: bool = False,
    checkpoint_minutes: float = 10.0,
    progress_fn: ProgressFn | None = None,
    tick_seconds: float = 2.0,
    notice: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
) -> list[dict]:
    """Runs ``trainable`` through ``schedule``, one run directory per member (a single one unless
    ``trainable.members``); returns each member's last epoch record."""
    if len(outs) != max(1, trainable.members) or len(checkpoints) != len(outs):
        raise ValueError("one run directory and one RunCheckpoints per member")
    writer = is_writer()
    indices = list(range(trainable.members)) if trainable.members else [None]
    members = [_Member(Path(o), c, i) for o, c, i in zip(outs, checkpoints, indices)]
    state, steps_done = None, 0
    if resume:
        steps_done, state = _restore_members(trainable, members, notice)
    epochs_done = schedule.epochs_done(steps_done)
    for m in members:
        if writer:
            runs.truncate_metrics(m.out, epochs_done)
        m.records = [r for r in runs.read_metrics(m.out) if r.get("epoch", 0) <= epochs_done]
    if state is None:
        state = trainable.init()

    def latest_summary():
        """What progress shows: the record of a single run, or the members' mean scores."""
        if not members[0].records:
            return None
        if len(members) == 1:
            return members[0].records[-1]
        lasts = [m.records[-1] for m in members]
        return {**lasts[0], **{k: float(np.mean([r[k] for r in lasts])) for k in ("time_at_goal", "success_any")}}

    run_steps = make_run_steps(trainable)
    ticker = _Ticker(tick_seconds)
    for m in members:
        m.board = _TensorBoard(m.out, purge_step=_env_steps(state) if steps_done else None) if writer else None
    progress = progress_fn or (lambda env_steps, latest, updates=None: None)
    last_save = time.monotonic()

    def save_all(evaluations=None):
        params = trainable.params(state)
        for k, m in enumerate(members):
            member_state, member_params = member_of(state, m.index), member_of(params, m.index)
            if evaluations is None:
                m.checkpoints.save_last(steps_done, member_state, member_params)
            else:
                m.checkpoints.save(steps_done, member_state, member_params, evaluations[k]["time_at_goal"])

    try:
        progress(_env_steps(state), latest_summary(), updates=_sgd_updates(state))
        for epoch in range(epochs_done + 1, schedule.epochs + 1):
            t_epoch = time.perf_counter()
            train_seconds, steps_this_epoch = 0.0, 0
            sums = [{} for _ in members]
            end = schedule.epoch_end(epoch)
            while steps_done < end:
                n = ticker.next(end - steps_done)
                t0 = time.perf_counter()
                state, metrics = run_steps(state, n)
                metrics = jax.device_get(metrics)
                seconds = time.perf_counter() - t0
                ticker.record(n, seconds)
                per_member = [{k: float(np.asarray(v) if m.index is None else np.asarray(v)[m.index])
                               for k, v in metrics.items()} for m in members]
                for m, values in zip(members, per_member):
                    bad = _non_finite(values)
                    if bad:
                        last = m.checkpoints.latest_step()
                        kept = (f"the last good checkpoint (step {last}) is kept" if last is not None
                                else "no checkpoint was written yet")
                        raise DistillError(f"{trainable.name} diverged: non-finite {', '.join(bad)} by "
                                           f"{_env_steps(state)} env steps; stopped, {kept} in {m.out}/checkpoints")
                steps_done += n
                steps_this_epoch += n
                train_seconds += seconds
                env_steps = _env_steps(state)
                for m, values, total in zip(members, per_member, sums):
                    for k, v in values.items():
                        total[k] = total.get(k, 0.0) + v * n
                    if m.board:
                        m.board.scalars("train", values, env_steps)
                progress(env_steps, latest_summary(), updates=_sgd_updates(state))
                if steps_done < end and time.monotonic() - last_save >= 60 * checkpoint_minutes:
                    save_all()
                    last_save = time.monotonic()

            evaluations = trainable.evaluate(state, epoch)
            if not trainable.members:
                evaluations = [evaluations]
            steps_per_s = steps_this_epoch * schedule.env_steps_per_step / max(train_seconds, 1e-9)
            for m, evaluation, total in zip(members, evaluations, sums):
                record = {
                    "epoch": epoch,
                    **trainable.describe(member_of(state, m.index), steps_done),
                    "env_steps": _env_steps(state),
                    "sgd_updates": _sgd_updates(state),
                    "steps_per_s": steps_per_s,
                    "epoch_seconds": time.perf_counter() - t_epoch,
                    **{k: v / max(steps_this_epoch, 1) for k, v in total.items()},
                    **evaluation,
                }
                if trainable.members:
                    # steps_per_s is each member's; the program stepped this many runs at once.
                    record["parallel_runs"] = trainable.members
                m.records.append(record)
                if writer:
                    runs.append_metrics(m.out, record)
                    m.board.scalars("eval", evaluation, record["env_steps"])
                    m.board.scalars("speed", {"env_steps_per_s": record["steps_per_s"]}, record["env_steps"])
            save_all(evaluations)
            last_save = time.monotonic()
            if writer:
                for m in members:
                    runs.plot_learning_curve(m.out, m.records, trainable.title)
            latest = latest_summary()
            progress(latest["env_steps"], latest, updates=latest["sgd_updates"])
        if epochs_done < schedule.epochs:
            draws = trainable.pictures(state)
            if not trainable.members:
                draws = [draws]
            for m, draw in zip(members, draws):
                if draw is not None and writer:
                    draw(m.out)
    finally:
        for m in members:
            if m.board:
                m.board.close()
    return [m.records[-1] if m.records else None for m in members]


__all__ = ["Schedule", "check_checkpoint_minutes", "Trainable", "is_writer", "make_run_steps", "make_schedule",
           "member_of", "stack_members", "train", "train_members"]
