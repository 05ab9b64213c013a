"""Closed-loop evaluation of an exported policy: onnxruntime acts inside the Brax environment.

The environments are stepped by jitted JAX (they are Brax), but every action comes from the ONNX file
through ``OnnxPolicy``, batched over the evaluation episodes. With the same seed the episodes start
from the same states and goals as ``distill evaluate`` of the JAX student, and ``obs_noise`` draws the
same observation noise (``distill.eval.evaluation.noisy_state``).

A file with a sensor model is fed as a robot would feed it: the simulator takes each step's reading
(the model's slices, with its noise drawn as the JAX evaluation draws it) and hands it over
``latency`` steps later; the policy stacks its history itself, from ``reset()`` at the episode's start.
The JAX student sees exactly the same sensor vectors (``distill.data.sensors``).
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from distill.data.sensors import SensorModel, model_from_json, read, step_noise
from distill.envs import get_spec
from distill.errors import DistillError
from distill.eval.evaluation import (
    check_obs_noise,
    evaluation_env,
    noise_key,
    noisy_state,
    summarize,
    until_termination,
)
from export.runtime import OnnxPolicy, PolicyFileError


def load_onnx_policy(path: Path, env: str | None):
    """An exported policy, the environment it acts in and the backend: (OnnxPolicy, EnvSpec, backend)."""
    path = Path(path)
    if not path.is_file():
        raise DistillError(f"ONNX file {path} does not exist")
    try:
        policy = OnnxPolicy(path)
    except PolicyFileError as err:
        raise DistillError(str(err)) from None
    file_env = policy.metadata.get("env")
    if file_env is None and env is None:
        raise DistillError(f"{path} does not name its environment in its metadata; pass --env")
    if env is not None and file_env is not None and env != file_env:
        raise DistillError(f"{path} was exported for '{file_env}', not for '{env}'")
    spec = get_spec(file_env or env)
    if (policy.state_dim, policy.goal_dim, policy.action_dim) != (spec.state_dim, spec.goal_dim, spec.action_dim):
        raise DistillError(f"{path} has dimensions that do not fit '{spec.name}'")
    return policy, spec, policy.metadata.get("backend", spec.backend)


def file_sensor_model(policy: OnnxPolicy, spec, path: Path) -> SensorModel | None:
    """The sensor model a file's policy was distilled with (None: it reads the state)."""
    if policy.sensor_model is None:
        return None
    return model_from_json(policy.sensor_model, spec, str(path))


class DelayedReadings:
    """What a robot's sensors hand a policy at each step of a batch of simulated episodes: the reading
    taken ``latency`` steps earlier (the first one while fewer steps have passed), with the noise of
    the evaluation key's stream."""

    def __init__(self, model: SensorModel, key, state_dim: int):
        self.latency = model.latency
        keys = noise_key(key)
        self._read = jax.jit(lambda t, state: read(model, state, step_noise(keys, t, state.shape)))
        self._taken: list[np.ndarray] = []

    def __call__(self, t: int, state: np.ndarray) -> np.ndarray:
        self._taken.append(np.asarray(self._read(t, state)))
        return self._taken[max(t - self.latency, 0)]


def evaluate_onnx(path: Path, env: str | None, episodes: int, seed: int, obs_noise: float = 0.0) -> dict:
    """time_at_goal and success_any of the file's policy; ``obs_noise`` > 0 adds Gaussian noise of that
    sigma to the state it observes (not to the goal), drawn as ``distill evaluate`` of a run draws it."""
    obs_noise = check_obs_noise(obs_noise)
    if episodes <= 0:
        raise DistillError(f"--episodes must be positive, got {episodes}")
    policy, spec, backend = load_onnx_policy(path, env)
    sensors = file_sensor_model(policy, spec, path)
    if sensors is not None and obs_noise:
        raise DistillError("--obs-noise does not apply to a student with a sensor model: its noise is the model's own")
    return closed_loop(policy, spec, backend, sensors, episodes, seed, obs_noise, f"onnx ({Path(path).name})")


def evaluate_c(folder: Path, episodes: int, seed: int) -> dict:
    """The same closed loop through the C export in ``folder`` (compiled here, called through ctypes)."""
    from distill.data.sensors import parse_sensors
    from export.c_policy import load_c_policy

    if episodes <= 0:
        raise DistillError(f"--episodes must be positive, got {episodes}")
    policy = load_c_policy(folder)
    contract = policy.contract
    spec = get_spec(contract["env"])
    observation = contract["observation"]
    sensors = parse_sensors(observation["spec"], spec) if observation["input"] == "sensors" else None
    backend = contract["control"].get("simulator_backend", spec.backend)
    return closed_loop(policy, spec, backend, sensors, episodes, seed, 0.0, f"C ({Path(folder).name})")


def closed_loop(
    policy, spec, backend: str, sensors: SensorModel | None, episodes: int, seed: int, obs_noise: float, label: str
) -> dict:
    """Episodes of the seed in the environment, every action from ``policy(state or reading, goal)``
    (an ``OnnxPolicy`` or a ``CPolicy``, batched over the episodes); the evaluation summary."""
    environment = evaluation_env(spec, backend)
    reset = jax.jit(jax.vmap(environment.reset))
    step = jax.jit(jax.vmap(environment.step))
    key = jax.random.PRNGKey(seed)
    noise = jax.jit(lambda t, state: noisy_state(noise_key(key), t, state, obs_noise))

    env_state = reset(jax.random.split(key, episodes))
    readings = DelayedReadings(sensors, key, spec.state_dim) if sensors else None
    policy.reset()
    success = np.zeros((spec.episode_length, episodes), np.float32)
    done = np.zeros((spec.episode_length, episodes), np.float32)
    for t in range(spec.episode_length):
        obs = np.asarray(env_state.obs)
        state = obs[:, : spec.state_dim]
        if obs_noise:
            state = np.asarray(noise(t, state))
        if readings is not None:
            state = readings(t, state)
        action = policy(state, obs[:, spec.state_dim :])
        env_state = step(env_state, action)
        success[t] = np.asarray(env_state.metrics["success"])
        done[t] = np.asarray(env_state.done)
    result = summarize(until_termination(success, done))
    result.update({"policy": label, "env": spec.name, "seed": seed, "obs_noise": obs_noise})
    if sensors is not None:
        result["sensors"] = sensors.describe()
    return result
