"""Running exported students without JAX: what a robot imports.

This module imports only numpy, onnxruntime and the standard library, so a controller can copy it next
to a ``.onnx`` file and run the policy with nothing else of this project installed.

    policy = OnnxPolicy("policy.onnx")
    action = policy(obs, goal)          # obs (state_dim,), goal (goal_dim,) -> (action_dim,)
    actions = policy(obs_b, goal_b)     # (batch, state_dim), (batch, goal_dim) -> (batch, action_dim)

The returned actions are final: any action scale and offset are applied inside the graph
(``policy.metadata["action_transform"]`` says so in the file itself).

A student distilled with a sensor model (``distill compress --sensors``) reads sensor readings, not
the state, and keeps its own history of them:

    policy.reset()                      # at the start of every episode
    action = policy(reading, goal)      # once per control tick: reading (reading_dim,)

``policy.sensor_model`` (the file's ``sensor_model`` metadata) lists the slices a reading holds, in
order, the noise the student was trained with, ``history`` and ``latency``. The policy stacks the
last ``history`` readings itself, oldest first; the first reading after ``reset()`` fills the whole
history. It adds no delay: ``latency`` is how late the robot's readings are expected to arrive, the
robot's own sensors supply it (the simulator's closed loop imposes it). A batch of episodes works the
same way, one row per episode, with one batch size from one ``reset()`` to the next. A call whose
inputs are refused leaves the history as it was.

Input rules, checked on every call because a bad observation on a robot must fail loudly, not act:
- float32 is used as is; float64 is cast to float32 (the network computes in float32 anyway), and a
  value that float32 cannot hold counts as inf. Integers, booleans, complex numbers, strings and
  objects are refused: they are almost always the wrong array, and casting would hide that.
- NaN or inf anywhere is refused, and so is an action that comes out non-finite (finite inputs so
  large that the first layer overflows).
- One observation is 1-D, a batch is 2-D; all inputs of a call have the same rank and batch size.
Bad inputs raise ``PolicyInputError``; unusable files raise ``PolicyFileError`` (both ValueErrors).

Sessions use one intra-op and one inter-op thread with sequential execution: more threads lower the
median latency of these small networks but add millisecond spikes, which a control loop cannot afford.

A control loop's call (one float32 observation and goal) takes a fast path. Observation, goal and
action share one buffer bound to the session once, so a call costs two copies in, one onnxruntime
run, one copy out and one NaN/inf check of the whole buffer after the run: up to ``SUM_CHECK_MAX``
values, a Python sum of its floats (non-finite exactly when a value is, since float32 values cannot
overflow a float64 sum), cheaper than any numpy call on so few values; beyond, one ``np.isfinite``.
Only a failed check inspects obs and goal apart, to name the bad one, or else reports an action that
overflowed. The inputs are checked themselves, not through the action, because not every graph carries
a NaN through (int8 quantisation turns it into an ordinary integer). Calls are serialised by a lock,
so a policy may be shared between threads.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

SUPPORTED_FORMATS = frozenset({"1"})
FORMAT_KEY = "distill_format"
JSON_KEYS = "distill_json_keys"  # which metadata values are JSON-encoded (see export.onnx_graph)
DIM_KEYS = {"obs": "state_dim", "sensors": "sensor_dim", "goal": "goal_dim", "action": "action_dim"}
# numpy shares one dtype object per native type, so an identity test picks out float32 arrays without
# the cost of a dtype comparison (other byte orders fail it and take the checked path).
FLOAT32 = np.dtype(np.float32)
_isfinite = math.isfinite
_ndarray = np.ndarray
# Up to this many values (inputs and action) a Python sum checks them faster than np.isfinite
# (measured: 0.3 us for 12 values against 1.3 us; equal near 90).
SUM_CHECK_MAX = 64


class PolicyInputError(ValueError):
    """An observation, goal or action that the network must not be run on."""


class PolicyFileError(ValueError):
    """A file that is not a usable distill export."""


def _decode_metadata(raw: dict[str, str]) -> dict[str, Any]:
    try:
        json_keys = set(json.loads(raw.get(JSON_KEYS, "[]")))
        return {k: (json.loads(v) if k in json_keys else v) for k, v in raw.items() if k != JSON_KEYS}
    except (TypeError, ValueError) as err:
        raise PolicyFileError(f"the file's distill metadata is corrupt: {err}") from None


def single_thread_session(path: Path) -> ort.InferenceSession:
    """An onnxruntime CPU session on one intra-op and one inter-op thread, run sequentially: what a
    control loop wants (more threads lower the median of these small networks but add millisecond
    spikes). An unloadable file raises ``PolicyFileError``."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        message = " ".join(str(err).split())[:300]
        raise PolicyFileError(f"onnxruntime cannot load {path}: {message}") from None


