"""Orbax checkpoints of training state and parameters.

Each checkpoint step holds two items: ``state`` (everything needed to resume exactly: parameters,
optimiser states, environments, replay buffer, rng) and ``params`` (just the networks, which is what
compression and export read). A run keeps three kinds:

- ``last``: the few newest resumable checkpoints (state and parameters);
- ``best``: the parameters with the highest time_at_goal;
- ``final``: the newest parameters, where they are newer than ``last`` (a run that saves its state,
  replay included, less often than every epoch; ``--checkpoint last`` reads the newer of the two).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from distill.errors import DistillError
from distill.store.legacy import stack_blocks, unstack_blocks
from distill.store.runs import packed_record

# Orbax logs every save at INFO and damaged files at ERROR; we report both ourselves, in one line.
logging.getLogger("absl").setLevel(logging.CRITICAL)

CHECKPOINT_KINDS = ("best", "last")


class RunCheckpoints:
    """The ``last`` (rolling) and ``best`` (by time_at_goal) checkpoints of a run."""

    def __init__(self, run: Path, keep: int = 3):
        root = Path(run).absolute() / "checkpoints"
        self.root = root
        try:
            # Saves are synchronous: every save is waited for anyway, and in a multi-process run two
            # managers committing the same step at once would share orbax's barrier names.
            self.last = ocp.CheckpointManager(
                root / "last",
                options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False),
            )
            self.best = ocp.CheckpointManager(
                root / "best",
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=1,
                    best_fn=lambda metrics: metrics["time_at_goal"],
                    best_mode="max",
                    create=True,
                    enable_async_checkpointing=False,
                ),
            )
            self.final = ocp.CheckpointManager(
                root / "final",
                options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False),
            )
            best_step = self.best.latest_step()
            self._best_score = None if best_step is None else _read_score(self.best, best_step)
        except DistillError:
            raise
        except Exception as err:
            raise _checkpoint_error(err, root) from None

    def save_last(self, step: int, state: Any, params: Any) -> None:
        """A resumable checkpoint only (between evaluations, so it cannot compete for ``best``)."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(_stand_in_for_empty(state)), params=ocp.args.StandardSave(params)
        )
        self.last.save(step, args=args, force=True)
        self.wait()

    def save(self, step: int, state: Any, params: Any, time_at_goal: float) -> None:
        """A resumable checkpoint, which also becomes ``best`` if its time_at_goal beats the best so far."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(_stand_in_for_empty(state)), params=ocp.args.StandardSave(params)
        )
        self.last.save(step, args=args, force=True)
        self._save_best(step, params, time_at_goal)

    def save_params(self, step: int, params: Any, time_at_goal: float) -> None:
        """An evaluated epoch's parameters alone: ``final``, and ``best`` if they beat the best so far."""
        self.final.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params)), force=True)
        self._save_best(step, params, time_at_goal)

    def _save_best(self, step: int, params: Any, time_at_goal: float) -> None:
        if self._best_score is None or time_at_goal > self._best_score:
            self.best.save(
                step,
                args=ocp.args.Composite(params=ocp.args.StandardSave(params)),
                metrics={"time_at_goal": float(time_at_goal)},
            )
            self._best_score = float(time_at_goal)
        self.wait()

    def forget_after(self, step: int) -> None:
        """Drops ``best`` and ``final`` parameters saved after ``step``: a run resumed from ``step``
        retrains those epochs, and its metrics no longer hold their evaluations."""
        for manager in (self.best, self.final):
            for newer in [s for s in manager.all_steps() if s > step]:
                manager.delete(newer)
        best_step = self.best.latest_step()
        self._best_score = None if best_step is None else _read_score(self.best, best_step)

    def wait(self) -> None:
        for manager in (self.last, self.best, self.final):
            manager.wait_until_finished()

    def latest_step(self) -> int | None:
        return self.last.latest_step()

    def restore_state(self, abstract_state: Any, step: int | None = None) -> tuple[int, Any]:
        step = self.last.latest_step() if step is None else step
        if step is None:
            raise DistillError(f"no checkpoint to resume from in {self.root / 'last'}")
        where = self.root / "last"
        try:
            restored = _restore(self.last, step, {"state": _stand_in_for_empty(abstract_state)}, where)["state"]
        except DistillError as err:
            present = _present_fields(abstract_state)
            if present is None:
                raise
            # A state field that is None in this run (the sensor readings of a run without sensors)
            # was added after older runs were saved, and their checkpoints have no entry for it.
            try:
                fields = _restore(self.last, step, {"state": _stand_in_for_empty(present)}, where)["state"]
            except DistillError:
                raise err from None
            restored = dataclasses.replace(abstract_state, **fields)
        return step, _empty_again(abstract_state, restored)

    def close(self) -> None:
        for manager in (self.last, self.best, self.final):
            manager.close()


def _present_fields(state: Any) -> dict | None:
    """The fields of a dataclass state that are not None, by name; None if it has no None field."""
    if not dataclasses.is_dataclass(state) or isinstance(state, type):
        return None
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    if all(value is not None for value in fields.values()):
        return None
    return {name: value for name, value in fields.items() if value is not None}


def _is_empty(leaf) -> bool:
    return math.prod(leaf.shape) == 0


