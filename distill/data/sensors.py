"""Sensor models: what a student sees of the state on a robot.

A teacher trains in simulation on the full state. A robot measures less, with noise and late: joint
encoders, an IMU, a localisation estimate. A sensor model says what the student sees instead:

- which named slices of the state it keeps (``EnvSpec.layout``: ``distill envs --layout ENV``),
- Gaussian noise of a standard deviation per kept slice,
- ``history`` K: the student's input is its last K readings, oldest first,
- ``latency`` L: each reading reaches the student L control steps after it was taken.

At control step t the sensor vector is concat[r(t-L-K+1), ..., r(t-L)], where r(s) is the noisy
reading of the state observed at step s (before that step's action). Before the episode's first
reading, the first reading stands in for the ones not taken yet: an episode starts with a full
history of its first reading, and for the first L steps the student sees that reading.

The noise of step s is ``noise * normal(fold_in(key, s))`` drawn over the whole state and then
sliced, so every sensor model (and plain ``--obs-noise``) sees the same draws on a given key.

A sensor model is written as a string of ``field=value`` parts separated by ';':

    keep=joint_pos,torso_xy     or  drop=joint_vel,torso_vel   (default: every slice)
    noise=0.02                  or  noise=0.02,torso_xy:0.1    (a bare number for every kept slice;
                                                                slice:sigma for one; default 0)
    history=3                   (K >= 1, default 1)
    latency=1                   (L >= 0, default 0)

or as a TOML file with the same fields (``keep``/``drop`` a list of names, ``noise`` a number or a
table of slice = sigma with an optional ``default``). ``SensorModel.describe()`` writes the canonical
string that run configs record.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from distill.envs import get_spec
from distill.envs.base import EnvSpec
from distill.errors import DistillError

FIELDS = ("keep", "drop", "noise", "history", "latency")


@dataclasses.dataclass(frozen=True)
class SensorModel:
    """The readings a student gets: kept slices with their noise, history and latency."""

    slices: tuple[tuple[str, int, int, float], ...]
    """Kept state slices in the state's order: (name, start, stop, noise sigma)."""
    history: int = 1
    """K: the student's input stacks its last K readings, oldest first."""
    latency: int = 0
    """L: control steps between taking a reading and the student seeing it."""

    @property
    def reading_dim(self) -> int:
        """Entries of one reading: the kept slices, concatenated."""
        return sum(stop - start for _, start, stop, _ in self.slices)

    @property
    def sensor_dim(self) -> int:
        """Entries of the student's input besides the goal: K readings."""
        return self.history * self.reading_dim

    @property
    def indices(self) -> np.ndarray:
        """The state entries a reading holds, in its order."""
        return np.concatenate([np.arange(start, stop) for _, start, stop, _ in self.slices]).astype(np.int32)

    @property
    def sigmas(self) -> np.ndarray:
        """The noise sigma of each entry of a reading."""
        return np.concatenate([np.full(stop - start, sigma, np.float32) for _, start, stop, sigma in self.slices])

    def describe(self) -> str:
        """The canonical spec string: every kept slice and its noise, history and latency."""
        keep = ",".join(name for name, _, _, _ in self.slices)
        noise = ",".join(f"{name}:{sigma:g}" for name, _, _, sigma in self.slices)
        return f"keep={keep};noise={noise};history={self.history};latency={self.latency}"

    def to_json(self) -> dict:
        """What an exported file records of the model (and what a robot's code needs to feed it)."""
        return {
            "slices": [{"name": n, "start": a, "stop": b, "noise": s} for n, a, b, s in self.slices],
            "history": self.history,
            "latency": self.latency,
            "reading_dim": self.reading_dim,
            "sensor_dim": self.sensor_dim,
            "order": "sensors = concat of the last `history` readings, oldest first; a reading = concat of the "
            "slices' state entries in the order listed",
            "spec": self.describe(),
        }


def model_from_json(record: dict, spec: EnvSpec, where: str) -> SensorModel:
    """The model an exported file records (``SensorModel.to_json``), checked against ``spec``'s state."""
    try:
        slices = tuple((s["name"], int(s["start"]), int(s["stop"]), float(s["noise"])) for s in record["slices"])
        model = SensorModel(slices, int(record["history"]), int(record["latency"]))
    except (KeyError, TypeError, ValueError):
        raise DistillError(f"{where} has a malformed sensor model in its metadata") from None
    layout = {name: (start, stop) for name, start, stop in spec.layout}
    if any(layout.get(name) != (start, stop) for name, start, stop, _ in slices):
        raise DistillError(f"{where}: its sensor slices do not match the state layout of '{spec.name}'")
    return model