def _as_float32(name: str, value: Any, dim: int) -> np.ndarray:
    """One input checked and converted to a contiguous float32 array of rank 1 or 2.

    The common case (a float32 numpy array) takes the short path: a control loop calls this at
    kilohertz rates, and numpy's error-state context alone costs microseconds.
    """
    if type(value) is np.ndarray and value.dtype == np.float32:
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError) as err:  # ragged nested lists
            raise PolicyInputError(f"{name} is not a rectangular array of numbers: {err}") from None
        if arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
            raise PolicyInputError(f"{name} has dtype {arr.dtype}; pass float32 or float64 (other types are refused)")
        # Cast first: a float64 beyond float32's range becomes inf and must be refused too.
        with np.errstate(over="ignore"):
            arr = arr.astype(np.float32)
    if arr.ndim not in (1, 2) or arr.shape[-1] != dim:
        raise PolicyInputError(f"{name} has shape {arr.shape}; expected ({dim},) for one or (batch, {dim}) for a batch")
    if arr.ndim == 2 and arr.shape[0] == 0:
        raise PolicyInputError(f"{name} is an empty batch")
    if not np.isfinite(arr.sum()) and not np.isfinite(arr).all():
        where = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise PolicyInputError(f"{name} contains NaN or inf (first at index {where})")
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


class _OnnxModel:
    """A distill ONNX export in an onnxruntime session, with its metadata checked."""

    kind = ""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise PolicyFileError(f"no ONNX file at {self.path}")
        self._session = single_thread_session(self.path)
        raw = dict(self._session.get_modelmeta().custom_metadata_map)
        if FORMAT_KEY not in raw:
            raise PolicyFileError(
                f"{self.path} has no distill metadata ('{FORMAT_KEY}'); it was not written by distill's exporter"
            )
        if raw[FORMAT_KEY] not in SUPPORTED_FORMATS:
            supported = ", ".join(sorted(SUPPORTED_FORMATS))
            raise PolicyFileError(f"{self.path} has distill format {raw[FORMAT_KEY]!r}; this runtime reads {supported}")
        self.metadata = _decode_metadata(raw)
        if self.metadata.get("kind") != self.kind:
            raise PolicyFileError(f"{self.path} holds a {self.metadata.get('kind')!r} network, not a {self.kind}")
        self._input_dims = self._check_inputs()
        self._output_names = [o.name for o in self._session.get_outputs()]

    def _check_inputs(self) -> dict[str, int]:
        """Input name -> feature size, where the graph and its metadata agree."""
        dims = {}
        for spec in self._session.get_inputs():
            key = DIM_KEYS.get(spec.name)
            if key is None or key not in self.metadata:
                raise PolicyFileError(f"{self.path} has an unexpected input '{spec.name}'")
            dims[spec.name] = int(self.metadata[key])
            if len(spec.shape) != 2 or spec.shape[1] != dims[spec.name]:
                raise PolicyFileError(
                    f"{self.path}: input '{spec.name}' has shape {spec.shape}, metadata says {key}={dims[spec.name]}"
                )
        return dims

    @property
    def state_dim(self) -> int:
        return int(self.metadata["state_dim"])

    @property
    def goal_dim(self) -> int:
        return int(self.metadata["goal_dim"])

    @property
    def action_dim(self) -> int:
        return int(self.metadata["action_dim"])

    def _run(self, **inputs: Any) -> tuple[dict[str, np.ndarray], bool]:
        """All outputs by name, and whether the call was for a single (1-D) input."""
        arrays = {name: _as_float32(name, inputs[name], dim) for name, dim in self._input_dims.items()}
        ranks = {a.ndim for a in arrays.values()}
        if len(ranks) > 1:
            shapes = ", ".join(f"{n} {a.shape}" for n, a in arrays.items())
            raise PolicyInputError(f"mix of single and batched inputs: {shapes}")
        single = ranks == {1}
        if single:
            arrays = {n: a[None, :] for n, a in arrays.items()}
        elif len({a.shape[0] for a in arrays.values()}) > 1:
            shapes = ", ".join(f"{n} {a.shape}" for n, a in arrays.items())
            raise PolicyInputError(f"inputs have different batch sizes: {shapes}")
        outputs = dict(zip(self._output_names, self._session.run(self._output_names, arrays)))
        for name, value in outputs.items():
            if not np.isfinite(value).all():
                self._refuse_non_finite(name, arrays)
        return outputs, single

    def _refuse_non_finite(self, output: str, inputs: dict[str, Any]) -> None:
        """Raises for a non-finite output: naming the bad input, or saying the inputs are out of range."""
        for name, dim in self._input_dims.items():
            _as_float32(name, inputs[name], dim)  # raises on NaN or inf
        raise PolicyInputError(
            f"the network's {output} is not finite for finite inputs; they are too large for float32 arithmetic"
        )

    @property
    def contract(self) -> dict | None:
        """The contract the file carries (``policy.json``'s content), None for files written before it."""
        return self.metadata.get("contract")

    def check_contract(self, expected: dict | str | Path) -> None:
        """Refuses (``PolicyFileError``) a file whose contract is not ``expected``, naming the first difference."""
        expected = _expected_contract(expected)
        if self.contract is None:
            raise PolicyFileError(f"{self.path} carries no contract (exported before contracts were written)")
        difference = first_difference(expected, self.contract)
        if difference is not None:
            raise PolicyFileError(f"{self.path} does not keep the expected contract: {difference}")

    def __repr__(self) -> str:
        dims = ", ".join(f"{n}={d}" for n, d in self._input_dims.items())
        return f"{type(self).__name__}({str(self.path)!r}, {dims})"


