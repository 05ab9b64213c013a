import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill.envs import EnvSpec
from distill.networks import LOG_STD_MAX, LOG_STD_MIN, Actor, Encoder, count_params
from distill.networks import make_crl_networks

HUMANOID_LIKE = EnvSpec("humanoid_like", 268, (0, 1, 2), 17, 0.5, 1000, "", lambda **_: None)


def param_shapes(module, in_dim):
    return jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, in_dim)))["params"]


def expected_tower(in_dim, width, depth):
    projection = in_dim * width + width + 2 * width
    block = 4 * (width * width + width + 2 * width)
    return projection + (depth // 4) * block


@pytest.mark.parametrize("depth", [4, 64, 1024])
def test_param_counts_follow_the_architecture(depth):
    params = param_shapes(Encoder(64, 256, depth), 268 + 17)
    assert count_params(params) == expected_tower(268 + 17, 256, depth) + 256 * 64 + 64
    # Blocks are stacked on one leading axis whatever the depth (what makes scan possible).
    assert params["tower"]["blocks"]["block"]["dense_0"]["kernel"].shape == (depth // 4, 256, 256)


def test_paper_parameter_counts_at_width_256():
    nets = make_crl_networks(HUMANOID_LIKE, actor_depth=4, critic_depth=4)
    params = jax.eval_shape(nets.init, jax.random.PRNGKey(0))
    counts = {name: count_params(p) for name, p in params.items()}
    # The paper reports about 0.35M parameters per network at depth 4 for humanoid-sized inputs.
    for name in ("actor", "sa_encoder"):
        assert 0.33e6 < counts[name] < 0.37e6, counts
    deep = count_params(param_shapes(Encoder(64, 256, 64), 268 + 17))
    assert 4.1e6 < deep < 4.5e6  # ~4.3M at depth 64


def test_shapes_and_log_std_range():
    nets = make_crl_networks(HUMANOID_LIKE, actor_depth=8, critic_depth=4, width=32, repr_dim=16)
    params = nets.init(jax.random.PRNGKey(1))
    obs = 100.0 * jax.random.normal(jax.random.PRNGKey(2), (5, 268 + 3))
    mean, log_std = nets.policy(params["actor"], obs)
    assert mean.shape == log_std.shape == (5, 17)
    assert np.all(log_std >= LOG_STD_MIN) and np.all(log_std <= LOG_STD_MAX)
    phi = nets.phi(params["sa_encoder"], obs[:, :268], jnp.zeros((5, 17)))
    psi = nets.psi(params["goal_encoder"], obs[:, 268:])
    assert phi.shape == psi.shape == (5, 16)


def test_scan_remat_and_unrolled_compute_the_same_function():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 10))
    scanned = Actor(2, 32, 12)
    params = scanned.init(jax.random.PRNGKey(1), x)
    remat_out = Actor(2, 32, 12, remat=True).apply(params, x)
    # Move the stacked block parameters into the unrolled layout and compare outputs.
    unrolled = Actor(2, 32, 12, unrolled=True)
    p = jax.tree.map(lambda a: a, params["params"])
    stacked = p["tower"].pop("blocks")["block"]
    for i in range(3):
        p["tower"][f"block_{i}"] = jax.tree.map(lambda a: a[i], stacked)
    unrolled_out = unrolled.apply({"params": p}, x)
    base_out = scanned.apply(params, x)
    for a, b, c in zip(base_out, remat_out, unrolled_out):
        np.testing.assert_allclose(a, b, atol=1e-6)
        np.testing.assert_allclose(a, c, atol=1e-5)


def test_depth_zero_tower_is_projection_only():
    params = param_shapes(Encoder(8, 16, 0), 4)
    assert "blocks" not in params["tower"]
    assert count_params(params) == 4 * 16 + 16 + 32 + 16 * 8 + 8
