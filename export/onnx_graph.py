"""ONNX graphs built directly from a student's Flax parameters.

The graphs are written node by node with ``onnx.helper`` instead of tracing JAX: that keeps full control
of input/output names, opset, IR version and metadata, writes one self-contained file, and adds no
dependency beyond ``onnx``. Each layer of ``distill.nn.networks`` maps onto one or two ONNX ops:

    Dense      -> Gemm (kernel [in, out] as B, bias as C)
    LayerNorm  -> LayerNormalization (opset 17, axis -1, flax's epsilon 1e-6)
    swish      -> x * Sigmoid(x)
    block skip -> Add

Only the deterministic policy is exported: ``action = offset + scale * tanh(mean)``; the log-std head
and sampling stay in JAX. Every graph is stamped with metadata saying what it computes (see
``set_metadata``), so a deployer never has to guess whether scaling is already applied.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from distill import __version__
from distill.errors import DistillError

FORMAT_VERSION = "1"
# LayerNormalization is an ONNX op from opset 17; opset 21 needs IR 10, which onnxruntime <= 1.17
# (still common on robots) refuses. So 17..20 are the opsets we can write at IR <= 9.
MIN_OPSET, MAX_OPSET = 17, 20
MAX_IR_VERSION = 9
LAYER_NORM_EPSILON = 1e-6  # flax.linen.LayerNorm's default
ENERGY_EPSILON = 1e-12  # distill.nn.networks.energy adds this inside the sqrt
LAYERS_PER_BLOCK = 4
BATCH = "batch"
# Which metadata values are JSON-encoded, so read_metadata can decode exactly those (a plain string
# such as "1" must come back as a string, not as the number 1).
JSON_KEYS = "distill_json_keys"


class _Graph:
    """Accumulates nodes and float32 initializers with readable, unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: Any) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], name: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attrs))
        return name


def _array(tree: Mapping, *keys: str) -> np.ndarray:
    """A parameter leaf as a float32 numpy array (leaves may be jax arrays of any float dtype)."""
    node: Any = tree
    for key in keys:
        try:
            node = node[key]
        except (KeyError, TypeError):
            raise DistillError(f"parameters have no '{'/'.join(keys)}'; not a distill network") from None
    return np.asarray(node, dtype=np.float32)


def _subtree(params: Mapping, key: str, what: str) -> Mapping:
    try:
        return params[key]
    except (KeyError, TypeError):
        raise DistillError(f"{what} parameters have no '{key}'; not a distill network") from None


def _dense(g: _Graph, x: str, params: Mapping, prefix: str, out: str | None = None) -> str:
    """Gemm computes x @ kernel + bias on [batch, in] inputs, the layout flax's Dense uses."""
    kernel = g.const(f"{prefix}/kernel", _array(params, "kernel"))
    bias = g.const(f"{prefix}/bias", _array(params, "bias"))
    return g.op("Gemm", [x, kernel, bias], out or f"{prefix}/gemm")


def _layer_norm(g: _Graph, x: str, params: Mapping, prefix: str) -> str:
    scale = g.const(f"{prefix}/scale", _array(params, "scale"))
    bias = g.const(f"{prefix}/bias", _array(params, "bias"))
    return g.op("LayerNormalization", [x, scale, bias], f"{prefix}/layer_norm", axis=-1, epsilon=LAYER_NORM_EPSILON)


def _swish(g: _Graph, x: str, prefix: str) -> str:
    return g.op("Mul", [x, g.op("Sigmoid", [x], f"{prefix}/sigmoid")], f"{prefix}/swish")


def _layer(g: _Graph, x: str, dense: Mapping, norm: Mapping, prefix: str) -> str:
    """Dense -> LayerNorm -> swish, the unit every tower is made of."""
    h = _dense(g, x, dense, f"{prefix}/dense")
    h = _layer_norm(g, h, norm, f"{prefix}/norm")
    return _swish(g, h, prefix)


