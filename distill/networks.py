"""The network family shared by teachers and students.

Each network is an input projection (Dense, LayerNorm, swish), ``depth // 4`` residual blocks of
4 x [Dense, LayerNorm, swish] with the skip added after the last activation, then a head. The blocks'
parameters are stacked on a leading axis and applied with ``nn.scan``, so XLA compiles one block
whatever the depth; ``remat`` recomputes block activations in the backward pass to save memory.
``unrolled=True`` builds the same blocks with a Python loop (the paper's code): its compile time grows
with depth, but on a GPU it saves the scan's per-block loop cost (teachers offer it as
``unrolled_blocks``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import struct

if TYPE_CHECKING:
    from distill.envs import EnvSpec

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0
LAYERS_PER_BLOCK = 4

kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def dense(features: int, name: str | None = None) -> nn.Dense:
    return nn.Dense(features, kernel_init=kernel_init, bias_init=nn.initializers.zeros, name=name)


class ResidualBlock(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
        h = x
        for i in range(LAYERS_PER_BLOCK):
            h = dense(self.width, name=f"dense_{i}")(h)
            h = nn.LayerNorm(name=f"norm_{i}")(h)
            h = nn.swish(h)
        return x + h


class _ScanBlock(nn.Module):
    """ResidualBlock with the (carry, input) -> (carry, output) signature nn.scan expects."""

    width: int

    @nn.compact
    def __call__(self, x, _):
        return ResidualBlock(self.width, name="block")(x), None


class ResidualTower(nn.Module):
    """Input projection followed by ``depth // 4`` residual blocks."""

    width: int = 256
    depth: int = 4
    remat: bool = False
    unrolled: bool = False

    @nn.compact
    def __call__(self, x):
        x = dense(self.width, name="input")(x)
        x = nn.LayerNorm(name="input_norm")(x)
        x = nn.swish(x)
        num_blocks = self.depth // LAYERS_PER_BLOCK
        if num_blocks == 0:
            return x
        if self.unrolled:
            block_cls = nn.remat(ResidualBlock) if self.remat else ResidualBlock
            for i in range(num_blocks):
                x = block_cls(self.width, name=f"block_{i}")(x)
            return x
        block_cls = nn.remat(_ScanBlock, prevent_cse=False) if self.remat else _ScanBlock
        blocks = nn.scan(
            block_cls,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            length=num_blocks,
        )
        x, _ = blocks(self.width, name="blocks")(x, None)
        return x


class Encoder(nn.Module):
    """A representation network: phi(s, a) for the sa_encoder or psi(g) for the goal_encoder."""

    repr_dim: int = 64
    width: int = 256
    depth: int = 4
    remat: bool = False
    unrolled: bool = False

    @nn.compact
    def __call__(self, x):
        h = ResidualTower(self.width, self.depth, self.remat, self.unrolled, name="tower")(x)
        return dense(self.repr_dim, name="head")(h)


class Actor(nn.Module):
    """Tanh-Gaussian policy over concat[state, goal]; returns (mean, log_std) before the tanh."""

    action_dim: int
    width: int = 256
    depth: int = 4
    remat: bool = False
    unrolled: bool = False

    @nn.compact
    def __call__(self, obs):
        h = ResidualTower(self.width, self.depth, self.remat, self.unrolled, name="tower")(obs)
        mean = dense(self.action_dim, name="mean")(h)
        log_std = jnp.tanh(dense(self.action_dim, name="log_std")(h))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1.0)
        return mean, log_std


def energy(phi: jax.Array, psi: jax.Array) -> jax.Array:
    """f = -||phi - psi||_2, row-wise. The tiny epsilon keeps the gradient finite at phi == psi."""
    return -jnp.sqrt(jnp.sum(jnp.square(phi - psi), axis=-1) + 1e-12)


def pairwise_energy(phi: jax.Array, psi: jax.Array) -> jax.Array:
    """logits[i, j] = f(phi_i, psi_j) for a batch: the InfoNCE logit matrix."""
    return energy(phi[:, None, :], psi[None, :, :])


def deterministic_action(mean: jax.Array) -> jax.Array:
    return jnp.tanh(mean)


def sample_action(key: jax.Array, mean: jax.Array, log_std: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A reparameterised tanh-Gaussian sample and its log-probability (with the tanh correction)."""
    noise = jax.random.normal(key, mean.shape)
    pre_tanh = mean + jnp.exp(log_std) * noise
    action = jnp.tanh(pre_tanh)
    gaussian_logp = -0.5 * jnp.square(noise) - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    log_prob = jnp.sum(gaussian_logp, axis=-1) - jnp.sum(jnp.log(1.0 - jnp.square(action) + 1e-6), axis=-1)
    return action, log_prob


def count_params(params) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))


# ---- the agent's three networks ---------------------------------------------------------------

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
