"""The training engine every run shares: epochs of on-device steps, evaluation, metrics, checkpoints, resume.

An agent (a CRL teacher, a distiller, anything later that trains) hands the engine a ``Trainable``: a
pure, jittable ``step(state) -> (state, metrics)``, the shardings of its state, how to build a fresh
state and how to evaluate one. The engine owns everything around it, in the shape of Brax's SAC
trainer:

- steps run on the device in one jitted loop per progress tick, so metrics come back to the host once
  per tick (about every two seconds), not once per step;
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
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from distill.errors import DistillError
from distill.store import runs
from distill.store.checkpoints import RunCheckpoints, abstract_of
from distill.train.sharding import with_shardings

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
    return jax.jit(
        run_steps,
        in_shardings=(trainable.shardings, scalar),
        out_shardings=(trainable.shardings, scalar),
        donate_argnums=0,
    )


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
) -> dict:
    """Runs ``trainable`` through ``schedule`` in ``out``; returns the last epoch's record."""
    return train_members(trainable, schedule, [out], [checkpoints], resume, checkpoint_minutes, progress_fn)[0]


def _restore_members(trainable: Trainable, members: list[_Member], notice) -> tuple[int, Any]:
    """(steps done, state) from the members' latest common checkpoint, or (0, None) to start afresh."""
    latest = [m.checkpoints.latest_step() for m in members]
    if any(step is None for step in latest):
        if is_writer():
            where = ", ".join(str(m.out) for m, step in zip(members, latest) if step is None)
            notice(
                f"note: {where} has no checkpoint yet; starting {'that run' if len(members) == 1 else 'these runs'} "
                "from the beginning"
            )
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
            raise DistillError(
                f"cannot resume {member.out}: it no longer holds step {step}, the newest step "
                "every run of this program holds"
            )
        states.append(member.checkpoints.restore_state(abstract, step)[1])
    return step, stack_members(states, trainable.shardings)


