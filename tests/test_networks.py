import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill.envs import EnvSpec
from distill.errors import DistillError
from distill.nn.networks import (
    LOG_STD_MAX,
    LOG_STD_MIN,
    Actor,
    Encoder,
    check_block_unroll,
    count_params,
    make_crl_networks,
    resolve_block_unroll,
)
from distill.store.legacy import stack_blocks, unstack_blocks

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


@pytest.mark.parametrize("depth", [4, 16])
def test_every_unroll_computes_the_same_outputs_and_gradients(depth):
    """The unroll changes the program, never the function: outputs and gradients of every unroll,
    with and without remat, equal the plain loop's from the same stacked parameters."""
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 10))
    plain = Actor(2, 32, depth, unroll=1)
    params = plain.init(jax.random.PRNGKey(1), x)

    def loss(module):
        return jax.value_and_grad(lambda p: sum(jnp.sum(jnp.sin(o)) for o in module.apply(p, x)))(params)

    value, grads = loss(plain)
    for unroll in (2, 3, depth // 4):
        for remat in (False, True):
            other_value, other_grads = loss(Actor(2, 32, depth, remat=remat, unroll=unroll))
            np.testing.assert_allclose(other_value, value, rtol=1e-5)
            for a, b in zip(jax.tree.leaves(other_grads), jax.tree.leaves(grads)):
                np.testing.assert_allclose(a, b, atol=1e-5)


def test_unrolled_layout_converts_to_the_stacked_one_and_back():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 10))
    actor = Actor(2, 32, 12)
    params = actor.init(jax.random.PRNGKey(1), x)["params"]
    unrolled = unstack_blocks(params)
    assert sorted(k for k in unrolled["tower"] if k.startswith("block")) == ["block_0", "block_1", "block_2"]
    restacked = stack_blocks(unrolled)
    assert jax.tree.structure(restacked) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(restacked), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "value, message",
    [
        ("0", "at least 1"),
        (0, "at least 1"),
        ("-2", "at least 1"),
        ("two", "positive integer"),
        ("1.5", "positive integer"),
        (True, "positive integer"),
    ],
)
def test_bad_block_unroll_is_refused(value, message):
    with pytest.raises(DistillError, match=message):
        check_block_unroll(value)


def test_block_unroll_resolves_per_backend():
    assert resolve_block_unroll("auto", 1024, "cpu") == 1
    assert resolve_block_unroll("auto", 64, "gpu") == 16
    assert resolve_block_unroll("all", 64, "cpu") == 16
    assert resolve_block_unroll("8", 16, "cpu") == 4  # never more than the tower has
    assert resolve_block_unroll(3, 64, "gpu") == 3


def test_depth_zero_tower_is_projection_only():
    params = param_shapes(Encoder(8, 16, 0), 4)
    assert "blocks" not in params["tower"]
    assert count_params(params) == 4 * 16 + 16 + 32 + 16 * 8 + 8
