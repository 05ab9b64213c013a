"""Runs that travel: ``distill pack`` copies what a run is for, without what it took to train it.

Teachers are trained where the accelerator is and distilled, exported and inspected where the user
is. A packed run keeps ``config.json`` (marked as packed: from which run, checkpoint step and env
step), ``metrics.jsonl``, the pictures and the summaries at the run's top level, the ``best``
checkpoint's parameters and the newest parameters (``final``: what ``--checkpoint last`` reads, the
figures a depth comparison on final parameters quotes). It leaves out what only resuming needs: the
states in the ``last`` checkpoints (optimiser states, environments, the replay buffer) and the
TensorBoard logs.

The best checkpoint is copied as orbax wrote it (it already holds the parameters alone), so every
command reads a packed run through the same loader as the original, and a student's record of its
teacher's checkpoint hash is the same for both.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import jax
import numpy as np

from distill.app.kinds import kind_of
from distill.errors import DistillError
from distill.store import runs
from distill.store.checkpoints import newest_params_dir

PACKED_FILES = ("metrics.jsonl",)
PACKED_PATTERNS = ("*.png", "*.md", "*.json")


def best_checkpoint(run: Path, step: int | None = None) -> dict:
    """Where a run's best parameters come from: checkpoint step, env steps and that epoch's record
    (``runs.best_checkpoint_info``); ``step`` is the best checkpoint's, if already known."""
    run = Path(run)
    record = runs.read_config(run)
    kind = kind_of(run, record)
    if runs.packed_record(run) is not None:
        return runs.best_checkpoint_info(run, None, None)
    if step is None:
        config, _, _, _, step = kind.load(run, "best")
    else:
        config = kind.config(run, record)
    return runs.best_checkpoint_info(run, step, kind.schedule(config))


