"""Pure loss functions of contrastive RL (forward InfoNCE critic, SAC-style actor and alpha)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from distill.data.replay import Batch
from distill.nn.networks import CRLNetworks, energy, pairwise_energy, sample_action


def weighted_mean(x: jax.Array, weight: jax.Array) -> jax.Array:
    return jnp.sum(x * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def infonce_loss(logits: jax.Array, weight: jax.Array, logsumexp_penalty: float) -> tuple[jax.Array, dict]:
    """Forward InfoNCE over rows of ``logits[i, j] = f(s_i, a_i, g_j)``, positives on the diagonal.

    The logsumexp^2 term keeps the logits from drifting (the paper's 0.1 regulariser).
    """
    lse = jax.nn.logsumexp(logits, axis=1)
    nce = -weighted_mean(jnp.diag(logits) - lse, weight)
    penalty = logsumexp_penalty * weighted_mean(jnp.square(lse), weight)
    correct = jnp.argmax(logits, axis=1) == jnp.arange(logits.shape[0])
    metrics = {
        "critic/infonce": nce,
        "critic/accuracy": weighted_mean(correct.astype(jnp.float32), weight),
        "critic/logits_pos": weighted_mean(jnp.diag(logits), weight),
        "critic/logits_neg": jnp.mean(logits),
    }
    return nce + penalty, metrics


def critic_loss(critic_params: dict, networks: CRLNetworks, batch: Batch, logsumexp_penalty: float):
    phi = networks.phi(critic_params["sa_encoder"], batch.state, batch.action)
    psi = networks.psi(critic_params["goal_encoder"], batch.goal)
    return infonce_loss(pairwise_energy(phi, psi), batch.weight, logsumexp_penalty)


def actor_loss(
    actor_params: dict,
    critic_params: dict,
    networks: CRLNetworks,
    batch: Batch,
    alpha: jax.Array,
    key: jax.Array,
    actor_input: jax.Array | None = None,
):
    """E[alpha * log pi(a|s,g) - f(s, a, g)] with a reparameterised action and the relabelled goal.

    ``actor_input`` is what the actor read at each state instead of the state (a sensor vector); the
    critic f still scores the true state."""
    seen = batch.state if actor_input is None else actor_input
    mean, log_std = networks.policy(actor_params, jnp.concatenate([seen, batch.goal], axis=-1))
    action, log_prob = sample_action(key, mean, log_std)
    phi = networks.phi(critic_params["sa_encoder"], batch.state, action)
    psi = networks.psi(critic_params["goal_encoder"], batch.goal)
    q = energy(phi, psi)
    loss = weighted_mean(alpha * log_prob - q, batch.weight)
    return loss, {
        "actor/q": weighted_mean(q, batch.weight),
        "actor/entropy": -weighted_mean(log_prob, batch.weight),
        "log_prob": log_prob,
    }


def alpha_loss(log_alpha: jax.Array, log_prob: jax.Array, weight: jax.Array, target_entropy: float) -> jax.Array:
    """SAC temperature loss: raises alpha while entropy is below target, lowers it above."""
    return weighted_mean(jnp.exp(log_alpha) * jax.lax.stop_gradient(-log_prob - target_entropy), weight)
