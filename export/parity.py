"""The parity gate: an exported file ships only if it acts like the JAX network it came from.

``parity_gate`` checks a file three ways: the ONNX checker (full check, so strict shape inference too),
onnxruntime on the CPU provider (what robots run) and ``onnx.reference.ReferenceEvaluator`` (a second,
independent implementation of every op, so a quirk of one runtime cannot hide a wrong graph). Both
are compared with the JAX function on random non-zero inputs at several batch sizes; batch sizes 1 and
odd ones catch broadcasting and shape mistakes that a single large batch hides.

``write_verified`` is the only way exports should reach disk: the file is written under a temporary
name next to its destination, gated, stamped with the error actually measured, and only then renamed
into place. A file that fails is deleted, so nothing on disk ever looks verified without being so.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx.reference import ReferenceEvaluator

from distill.errors import DistillError
from export.onnx_graph import MAX_IR_VERSION, decode_metadata, read_metadata, set_metadata
from export.runtime import PolicyFileError, single_thread_session

DEFAULT_BATCH_SIZES = (1, 2, 7, 1024)
# The reference evaluator is plain numpy, node by node; small batches already exercise every op.
REFERENCE_MAX_BATCH = 64
# Inputs of unit-ish scale that also reach past the linear region of tanh and sigmoid.
INPUT_SCALE = 2.0
# Metadata the graph builders derive from the parameters; callers may not contradict them.
STRUCTURAL_KEYS = frozenset(
    {
        "distill_format",
        "kind",
        "state_dim",
        "sensor_dim",
        "goal_dim",
        "action_dim",
        "repr_dim",
        "depth",
        "width",
        "inputs",
        "outputs",
        "action_scale",
        "action_offset",
        "action_transform",
        "deterministic",
    }
)

InputSpecs = Mapping[str, int | Sequence[int]]


def _load_checked(model_path: Path) -> onnx.ModelProto:
    """Loads without external data and runs every structural check a deployer relies on."""
    if not model_path.is_file():
        raise DistillError(f"no ONNX file at {model_path}")
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as err:  # a truncated or foreign file raises protobuf's or onnx's own errors
        raise DistillError(f"{model_path} is not a readable ONNX file: {_one_line(err)}") from None
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise DistillError(f"{model_path} keeps {len(external)} tensors in external files; it must be one file")
    if model.ir_version > MAX_IR_VERSION:
        raise DistillError(f"{model_path} has IR version {model.ir_version}; deployable files need <= {MAX_IR_VERSION}")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as err:  # ValidationError and InferenceError, both one message
        raise DistillError(f"{model_path} fails the ONNX checker: {_one_line(err)}") from None
    return model


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]


def _session(model_path: Path) -> ort.InferenceSession:
    try:
        return single_thread_session(model_path)
    except PolicyFileError as err:
        raise DistillError(str(err)) from None


def _random_inputs(rng: np.random.Generator, input_specs: InputSpecs, batch: int) -> dict[str, np.ndarray]:
    inputs = {}
    for name, dims in input_specs.items():
        shape = (batch, *((dims,) if isinstance(dims, int) else tuple(dims)))
        x = (INPUT_SCALE * rng.standard_normal(shape)).astype(np.float32)
        x[x == 0.0] = 1.0  # non-zero: a zero input hides a missing weight or a swapped operand
        inputs[name] = x
    return inputs


def _as_outputs(result: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The JAX function's result (one array, a sequence in output order, or a mapping) by output name."""
    if isinstance(result, Mapping):
        missing = [n for n in names if n not in result]
        if missing:
            raise DistillError(f"the JAX function returned no {', '.join(missing)}")
        return {n: np.asarray(result[n], dtype=np.float32) for n in names}
    if isinstance(result, (tuple, list)):
        if len(result) != len(names):
            raise DistillError(f"the JAX function returned {len(result)} outputs; the file has {len(names)}")
        return {n: np.asarray(r, dtype=np.float32) for n, r in zip(names, result)}
    if len(names) != 1:
        raise DistillError(f"the JAX function returned one array; the file has outputs {', '.join(names)}")
    return {names[0]: np.asarray(result, dtype=np.float32)}