class OnnxPolicy(_OnnxModel):
    """The deterministic policy of an exported student: ``policy(obs, goal) -> action``, or with a
    sensor model ``policy(reading, goal) -> action`` after ``policy.reset()`` (see the module).

    ``contract`` (a dict, or the path of the ``policy.json`` the robot code was written against)
    refuses a file whose contract differs, naming the first difference."""

    kind = "policy"

    sensor_model: dict | None = None
    """The file's sensor model (None: the policy reads the state)."""

    def __init__(self, path: str | Path, contract: dict | str | Path | None = None):
        super().__init__(path)
        if contract is not None:
            self.check_contract(contract)
        if "sensors" in self._input_dims:
            self._init_sensed()
            return
        state_dim, goal_dim = self.state_dim, self.goal_dim
        self._obs_shape, self._goal_shape = (state_dim,), (goal_dim,)
        buffer, binding = self._bind_batch_one("obs", state_dim)
        # Everything the fast path touches, fetched with one attribute lookup.
        self._fast = (
            threading.Lock(),
            buffer,
            buffer[:state_dim],
            buffer[state_dim : state_dim + goal_dim],
            buffer[state_dim + goal_dim :],
            self._session.run_with_iobinding,
            binding,
            len(buffer) <= SUM_CHECK_MAX,
        )

    def _bind_batch_one(self, first: str, first_dim: int) -> tuple[np.ndarray, Any]:
        """Batch-1 buffers bound to the session once; numpy keeps them alive, onnxruntime holds pointers.
        ``first`` (obs or sensors), goal and action are adjacent views of one buffer, so one pass over
        it checks all three."""
        goal_dim, action_dim = self.goal_dim, self.action_dim
        buffer = np.zeros(first_dim + goal_dim + action_dim, np.float32)
        address, item = buffer.ctypes.data, buffer.itemsize
        binding = self._session.io_binding()
        binding.bind_input(first, "cpu", 0, np.float32, [1, first_dim], address)
        binding.bind_input("goal", "cpu", 0, np.float32, [1, goal_dim], address + item * first_dim)
        binding.bind_output("action", "cpu", 0, np.float32, [1, action_dim], address + item * (first_dim + goal_dim))
        self._binding = binding  # keeps the binding (and with it the bound pointers) alive
        return buffer, binding

    def __call__(self, obs: Any, goal: Any) -> np.ndarray:
        if self.sensor_model is not None:
            return self._sensed_call(obs, goal)
        if (
            type(obs) is _ndarray
            and type(goal) is _ndarray
            and obs.dtype is FLOAT32
            and goal.dtype is FLOAT32
            and obs.shape == self._obs_shape
            and goal.shape == self._goal_shape
        ):
            # The fast path, inlined: at kilohertz rates every Python call and attribute lookup shows.
            lock, buffer, obs_view, goal_view, action_view, run, binding, sum_check = self._fast
            with lock:
                obs_view[...] = obs
                goal_view[...] = goal
                run(binding)
                action = action_view.copy()
                # Inputs and action in one pass, after the run: a NaN input that the graph turned into a
                # finite action (int8) is still in the buffer.
                finite = _isfinite(sum(buffer.tolist())) if sum_check else _all_finite(buffer)
            if not finite:
                self._refuse_non_finite("action", {"obs": obs, "goal": goal})  # names the bad input first
            return action
        outputs, single = self._run(obs=obs, goal=goal)
        action = outputs["action"]
        return action[0] if single else action

    # ---- a student with a sensor model ----------------------------------------------------------
    def _init_sensed(self) -> None:
        model = self.metadata.get("sensor_model")
        try:
            self.reading_dim, self.history = int(model["reading_dim"]), int(model["history"])
        except (KeyError, TypeError, ValueError):
            raise PolicyFileError(f"{self.path} reads sensors but has no valid sensor_model in its metadata") from None
        if self.reading_dim * self.history != int(self.metadata.get("sensor_dim", -1)) or self.reading_dim <= 0:
            raise PolicyFileError(f"{self.path}: its sensor_model does not fit its sensors input")
        self.sensor_model = model
        sensor_dim, goal_dim = self.reading_dim * self.history, self.goal_dim
        self._reading_shape, self._goal_shape = (self.reading_dim,), (goal_dim,)
        buffer, binding = self._bind_batch_one("sensors", sensor_dim)
        self._sensors = buffer[:sensor_dim]
        self._lock = threading.Lock()
        width = self.reading_dim
        # Everything the fast path touches, views included, made once: a call then shifts the history
        # by one reading in place (the older part onto itself, the new reading last).
        self._sensed_fast = (
            self._lock,
            self._sensors.reshape(self.history, width),
            self._sensors[:-width],
            self._sensors[width:],
            self._sensors[-width:],
            buffer[sensor_dim : sensor_dim + goal_dim],
            buffer[sensor_dim + goal_dim :],
            self._session.run_with_iobinding,
            binding,
            self.history > 1,
            width + goal_dim <= SUM_CHECK_MAX,
        )
        self.reset()

    @property
    def sensor_dim(self) -> int:
        """Size of the stacked sensor input (0: the policy reads the state)."""
        return int(self.metadata.get("sensor_dim", 0))

    def reset(self) -> None:
        """Start of an episode (or a batch of them): forgets the history. A policy that reads the
        state keeps none, so for it this does nothing."""
        self._started = False  # the batch-1 history in the bound buffer
        self._batch_history: np.ndarray | None = None

    def _sensed_call(self, reading: Any, goal: Any) -> np.ndarray:
        if not (
            type(reading) is _ndarray
            and type(goal) is _ndarray
            and reading.dtype is FLOAT32
            and goal.dtype is FLOAT32
            and reading.shape == self._reading_shape
            and goal.shape == self._goal_shape
        ):
            return self._checked_call(reading, goal)
        # Control-loop path: the inputs are checked before they enter the history, so a refused call
        # leaves it as it was.
        lock, rows, older, newer, newest, goal_view, action_view, run, binding, shifts, sum_check = self._sensed_fast
        if sum_check:
            finite = _isfinite(sum(reading.tolist()) + sum(goal.tolist()))
        else:
            finite = _all_finite(reading) and _all_finite(goal)
        if not finite:
            return self._checked_call(reading, goal)  # raises, naming the bad input
        with lock:
            if self._batch_history is not None:
                raise PolicyInputError(
                    "this policy holds the history of a batch of episodes; call reset() before a single one"
                )
            if self._started:
                if shifts:
                    older[...] = newer
                newest[...] = reading
            else:
                rows[...] = reading
                self._started = True
            goal_view[...] = goal
            run(binding)
            action = action_view.copy()
        if not _isfinite(sum(action.tolist())):
            raise PolicyInputError(
                "the network's action is not finite for finite inputs; they are too large for float32 arithmetic"
            )
        return action

    def _checked_call(self, reading: Any, goal: Any) -> np.ndarray:
        reading = _as_float32("reading", reading, self.reading_dim)
        goal = _as_float32("goal", goal, self.goal_dim)
        if reading.ndim != goal.ndim:
            raise PolicyInputError(f"mix of single and batched inputs: reading {reading.shape}, goal {goal.shape}")
        if reading.ndim == 1:
            return self._sensed_call(reading, goal)
        if reading.shape[0] != goal.shape[0]:
            raise PolicyInputError(f"inputs have different batch sizes: reading {reading.shape}, goal {goal.shape}")
        with self._lock:
            if self._started:
                raise PolicyInputError("this policy holds the history of a single episode; call reset() before a batch")
            history = self._batch_history
            if history is None:
                history = np.tile(reading, self.history)
            elif history.shape[0] != reading.shape[0]:
                raise PolicyInputError(
                    f"a batch of {reading.shape[0]} readings, but the history holds {history.shape[0]} "
                    "episodes; call reset() to start new ones"
                )
            else:
                history = np.concatenate([history[:, self.reading_dim :], reading], axis=1)
            (action,) = self._session.run(["action"], {"sensors": history, "goal": goal})
            if not np.isfinite(action).all():
                raise PolicyInputError(
                    "the network's action is not finite for finite inputs; they are too large for float32 arithmetic"
                )
            self._batch_history = history
        return action


