"""Deterministic goal-reaching evaluation: time_at_goal and success_any.

An episode that its environment ends early (``done``, e.g. a flipped ant) counts its successes up
to and including that step and none after, as the reference's evaluator stops counting there; it
stays in the means with what it had. Evaluation runs on the spec's evaluation environment
(``EnvSpec.make(evaluation=True)``), which for ``ant_big_maze`` draws only its far goals.

``obs_noise`` (sigma) adds Gaussian noise to the state the policy observes, never to the goal: the
environment steps the true state and success is measured on it. The noise at step t is drawn from
``fold_in(fold_in(key, NOISE_STREAM), t)`` of the evaluation's key, so a seed gives the same noise to
every policy (JAX or ONNX) and sigma 0 is plain evaluation, the same program. A student with a sensor
model (``distill.data.sensors``) reads its sensors instead, their noise drawn from the same stream.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from distill.data.sensors import SensorModel, empty_buffer, observe, step_noise
from distill.envs import EnvSpec, GoalEnv
from distill.errors import DistillError

# Episodes whose paths an evaluation keeps for pictures (a maze's top view).
PATH_EPISODES = 4
# Folded into the evaluation key to draw observation noise, independent of the resets' keys.
NOISE_STREAM = 0x6E6F6973


def check_obs_noise(sigma: float) -> float:
    """sigma of the observation noise: a finite, non-negative number."""
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise DistillError(f"--obs-noise must be a number, got {sigma!r}") from None
    if not math.isfinite(value) or value < 0:
        raise DistillError(f"--obs-noise must be a finite, non-negative standard deviation, got {sigma}")
    return value


def noise_key(key: jax.Array) -> jax.Array:
    """The key observation noise is drawn from, given an evaluation's key."""
    return jax.random.fold_in(key, NOISE_STREAM)


def noisy_state(key: jax.Array, t, state: jax.Array, sigma: float) -> jax.Array:
    """``state`` [episodes, state_dim] plus the step-``t`` noise of the noise key ``key``."""
    return state + sigma * jax.random.normal(jax.random.fold_in(key, t), state.shape, state.dtype)


def evaluation_env(spec: EnvSpec, backend: str | None = None) -> GoalEnv:
    """The environment ``spec``'s policies are scored on, on ``backend`` (None: the spec's)."""
    return spec.make(evaluation=True, backend=backend)


def scored_env(env: GoalEnv, spec: EnvSpec) -> GoalEnv:
    """``env``, or the spec's evaluation environment on ``env``'s backend where it has its own."""
    return env if spec.evaluation_factory is None else evaluation_env(spec, env.backend)


def until_termination(success: jax.Array, done: jax.Array) -> jax.Array:
    """[T, episodes] success flags with every step after an episode's first ``done`` zeroed."""
    running = jnp.cumprod(1.0 - (done > 0).astype(jnp.float32), axis=0)
    # A step counts while no earlier step ended the episode; the ending step itself still counts.
    counted = jnp.concatenate([jnp.ones_like(running[:1]), running[:-1]], axis=0)
    return success * counted


class Episodes(NamedTuple):
    """What an evaluation returns: every episode's success flags, and the paths of the first few."""

    success: jax.Array
    """[episode_length, episodes] success flags, zero after the step that ended an episode early."""
    path: jax.Array
    """[episode_length + 1, PATH_EPISODES or fewer, 2]: the first two goal coordinates the state
    achieves (a maze robot's xy), from the reset on."""
    goal: jax.Array
    """[PATH_EPISODES or fewer, 2]: the first two goal coordinates of those episodes."""


def rollout_success(
    env: GoalEnv,
    policy: Callable[[jax.Array], jax.Array],
    num_episodes: int,
    episode_length: int,
    key: jax.Array,
    obs_noise: float = 0.0,
    sensors: SensorModel | None = None,
) -> Episodes:
    """Runs ``num_episodes`` episodes in parallel from the key's starts and goals.

    With ``obs_noise`` > 0 the policy sees each state with Gaussian noise of that sigma (goal untouched).
    With ``sensors`` it sees concat[sensor vector, goal] instead (``distill.data.sensors``).
    """
    env_state = jax.vmap(env.reset)(jax.random.split(key, num_episodes))
    drawn = min(PATH_EPISODES, num_episodes)
    where = jnp.asarray(env.goal_indices[:2])
    state_dim = env.state_dim

    def step(env_state, _):
        env_state = jax.vmap(env.step)(env_state, policy(env_state.obs))
        return env_state, (env_state.metrics["success"], env_state.done, env_state.obs[:drawn, where])

    def noisy_step(env_state, t):
        obs = env_state.obs
        seen = jnp.concatenate([noisy_state(keys, t, obs[:, :state_dim], obs_noise), obs[:, state_dim:]], axis=-1)
        env_state = jax.vmap(env.step)(env_state, policy(seen))
        return env_state, (env_state.metrics["success"], env_state.done, env_state.obs[:drawn, where])

    def sensed_step(carry, t):
        env_state, buffer = carry
        buffer, seen = sensed(buffer, env_state.obs, t)
        env_state = jax.vmap(env.step)(env_state, policy(seen))
        return (env_state, buffer), (env_state.metrics["success"], env_state.done, env_state.obs[:drawn, where])

    if sensors is not None:
        sensed = evaluation_observer(sensors, key, state_dim, num_episodes)
        carry = (env_state, empty_buffer(sensors, num_episodes))
        _, (success, done, path) = jax.lax.scan(sensed_step, carry, jnp.arange(episode_length))
    elif obs_noise:
        keys = noise_key(key)
        _, (success, done, path) = jax.lax.scan(noisy_step, env_state, jnp.arange(episode_length))
    else:
        _, (success, done, path) = jax.lax.scan(step, env_state, None, length=episode_length)
    path = jnp.concatenate([env_state.obs[None, :drawn, where], path])
    return Episodes(until_termination(success, done), path, env_state.obs[:drawn, env.state_dim : env.state_dim + 2])