def _compare(got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> tuple[float, float]:
    """(max abs error, max of error / allowed error); passing means the second is <= 1.

    A shape mismatch or a NaN/inf on either side counts as an infinite error: broadcasting or a NaN
    (which compares False with everything) must never slip through a tolerance check.
    """
    if got.shape != want.shape or not (np.all(np.isfinite(got)) and np.all(np.isfinite(want))):
        return float("inf"), float("inf")
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    allowed = atol + rtol * np.abs(want.astype(np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        used = np.where(diff == 0.0, 0.0, diff / allowed)
    return float(diff.max(initial=0.0)), float(used.max(initial=0.0))


def _action_bounds_violation(model: onnx.ModelProto, outputs: Mapping[str, np.ndarray], atol: float) -> str | None:
    """A policy's actions must stay in offset +- |scale|: the bound deployers clip against."""
    meta = decode_metadata({p.key: p.value for p in model.metadata_props})
    if meta.get("kind") != "policy" or "action" not in outputs:
        return None
    scale = np.abs(np.asarray(meta["action_scale"], np.float64))
    offset = np.asarray(meta["action_offset"], np.float64)
    excess = np.abs(outputs["action"] - offset) - scale
    return None if np.all(excess <= atol) else f"actions leave offset +- scale by {excess.max():.3g}"


def parity_gate(
    model_path: str | Path,
    jax_fn: Callable[..., Any],
    input_specs: InputSpecs,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    atol: float = 1e-5,
    seed: int = 0,
    *,
    rtol: float = 0.0,
) -> dict[str, Any]:
    """Checks the file and compares it with ``jax_fn`` (called with the inputs by name).

    ``input_specs`` maps each input name to its feature size (or trailing shape); the batch dimension
    comes from ``batch_sizes``. An output passes where ``|onnx - jax| <= atol + rtol * |jax|``; rtol is
    0 by default, so atol alone bounds bounded outputs such as actions, and rtol is for unbounded ones
    (critic values grow with depth, and float32 keeps only ~7 digits of them).
    Returns the measured errors (max abs error per runtime and output, per batch size for onnxruntime,
    and ``tolerance_used``: the largest error as a fraction of what was allowed); raises DistillError
    naming the first failure.
    """
    model_path = Path(model_path)
    model = _load_checked(model_path)
    session = _session(model_path)
    input_names = [i.name for i in session.get_inputs()]
    output_names = [o.name for o in session.get_outputs()]
    if sorted(input_names) != sorted(input_specs):
        raise DistillError(f"{model_path} reads {', '.join(input_names)}, not {', '.join(input_specs)}")
    reference = ReferenceEvaluator(model)

    rng = np.random.default_rng(seed)
    report: dict[str, Any] = {"onnxruntime": {}, "reference": {}, "per_batch": {}}
    tolerance_used = 0.0
    failures: list[str] = []
    for batch in batch_sizes:
        inputs = _random_inputs(rng, input_specs, batch)
        want = _as_outputs(jax_fn(**inputs), output_names)
        runs = {"onnxruntime": dict(zip(output_names, session.run(output_names, inputs)))}
        if batch <= REFERENCE_MAX_BATCH:
            runs["reference"] = dict(zip(output_names, reference.run(output_names, inputs)))
        for runtime, got in runs.items():
            for name in output_names:
                err, used = _compare(np.asarray(got[name]), want[name], atol, rtol)
                report[runtime][name] = max(report[runtime].get(name, 0.0), err)
                if runtime == "onnxruntime":
                    report["per_batch"].setdefault(str(batch), {})[name] = err
                tolerance_used = max(tolerance_used, used)
                if not used <= 1.0:
                    got_shape, want_shape = np.shape(got[name]), want[name].shape
                    shapes = f"shape {got_shape} vs {want_shape}, " if got_shape != want_shape else ""
                    failures.append(f"{runtime} '{name}' at batch {batch}: {shapes}max error {err:.3g}")
            bounds = _action_bounds_violation(model, got, atol)
            if bounds:
                failures.append(f"{runtime} at batch {batch}: {bounds}")
    if failures:
        raise DistillError(
            f"parity check failed for {model_path.name} (atol {atol:g}, rtol {rtol:g}): {failures[0]}"
            + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else "")
        )
    all_errors = [e for runtime in ("onnxruntime", "reference") for e in report[runtime].values()]
    report.update(
        max_abs_error=max(all_errors, default=0.0),
        tolerance_used=tolerance_used,
        atol=atol,
        rtol=rtol,
        batch_sizes=list(batch_sizes),
        seed=seed,
        onnxruntime_version=ort.__version__,
    )
    return report


def _check_structural(model: onnx.ModelProto, metadata: Mapping[str, Any]) -> None:
    """Refuses caller metadata that contradicts what the graph itself computes."""
    current = read_metadata(model)
    for key, value in metadata.items():
        if key in STRUCTURAL_KEYS and key in current and current[key] != value:
            raise DistillError(f"metadata '{key}'={value!r} contradicts the graph ({current[key]!r})")


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # the rename below must never expose a half-written file


@contextlib.contextmanager
def atomic_onnx_file(path: Path):
    """A temporary file beside ``path`` for the block to write; leaving the block moves it onto
    ``path``, readable by all. On any failure the temporary file is removed and whatever was at
    ``path`` stays as it was; an OSError becomes a one-line error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as err:
        raise DistillError(f"cannot write ONNX file to {path}: {err.strerror or err}") from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a deployed model is read by other users
        os.replace(tmp, path)  # atomic on one filesystem, which mkstemp(dir=path.parent) ensures
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise DistillError(f"cannot write ONNX file to {path}: {err.strerror or err}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_verified(
    model: onnx.ModelProto,
    path: str | Path,
    jax_fn: Callable[..., Any],
    input_specs: InputSpecs,
    metadata: Mapping[str, Any] | None = None,
    **gate_options: Any,
) -> dict[str, Any]:
    """Writes ``model`` to ``path`` only after it passes ``parity_gate``; returns the gate's report.

    The measured errors are recorded in the file's metadata (``parity`` and ``parity_max_abs_error``).
    On any failure the temporary file is removed and whatever was at ``path`` before is left untouched.
    ``gate_options`` go to ``parity_gate`` (batch_sizes, atol, rtol, seed).
    """
    path = Path(path)
    if path.is_dir():
        raise DistillError(f"cannot write ONNX file to {path}: it is a directory")
    final = onnx.ModelProto()
    final.CopyFrom(model)  # the caller's model stays as it was
    _check_structural(final, metadata or {})
    set_metadata(final, metadata or {})
    with atomic_onnx_file(path) as tmp:
        _write_bytes(tmp, final.SerializeToString())
        try:
            report = parity_gate(tmp, jax_fn, input_specs, **gate_options)
        except DistillError as err:  # name the destination, not the temporary file, in the message
            raise DistillError(str(err).replace(str(tmp), str(path)).replace(tmp.name, path.name)) from None
        # Only metadata changes from here on: the graph that was gated is the graph that ships.
        set_metadata(final, {"parity": report, "parity_max_abs_error": report["max_abs_error"]})
        onnx.checker.check_model(final, full_check=True)
        _write_bytes(tmp, final.SerializeToString())
    return report
