"""The kinds of run on disk (teacher, student) and what the commands need of each, in one table: its
config class, how to load its networks, its schedule, its evaluation key. Every command that reads a
run asks here instead of switching on the kind itself."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import jax

from distill.errors import DistillError
from distill.eval.evaluation import evaluation_key
from distill.store import runs
from distill.train.engine import Schedule
from students.config import StudentConfig
from students.train import load_student
from students.train import schedule as student_schedule
from teachers.config import TeacherConfig
from teachers.train import load_teacher
from teachers.train import schedule as teacher_schedule


@dataclasses.dataclass(frozen=True)
class RunKind:
    name: str
    config_class: type
    load: Callable[[Path, str], tuple]
    """(run, which) -> (config, spec, networks, params, checkpoint step)."""
    schedule: Callable[[Any], Schedule]
    evaluation_folds_epoch: bool
    """A teacher evaluates fresh episodes each epoch (its key folded with the epoch); a student the same ones."""

    def evaluation_key(self, seed: int, epoch: int) -> jax.Array:
        """The key of the evaluation the engine ran for ``epoch``."""
        return evaluation_key(seed, epoch if self.evaluation_folds_epoch else None)

    def config(self, run: Path, record: dict | None = None):
        """The config ``run`` records (its retired fields dropped)."""
        record = record if record is not None else runs.read_config(run, kind=self.name)
        return runs.config_from_record(record, self.config_class, run, self.name)


KINDS = {
    "teacher": RunKind("teacher", TeacherConfig, load_teacher, teacher_schedule, evaluation_folds_epoch=True),
    "student": RunKind("student", StudentConfig, load_student, student_schedule, evaluation_folds_epoch=False),
}


def kind_of(run: Path, record: dict | None = None) -> RunKind:
    """The kind of the run in ``run``, or a one-line error."""
    record = record if record is not None else runs.read_config(run)
    kind = KINDS.get(record.get("kind"))
    if kind is None:
        raise DistillError(f"{run} is neither a teacher nor a student run")
    return kind


def finished(run: Path, record: dict | None = None) -> bool:
    """Whether a run has recorded its schedule's last epoch (``runs.finished`` with its kind's schedule)."""
    record = record if record is not None else runs.read_config(run)
    kind = kind_of(run, record)
    return runs.finished(run, kind.schedule(kind.config(run, record)))
