"""Run directories: resolved config, versions and seed, metrics, plots and orbax checkpoints.

A run directory holds ``config.json`` (what produced it), ``metrics.jsonl`` (one line per epoch),
``learning_curve.png`` and ``checkpoints/{last,best}``. The ``last`` manager keeps the few most recent
checkpoints for resuming; ``best`` keeps the one with the highest time_at_goal.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from distill.errors import DistillError

# What a run records beside its config, and what ``distill doctor`` reports.
PACKAGES = (
    "distill",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "brax",
    "mujoco",
    "mujoco-mjx",
    "orbax-checkpoint",
    "onnx",
    "onnxruntime",
    "numpy",
    "typer",
)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def check_out_dir(out: Path, resume: bool) -> None:
    """Refuses an output directory that cannot take a new run (or holds none to resume); writes nothing."""
    out = Path(out)
    if resume:
        if not (out / "config.json").is_file():
            raise DistillError(f"cannot resume: {out} holds no run (no config.json)")
        return
    check_new_out_dir(out, "pass --resume to continue it or choose another --out")


def check_new_out_dir(out: Path, hint: str) -> None:
    """Refuses an output path that exists as a file, is a non-empty directory (``hint`` says what to do
    instead) or cannot be written; writes nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DistillError(f"output path {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise DistillError(f"output directory {out} already exists and is not empty; {hint}")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DistillError(f"cannot write to output directory {out}: permission denied")


def check_grid_dir(
    out: Path,
    record_name: str,
    record: dict,
    what: str,
    nested: str = "settings",
    defaults: dict | None = None,
    ignore: tuple[str, ...] = (),
) -> bool:
    """For a command that trains a grid of runs into ``out`` (a sweep, a frontier): True if ``out``
    already holds this grid with the same settings (to continue it), False if it can start there;
    refuses anything else. ``record`` is what ``out/record_name`` holds; its ``nested`` dict is
    compared key by key, and a key the recorded grid lacks counts as its value in ``defaults`` (a
    setting added after that grid began); keys in ``ignore`` (speed-only or retired settings) are
    not compared."""
    out = Path(out)
    recorded = out / record_name
    if recorded.is_file():
        try:
            old = json.loads(recorded.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DistillError(f"{recorded} is unreadable: {err}") from None
        new = json.loads(json.dumps(record))
        changed = _setting_differences({k: old.get(k) for k in new}, new, nested, defaults or {}, ignore)
        if changed:
            raise DistillError(
                f"{out} holds a {what} with other settings ({'; '.join(changed)}); "
                "rerun it with its own settings to continue it, or choose another --out"
            )
        return True
    if out.is_dir() and any(out.iterdir()):
        raise DistillError(
            f"output directory {out} already exists and is not empty (it holds no {what}); choose another --out"
        )
    check_out_dir(out, resume=False)
    return False


def open_grid_dir(out: Path, record_name: str, record: dict, what: str, **check) -> bool:
    """``check_grid_dir``, then for a new grid the output directory and its record (with the package
    versions and the command line); True if an existing grid is continued."""
    out = Path(out)
    if check_grid_dir(out, record_name, record, what, **check):
        return True
    prepare_out_dir(out, resume=False)
    atomic_write_text(
        out / record_name,
        json.dumps(
            {**record, "versions": package_versions(), "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])},
            indent=2,
            sort_keys=True,
        )
        + "\n",
    )
    return False


def _setting_differences(old: dict, new: dict, nested: str, defaults: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    def flat(d):
        merged = {**{k: v for k, v in d.items() if k != nested}, **(d.get(nested) or {})}
        return {k: v for k, v in merged.items() if k not in ignore}

    flat_old, flat_new = flat(old), flat(new)
    flat_old.update({k: defaults[k] for k in flat_new if k not in flat_old and k in defaults})
    return [
        f"{k}: {flat_new.get(k)} here, {flat_old.get(k)} there"
        for k in sorted(set(flat_old) | set(flat_new))
        if flat_old.get(k) != flat_new.get(k)
    ]


def prepare_out_dir(out: Path, resume: bool) -> Path:
    """Creates ``out`` for a new run, or checks it holds a run to resume. Never clears anything."""
    out = Path(out)
    check_out_dir(out, resume)
    if resume:
        return out
    return writable_dir(out, "output directory")


def writable_dir(folder: Path, what: str) -> Path:
    """Creates ``folder`` if needed and proves it takes a file, or a one-line error naming ``what`` it is."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise DistillError(f"cannot write to {what} {folder}: {err.strerror or err}") from None
    return folder


def start_run(out: Path, resume: bool, kind: str, config: Any, extra: dict | None = None) -> None:
    """Creates a new run directory with its config.json, or checks the one to resume.

    Every process checks first, so that all refuse alike; then only process 0 writes, and the others
    wait for it, since they checkpoint into the same directory.
    """
    import jax

    check_out_dir(out, resume)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"distill: {kind} run checked")
    if jax.process_index() == 0:
        prepare_out_dir(out, resume)
        if not resume:
            write_config(out, kind, config, extra)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"distill: {kind} run written")


def write_config(out: Path, kind: str, config: Any, extra: dict | None = None) -> dict:
    """Writes config.json: the resolved config, the kind of run, package versions and the seed."""
    record = {
        "kind": kind,
        "config": dataclasses.asdict(config),
        "seed": getattr(config, "seed", None),
        "versions": package_versions(),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if extra:
        record.update(extra)
    atomic_write_text(Path(out) / "config.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def read_config(run: Path, kind: str | None = None) -> dict:
    """Reads a run's config.json, checking it is a run of ``kind`` (teacher, student)."""
    run = Path(run)
    path = run / "config.json"
    if not run.is_dir():
        raise DistillError(f"run directory {run} does not exist")
    if not path.is_file():
        raise DistillError(f"{run} is not a run directory (no config.json)")
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DistillError(f"{path} is unreadable: {err}") from None
    if kind is not None and record.get("kind") != kind:
        raise DistillError(f"{run} is a {record.get('kind', 'unknown')} run, not a {kind} run")
    return record


def config_from_record(record: dict, config_cls: type, run: Path, kind: str) -> Any:
    """The config a ``config.json`` record describes. Settings a config class has retired (its
    ``RETIRED_FIELDS``, e.g. a layout choice now made on load) are dropped, so old runs still load."""
    values = {k: v for k, v in record.get("config", {}).items() if k not in getattr(config_cls, "RETIRED_FIELDS", ())}
    try:
        return config_cls(**values)
    except TypeError as err:
        raise DistillError(f"{run}/config.json does not describe a {kind}: {err}") from None


def recorded_config(run: Path, kind: str, config_cls: type) -> Any:
    """The resolved config a run to resume was started with."""
    check_out_dir(run, resume=True)
    record = read_config(run, kind=kind)
    if isinstance(record.get("packed"), dict):
        hint = "; start a new run from it with --init-from" if kind == "teacher" else ""
        raise DistillError(f"cannot resume {run}: it is a packed run (best parameters only, no training state){hint}")
    return config_from_record(record, config_cls, run, kind)


def check_unchanged(run: Path, recorded: Any, config: Any) -> None:
    """A resumed run must continue with exactly the config it was started with."""
    old, new = dataclasses.asdict(recorded), dataclasses.asdict(config)
    runtime = getattr(type(config), "RUNTIME_FIELDS", ())
    changed = [
        f"--{k.replace('_', '-')} {new[k]} (the run has {old.get(k)})"
        for k in sorted(new)
        if new[k] != old.get(k) and k not in runtime
    ]
    if changed:
        raise DistillError(
            f"cannot resume {run} with a changed config: {', '.join(changed)}; start a new --out instead"
        )


def atomic_write_text(path: Path, text: str) -> None:
    """Writes through a temporary file so that an interrupted write never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def append_metrics(out: Path, record: dict) -> None:
    with open(Path(out) / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def read_metrics(run: Path) -> list[dict]:
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(out: Path, max_epoch: int) -> None:
    """Drops metric lines past the epoch a resume restarts from, so no epoch is logged twice."""
    records = [r for r in read_metrics(out) if r.get("epoch", 0) <= max_epoch]
    atomic_write_text(Path(out) / "metrics.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def plot_learning_curve(out: Path, records: list[dict], title: str) -> Path | None:
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["env_steps"] for r in records]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].plot(steps, [r["time_at_goal"] for r in records], marker="o")
    axes[0].set_ylabel("time_at_goal (steps)")
    axes[1].plot(steps, [r["success_any"] for r in records], marker="o", color="tab:green")
    axes[1].set_ylabel("success_any")
    axes[1].set_ylim(-0.02, 1.02)
    for ax in axes:
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(out) / "learning_curve.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def finished(run: Path, plan: Any) -> bool:
    """Whether a run has finished its schedule ``plan``: the last epoch is recorded and its final
    checkpoint written (a run killed between the two is resumed, not taken as done)."""
    metrics = read_metrics(run)
    return (
        bool(metrics)
        and metrics[-1].get("epoch") == plan.epochs
        and (Path(run) / "checkpoints" / "last" / str(plan.steps)).is_dir()
    )


def packed_record(run: Path) -> dict | None:
    """What ``distill pack`` recorded in a packed run's config.json (None for a run that is not packed)."""
    path = Path(run) / "config.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    packed = record.get("packed") if isinstance(record, dict) else None
    return packed if isinstance(packed, dict) else None


def best_checkpoint_info(run: Path, step: int | None, plan: Any) -> dict:
    """Where a run's best parameters come from: checkpoint ``step``, its env steps (by the run's
    schedule ``plan``) and that epoch's record. A packed run answers with what was recorded when it
    was packed (``step`` and ``plan`` unused)."""
    packed = packed_record(run)
    if packed is not None:
        return {k: packed[k] for k in ("step", "env_steps", "epoch", "time_at_goal") if k in packed}
    env_steps = plan.initial_env_steps + step * plan.env_steps_per_step
    info = {"step": int(step), "env_steps": int(env_steps)}
    for line in read_metrics(run):
        if line.get("env_steps") == env_steps:
            info.update(epoch=line.get("epoch"), time_at_goal=line.get("time_at_goal"))
    return info
