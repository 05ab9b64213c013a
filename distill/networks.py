"""The network family shared by teachers and students.

Each network is an input projection (Dense, LayerNorm, swish), ``depth // 4`` residual blocks of
4 x [Dense, LayerNorm, swish] with the skip added after the last activation, then a head. The blocks'
parameters are stacked on a leading axis and applied with ``nn.scan``, so XLA compiles one block
whatever the depth; ``remat`` recomputes block activations in the backward pass to save memory.
``unrolled=True`` builds the same blocks with a Python loop (the paper's code); it exists only as a
benchmark reference because its compile time grows with depth.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

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
