import math

import jax
import jax.numpy as jnp
import numpy as np

from distill.nn.networks import pairwise_energy, sample_action
from teachers.losses import alpha_loss, infonce_loss


def test_energy_is_negative_l2_distance():
    phi = jnp.array([[0.0, 0.0], [3.0, 4.0]])
    psi = jnp.array([[0.0, 0.0], [6.0, 8.0]])
    np.testing.assert_allclose(pairwise_energy(phi, psi), [[0.0, -10.0], [-5.0, -5.0]], atol=1e-5)


def test_infonce_on_hand_computed_example():
    logits = jnp.array([[0.0, -5.0], [-5.0, 0.0]])
    loss, metrics = infonce_loss(logits, jnp.ones(2), logsumexp_penalty=0.1)
    lse = math.log(1.0 + math.exp(-5.0))
    np.testing.assert_allclose(metrics["critic/infonce"], lse, rtol=1e-6)
    np.testing.assert_allclose(loss, lse + 0.1 * lse**2, rtol=1e-6)
    assert metrics["critic/accuracy"] == 1.0


def test_infonce_rows_without_future_are_ignored_but_still_negatives():
    logits = jnp.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [9.0, 9.0, -9.0]])
    loss, _ = infonce_loss(logits, jnp.array([1.0, 1.0, 0.0]), logsumexp_penalty=0.0)
    row0 = -(1.0 - math.log(math.e + 2))
    row1 = -(2.0 - math.log(math.e**2 + 2))
    np.testing.assert_allclose(loss, (row0 + row1) / 2, rtol=1e-6)


def test_tanh_gaussian_log_prob_matches_change_of_variables():
    mean, log_std = jnp.array([[0.3, -0.2]]), jnp.array([[-1.0, -0.5]])
    action, log_prob = sample_action(jax.random.PRNGKey(0), mean, log_std)
    pre = jnp.arctanh(action)
    std = jnp.exp(log_std)
    gauss = -0.5 * ((pre - mean) / std) ** 2 - jnp.log(std) - 0.5 * jnp.log(2 * jnp.pi)
    expected = jnp.sum(gauss - jnp.log(1 - action**2 + 1e-6), axis=-1)
    np.testing.assert_allclose(log_prob, expected, rtol=1e-4)


def test_alpha_loss_pushes_alpha_toward_target_entropy():
    target = -1.0
    low_entropy_logp = jnp.array([3.0, 3.0])  # entropy -3 < target: alpha must grow
    grad = jax.grad(alpha_loss)(jnp.zeros(()), low_entropy_logp, jnp.ones(2), target)
    assert grad < 0  # gradient descent increases log_alpha
    high_entropy_logp = jnp.array([-3.0, -3.0])
    assert jax.grad(alpha_loss)(jnp.zeros(()), high_entropy_logp, jnp.ones(2), target) > 0