class Training:
    """One training program under way: its state, the run directories of its members and the epochs
    done. ``train_members`` runs it to the end of its schedule; a caller that alternates programs or
    stops at a deadline (the GPU depth stage) drives ``run_epoch`` and ``save_state`` itself.

    ``state_minutes`` spaces the resumable checkpoints (state with replay) that end epochs: 0 writes
    one after every epoch; more writes the epoch's parameters alone (``best`` and ``final``) until that
    many minutes have passed since the last state was saved. The last epoch always saves its state.
    Inside long epochs a state is saved at least every ``checkpoint_minutes``.
    """

    def __init__(
        self,
        trainable: Trainable,
        schedule: Schedule,
        outs: list[Path],
        checkpoints: list[RunCheckpoints],
        resume: bool = False,
        checkpoint_minutes: float = 10.0,
        progress_fn: ProgressFn | None = None,
        state_minutes: float = 0.0,
        notice: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
    ):
        if len(outs) != max(1, trainable.members) or len(checkpoints) != len(outs):
            raise ValueError("one run directory and one RunCheckpoints per member")
        self.trainable, self.schedule = trainable, schedule
        self.checkpoint_minutes, self.state_minutes = checkpoint_minutes, state_minutes
        self.writer = is_writer()
        indices = list(range(trainable.members)) if trainable.members else [None]
        self.members = [_Member(Path(o), c, i) for o, c, i in zip(outs, checkpoints, indices)]
        self.state, self.steps_done = None, 0
        if resume:
            self.steps_done, self.state = _restore_members(trainable, self.members, notice)
            for m in self.members:
                m.checkpoints.forget_after(self.steps_done)
        self.state_saved_at = self.steps_done
        self.epochs_done = schedule.epochs_done(self.steps_done)
        self.epochs_at_start = self.epochs_done
        for m in self.members:
            if self.writer:
                runs.truncate_metrics(m.out, self.epochs_done)
            m.records = [r for r in runs.read_metrics(m.out) if r.get("epoch", 0) <= self.epochs_done]
        if self.state is None:
            self.state = trainable.init()
        self.run_steps = make_run_steps(trainable)
        self.ticker = _Ticker(2.0)
        self._epoch = None  # the epoch under way: its start, steps, seconds and metric sums
        self.epoch_seconds: dict = {}  # the last epoch's seconds of training, evaluating and saving
        for m in self.members:
            m.board = (
                _TensorBoard(m.out, purge_step=_env_steps(self.state) if self.steps_done else None)
                if self.writer
                else None
            )
        self.progress = progress_fn or (lambda env_steps, latest, updates=None: None)
        self.last_state_save = time.monotonic()
        self.progress(_env_steps(self.state), self.latest_summary(), updates=_sgd_updates(self.state))

    @property
    def finished(self) -> bool:
        return self.epochs_done >= self.schedule.epochs

    @property
    def env_steps(self) -> int:
        return _env_steps(self.state)

    def latest_summary(self) -> dict | None:
        """What progress shows: the record of a single run, or the members' mean scores."""
        if not self.members[0].records:
            return None
        if len(self.members) == 1:
            return self.members[0].records[-1]
        lasts = [m.records[-1] for m in self.members]
        return {**lasts[0], **{k: float(np.mean([r[k] for r in lasts])) for k in ("time_at_goal", "success_any")}}

    def save_state(self) -> None:
        """A resumable checkpoint (state with replay, and parameters) of every member, now."""
        if self.steps_done == self.state_saved_at and any(
            m.checkpoints.latest_step() == self.steps_done for m in self.members
        ):
            return
        params = self.trainable.params(self.state)
        for m in self.members:
            m.checkpoints.save_last(self.steps_done, member_of(self.state, m.index), member_of(params, m.index))
        self.state_saved_at, self.last_state_save = self.steps_done, time.monotonic()

    def _save_epoch(self, evaluations: list[dict]) -> None:
        params = self.trainable.params(self.state)
        with_state = self.finished or time.monotonic() - self.last_state_save >= 60 * self.state_minutes
        for m, evaluation in zip(self.members, evaluations):
            member_params = member_of(params, m.index)
            if with_state:
                m.checkpoints.save(
                    self.steps_done, member_of(self.state, m.index), member_params, evaluation["time_at_goal"]
                )
            else:
                m.checkpoints.save_params(self.steps_done, member_params, evaluation["time_at_goal"])
        if with_state:
            self.state_saved_at, self.last_state_save = self.steps_done, time.monotonic()

    def advance(self, steps: int) -> int:
        """Up to ``steps`` training steps of the epoch under way, in ticks, without ending it (a
        probe of the step's cost counts toward the epoch); returns the steps taken."""
        epoch = self._epoch or self._start_epoch()
        end = min(self.schedule.epoch_end(self.epochs_done + 1), self.steps_done + steps)
        taken = 0
        while self.steps_done < end:
            n = self.ticker.next(end - self.steps_done)
            t0 = time.perf_counter()
            self.state, metrics = self.run_steps(self.state, n)
            metrics = jax.device_get(metrics)
            seconds = time.perf_counter() - t0
            self.ticker.record(n, seconds)
            per_member = [
                {k: float(np.asarray(v) if m.index is None else np.asarray(v)[m.index]) for k, v in metrics.items()}
                for m in self.members
            ]
            for m, values in zip(self.members, per_member):
                self._check_finite(m, values)
            self.steps_done += n
            taken += n
            epoch["steps"] += n
            epoch["seconds"] += seconds
            env_steps = self.env_steps
            for m, values, total in zip(self.members, per_member, epoch["sums"]):
                for k, v in values.items():
                    total[k] = total.get(k, 0.0) + v * n
                if m.board:
                    m.board.scalars("train", values, env_steps)
            self.progress(env_steps, self.latest_summary(), updates=_sgd_updates(self.state))
            if self.steps_done < end and time.monotonic() - self.last_state_save >= 60 * self.checkpoint_minutes:
                self.save_state()
        return taken

    def _start_epoch(self) -> dict:
        self._epoch = {"t0": time.perf_counter(), "steps": 0, "seconds": 0.0, "sums": [{} for _ in self.members]}
        return self._epoch

    def _check_finite(self, member: _Member, values: dict) -> None:
        bad = _non_finite(values)
        if bad:
            last = member.checkpoints.latest_step()
            kept = (
                f"the last good checkpoint (step {last}) is kept"
                if last is not None
                else "no checkpoint was written yet"
            )
            raise DistillError(
                f"{self.trainable.name} diverged: non-finite {', '.join(bad)} by "
                f"{self.env_steps} env steps; stopped, {kept} in {member.out}/checkpoints"
            )

    def run_epoch(self) -> list[dict]:
        """Trains the next epoch, evaluates it, records it and checkpoints it; returns its records."""
        epoch = self.epochs_done + 1
        self.advance(self.schedule.epoch_end(epoch) - self.steps_done)
        progress, self._epoch = self._epoch or self._start_epoch(), None
        steps, train_seconds, sums = progress["steps"], progress["seconds"], progress["sums"]
        t0 = time.perf_counter()
        evaluations = self.trainable.evaluate(self.state, epoch)
        evaluate_seconds = time.perf_counter() - t0
        if not self.trainable.members:
            evaluations = [evaluations]
        steps_per_s = steps * self.schedule.env_steps_per_step / max(train_seconds, 1e-9)
        records = []
        for m, evaluation, total in zip(self.members, evaluations, sums):
            record = {
                "epoch": epoch,
                **self.trainable.describe(member_of(self.state, m.index), self.steps_done),
                "env_steps": self.env_steps,
                "sgd_updates": _sgd_updates(self.state),
                "steps_per_s": steps_per_s,
                "epoch_seconds": time.perf_counter() - progress["t0"],
                **{k: v / max(steps, 1) for k, v in total.items()},
                **evaluation,
            }
            if self.trainable.members:
                # steps_per_s is each member's; the program stepped this many runs at once.
                record["parallel_runs"] = self.trainable.members
            m.records.append(record)
            records.append(record)
            if self.writer:
                runs.append_metrics(m.out, record)
                m.board.scalars("eval", evaluation, record["env_steps"])
                m.board.scalars("speed", {"env_steps_per_s": record["steps_per_s"]}, record["env_steps"])
        self.epochs_done = epoch
        t0 = time.perf_counter()
        self._save_epoch(evaluations)
        if self.writer:
            for m in self.members:
                runs.plot_learning_curve(m.out, m.records, self.trainable.title)
        self.epoch_seconds = {"train": train_seconds, "evaluate": evaluate_seconds, "save": time.perf_counter() - t0}
        latest = self.latest_summary()
        self.progress(latest["env_steps"], latest, updates=latest["sgd_updates"])
        return records

    def draw_pictures(self) -> None:
        """The trainable's pictures of the final state, if this call trained anything."""
        if self.epochs_done == self.epochs_at_start:
            return
        draws = self.trainable.pictures(self.state)
        if not self.trainable.members:
            draws = [draws]
        for m, draw in zip(self.members, draws):
            if draw is not None and self.writer:
                draw(m.out)

    def close(self) -> None:
        for m in self.members:
            if m.board:
                m.board.close()


def train_members(
    trainable: Trainable,
    schedule: Schedule,
    outs: list[Path],
    checkpoints: list[RunCheckpoints],
    resume: bool = False,
    checkpoint_minutes: float = 10.0,
    progress_fn: ProgressFn | None = None,
) -> list[dict]:
    """Runs ``trainable`` through ``schedule``, one run directory per member (a single one unless
    ``trainable.members``); returns each member's last epoch record."""
    training = Training(trainable, schedule, outs, checkpoints, resume, checkpoint_minutes, progress_fn)
    try:
        while not training.finished:
            training.run_epoch()
        training.draw_pictures()
    finally:
        training.close()
    return [m.records[-1] if m.records else None for m in training.members]


__all__ = [
    "Schedule",
    "check_checkpoint_minutes",
    "Trainable",
    "is_writer",
    "make_run_steps",
    "make_schedule",
    "member_of",
    "stack_members",
    "train",
    "train_members",
    "Training",
]