def evaluation_observer(sensors: SensorModel, key: jax.Array, state_dim: int, num_episodes: int):
    """``sensed(buffer, obs, t) -> (buffer, seen)`` of an evaluation on ``key``: the step-``t`` noise of
    its noise stream, every episode starting at step 0 (see ``distill.data.sensors.observe``)."""
    keys = noise_key(key)

    def sensed(buffer, obs, t):
        fresh = jnp.full((num_episodes,), t == 0)
        return observe(sensors, buffer, obs, state_dim, step_noise(keys, t, obs[:, :state_dim].shape), fresh)

    return sensed


# Evaluations draw their episodes from the run's seed plus this, so they never replay training's.
EVAL_SEED_OFFSET = 1_000_003


def evaluation_key(seed: int, epoch: int | None = None) -> jax.Array:
    """The key of a run's evaluation: a teacher's is folded with the epoch (fresh episodes each
    epoch), a student's (``epoch`` None) is the same every epoch."""
    key = jax.random.PRNGKey(seed + EVAL_SEED_OFFSET)
    return key if epoch is None else jax.random.fold_in(key, epoch)


def summarize(success) -> dict:
    success = np.asarray(success)
    per_episode = success.sum(axis=0)
    return {
        "time_at_goal": float(per_episode.mean()),
        "time_at_goal_std": float(per_episode.std()),
        "success_any": float((per_episode > 0).mean()),
        "episodes": int(success.shape[1]),
        "episode_length": int(success.shape[0]),
    }


def make_evaluator(
    env: GoalEnv,
    spec: EnvSpec,
    policy_apply: Callable,
    num_episodes: int,
    obs_noise: float = 0.0,
    sensors: SensorModel | None = None,
):
    """A jitted ``evaluate(params, key) -> Episodes`` for a deterministic policy.

    It runs on the spec's evaluation environment, on ``env``'s backend (``env`` itself where the
    spec has no separate one). ``obs_noise`` > 0: the policy observes the state with Gaussian noise
    of that sigma (see the module). ``sensors``: the policy reads what that sensor model gives
    (``distill.data.sensors``), with its own noise, so ``obs_noise`` must then be 0.
    """
    if num_episodes <= 0:
        raise DistillError(f"evaluation episodes must be positive, got {num_episodes}")
    obs_noise = check_obs_noise(obs_noise)
    if sensors is not None and obs_noise:
        raise DistillError("--obs-noise does not apply to a student with a sensor model: its noise is the model's own")
    env = scored_env(env, spec)

    @jax.jit
    def evaluate(params, key):
        return rollout_success(
            env, lambda obs: policy_apply(params, obs), num_episodes, spec.episode_length, key, obs_noise, sensors
        )

    return evaluate


def random_policy_baseline(env: GoalEnv, spec: EnvSpec, num_episodes: int, seed: int) -> dict:
    """time_at_goal of uniformly random actions, the floor a trained teacher must clear."""
    key = jax.random.PRNGKey(seed)
    env = scored_env(env, spec)

    @jax.jit
    def run(key):
        k_reset, k_act = jax.random.split(key)
        env_state = jax.vmap(env.reset)(jax.random.split(k_reset, num_episodes))

        def step(carry, _):
            env_state, k = carry
            k, sub = jax.random.split(k)
            action = jax.random.uniform(sub, (num_episodes, spec.action_dim), minval=-1.0, maxval=1.0)
            env_state = jax.vmap(env.step)(env_state, action)
            return (env_state, k), (env_state.metrics["success"], env_state.done)

        return until_termination(*jax.lax.scan(step, (env_state, k_act), None, length=spec.episode_length)[1])

    return summarize(run(key))


__all__ = [
    "Episodes",
    "NOISE_STREAM",
    "PATH_EPISODES",
    "check_obs_noise",
    "evaluation_env",
    "evaluation_observer",
    "make_evaluator",
    "noise_key",
    "noisy_state",
    "random_policy_baseline",
    "rollout_success",
    "scored_env",
    "summarize",
    "until_termination",
]
