"""ONNX export: real Flax networks, real onnxruntime sessions, real files; no mocks.

Parameters are perturbed after init because a fresh network has zero biases and unit LayerNorm
scales: with those, a graph that swapped or dropped them would still match.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest

from distill.envs import get_spec
from distill.errors import DistillError
from distill.nn.networks import energy, make_crl_networks
from export.onnx_graph import critic_graph, policy_graph, read_metadata, set_metadata
from export.parity import parity_gate, write_verified
from export.runtime import OnnxCritic, OnnxPolicy, PolicyFileError, PolicyInputError
from tests.conftest import ROOT

SPEC = get_spec("reacher")
DIMS = dict(state_dim=SPEC.state_dim, goal_dim=SPEC.goal_dim, action_dim=SPEC.action_dim)
POLICY_INPUTS = {"obs": SPEC.state_dim, "goal": SPEC.goal_dim}
CRITIC_INPUTS = {"obs": SPEC.state_dim, "action": SPEC.action_dim, "goal": SPEC.goal_dim}


def init_params(module, in_dim: int, seed: int):
    """Random init, then every leaf perturbed; jitted because eager init dispatches op by op."""

    @jax.jit
    def init(key):
        params = module.init(key, jnp.zeros((1, in_dim)))["params"]
        leaves, tree = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
        return jax.tree.unflatten(tree, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])

    return init(jax.random.PRNGKey(seed))


def make_actor(depth: int, width: int, seed: int = 0):
    nets = make_crl_networks(SPEC, actor_depth=depth, critic_depth=4, width=width)
    return nets, init_params(nets.actor, SPEC.state_dim + SPEC.goal_dim, seed)


def make_critic(depth: int, width: int, seed: int = 0):
    nets = make_crl_networks(SPEC, actor_depth=4, critic_depth=depth, width=width, repr_dim=32)
    return nets, {
        "sa_encoder": init_params(nets.sa_encoder, SPEC.state_dim + SPEC.action_dim, seed),
        "goal_encoder": init_params(nets.goal_encoder, SPEC.goal_dim, seed + 1),
    }


def jax_policy(nets, actor_params, scale=1.0, offset=0.0):
    @jax.jit
    def act(obs, goal):
        mean, _ = nets.policy(actor_params, jnp.concatenate([obs, goal], axis=-1))
        return offset + scale * jnp.tanh(mean)

    return act


def jax_critic(nets, params):
    @jax.jit
    def critic(obs, action, goal):
        phi = nets.phi(params["sa_encoder"], obs, action)
        psi = nets.psi(params["goal_encoder"], goal)
        return {"phi": phi, "psi": psi, "q": energy(phi, psi)}

    return critic


@pytest.fixture(scope="module")
def small_policy(tmp_path_factory):
    """A verified depth-4, width-32 policy file and its JAX twin, shared by the runtime tests."""
    nets, params = make_actor(depth=4, width=32)
    path = tmp_path_factory.mktemp("small") / "policy.onnx"
    act = jax_policy(nets, params)
    write_verified(policy_graph(params, **DIMS), path, act, POLICY_INPUTS, {"env": "reacher"})
    return path, act


@pytest.mark.parametrize("width", [256, 32])
@pytest.mark.parametrize("depth", [0, 4, 8])
def test_policy_parity_and_file_format(tmp_path, depth, width):
    nets, params = make_actor(depth, width)
    act = jax_policy(nets, params)
    path = tmp_path / "policy.onnx"
    report = write_verified(policy_graph(params, **DIMS), path, act, POLICY_INPUTS, {"env": "reacher"})

    assert set(report["per_batch"]) == {"1", "2", "7", "1024"}
    assert all(err <= 1e-5 for errs in report["per_batch"].values() for err in errs.values()), report
    assert report["reference"]["action"] <= 1e-5
    # One self-contained file: no external-data sidecar and no temporary file left beside it.
    assert [p.name for p in tmp_path.iterdir()] == ["policy.onnx"]
    model = onnx.load(str(path))
    assert model.ir_version <= 9
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert any(n.op_type == "LayerNormalization" for n in model.graph.node)
    meta = read_metadata(path)
    assert meta["depth"] == depth and meta["width"] == width and meta["env"] == "reacher"
    assert meta["parity_max_abs_error"] == report["max_abs_error"] <= 1e-5

    # The JAX-free runtime gives the same actions, for one observation and for a batch.
    policy = OnnxPolicy(path)
    rng = np.random.default_rng(1)
    obs, goal = rng.normal(size=(5, SPEC.state_dim)), rng.normal(size=(5, SPEC.goal_dim))
    want = np.asarray(act(obs.astype(np.float32), goal.astype(np.float32)))
    np.testing.assert_allclose(policy(obs, goal), want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(policy(obs[0], goal[0]), want[0], atol=1e-5, rtol=0)


def test_action_scale_and_offset_are_in_the_graph(tmp_path):
    nets, params = make_actor(depth=4, width=32, seed=3)
    scale, offset = np.array([0.5, 2.0]), np.array([0.1, -0.3])
    act = jax_policy(nets, params, scale, offset)
    model = policy_graph(params, **DIMS, action_scale=scale, action_offset=offset)
    write_verified(model, tmp_path / "p.onnx", act, POLICY_INPUTS)
    policy = OnnxPolicy(tmp_path / "p.onnx")
    assert policy.metadata["action_scale"] == [0.5, 2.0]
    assert policy.metadata["action_offset"] == pytest.approx([0.1, -0.3])
    assert "in graph" in policy.metadata["action_transform"]
    actions = policy(100 * np.ones((64, SPEC.state_dim)), np.zeros((64, SPEC.goal_dim)) + 0.5)
    assert np.all(np.abs(actions - offset) <= scale + 1e-6)


@pytest.mark.parametrize("depth, rtol", [(0, 0.0), (4, 0.0), (8, 1e-5)])
def test_critic_parity(tmp_path, depth, rtol):
    # q grows with depth (|q| ~ 20 at depth 8) and float32 keeps ~7 digits of it, so the deepest
    # critic is gated with a relative term too; phi and psi still meet atol 1e-5.
    nets, params = make_critic(depth, width=256)
    model = critic_graph(params["sa_encoder"], params["goal_encoder"], **DIMS)
    fn = jax_critic(nets, params)
    report = write_verified(model, tmp_path / "critic.onnx", fn, CRITIC_INPUTS, rtol=rtol)
    assert report["onnxruntime"]["phi"] <= 1e-5 and report["onnxruntime"]["psi"] <= 1e-5, report
    assert report["tolerance_used"] <= 1.0

    critic = OnnxCritic(tmp_path / "critic.onnx")
    rng = np.random.default_rng(2)
    obs, action, goal = (rng.normal(size=(3, d)).astype(np.float32) for d in CRITIC_INPUTS.values())
    want = fn(obs=obs, action=action, goal=goal)
    np.testing.assert_allclose(critic(obs, action, goal), want["q"], rtol=1e-5, atol=1e-5)
    single = critic.outputs(obs[0], action[0], goal[0])
    assert single["phi"].shape == (32,) and np.ndim(single["q"]) == 0
    with pytest.raises(PolicyFileError, match="critic"):
        OnnxPolicy(tmp_path / "critic.onnx")


def test_metadata_round_trip(tmp_path, small_policy):
    path, _ = small_policy
    values = {
        "version_string": "1",  # a string that looks like JSON stays a string
        "control_dt": 0.1 + 0.2,  # full float precision survives
        "obs_mean": np.linspace(0, 1, 7, dtype=np.float64),
        "goal_slice": [0, 2],
        "teacher": {"sha256": "ab" * 32, "depth": 64},
        "clip": None,
        "flag": False,
    }
    model = set_metadata(onnx.load(str(path)), values)
    onnx.save(model, str(tmp_path / "m.onnx"))
    for source in (model, tmp_path / "m.onnx"):
        meta = read_metadata(source)
        assert meta["version_string"] == "1"
        assert meta["control_dt"] == 0.1 + 0.2
        assert meta["obs_mean"] == np.linspace(0, 1, 7).tolist()
        assert meta["goal_slice"] == [0, 2] and meta["teacher"]["depth"] == 64
        assert meta["clip"] is None and meta["flag"] is False
    runtime_meta = OnnxPolicy(tmp_path / "m.onnx").metadata
    assert runtime_meta == read_metadata(tmp_path / "m.onnx")
    assert runtime_meta["parity"]["batch_sizes"] == [1, 2, 7, 1024]


def test_metadata_cannot_contradict_the_graph(tmp_path, small_policy):
    path, act = small_policy
    with pytest.raises(DistillError, match="state_dim"):
        write_verified(onnx.load(str(path)), tmp_path / "p.onnx", act, POLICY_INPUTS, {"state_dim": 3})
    assert not any(tmp_path.iterdir())


def test_failing_gate_leaves_no_file(tmp_path, small_policy):
    path, act = small_policy
    model = onnx.load(str(path))

    def off_by_a_little(obs, goal):
        return act(obs, goal) + 1e-3

    out = tmp_path / "policy.onnx"
    with pytest.raises(DistillError, match="parity check failed") as err:
        write_verified(model, out, off_by_a_little, POLICY_INPUTS)
    assert "\n" not in str(err.value)
    assert "policy.onnx" in str(err.value) and ".tmp" not in str(err.value)
    assert not any(tmp_path.iterdir())
    # A verified file already there stays exactly as it was.
    out.write_bytes(path.read_bytes())
    with pytest.raises(DistillError):
        write_verified(model, out, off_by_a_little, POLICY_INPUTS)
    assert out.read_bytes() == path.read_bytes() and len(list(tmp_path.iterdir())) == 1


def test_gate_catches_a_wrong_graph(tmp_path, small_policy):
    path, act = small_policy
    model = onnx.load(str(path))
    # Drop the final Tanh's input for the pre-tanh mean: the file is valid ONNX but acts wrongly.
    tanh = next(n for n in model.graph.node if n.op_type == "Tanh")
    tanh.op_type = "Identity"
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    with pytest.raises(DistillError, match="'action'"):
        parity_gate(tmp_path / "wrong.onnx", act, POLICY_INPUTS, batch_sizes=(1, 7))


def test_unwritable_output_path(tmp_path, small_policy):
    path, act = small_policy
    model = onnx.load(str(path))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    for target in (blocker / "policy.onnx", tmp_path):
        with pytest.raises(DistillError, match="cannot write ONNX file") as err:
            write_verified(model, target, act, POLICY_INPUTS)
        assert "\n" not in str(err.value)


def test_policy_graph_rejects_mismatched_parameters():
    _, params = make_actor(depth=0, width=16)
    with pytest.raises(DistillError, match="inputs"):
        policy_graph(params, state_dim=SPEC.state_dim + 1, goal_dim=SPEC.goal_dim, action_dim=SPEC.action_dim)
    with pytest.raises(DistillError, match="actions"):
        policy_graph(params, state_dim=SPEC.state_dim, goal_dim=SPEC.goal_dim, action_dim=5)
    with pytest.raises(DistillError, match="opset 21"):
        policy_graph(params, **DIMS, opset=21)
    with pytest.raises(DistillError, match="action_scale"):
        policy_graph(params, **DIMS, action_scale=[1.0, 2.0, 3.0])


def test_runtime_shapes_and_dtypes(small_policy):
    path, act = small_policy
    policy = OnnxPolicy(path)
    assert (policy.state_dim, policy.goal_dim, policy.action_dim) == (SPEC.state_dim, SPEC.goal_dim, SPEC.action_dim)
    obs, goal = np.full(SPEC.state_dim, 0.3, np.float32), np.full(SPEC.goal_dim, -0.2, np.float32)
    one = policy(obs, goal)
    assert one.shape == (SPEC.action_dim,) and one.dtype == np.float32
    assert policy(obs[None], goal[None]).shape == (1, SPEC.action_dim)
    # float64 arrays and plain lists of floats are cast to float32.
    np.testing.assert_allclose(policy(obs.astype(np.float64), goal.tolist()), one, atol=1e-6)
    np.testing.assert_allclose(one, np.asarray(act(obs[None], goal[None]))[0], atol=1e-5)


BAD_INPUTS = [
    ("short obs", np.zeros(SPEC.state_dim - 1), np.zeros(SPEC.goal_dim), "shape"),
    ("3-D obs", np.zeros((1, 1, SPEC.state_dim)), np.zeros(SPEC.goal_dim), "shape"),
    ("scalar goal", np.zeros(SPEC.state_dim), np.float32(1.0), "shape"),
    ("empty batch", np.zeros((0, SPEC.state_dim)), np.zeros((0, SPEC.goal_dim)), "empty"),
    ("mixed ranks", np.zeros((2, SPEC.state_dim)), np.zeros(SPEC.goal_dim), "single and batched"),
    ("batch mismatch", np.zeros((2, SPEC.state_dim)), np.zeros((3, SPEC.goal_dim)), "batch sizes"),
    ("int obs", np.zeros(SPEC.state_dim, np.int64), np.zeros(SPEC.goal_dim), "dtype int64"),
    ("bool goal", np.zeros(SPEC.state_dim), np.zeros(SPEC.goal_dim, bool), "dtype bool"),
    ("float16 obs", np.zeros(SPEC.state_dim, np.float16), np.zeros(SPEC.goal_dim), "dtype float16"),
    ("object obs", np.array([None] * SPEC.state_dim), np.zeros(SPEC.goal_dim), "dtype object"),
    ("string goal", np.zeros(SPEC.state_dim), ["a", "b"], "dtype <U1"),
    ("ragged obs", [[0.0] * SPEC.state_dim, [0.0]], np.zeros((2, SPEC.goal_dim)), "rectangular"),
    ("nan obs", np.r_[np.zeros(SPEC.state_dim - 1), np.nan], np.zeros(SPEC.goal_dim), "NaN or inf"),
    ("inf goal", np.zeros((2, SPEC.state_dim)), np.array([[0, 0], [0, -np.inf]]), "NaN or inf"),
    ("float64 overflow", np.full(SPEC.state_dim, 1e300), np.zeros(SPEC.goal_dim), "NaN or inf"),
]


@pytest.mark.parametrize("obs, goal, fragment", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_runtime_rejects_bad_inputs(small_policy, obs, goal, fragment):
    policy = OnnxPolicy(small_policy[0])
    with pytest.raises(PolicyInputError, match=fragment) as err:
        policy(obs, goal)
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_single_call_refuses_every_non_finite_input_position(small_policy, bad):
    """The batch-1 fast path checks the inputs in one pass; a bad value anywhere must be found and named."""
    policy = OnnxPolicy(small_policy[0])
    for name, dim in (("obs", SPEC.state_dim), ("goal", SPEC.goal_dim)):
        for i in range(dim):
            obs, goal = np.full(SPEC.state_dim, 0.3, np.float32), np.full(SPEC.goal_dim, -0.2, np.float32)
            (obs if name == "obs" else goal)[i] = bad
            with pytest.raises(PolicyInputError, match=f"{name} contains NaN or inf .first at index \\[{i}\\]"):
                policy(obs, goal)


def test_single_call_checks_wide_inputs_too(tmp_path):
    """Past SUM_CHECK_MAX input values the fast path checks them with numpy instead; same refusals."""
    from export.runtime import SUM_CHECK_MAX

    spec = get_spec("humanoid")
    assert spec.state_dim + spec.goal_dim > SUM_CHECK_MAX
    nets = make_crl_networks(spec, actor_depth=0, critic_depth=4, width=16)
    params = init_params(nets.actor, spec.state_dim + spec.goal_dim, seed=0)
    path = tmp_path / "wide.onnx"
    dims = dict(state_dim=spec.state_dim, goal_dim=spec.goal_dim, action_dim=spec.action_dim)
    write_verified(
        policy_graph(params, **dims),
        path,
        jax_policy(nets, params),
        {"obs": spec.state_dim, "goal": spec.goal_dim},
        {"env": "humanoid"},
    )
    policy = OnnxPolicy(path)
    obs, goal = np.full(spec.state_dim, 0.1, np.float32), np.full(spec.goal_dim, -0.1, np.float32)
    np.testing.assert_allclose(policy(obs, goal), policy(obs[None], goal[None])[0], atol=1e-6)
    for name, i in (("obs", 0), ("obs", spec.state_dim - 1), ("goal", 0), ("goal", spec.goal_dim - 1)):
        o, g = obs.copy(), goal.copy()
        (o if name == "obs" else g)[i] = np.nan
        with pytest.raises(PolicyInputError, match=f"{name} contains NaN or inf .first at index \\[{i}\\]"):
            policy(o, g)


def random_policy_inputs(batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A float32 batch of observations and goals, drawn from a standard normal."""
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((batch, SPEC.state_dim)).astype(np.float32),
        rng.standard_normal((batch, SPEC.goal_dim)).astype(np.float32),
    )