def _tower_blocks(tower: Mapping) -> list[Mapping]:
    """Per-block parameter dicts from the stacked layout ('blocks/block', a leading block axis; runs
    saved unrolled are converted when their checkpoints are read). A depth-0 tower has none."""
    if "blocks" not in tower:
        return []
    # Convert each stacked leaf once, then slice: nn.scan put block i at index i of axis 0.
    stacked = {
        layer: {name: _array(leaves, name) for name in leaves}
        for layer, leaves in _subtree(tower["blocks"], "block", "tower").items()
    }
    num_blocks = stacked["dense_0"]["kernel"].shape[0]
    return [
        {layer: {name: arr[i] for name, arr in leaves.items()} for layer, leaves in stacked.items()}
        for i in range(num_blocks)
    ]


def count_blocks(tower: Mapping) -> int:
    """Residual blocks in a tower's parameters (0 for a depth-0 network: projection + head only)."""
    return len(_tower_blocks(tower))


def _tower(g: _Graph, x: str, tower: Mapping, prefix: str) -> str:
    h = _layer(g, x, tower["input"], tower["input_norm"], f"{prefix}/input")
    for i, block in enumerate(_tower_blocks(tower)):
        skip = h
        for j in range(LAYERS_PER_BLOCK):
            h = _layer(g, h, block[f"dense_{j}"], block[f"norm_{j}"], f"{prefix}/block_{i}/layer_{j}")
        # ResidualBlock adds the skip after the last activation.
        h = g.op("Add", [skip, h], f"{prefix}/block_{i}/residual")
    return h


def _input(name: str, dim: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH, dim])


def _check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise DistillError(
            f"opset {opset} is not supported; choose {MIN_OPSET}-{MAX_OPSET} "
            f"(LayerNormalization needs 17, IR <= {MAX_IR_VERSION} allows at most {MAX_OPSET})"
        )


def _check_in_dim(tower: Mapping, expected: int, what: str) -> None:
    in_dim = _array(tower, "input", "kernel").shape[0]
    if in_dim != expected:
        raise DistillError(f"{what} parameters read {in_dim} inputs but the dimensions given add up to {expected}")


def _model(g: _Graph, name: str, inputs: list, outputs: list, opset: int, doc: str) -> onnx.ModelProto:
    graph = helper.make_graph(g.nodes, name, inputs, outputs, initializer=g.initializers, doc_string=doc)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="distill", producer_version=__version__)
    # make_model stamps the newest IR the onnx package knows (10+); pin the oldest IR that carries
    # this opset so older onnxruntime builds load the file.
    model.ir_version = helper.find_min_ir_version_for(opsets)
    return model


def _action_affine(value: float | Sequence[float], action_dim: int, what: str) -> np.ndarray:
    """A scalar or per-dimension scale/offset as a float32 vector of length action_dim."""
    message = f"{what} must be a finite number or {action_dim} finite numbers, got {value!r}"
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise DistillError(message) from None
    if arr.ndim == 0:
        arr = np.full(action_dim, arr, dtype=np.float32)
    if arr.shape != (action_dim,) or not np.all(np.isfinite(arr)):
        raise DistillError(message)
    # Stored as the float32 values the graph applies, so the metadata states exactly what runs.
    return arr


