"""The network family shared by teachers and students.

Each network is an input projection (Dense, LayerNorm, swish), ``depth // 4`` residual blocks of
4 x [Dense, LayerNorm, swish] with the skip added after the last activation, then a head. The blocks'
parameters are stacked on a leading axis and applied with ``nn.scan``, so XLA compiles one block
whatever the depth; ``remat`` recomputes block activations in the backward pass to save memory.

``unroll`` is the scan's unroll factor: K blocks per loop iteration, and all of them (no loop at all)
when K is the number of blocks. It changes the compiled program, never the parameters: every unroll
computes the same function from the same stacked parameters, so a checkpoint does not depend on it.
A CPU wants 1 (compile time stays flat with depth); a GPU wants the loop gone, since each iteration
costs launches and synchronisation that a 256-wide layer cannot hide (``block_unroll`` picks).

Runs made before the stacked layout was the only one may hold unrolled parameters (``block_0``,
``block_1``, ... instead of ``blocks/block``); ``distill.store.legacy`` converts them on load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import struct

from distill.errors import DistillError

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
    """Input projection followed by ``depth // 4`` residual blocks, ``unroll`` of them per loop step."""

    width: int = 256
    depth: int = 4
    remat: bool = False
    unroll: int = 1

    @nn.compact
    def __call__(self, x):
        x = dense(self.width, name="input")(x)
        x = nn.LayerNorm(name="input_norm")(x)
        x = nn.swish(x)
        num_blocks = self.depth // LAYERS_PER_BLOCK
        if num_blocks == 0:
            return x
        block_cls = nn.remat(_ScanBlock, prevent_cse=False) if self.remat else _ScanBlock
        blocks = nn.scan(
            block_cls,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            length=num_blocks,
            unroll=max(1, min(self.unroll, num_blocks)),
        )
        x, _ = blocks(self.width, name="blocks")(x, None)
        return x


class Encoder(nn.Module):
    """A representation network: phi(s, a) for the sa_encoder or psi(g) for the goal_encoder."""

    repr_dim: int = 64
    width: int = 256
    depth: int = 4
    remat: bool = False
    unroll: int = 1

    @nn.compact
    def __call__(self, x):
        h = ResidualTower(self.width, self.depth, self.remat, self.unroll, name="tower")(x)
        return dense(self.repr_dim, name="head")(h)


class Actor(nn.Module):
    """Tanh-Gaussian policy over concat[state, goal]; returns (mean, log_std) before the tanh."""

    action_dim: int
    width: int = 256
    depth: int = 4
    remat: bool = False
    unroll: int = 1

    @nn.compact
    def __call__(self, obs):
        h = ResidualTower(self.width, self.depth, self.remat, self.unroll, name="tower")(obs)
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
    sensor_dim: int = struct.field(pytree_node=False, default=0)
    """Size of the actor's input besides the goal when it reads a sensor vector (``distill.data.sensors``)
    instead of the state; 0: it reads the state. The encoders always read the state."""

    @property
    def policy_input_dim(self) -> int:
        """Width of what the actor reads: concat[state or sensor vector, goal]."""
        return (self.sensor_dim or self.state_dim) + self.goal_dim

    def init(self, key: jax.Array) -> dict:
        k_actor, k_sa, k_goal = jax.random.split(key, 3)
        obs = jnp.zeros((1, self.policy_input_dim))
        sa = jnp.zeros((1, self.state_dim + self.action_dim))
        goal = jnp.zeros((1, self.goal_dim))
        return {
            "actor": self.actor.init(k_actor, obs)["params"],
            "sa_encoder": self.sa_encoder.init(k_sa, sa)["params"],
            "goal_encoder": self.goal_encoder.init(k_goal, goal)["params"],
        }

    def policy(self, actor_params: Params, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.actor.apply({"params": actor_params}, obs)

    def act(self, actor_params: Params, obs: jax.Array) -> jax.Array:
        """The deterministic policy: tanh of the Gaussian's mean (what evaluation and export run)."""
        return deterministic_action(self.policy(actor_params, obs)[0])

    def phi(self, sa_params: Params, state: jax.Array, action: jax.Array) -> jax.Array:
        return self.sa_encoder.apply({"params": sa_params}, jnp.concatenate([state, action], axis=-1))

    def psi(self, goal_params: Params, goal: jax.Array) -> jax.Array:
        return self.goal_encoder.apply({"params": goal_params}, goal)


# ---- how many residual blocks each loop iteration applies ---------------------------------------

BLOCK_UNROLL_CHOICES = ("auto", "all")
# On a GPU every loop iteration costs kernel launches and a host-visible trip-count check, which a
# 256-wide layer cannot hide, so the loop goes entirely up to this many blocks; deeper towers keep a
# short loop (a bounded program) of GPU_DEEP_UNROLL blocks per iteration. Measured on an H100 by
# ``benchmarks/gpu_campaign.py --stage speed`` (results/gpu/<card>/speed.md).
GPU_FULL_UNROLL_BLOCKS = 16
GPU_DEEP_UNROLL = 8


def check_block_unroll(value) -> int | str:
    """``--block-unroll``: a positive integer, 'all' (no loop) or 'auto' (chosen per backend)."""
    if isinstance(value, bool):
        raise DistillError(f"--block-unroll must be a positive integer, 'all' or 'auto', got {value!r}")
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip().lower()
        if text in BLOCK_UNROLL_CHOICES:
            return text
        try:
            number = int(text)
        except ValueError:
            raise DistillError(f"--block-unroll must be a positive integer, 'all' or 'auto', got '{value}'") from None
    if number < 1:
        raise DistillError(f"--block-unroll must be at least 1 (1 = a plain loop over the blocks), got {number}")
    return number


def resolve_block_unroll(value, depth: int, backend: str | None = None) -> int:
    """The scan unroll factor of a tower of ``depth``: 1 on a CPU (flat compile time), the whole
    tower on a GPU up to ``GPU_FULL_UNROLL_BLOCKS`` blocks and ``GPU_DEEP_UNROLL`` beyond."""
    value = check_block_unroll(value)
    num_blocks = max(1, depth // LAYERS_PER_BLOCK)
    if value == "all":
        return num_blocks
    if value == "auto":
        backend = backend or jax.default_backend()
        if backend in ("gpu", "cuda", "rocm"):
            return num_blocks if num_blocks <= GPU_FULL_UNROLL_BLOCKS else min(GPU_DEEP_UNROLL, num_blocks)
        return 1
    return min(value, num_blocks)


def make_crl_networks(
    spec: EnvSpec,
    *,
    actor_depth: int,
    critic_depth: int,
    width: int = 256,
    repr_dim: int = 64,
    remat: bool = False,
    block_unroll: int | str = 1,
    sensor_dim: int = 0,
) -> CRLNetworks:
    actor_unroll = resolve_block_unroll(block_unroll, actor_depth)
    critic_unroll = resolve_block_unroll(block_unroll, critic_depth)
    return CRLNetworks(
        actor=Actor(spec.action_dim, width, actor_depth, remat, actor_unroll),
        sa_encoder=Encoder(repr_dim, width, critic_depth, remat, critic_unroll),
        goal_encoder=Encoder(repr_dim, width, critic_depth, remat, critic_unroll),
        state_dim=spec.state_dim,
        action_dim=spec.action_dim,
        goal_dim=spec.goal_dim,
        sensor_dim=sensor_dim,
    )