def test_single_call_matches_batch_and_returns_fresh_arrays(small_policy):
    policy = OnnxPolicy(small_policy[0])
    obs, goal = random_policy_inputs(5, seed=0)
    batch = policy(obs, goal)
    singles = [policy(o, g) for o, g in zip(obs, goal)]  # each call reuses the bound buffers
    np.testing.assert_allclose(np.stack(singles), batch, atol=1e-6)
    assert len({id(a) for a in singles}) == len(singles) and not np.allclose(singles[0], singles[1])
    # Strided (non-contiguous) float32 rows take the same path.
    np.testing.assert_allclose(policy(obs.T.copy().T[0], goal[0]), batch[0], atol=1e-6)


def test_policy_can_be_shared_between_threads(small_policy):
    from concurrent.futures import ThreadPoolExecutor

    policy = OnnxPolicy(small_policy[0])
    obs, goal = random_policy_inputs(64, seed=1)
    expected = policy(obs, goal)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: policy(obs[i], goal[i]), [i for _ in range(20) for i in range(64)]))
    np.testing.assert_allclose(np.stack(results), np.tile(expected, (20, 1)), atol=1e-6)


def test_runtime_refuses_files_that_are_not_ours(tmp_path, small_policy):
    model = onnx.load(str(small_policy[0]))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "bare.onnx"))
    with pytest.raises(PolicyFileError, match="no distill metadata"):
        OnnxPolicy(tmp_path / "bare.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"definitely not protobuf")
    with pytest.raises(PolicyFileError, match="cannot load"):
        OnnxPolicy(tmp_path / "junk.onnx")
    with pytest.raises(PolicyFileError, match="no ONNX file"):
        OnnxPolicy(tmp_path / "missing.onnx")
    future = set_metadata(onnx.load(str(small_policy[0])), {"distill_format": "99"})
    onnx.save(future, str(tmp_path / "future.onnx"))
    with pytest.raises(PolicyFileError, match="format '99'"):
        OnnxPolicy(tmp_path / "future.onnx")


BLOCKED_IMPORT_SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    BLOCKED = ("jax", "jaxlib", "flax", "brax", "distill", "teachers", "students")

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
    import numpy as np
    from export.runtime import OnnxPolicy

    policy = OnnxPolicy(sys.argv[1])
    action = policy(np.full(policy.state_dim, 0.5), np.zeros(policy.goal_dim, np.float32))
    batch = policy(np.ones((3, policy.state_dim), np.float32), np.ones((3, policy.goal_dim), np.float32))
    assert action.shape == (policy.action_dim,) and batch.shape == (3, policy.action_dim)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("ok " + json.dumps(action.tolist()))
    """
)


def test_runtime_imports_without_jax(small_policy):
    path, act = small_policy
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")
    action = np.array(json.loads(result.stdout.split("ok", 1)[1]))
    want = np.asarray(act(np.full((1, SPEC.state_dim), 0.5, np.float32), np.zeros((1, SPEC.goal_dim), np.float32)))[0]
    np.testing.assert_allclose(action, want, atol=1e-5)
