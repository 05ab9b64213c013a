"""Smaller numbers for an exported policy (int8 or fp16), shipped only with proof that they pay.

fp32 is the default and always the reference. A variant is derived from the fp32 file after that file
has passed the parity gate against the JAX student, and it ships only if it passes this gate too:

1. the file checks: the ONNX checker (full), IR <= 9, one file, onnxruntime loads it through
   ``OnnxPolicy``, and on the states the fp32 policy visits its actions are finite and stay in the
   action bounds (the largest difference from fp32 there is recorded);
2. closed loop: on the same episodes (same seed) its time_at_goal is at least ``1 - max_loss`` (default
   0.98) of the fp32 file's, both run through ``OnnxPolicy`` in the environment;
3. speed: at batch 1 on one thread its p50 is below the fp32 file's (``speedup`` = fp32 p50 / variant
   p50 above ``min_speedup``, default 1), both timed in this process, call by call in alternation.

Otherwise ``VariantRefused`` (a DistillError, so one line on the command line) says which test failed,
with the figures, and nothing is written. A shipped file records both sides in its metadata
(``precision`` and ``variant_gate``): time_at_goal, success_any, p50 and p99 of fp32 and of the
variant, the retention and the speedup.

- int8: ``onnxruntime.quantization.quantize_static``, QDQ format, activations uint8 and weights int8
  per tensor, only the hidden Gemms (LayerNorm, swish and tanh stay float32; onnxruntime fuses each
  DequantizeLinear -> Gemm -> QuantizeLinear into one integer QGemm). The input layer and the head
  stay float32: the input mixes features of very different scales (reacher's joint velocities and
  its goal position), and one uint8 scale wide enough for the velocities rounds the goal to steps
  wider than the 0.05 success radius (quantising it kept 0.55 of the reacher student's time_at_goal);
  both layers are small, so keeping them costs little time. Per-channel weights kept no more
  (0.992 against 0.994) and were slower than fp32. Calibration ranges come from
  states the fp32 policy visits in closed loop on episodes of another seed than the gate's (so the gate
  does not score the variant on the states it was calibrated on).
- fp16: every float32 weight stored as float16, the inputs cast to float16 and the action back to
  float32. On CPUs without float16 kernels onnxruntime computes in float32 again behind inserted
  casts, which only adds work, so the speed test decides where it can ship.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from distill.errors import DistillError
from export.closed_loop import evaluate_onnx, load_onnx_policy
from export.latency import interleaved_policy_latency
from export.onnx_graph import set_metadata
from export.parity import _load_checked, _write_bytes, atomic_onnx_file
from export.runtime import OnnxPolicy, PolicyFileError

PRECISIONS = ("fp32", "int8", "fp16")
DEFAULT_MAX_LOSS = 0.02
DEFAULT_MIN_SPEEDUP = 1.0
CALIBRATION_EPISODES = 32
CALIBRATION_SEED_OFFSET = 1  # calibration episodes use the gate's seed + 1
MAX_CALIBRATION_STATES = 4096
CALIBRATION_BATCH = 256
LATENCY_CALLS = 5000
# Metadata of the fp32 file that does not describe a variant (its parity is the fp32 graph's).
FP32_ONLY_KEYS = ("parity", "parity_max_abs_error")


class VariantRefused(DistillError):
    """A variant that did not prove itself; the message has the figures."""


def visited_states(
    fp32_path: Path, episodes: int, seed: int, limit: int = MAX_CALIBRATION_STATES
) -> dict[str, np.ndarray]:
    """Observations and goals the fp32 policy meets in closed loop: ``{"obs": [n, state_dim], "goal": [n, goal_dim]}``.

    ``episodes`` episodes of the seed's starts and goals, every step's input kept, then at most
    ``limit`` of them drawn at random without replacement (seeded), kept in time order.
    """
    policy, spec, backend = load_onnx_policy(fp32_path, None)
    environment = spec.make(backend=backend)
    reset = jax.jit(jax.vmap(environment.reset))
    step = jax.jit(jax.vmap(environment.step))
    env_state = reset(jax.random.split(jax.random.PRNGKey(seed), episodes))
    seen = []
    for _ in range(spec.episode_length):
        obs = np.asarray(env_state.obs, np.float32)
        seen.append(obs)
        env_state = step(env_state, policy(obs[:, : spec.state_dim], obs[:, spec.state_dim :]))
    states = np.concatenate(seen)
    if len(states) > limit:
        states = states[np.sort(np.random.default_rng(seed).choice(len(states), limit, replace=False))]
    return {
        "obs": np.ascontiguousarray(states[:, : spec.state_dim]),
        "goal": np.ascontiguousarray(states[:, spec.state_dim :]),
    }


def int8_model(fp32_path: Path, calibration: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Static int8 quantisation of the hidden Gemms, calibrated on ``calibration`` (see the module)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            n = len(next(iter(calibration.values())))
            self._batches = iter(
                [
                    {k: v[i : i + CALIBRATION_BATCH] for k, v in calibration.items()}
                    for i in range(0, n, CALIBRATION_BATCH)
                ]
            )

        def get_next(self):
            return next(self._batches, None)

    gemms = [n.name for n in onnx.load(str(fp32_path)).graph.node if n.op_type == "Gemm"]
    if len(gemms) < 3:
        raise DistillError(
            "nothing to quantise to int8: the network has no hidden layers between its input layer and its head"
        )
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantiser advises pre-processing, which MLPs do not need
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "int8.onnx"
            quantize_static(
                str(fp32_path),
                str(out),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=False,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["Gemm"],
                nodes_to_exclude=[gemms[0], gemms[-1]],
                calibrate_method=CalibrationMethod.MinMax,
            )
            return onnx.load(str(out))
    except Exception as err:  # the quantiser raises whatever its steps raise
        raise DistillError(f"int8 quantisation failed: {' '.join(str(err).split())[:300]}") from None
    finally:
        logging.getLogger().setLevel(quiet)


def fp16_model(fp32_path: Path) -> onnx.ModelProto:
    """float16 weights and arithmetic behind float32 inputs and outputs (see the module)."""
    model = onnx.load(str(fp32_path))
    graph = model.graph
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    renamed = {i.name: f"{i.name}/fp16" for i in graph.input} | {o.name: f"{o.name}/fp16" for o in graph.output}
    for node in graph.node:
        node.input[:] = [renamed.get(n, n) for n in node.input]
        node.output[:] = [renamed.get(n, n) for n in node.output]
    casts_in = [
        helper.make_node("Cast", [i.name], [renamed[i.name]], name=f"{i.name}/to_fp16", to=TensorProto.FLOAT16)
        for i in graph.input
    ]
    casts_out = [
        helper.make_node("Cast", [renamed[o.name]], [o.name], name=f"{o.name}/to_fp32", to=TensorProto.FLOAT)
        for o in graph.output
    ]
    nodes = casts_in + list(graph.node) + casts_out
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def _without_keys(model: onnx.ModelProto, keys: tuple[str, ...]) -> onnx.ModelProto:
    kept = [p for p in model.metadata_props if p.key not in keys]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    return model


def _check_file(path: Path, calibration: dict[str, np.ndarray], reference: np.ndarray) -> float:
    """Structural checks and the actions on visited states; returns the largest |variant - fp32| there."""
    _load_checked(path)
    try:
        policy = OnnxPolicy(path)
    except PolicyFileError as err:
        raise VariantRefused(str(err)) from None
    actions = policy(calibration["obs"], calibration["goal"])  # raises if not finite
    low, high = float(policy.metadata.get("action_low", -1.0)), float(policy.metadata.get("action_high", 1.0))
    if actions.min() < low - 1e-6 or actions.max() > high + 1e-6:
        raise VariantRefused(
            f"its actions leave [{low:g}, {high:g}] on visited states ({actions.min():.3g} to {actions.max():.3g})"
        )
    return float(np.abs(actions.astype(np.float64) - reference).max())


def gate_variant(
    fp32_path: Path,
    variant: onnx.ModelProto,
    precision: str,
    out: Path,
    *,
    episodes: int = 128,
    seed: int = 0,
    calibration: dict[str, np.ndarray] | None = None,
    max_loss: float = DEFAULT_MAX_LOSS,
    min_speedup: float = DEFAULT_MIN_SPEEDUP,
    latency_calls: int = LATENCY_CALLS,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Writes ``variant`` to ``out`` only if it passes the gate against the gated fp32 file; returns the record.

    ``calibration`` (states to compare actions on; default: visited by the fp32 policy on the seed + 1)
    need not be the quantiser's. Raises ``VariantRefused`` with the figures, leaving ``out`` as it was.
    """
    fp32_path, out = Path(fp32_path), Path(out)
    if not 0.0 <= max_loss <= 1.0:
        raise DistillError(f"the variant's allowed loss must be in [0, 1], got {max_loss}")
    if calibration is None:
        calibration = visited_states(fp32_path, CALIBRATION_EPISODES, seed + CALIBRATION_SEED_OFFSET)
    fp32_policy = OnnxPolicy(fp32_path)
    reference = fp32_policy(calibration["obs"], calibration["goal"]).astype(np.float64)
    fp32_parity = fp32_policy.metadata.get("parity_max_abs_error")
    name = f"{precision} variant"
    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / f"{precision}.onnx"
        onnx.save(variant, str(candidate))
        try:
            action_error = _check_file(candidate, calibration, reference)
        except DistillError as err:
            raise VariantRefused(f"{name} refused: {err}".replace(str(candidate), out.name)) from None

        say(f"closed loop: fp32 and {precision} on the same {episodes} episodes (seed {seed})")
        fp32_eval = evaluate_onnx(fp32_path, env=None, episodes=episodes, seed=seed)
        variant_eval = evaluate_onnx(candidate, env=None, episodes=episodes, seed=seed)
        say(f"latency: fp32 and {precision} at batch 1, one thread, {latency_calls} calls each, interleaved")
        fp32_latency, variant_latency = interleaved_policy_latency([fp32_path, candidate], latency_calls)

    fp32_tag, variant_tag = fp32_eval["time_at_goal"], variant_eval["time_at_goal"]
    retention = variant_tag / fp32_tag if fp32_tag > 0 else None
    speedup = fp32_latency["p50_us"] / variant_latency["p50_us"]
    record = {
        "precision": precision,
        "episodes": episodes,
        "seed": seed,
        "calibration_states": int(len(calibration["obs"])),
        "max_loss": max_loss,
        "min_speedup": min_speedup,
        "fp32": {**_figures(fp32_eval), **fp32_latency, "parity_max_abs_error_vs_jax": fp32_parity},
        precision: {**_figures(variant_eval), **variant_latency, "max_abs_action_error_vs_fp32": action_error},
        "retention": retention,
        "speedup": speedup,
    }
    closed_loop = f"time_at_goal {variant_tag:.2f} vs fp32 {fp32_tag:.2f} over {episodes} episodes" + (
        f" (retention {retention:.3f})" if retention is not None else ""
    )
    timing = f"p50 {variant_latency['p50_us']:.1f} us vs fp32 {fp32_latency['p50_us']:.1f} us (speedup {speedup:.2f}x)"
    reasons = []
    if retention is None:
        reasons.append(
            f"the fp32 policy never reaches the goal in these {episodes} episodes, so retention cannot be measured"
        )
    elif retention < 1.0 - max_loss:
        reasons.append(f"it loses more than {max_loss:.0%} closed loop")
    if not speedup > min_speedup:
        reasons.append(
            "it is not faster at batch 1" if min_speedup == 1.0 else f"it is not {min_speedup:g}x faster at batch 1"
        )
    if reasons:
        raise VariantRefused(
            f"{name} refused: {' and '.join(reasons)}: {closed_loop}; {timing}; nothing written at {out}, "
            f"export without --{precision} for the fp32 file"
        )
    record["shipped"] = True
    _write_variant(variant, out, precision, record)
    return record