def pack_run(run: Path, out: Path) -> dict:
    """Writes the packed copy of ``run`` (a teacher or student run) to ``out``; returns a summary.

    Everything is checked, and the parameters restored, before anything is written; the copy is made
    in a hidden sibling of ``out`` and renamed into place at the end, so a failure leaves nothing
    behind, and the copy's parameters are read back and compared bit for bit before the rename.
    """
    run, out = Path(run), Path(out)
    record = runs.read_config(run)
    kind = kind_of(run, record)
    if runs.packed_record(run) is not None:
        raise DistillError(f"{run} is already a packed run; copy it as it is")
    if out.absolute() == run.absolute() or run.absolute() in out.absolute().parents:
        raise DistillError(f"--out {out} lies inside the run {run}; choose a place outside it")
    runs.check_new_out_dir(out, "choose another --out")
    best = run / "checkpoints" / "best"
    if not best.is_dir():
        raise DistillError(
            f"{run} has no best checkpoint to pack ({best} is missing); it has not finished an epoch yet"
        )
    _, _, _, params, step = kind.load(run, "best")
    info = best_checkpoint(run, step=step)
    final = newest_params_dir(run, "last")
    if final is not None:
        info["final"] = runs.best_checkpoint_info(run, final[1], kind.schedule(kind.config(run, record)))
        # The final parameters are the best ones (the last evaluation was the best): kept once.
        info["final"]["same_as_best"] = final[1] == step

    tmp = out.parent / f".{out.name}.packing-{os.getpid()}"
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    try:
        (tmp / "checkpoints" / "best").mkdir(parents=True)
        shutil.copytree(best / str(step), tmp / "checkpoints" / "best" / str(step))
        if final is not None and final[1] != step:  # the newest parameters, without the state beside them
            shutil.copytree(
                final[0] / str(final[1]),
                tmp / "checkpoints" / "final" / str(final[1]),
                ignore=shutil.ignore_patterns("state"),
            )
        for name in PACKED_FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, tmp / name)
        for pattern in PACKED_PATTERNS:
            for path in sorted(run.glob(pattern)):
                if path.is_file() and path.name != "config.json":
                    shutil.copy2(path, tmp / path.name)
        record["packed"] = {"from": str(run.absolute()), **info, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        runs.atomic_write_text(tmp / "config.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
        for which, original in (("best", params), ("last", None)):
            if which == "last":
                if final is None:
                    break
                original = kind.load(run, which)[3]
            copied = kind.load(tmp, which)[3]
            if not all(
                np.array_equal(a, b)
                for a, b in zip(jax.tree.leaves(jax.device_get(original)), jax.tree.leaves(jax.device_get(copied)))
            ):
                raise DistillError(f"the packed {which} parameters of {run} do not read back equal to the original")
        os.rename(tmp, out)  # an empty directory of that name (checked above) is replaced
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        for path in created:  # parents made for the output, innermost first
            try:
                path.rmdir()
            except OSError:
                break
        if isinstance(err, OSError):
            raise DistillError(f"cannot write the packed run to {out}: {err.strerror or err}") from None
        raise
    return {"run": str(run), "out": str(out), "kind": kind.name, **info, "bytes": directory_bytes(out)}


# How far a packed run's re-run evaluation may stray from the figure recorded when it was trained. On
# the kind of machine that trained it the figure comes back exactly (the evaluation is deterministic);
# on another (a GPU-trained teacher checked on a CPU) float effects in the physics can move single
# episodes by many steps, so the check allows a quarter of the recorded figure or a twentieth of an
# episode's length, whichever is larger: wide enough for that, far too narrow for wrong parameters, a
# different environment or a checkpoint that is not the one the figure was recorded for.
VERIFY_RELATIVE = 0.25
VERIFY_EPISODE_SHARE = 0.05


def verify_tolerance(recorded: float, episode_length: int) -> float:
    """The largest difference ``verify_packed_run`` accepts from a recorded time_at_goal."""
    return max(VERIFY_RELATIVE * abs(recorded), VERIFY_EPISODE_SHARE * episode_length)


def verify_packed_run(run: Path, tolerance: float | None = None) -> dict:
    """Re-runs a packed run's recorded evaluation on its best parameters and refuses a run that fails it.

    The recorded evaluation is the one the training engine ran for the epoch whose parameters were
    kept: ``eval_episodes`` deterministic episodes drawn from ``evaluation_key``, folded
    with the epoch for a teacher (a student evaluates on the same key every epoch). Its time_at_goal
    is the figure in the ``packed`` entry. Returns both figures and the tolerance; raises
    ``DistillError`` with both figures when they differ by more than ``tolerance`` (default
    ``verify_tolerance``).
    """
    from distill.data.sensors import sensor_model
    from distill.eval.evaluation import make_evaluator, summarize

    run = Path(run)
    packed = runs.packed_record(run)
    if packed is None:
        raise DistillError(f"{run} is not a packed run (its config.json has no 'packed' entry)")
    recorded, epoch = packed.get("time_at_goal"), packed.get("epoch")
    if recorded is None or epoch is None:
        raise DistillError(
            f"{run} records no evaluation for its best parameters (no epoch or time_at_goal in 'packed')"
        )
    kind = kind_of(run)
    config, spec, networks, params, _ = kind.load(run, "best")
    env = spec.make(backend=config.backend or spec.backend)
    key = kind.evaluation_key(config.seed, int(epoch))
    episodes = config.eval_episodes
    sensors = sensor_model(config)
    result = summarize(make_evaluator(env, spec, networks.act, episodes, sensors=sensors)(params["actor"], key).success)
    allowed = verify_tolerance(recorded, spec.episode_length) if tolerance is None else float(tolerance)
    figures = {
        "run": str(run),
        "kind": kind.name,
        "epoch": int(epoch),
        "episodes": episodes,
        "recorded_time_at_goal": float(recorded),
        "time_at_goal": result["time_at_goal"],
        "success_any": result["success_any"],
        "tolerance": allowed,
    }
    if not abs(result["time_at_goal"] - recorded) <= allowed:
        raise DistillError(
            f"packed run {run} fails its recorded evaluation: time_at_goal {result['time_at_goal']:.2f} on the "
            f"recorded {episodes} episodes of epoch {epoch}, against {recorded:.2f} recorded "
            f"(allowed difference {allowed:.2f}); refusing it"
        )
    return figures


def directory_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (what ``du -sb`` counts, less the directories themselves)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


__all__ = ["best_checkpoint", "directory_bytes", "pack_run", "verify_packed_run", "verify_tolerance"]
