"""Distillation losses as a table of terms.

Each term is a pure function ``term(student, teacher, config) -> (value, metrics)`` of the student's
outputs and the teacher's labels on the same batch; its weight is a field of ``StudentConfig``. The
distiller sums ``weight * value`` over the terms with a non-zero weight, so a new term is one function
here, one line in ``TERMS`` and one config field.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from distill.nn.networks import pairwise_energy


class Outputs(NamedTuple):
    """A policy's and critic's outputs on a batch (the student's, or the teacher's as labels)."""

    mean: jax.Array
    log_std: jax.Array
    phi: jax.Array
    psi: jax.Array
    teacher_q: jax.Array | None = None
    """Student side only: the teacher's Q at the student's deterministic action (critic guidance)."""


def gaussian_kl(mean_p, log_std_p, mean_q, log_std_q) -> jax.Array:
    """KL(p || q) of diagonal Gaussians, summed over the last axis.

    tanh is a bijection, so this is also the KL between the two tanh-Gaussian policies.
    """
    var_p, var_q = jnp.exp(2 * log_std_p), jnp.exp(2 * log_std_q)
    kl = log_std_q - log_std_p + (var_p + jnp.square(mean_p - mean_q)) / (2 * var_q) - 0.5
    return jnp.sum(kl, axis=-1)


def policy_loss(kind: str, teacher_mean, teacher_log_std, student_mean, student_log_std) -> tuple[jax.Array, dict]:
    """KL(teacher || student), MSE between deterministic actions, or their sum."""
    kl = jnp.mean(gaussian_kl(teacher_mean, teacher_log_std, student_mean, student_log_std))
    mse = jnp.mean(jnp.sum(jnp.square(jnp.tanh(student_mean) - jnp.tanh(teacher_mean)), axis=-1))
    loss = {"kl": kl, "mse": mse, "both": kl + mse}[kind]
    return loss, {"policy/kl": kl, "policy/action_mse": mse}


def representation_regression(student_phi, student_psi, teacher_phi, teacher_psi) -> jax.Array:
    """Direct matching: mean squared error of phi and psi against the teacher's."""
    return jnp.mean(jnp.sum(jnp.square(student_phi - teacher_phi), -1)) + jnp.mean(
        jnp.sum(jnp.square(student_psi - teacher_psi), -1)
    )


def relational_kl(student_phi, student_psi, teacher_phi, teacher_psi, temperature: float) -> jax.Array:
    """KL between the teacher's and the student's softmax over the batch of goals, row by row.

    The logits are the contrastive energies, so a student that matches this ranks goals for each
    (s, a) the way the teacher's critic does, even where the embeddings differ.
    """
    teacher_logp = jax.nn.log_softmax(pairwise_energy(teacher_phi, teacher_psi) / temperature, axis=1)
    student_logp = jax.nn.log_softmax(pairwise_energy(student_phi, student_psi) / temperature, axis=1)
    return jnp.mean(jnp.sum(jnp.exp(teacher_logp) * (teacher_logp - student_logp), axis=1))


def critic_guidance(teacher_q: jax.Array) -> jax.Array:
    """Pushes the student's action up the teacher's critic: minimise -Q_teacher(s, pi_student, g)."""
    return -jnp.mean(teacher_q)


# ---- the terms ---------------------------------------------------------------------------------


def policy_term(student: Outputs, teacher: Outputs, config) -> tuple[jax.Array, dict]:
    return policy_loss(config.policy_loss, teacher.mean, teacher.log_std, student.mean, student.log_std)


def representation_term(student: Outputs, teacher: Outputs, config) -> tuple[jax.Array, dict]:
    value = representation_regression(student.phi, student.psi, teacher.phi, teacher.psi)
    return value, {"repr/regression": value}


def relational_term(student: Outputs, teacher: Outputs, config) -> tuple[jax.Array, dict]:
    value = relational_kl(student.phi, student.psi, teacher.phi, teacher.psi, config.temperature)
    return value, {"repr/relational_kl": value}


def critic_guidance_term(student: Outputs, teacher: Outputs, config) -> tuple[jax.Array, dict]:
    value = critic_guidance(student.teacher_q)
    return value, {"policy/teacher_q": -value}


Term = Callable[[Outputs, Outputs, object], tuple[jax.Array, dict]]

# name -> (term, the StudentConfig field holding its weight)
TERMS: dict[str, tuple[Term, str]] = {
    "policy": (policy_term, "policy_weight"),
    "representation": (representation_term, "representation_weight"),
    "relational": (relational_term, "relational_weight"),
    "critic_guidance": (critic_guidance_term, "critic_guidance_weight"),
}


def total_loss(student: Outputs, teacher: Outputs, config) -> tuple[jax.Array, dict]:
    """sum of weight * term over the terms whose weight is not zero, with every term's metrics."""
    total, metrics = jnp.zeros(()), {}
    for name, (term, weight_field) in TERMS.items():
        weight = getattr(config, weight_field)
        if weight == 0:
            continue
        value, term_metrics = term(student, teacher, config)
        total = total + weight * value
        metrics.update(term_metrics)
        metrics[f"loss/{name}"] = value
    metrics["loss"] = total
    return total, metrics