def _figures(result: dict) -> dict:
    return {k: result[k] for k in ("time_at_goal", "time_at_goal_std", "success_any")}


def _write_variant(variant: onnx.ModelProto, out: Path, precision: str, record: dict) -> None:
    """Stamps the gate's record into the file and moves it into place atomically."""
    final = onnx.ModelProto()
    final.CopyFrom(variant)
    _without_keys(final, FP32_ONLY_KEYS)
    set_metadata(final, {"precision": precision, "variant_gate": record})
    onnx.checker.check_model(final, full_check=True)
    with atomic_onnx_file(out) as tmp:
        _write_bytes(tmp, final.SerializeToString())


def export_variant(
    fp32_path: Path,
    precision: str,
    out: Path,
    *,
    episodes: int = 128,
    seed: int = 0,
    say: Callable[[str], None] = lambda _: None,
    **gate_options: Any,
) -> dict[str, Any]:
    """Builds the ``precision`` variant of a gated fp32 file and gates it (``gate_variant``); returns the record."""
    if precision not in PRECISIONS[1:]:
        raise DistillError(f"precision must be one of {', '.join(PRECISIONS[1:])}, got {precision!r}")
    say(
        f"calibration: states the fp32 policy visits on {CALIBRATION_EPISODES} episodes (seed {seed + CALIBRATION_SEED_OFFSET})"
    )
    calibration = visited_states(Path(fp32_path), CALIBRATION_EPISODES, seed + CALIBRATION_SEED_OFFSET)
    variant = int8_model(fp32_path, calibration) if precision == "int8" else fp16_model(fp32_path)
    return gate_variant(
        fp32_path,
        variant,
        precision,
        out,
        episodes=episodes,
        seed=seed,
        calibration=calibration,
        say=say,
        **gate_options,
    )


__all__ = [
    "PRECISIONS",
    "VariantRefused",
    "export_variant",
    "fp16_model",
    "gate_variant",
    "int8_model",
    "visited_states",
]


def precision_from_flags(int8: bool, fp16: bool) -> str:
    """The precision the ``--int8`` / ``--fp16`` flags ask for (fp32 without either)."""
    if int8 and fp16:
        raise DistillError("choose one of --int8 and --fp16")
    return "int8" if int8 else "fp16" if fp16 else "fp32"


def describe_gate(record: dict) -> str:
    """One line: the variant's closed-loop score and latency beside fp32's."""
    p, fp32, variant = record["precision"], record["fp32"], record[record["precision"]]
    return (
        f"{p}: time_at_goal {variant['time_at_goal']:.2f} vs fp32 {fp32['time_at_goal']:.2f} "
        f"(retention {record['retention']:.3f}, {record['episodes']} episodes), p50 {variant['p50_us']:.1f} us vs "
        f"fp32 {fp32['p50_us']:.1f} us (speedup {record['speedup']:.2f}x), p99 {variant['p99_us']:.1f} vs "
        f"{fp32['p99_us']:.1f} us, max |{p} - fp32| action {variant['max_abs_action_error_vs_fp32']:.3f}"
    )