def _stand_in_for_empty(tree: Any) -> Any:
    """orbax cannot save arrays of size zero, and MJX's physics state (part of a resumable training
    state) holds some (no actuator activations, no sensors). Each is saved as one zero of its dtype,
    a host array, in place of the empty one."""
    return jax.tree.map(lambda leaf: np.zeros((1,), leaf.dtype) if _is_empty(leaf) else leaf, tree)


def _empty_again(abstract: Any, restored: Any) -> Any:
    """Puts the empty arrays back, shaped and placed as the abstract state says."""

    def back(target, value):
        if not _is_empty(target):
            return value
        sharding = getattr(target, "sharding", None)
        return (
            jax.device_put(np.zeros(target.shape, target.dtype), sharding)
            if sharding
            else jnp.zeros(target.shape, target.dtype)
        )

    return jax.tree.map(back, abstract, restored)


def _read_score(manager: ocp.CheckpointManager, step: int) -> float | None:
    for info in manager._checkpoints:  # orbax keeps the metrics it was given per step
        if info.step == step and info.metrics:
            return float(info.metrics.get("time_at_goal"))
    return None


def _describe(err: Exception) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


def _checkpoint_error(err: Exception, where: Path) -> DistillError:
    """Damaged files (unparsable metadata, missing or truncated arrays) vs. a different network."""
    message = str(err)
    mismatch = (
        isinstance(err, (ValueError, TypeError, KeyError))
        and not isinstance(err, json.JSONDecodeError)
        and any(word in message.lower() for word in ("shape", "structure", "mismatch", "tree", "dtype", "key"))
    )
    if mismatch:
        return DistillError(f"checkpoint {where} does not match this configuration: {_describe(err)}")
    return DistillError(f"checkpoint {where} is corrupt or unreadable: {_describe(err)}")


def _restore(manager: ocp.CheckpointManager, step: int, abstract: dict, where: Path) -> dict:
    try:
        return _restore_as(manager, step, abstract)
    except Exception as err:  # orbax raises many types for damaged or foreign files
        legacy = unstack_blocks(abstract)
        if jax.tree.structure(legacy) == jax.tree.structure(abstract):
            raise _checkpoint_error(err, where / str(step)) from None
        # Runs from before the stacked layout was the only one saved unrolled blocks (block_i).
        try:
            restored = stack_blocks(_restore_as(manager, step, legacy))
        except Exception:
            raise _checkpoint_error(err, where / str(step)) from None
        return jax.tree.map(_place_like, abstract, restored)


def _restore_as(manager: ocp.CheckpointManager, step: int, abstract: dict) -> dict:
    restored = manager.restore(
        step, args=ocp.args.Composite(**{k: ocp.args.StandardRestore(v) for k, v in abstract.items()})
    )
    return {k: restored[k] for k in abstract}


def _place_like(target, value):
    sharding = getattr(target, "sharding", None)
    return jax.device_put(value, sharding) if sharding is not None else jnp.asarray(value)


def newest_params_dir(run: Path, which: str) -> tuple[Path, int] | None:
    """(checkpoint directory, step) holding a run's ``best`` or ``last`` parameters; for ``last`` the
    newer of ``last`` (with a state) and ``final`` (parameters alone). None if there are none."""
    root = Path(run).absolute() / "checkpoints"
    kinds = ("best",) if which == "best" else ("last", "final")
    found = [
        (root / kind, int(p.name))
        for kind in kinds
        if (root / kind).is_dir()
        for p in (root / kind).iterdir()
        if p.name.isdigit()
    ]
    if not found and which == "last":
        # A packed run whose final parameters are its best ones keeps them once, under best.
        final = (packed_record(run) or {}).get("final") or {}
        if final.get("same_as_best"):
            return newest_params_dir(run, "best")
    return max(found, key=lambda item: item[1]) if found else None


def load_params(run: Path, abstract_params: Any, which: str = "best") -> tuple[int, Any]:
    """Restores the network parameters of a run's ``best`` (or ``last``: the newest) checkpoint."""
    if which not in CHECKPOINT_KINDS:
        raise DistillError(f"--checkpoint must be one of {', '.join(CHECKPOINT_KINDS)}, got '{which}'")
    root = Path(run).absolute() / "checkpoints"
    where = root / which
    newest = newest_params_dir(run, which)
    if newest is None:
        packed = packed_record(run)
        if packed is not None:
            # Not the best in place of last: a figure quoted for "last" must be the last one's.
            raise DistillError(
                f"{run} is a packed run without its final parameters: it keeps only its best "
                f"(step {packed.get('step')}); use --checkpoint best, or the original run"
            )
        if not where.is_dir():
            raise DistillError(f"{run} has no checkpoints ({where} is missing)")
        raise DistillError(f"{run} has no checkpoints in {where}")
    where = newest[0]
    try:
        manager = ocp.CheckpointManager(where, options=ocp.CheckpointManagerOptions(read_only=True))
        step = manager.latest_step()
    except Exception as err:
        raise _checkpoint_error(err, where) from None
    try:
        if step is None:
            raise DistillError(f"{run} has no checkpoints in {where}")
        return step, _restore(manager, step, {"params": abstract_params}, where)["params"]
    finally:
        manager.close()


def abstract_of(tree: Any) -> Any:
    """Shape/dtype/sharding skeleton of a pytree, as orbax restore targets expect."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
