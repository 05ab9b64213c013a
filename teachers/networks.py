"""The CRL teacher's networks: an actor and two critic encoders."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

from distill.envs import EnvSpec
from distill.networks import Actor, Encoder

Params = Any


@struct.dataclass
class CRLNetworks:
    """Flax modules of an agent (static) and the slices of the observation they read."""

    actor: Actor = struct.field(pytree_node=False)
    sa_encoder: Encoder = struct.field(pytree_node=False)
    goal_encoder: Encoder = struct.field(pytree_node=False)
    state_dim: int = struct.field(pytree_node=False)
    action_dim: int = struct.field(pytree_node=False)
    goal_dim: int = struct.field(pytree_node=False)

    def init(self, key: jax.Array) -> dict:
        k_actor, k_sa, k_goal = jax.random.split(key, 3)
        obs = jnp.zeros((1, self.state_dim + self.goal_dim))
        sa = jnp.zeros((1, self.state_dim + self.action_dim))
        goal = jnp.zeros((1, self.goal_dim))
        return {
            "actor": self.actor.init(k_actor, obs)["params"],
            "sa_encoder": self.sa_encoder.init(k_sa, sa)["params"],
            "goal_encoder": self.goal_encoder.init(k_goal, goal)["params"],
        }

    def policy(self, actor_params: Params, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.actor.apply({"params": actor_params}, obs)

    def phi(self, sa_params: Params, state: jax.Array, action: jax.Array) -> jax.Array:
        return self.sa_encoder.apply({"params": sa_params}, jnp.concatenate([state, action], axis=-1))

    def psi(self, goal_params: Params, goal: jax.Array) -> jax.Array:
        return self.goal_encoder.apply({"params": goal_params}, goal)


def make_crl_networks(
    spec: EnvSpec,
    *,
    actor_depth: int,
    critic_depth: int,
    width: int = 256,
    repr_dim: int = 64,
    remat: bool = False,
    unrolled: bool = False,
) -> CRLNetworks:
    return CRLNetworks(
        actor=Actor(spec.action_dim, width, actor_depth, remat, unrolled),
        sa_encoder=Encoder(repr_dim, width, critic_depth, remat, unrolled),
        goal_encoder=Encoder(repr_dim, width, critic_depth, remat, unrolled),
        state_dim=spec.state_dim,
        action_dim=spec.action_dim,
        goal_dim=spec.goal_dim,
    )


def load_run_networks(run, kind: str, config_cls, which: str, network_shape: Callable[[Any], dict]):
    """Rebuilds the networks of a teacher or student run and restores their parameters.

    ``network_shape(config)`` gives the depths, width and representation size the run was built with.
    Returns (config, spec, networks, params, checkpoint step).
    """
    from distill import runs
    from distill.checkpoints import abstract_of, load_params
    from distill.envs import get_spec
    from distill.errors import DistillError

    record = runs.read_config(run, kind=kind)
    try:
        config = config_cls(**record["config"])
    except TypeError as err:
        raise DistillError(f"{run}/config.json does not describe a {kind}: {err}") from None
    spec = get_spec(config.env)
    networks = make_crl_networks(spec, **network_shape(config))
    abstract = abstract_of(jax.eval_shape(networks.init, jax.random.PRNGKey(0)))
    step, params = load_params(run, abstract, which)
    return config, spec, networks, params, step