def policy_graph(
    actor_params: Mapping,
    *,
    state_dim: int,
    goal_dim: int,
    action_dim: int,
    action_scale: float | Sequence[float] = 1.0,
    action_offset: float | Sequence[float] = 0.0,
    opset: int = 17,
    sensor_dim: int = 0,
) -> onnx.ModelProto:
    """The deterministic policy ``(obs, goal) -> action = offset + scale * tanh(mean)``.

    With ``sensor_dim`` > 0 the policy reads a sensor vector of that size instead of the state: its
    inputs are ``(sensors, goal)`` (``distill.data.sensors``), and ``state_dim`` stays the simulator's."""
    _check_opset(opset)
    tower = _subtree(actor_params, "tower", "actor")
    first = "sensors" if sensor_dim else "obs"
    first_dim = sensor_dim or state_dim
    _check_in_dim(tower, first_dim + goal_dim, "actor")
    head_dim = _array(actor_params, "mean", "kernel").shape[1]
    if head_dim != action_dim:
        raise DistillError(f"actor parameters produce {head_dim} actions, expected action_dim={action_dim}")
    scale = _action_affine(action_scale, action_dim, "action_scale")
    offset = _action_affine(action_offset, action_dim, "action_offset")

    g = _Graph()
    # The actor reads concat[state or sensors, goal], exactly as CRLNetworks.policy is called.
    x = g.op("Concat", [first, "goal"], "actor/concat", axis=-1)
    h = _tower(g, x, tower, "actor/tower")
    mean = _dense(g, h, _subtree(actor_params, "mean", "actor"), "actor/mean")
    is_identity = np.all(scale == 1.0) and np.all(offset == 0.0)
    action = g.op("Tanh", [mean], "action" if is_identity else "actor/tanh")
    if not is_identity:
        scaled = g.op("Mul", [action, g.const("actor/action_scale", scale)], "actor/scaled")
        g.op("Add", [scaled, g.const("actor/action_offset", offset)], "action")

    model = _model(
        g,
        "distill_policy",
        [_input(first, first_dim), _input("goal", goal_dim)],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, [BATCH, action_dim])],
        opset,
        f"Deterministic goal-conditioned policy: action = offset + scale * tanh(mean(concat[{first}, goal])).",
    )
    if sensor_dim:
        set_metadata(model, {"sensor_dim": sensor_dim})
    return set_metadata(
        model,
        {
            "distill_format": FORMAT_VERSION,
            "kind": "policy",
            "toolkit_version": __version__,
            "state_dim": state_dim,
            "goal_dim": goal_dim,
            "action_dim": action_dim,
            "depth": LAYERS_PER_BLOCK * count_blocks(tower),
            "width": int(_array(tower, "input", "kernel").shape[1]),
            "inputs": [first, "goal"],
            "outputs": ["action"],
            "action_scale": scale.tolist(),
            "action_offset": offset.tolist(),
            # The question deployers ask most: what is already inside the graph.
            "action_transform": "in graph: action = action_offset + action_scale * tanh(mean); use as is",
            "observation_normalization": "none: the network reads raw observations and goals",
            "deterministic": True,
        },
    )


def critic_graph(
    sa_params: Mapping,
    goal_params: Mapping,
    *,
    state_dim: int,
    action_dim: int,
    goal_dim: int,
    opset: int = 17,
) -> onnx.ModelProto:
    """The contrastive critic ``(obs, action, goal) -> phi, psi, q = -||phi - psi||_2``."""
    _check_opset(opset)
    sa_tower = _subtree(sa_params, "tower", "sa_encoder")
    goal_tower = _subtree(goal_params, "tower", "goal_encoder")
    _check_in_dim(sa_tower, state_dim + action_dim, "sa_encoder")
    _check_in_dim(goal_tower, goal_dim, "goal_encoder")
    repr_dim = _array(sa_params, "head", "kernel").shape[1]
    if _array(goal_params, "head", "kernel").shape[1] != repr_dim:
        raise DistillError("sa_encoder and goal_encoder parameters have different representation sizes")

    g = _Graph()
    sa = g.op("Concat", ["obs", "action"], "sa_encoder/concat", axis=-1)
    phi = _dense(g, _tower(g, sa, sa_tower, "sa_encoder/tower"), sa_params["head"], "sa_encoder/head", "phi")
    goal_h = _tower(g, "goal", goal_tower, "goal_encoder/tower")
    psi = _dense(g, goal_h, goal_params["head"], "goal_encoder/head", "psi")
    # q = -sqrt(sum((phi - psi)^2) + 1e-12), the same epsilon as distill.nn.networks.energy.
    diff = g.op("Sub", [phi, psi], "energy/diff")
    sq = g.op("Mul", [diff, diff], "energy/square")
    axes = "energy/axes"
    g.initializers.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), axes))
    total = g.op("ReduceSum", [sq, axes], "energy/sum", keepdims=0)
    total = g.op("Add", [total, g.const("energy/epsilon", ENERGY_EPSILON)], "energy/sum_eps")
    g.op("Neg", [g.op("Sqrt", [total], "energy/norm")], "q")

    outputs = [
        helper.make_tensor_value_info("phi", TensorProto.FLOAT, [BATCH, repr_dim]),
        helper.make_tensor_value_info("psi", TensorProto.FLOAT, [BATCH, repr_dim]),
        helper.make_tensor_value_info("q", TensorProto.FLOAT, [BATCH]),
    ]
    model = _model(
        g,
        "distill_critic",
        [_input("obs", state_dim), _input("action", action_dim), _input("goal", goal_dim)],
        outputs,
        opset,
        "Contrastive critic: phi = sa_encoder(concat[obs, action]), psi = goal_encoder(goal), q = -||phi - psi||_2.",
    )
    return set_metadata(
        model,
        {
            "distill_format": FORMAT_VERSION,
            "kind": "critic",
            "toolkit_version": __version__,
            "state_dim": state_dim,
            "action_dim": action_dim,
            "goal_dim": goal_dim,
            "repr_dim": int(repr_dim),
            "inputs": ["obs", "action", "goal"],
            "outputs": ["phi", "psi", "q"],
            "observation_normalization": "none: the network reads raw observations and goals",
        },
    )