def sensor_model(config: Any) -> SensorModel | None:
    """The sensor model of a teacher's or student's config (its ``sensors`` on its ``env``); None:
    it reads the full state."""
    text = getattr(config, "sensors", "")
    return parse_sensors(text, get_spec(config.env)) if text and config.env else None


def canonical_sensors(text: str | None, env: str) -> str:
    """``text`` (a spec string or a TOML file) as the canonical spec string on ``env``; '' stays ''.
    Recorded in this form, a spec string and the file it came from are one config."""
    model = parse_sensors(text, get_spec(env))
    return model.describe() if model else ""


# ---- parsing --------------------------------------------------------------------------------------


def parse_sensors(text: str | None, spec: EnvSpec) -> SensorModel | None:
    """The sensor model a spec string or TOML file describes for ``spec``'s state; None for ''/None."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    path = Path(text)
    if text.endswith(".toml") or ("=" not in text and path.exists()):
        fields, where = _toml_fields(path), f"sensor file {path}"
    else:
        fields, where = _string_fields(text), "--sensors"
    if not fields:
        # A model that sets nothing would train a full-state student while the run claims sensors.
        raise DistillError(f"{where} sets nothing; give at least one of: {', '.join(FIELDS)} (or leave --sensors out)")
    return _from_fields(fields, spec, where)


def _toml_fields(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DistillError(f"sensor file {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise DistillError(f"sensor file {path} is not valid TOML: {err}") from None


def _string_fields(text: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise DistillError(
                f"--sensors: malformed part '{part}'; write field=value parts separated by ';' "
                f"(fields: {', '.join(FIELDS)})"
            )
        if name in fields:
            raise DistillError(f"--sensors: '{name}' is given twice")
        if name in ("keep", "drop"):
            fields[name] = [n.strip() for n in value.split(",")]
        elif name == "noise":
            fields[name] = _noise_string(value)
        else:
            fields[name] = value
    return fields


def _noise_string(value: str) -> dict[str, Any]:
    """'0.02' or '0.02,torso_xy:0.1' -> {'default': '0.02', 'torso_xy': '0.1'}."""
    noise: dict[str, Any] = {}
    for item in (i.strip() for i in value.split(",")):
        name, sep, sigma = item.rpartition(":")
        key = name.strip() if sep else "default"
        if key in noise or (sep and not key):
            raise DistillError(f"--sensors: malformed noise '{value}'; write a number, slice:number pairs, or both")
        noise[key] = sigma.strip()
    return noise


def _number(what: str, value: Any, integer: bool) -> float | int:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = int(value) if integer else float(value)
        if integer and float(value) != number:
            raise ValueError
    except (TypeError, ValueError):
        kind = "an integer" if integer else "a number"
        raise DistillError(f"{what} must be {kind}, got {value!r}") from None
    return number


def _names(where: str, field: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [n.strip() for n in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(n, str) and n for n in value):
        raise DistillError(f"{where}: '{field}' must be a list of slice names")
    return value


def _from_fields(fields: dict[str, Any], spec: EnvSpec, where: str) -> SensorModel:
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise DistillError(f"{where}: unknown field '{unknown[0]}'; the fields are {', '.join(FIELDS)}")
    if "keep" in fields and "drop" in fields:
        raise DistillError(f"{where}: give 'keep' or 'drop', not both")
    layout_names = [name for name, _, _ in spec.layout]
    for field in ("keep", "drop"):
        for name in _names(where, field, fields.get(field, [])):
            spec.layout_slice(name)  # raises naming the valid slices
    if "keep" in fields:
        kept = set(_names(where, "keep", fields["keep"]))
    else:
        kept = set(layout_names) - set(_names(where, "drop", fields.get("drop", [])))
    if not kept:
        raise DistillError(f"{where} drops every slice of '{spec.name}'; the student must keep at least one")

    noise = fields.get("noise", {})
    if not isinstance(noise, dict):
        noise = {"default": noise}
    default = _sigma(where, "default", noise.get("default", 0.0))
    sigmas = {}
    for name, value in noise.items():
        if name == "default":
            continue
        spec.layout_slice(name)
        if name not in kept:
            raise DistillError(f"{where}: noise on slice '{name}', which the sensor model drops")
        sigmas[name] = _sigma(where, name, value)

    history = _number(f"{where}: history", fields.get("history", 1), integer=True)
    latency = _number(f"{where}: latency", fields.get("latency", 0), integer=True)
    if not 1 <= history <= spec.episode_length:
        raise DistillError(
            f"{where}: history must lie in [1, {spec.episode_length}] (the episode length), got {history}"
        )
    if not 0 <= latency <= spec.episode_length:
        raise DistillError(
            f"{where}: latency must lie in [0, {spec.episode_length}] (the episode length), got {latency}"
        )
    slices = tuple((name, start, stop, sigmas.get(name, default)) for name, start, stop in spec.layout if name in kept)
    return SensorModel(slices, history, latency)


def _sigma(where: str, name: str, value: Any) -> float:
    sigma = _number(f"{where}: noise of {name}" if name != "default" else f"{where}: noise", value, integer=False)
    if not math.isfinite(sigma) or sigma < 0:
        raise DistillError(f"{where}: noise must be a finite, non-negative standard deviation, got {value!r}")
    return float(sigma)


# ---- readings and history, as pure functions on the device ---------------------------------------


def read(model: SensorModel, state: jax.Array, noise: jax.Array | None = None) -> jax.Array:
    """The reading of ``state`` [..., state_dim], plus ``noise`` [..., state_dim] of unit sigma scaled
    per slice (None: no noise)."""
    reading = state[..., model.indices]
    if noise is not None and model.sigmas.any():
        reading = reading + jnp.asarray(model.sigmas) * noise[..., model.indices]
    return reading


def step_noise(key: jax.Array, t, shape: tuple[int, ...]) -> jax.Array:
    """Unit Gaussian noise of control step ``t`` over a whole state batch (see the module)."""
    return jax.random.normal(jax.random.fold_in(key, t), shape)


def history_start(model: SensorModel, reading: jax.Array) -> jax.Array:
    """The readings buffer [batch, L + K, R] of an episode's first reading: that reading everywhere."""
    return jnp.repeat(reading[:, None, :], model.latency + model.history, axis=1)