# ---- contracts (``export.contract`` writes them; the robot's side checks them here) ----------------

CONTRACT_UNHASHED = ("provenance", "sha256")


def contract_hash(contract: dict) -> str:
    """sha256 of a contract's canonical JSON, its provenance left out."""
    kept = {k: v for k, v in contract.items() if k not in CONTRACT_UNHASHED}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def first_difference(expected: Any, actual: Any, where: str = "") -> str | None:
    """Where two contracts (provenance left out) first differ, in words; None if they agree."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        if where == "":
            expected = {k: v for k, v in expected.items() if k not in CONTRACT_UNHASHED}
            actual = {k: v for k, v in actual.items() if k not in CONTRACT_UNHASHED}
        for key in sorted(set(expected) | set(actual)):
            here = f"{where}.{key}" if where else key
            if key not in actual:
                return f"{here} is missing from the file's contract"
            if key not in expected:
                return f"{here} is in the file's contract but not in the expected one"
            found = first_difference(expected[key], actual[key], here)
            if found:
                return found
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return f"{where or 'contract'} has {len(actual)} entries in the file, {len(expected)} expected"
        for i, (e, a) in enumerate(zip(expected, actual)):
            found = first_difference(e, a, f"{where}[{i}]")
            if found:
                return found
        return None
    if expected != actual:
        return f"{where or 'contract'} is {actual!r} in the file, {expected!r} expected"
    return None


def _expected_contract(contract: Any) -> dict:
    if isinstance(contract, dict):
        return contract
    try:
        return json.loads(Path(contract).read_text())
    except (OSError, ValueError) as err:
        raise PolicyFileError(f"cannot read the expected contract {contract}: {err}") from None


def _all_finite(values: np.ndarray) -> bool:
    return bool(np.isfinite(values).all())


class OnnxCritic(_OnnxModel):
    """An exported contrastive critic: ``critic(obs, action, goal) -> q = -||phi - psi||``."""

    kind = "critic"

    @property
    def repr_dim(self) -> int:
        return int(self.metadata["repr_dim"])

    def outputs(self, obs: Any, action: Any, goal: Any) -> dict[str, np.ndarray]:
        """phi, psi and q; without the batch axis for a single (1-D) input."""
        outputs, single = self._run(obs=obs, action=action, goal=goal)
        return {n: o[0] for n, o in outputs.items()} if single else outputs

    def __call__(self, obs: Any, action: Any, goal: Any) -> np.ndarray | np.float32:
        return self.outputs(obs, action, goal)["q"]