def dense_chain_graph(layers: Sequence[Mapping], opset: int = 17) -> onnx.ModelProto:
    """Only the Dense layers ``{"kernel", "bias"}`` applied one after another, ``obs -> action``.

    Written with the same ops as the policy, it times the matrix products alone: the floor under a
    policy of those layers' widths (see ``export.latency``).
    """
    _check_opset(opset)
    g = _Graph()
    x = "obs"
    for i, layer in enumerate(layers):
        x = _dense(g, x, layer, f"dense_{i}", out="action" if i == len(layers) - 1 else None)
    in_dim, out_dim = _array(layers[0], "kernel").shape[0], _array(layers[-1], "kernel").shape[1]
    return _model(
        g,
        "dense_chain",
        [_input("obs", in_dim)],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, [BATCH, out_dim])],
        opset,
        "Chained Dense layers only, for timing.",
    )


def set_metadata(model: onnx.ModelProto, metadata: Mapping[str, Any]) -> onnx.ModelProto:
    """Merges ``metadata`` into ``model.metadata_props`` (same keys replaced); returns the model.

    Strings are stored as they are, so deployers read them directly; anything else is JSON-encoded
    (full float precision, unlike CSV) and its key listed under ``distill_json_keys``.
    """
    current = {p.key: p.value for p in model.metadata_props}
    json_keys = set(json.loads(current.get(JSON_KEYS, "[]")))
    for key, value in metadata.items():
        if not isinstance(key, str) or key == JSON_KEYS:
            raise DistillError(f"metadata key {key!r} is not allowed")
        if isinstance(value, str):
            current[key] = value
            json_keys.discard(key)
        else:
            try:
                current[key] = json.dumps(_plain(value), allow_nan=False, sort_keys=True)
            except (TypeError, ValueError) as err:
                raise DistillError(f"metadata '{key}' cannot be written as JSON: {err}") from None
            json_keys.add(key)
    current[JSON_KEYS] = json.dumps(sorted(json_keys))
    helper.set_model_props(model, current)
    return model


def _plain(value: Any) -> Any:
    """numpy / jax scalars and arrays as Python numbers and lists, so json can write them."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()
    return value


def read_metadata(path_or_model: str | Path | onnx.ModelProto) -> dict[str, Any]:
    """The metadata written by ``set_metadata``, JSON values decoded."""
    if isinstance(path_or_model, onnx.ModelProto):
        model = path_or_model
    else:
        try:
            # Metadata only: skip loading any external tensors.
            model = onnx.load(str(path_or_model), load_external_data=False)
        except Exception as err:  # onnx raises OSError, DecodeError or its own types for bad files
            raise DistillError(f"cannot read ONNX file {path_or_model}: {err}") from None
    return decode_metadata({p.key: p.value for p in model.metadata_props})


def decode_metadata(raw: Mapping[str, str]) -> dict[str, Any]:
    """Decodes the JSON-encoded values of a raw string -> string metadata map."""
    json_keys = set(json.loads(raw.get(JSON_KEYS, "[]")))
    return {k: (json.loads(v) if k in json_keys else v) for k, v in raw.items() if k != JSON_KEYS}