def history_push(
    model: SensorModel, buffer: jax.Array, reading: jax.Array, fresh: jax.Array | None = None
) -> jax.Array:
    """``buffer`` with ``reading`` appended as the newest; rows where ``fresh`` [batch] is true (a new
    episode) start over from ``reading``."""
    pushed = jnp.concatenate([buffer[:, 1:], reading[:, None, :]], axis=1)
    if fresh is None:
        return pushed
    return jnp.where(fresh[:, None, None], history_start(model, reading), pushed)


def sensor_vector(model: SensorModel, buffer: jax.Array) -> jax.Array:
    """The student's input [batch, K * R]: the K oldest readings of the buffer, i.e. those L steps late."""
    return buffer[:, : model.history].reshape(buffer.shape[0], model.sensor_dim)


def empty_buffer(model: SensorModel | None, batch: int) -> jax.Array | None:
    """A readings buffer for ``batch`` episodes before their first step (None without a model)."""
    if model is None:
        return None
    return jnp.zeros((batch, model.latency + model.history, model.reading_dim))


def observe(
    model: SensorModel | None,
    buffer: jax.Array | None,
    obs: jax.Array,
    state_dim: int,
    noise: jax.Array | None,
    fresh: jax.Array,
) -> tuple[jax.Array | None, jax.Array]:
    """One control step of a policy behind sensors: the readings buffer after ``obs``
    (concat[state, goal], [batch, obs_dim]) is read with ``noise``, and what the policy sees,
    concat[sensor vector, goal]. Rows where ``fresh`` [batch] is true start a new episode. Without a
    model the policy sees ``obs`` itself."""
    if model is None:
        return buffer, obs
    reading = read(model, obs[:, :state_dim], noise)
    buffer = history_push(model, buffer, reading, fresh)
    return buffer, jnp.concatenate([sensor_vector(model, buffer), obs[:, state_dim:]], axis=-1)


__all__ = [
    "FIELDS",
    "SensorModel",
    "empty_buffer",
    "history_push",
    "history_start",
    "model_from_json",
    "observe",
    "parse_sensors",
    "read",
    "canonical_sensors",
    "sensor_model",
    "sensor_vector",
    "step_noise",
]
