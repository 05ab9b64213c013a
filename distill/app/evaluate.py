"""``distill evaluate``: evaluate a teacher run, a student run or an exported ONNX file."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax

from distill.app.kinds import kind_of
from distill.data.sensors import SensorModel, sensor_model
from distill.envs import EnvSpec
from distill.errors import DistillError
from distill.eval.evaluation import check_obs_noise, make_evaluator, summarize
from distill.nn.networks import CRLNetworks
from distill.store.checkpoints import CHECKPOINT_KINDS
from export.closed_loop import evaluate_c, evaluate_onnx


@dataclasses.dataclass(frozen=True)
class RunPolicy:
    """The networks of a teacher or student run, as trained, and its deterministic policy."""

    spec: EnvSpec
    backend: str
    networks: CRLNetworks
    params: Any
    description: str
    sensors: SensorModel | None = None
    """What the policy reads instead of the state (None: the state)."""

    @property
    def actor_params(self) -> Any:
        return self.params["actor"]

    def apply(self, actor_params, obs: jax.Array) -> jax.Array:
        """(actor params, obs) -> action in [-1, 1]."""
        return self.networks.act(actor_params, obs)


def load_run_policy(target: Path, which: str = "best", env: str | None = None) -> RunPolicy:
    if which not in CHECKPOINT_KINDS:
        raise DistillError(f"--checkpoint must be one of {', '.join(CHECKPOINT_KINDS)}, got '{which}'")
    kind = kind_of(target)
    config, spec, networks, params, step = kind.load(target, which)
    if env is not None and env != spec.name:
        raise DistillError(f"{target} was trained on '{spec.name}', not on '{env}'")
    sensors = sensor_model(config)
    return RunPolicy(
        spec,
        config.backend or spec.backend,
        networks,
        params,
        f"{kind.name} ({which} checkpoint, step {step})",
        sensors,
    )


def evaluate_target(
    target: Path, episodes: int, env: str | None, seed: int, which: str = "best", obs_noise: float = 0.0
) -> dict:
    """A run's or an ONNX file's summary on the seed's episodes; ``obs_noise`` > 0 adds Gaussian noise of
    that sigma to the state the policy observes (the goal, the physics and success stay exact)."""
    target = Path(target)
    obs_noise = check_obs_noise(obs_noise)
    if which not in CHECKPOINT_KINDS:
        raise DistillError(f"--checkpoint must be one of {', '.join(CHECKPOINT_KINDS)}, got '{which}'")
    if episodes <= 0:
        raise DistillError(f"--episodes must be positive, got {episodes}")
    if target.is_dir() and (target / "policy.c").is_file():
        if obs_noise:
            raise DistillError("--obs-noise applies to runs and ONNX files, not to a C export")
        return evaluate_c(target, episodes=episodes, seed=seed)
    if target.suffix == ".onnx":
        return evaluate_onnx(target, env=env, episodes=episodes, seed=seed, obs_noise=obs_noise)
    policy = load_run_policy(target, which, env)
    evaluate = make_evaluator(
        policy.spec.make(backend=policy.backend), policy.spec, policy.apply, episodes, obs_noise, policy.sensors
    )
    result = summarize(evaluate(policy.actor_params, jax.random.PRNGKey(seed)).success)
    result.update({"policy": policy.description, "env": policy.spec.name, "seed": seed, "obs_noise": obs_noise})
    if policy.sensors is not None:
        result["sensors"] = policy.sensors.describe()
    return result
