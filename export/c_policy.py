"""A student as dependency-free C: ``policy.h`` and ``policy.c`` that a C or C++ controller compiles in.

The files are C99 with nothing beyond ``<math.h>`` and ``<string.h>``: no allocation, no global that
changes, the weights as ``static const float`` arrays printed so that every float32 reads back
exactly, the sizes as ``#define``s. A plain student is one call a tick::

    float action[DISTILL_ACTION_DIM];
    distill_act(obs, goal, action);

A student behind sensors keeps its history in a state the caller owns, exactly as ``OnnxPolicy``
keeps it (oldest reading first; the first reading after a reset fills the whole history)::

    distill_state state;
    distill_reset(&state);                          /* at the start of every episode */
    distill_step(&state, reading, goal, action);    /* once per control tick */

The same parity gate as the ONNX export guards the files: they are compiled with the system C
compiler (``-std=c99 -O2 -Wall -Wextra -Werror -pedantic``) into a temporary shared library, fed the
gate's reference inputs through ``ctypes`` and compared with the JAX student (max abs error at most
``TOLERANCE``). Files that do not compile or do not agree are refused, and nothing is left behind.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import numpy as np

from distill.errors import DistillError

CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic")
# e^x by Cody-Waite range reduction and Cephes' degree-5 polynomial (within 2 ulp of expf), in plain
# float and integer arithmetic with no branch, so a compiler vectorises the swish loop around it; a call
# of the C library's expf runs one element at a time and was half of a width-128 student's time at -O2.
# Exact for |x| < EXP_POLY_RANGE; the generator uses it only where LayerNorm bounds every input below.
EXP_POLY_RANGE = 80.0
EXP_POLY = [
    "/* e^x for |x| < 80 (every swish input here, by the LayerNorm bound): Cody-Waite reduction and a",
    "   degree-5 polynomial, branch-free so that the loop calling it is vectorised. */",
    "static float exp_poly(float x)",
    "{",
    "    const int k = (int)(x * 1.44269504088896341f + 127.5f); /* round(x / ln 2) + the exponent bias */",
    "    const float n = (float)(k - 127);",
    "    const float r = x - n * 0.693359375f + n * 2.12194440e-4f;",
    "    float p = 1.9875691500e-4f;",
    "    union { int bits; float value; } two_n;",
    "    p = p * r + 1.3981999507e-3f;",
    "    p = p * r + 8.3334519073e-3f;",
    "    p = p * r + 4.1665795894e-2f;",
    "    p = p * r + 1.6666665459e-1f;",
    "    p = p * r + 5.0000001201e-1f;",
    "    p = p * r * r + r + 1.0f;",
    "    two_n.bits = k << 23;",
    "    return p * two_n.value;",
    "}",
    "#define EXP(x) exp_poly(x)",
    "",
]
TOLERANCE = 1e-5
LAYERS_PER_BLOCK = 4
LAYER_NORM_EPSILON = "1e-6f"  # flax.linen.LayerNorm's default


def compiler() -> str:
    """The C compiler to use: ``$CC``, else ``cc`` on the PATH; a one-line error if there is none."""
    name = os.environ.get("CC") or "cc"
    found = shutil.which(name)
    if not found:
        raise DistillError(f"no C compiler on the PATH ('{name}'); install one (gcc or clang) or set CC")
    return found


# ---- generating the sources ----------------------------------------------------------------------


def _float(value: float) -> str:
    """A C float literal of ``value``: 9 significant digits, always with a point or an exponent."""
    text = f"{value:.9g}"
    if not any(c in text for c in ".en"):  # "0", "3": an integer literal takes no f suffix
        text += ".0"
    return text + "f"


def _floats(values: np.ndarray) -> str:
    """A C initializer whose every float32 reads back exactly (9 significant digits)."""
    flat = np.asarray(values, np.float32).ravel()
    items = [_float(float(v)) for v in flat]
    lines = [", ".join(items[i : i + 8]) for i in range(0, len(items), 8)]
    return "{\n    " + ",\n    ".join(lines) + "\n}"


def _layers(actor: Mapping) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """(name, kernel [in, out], bias, norm scale, norm bias) of every Dense layer, in order; the head
    has no norm."""
    tower = actor["tower"]
    layers = [
        (
            "input",
            tower["input"]["kernel"],
            tower["input"]["bias"],
            tower["input_norm"]["scale"],
            tower["input_norm"]["bias"],
        )
    ]
    if "blocks" in tower:
        block = tower["blocks"]["block"]
        for i in range(np.asarray(block["dense_0"]["kernel"]).shape[0]):
            for j in range(LAYERS_PER_BLOCK):
                layers.append(
                    (
                        f"block{i}_layer{j}",
                        block[f"dense_{j}"]["kernel"][i],
                        block[f"dense_{j}"]["bias"][i],
                        block[f"norm_{j}"]["scale"][i],
                        block[f"norm_{j}"]["bias"][i],
                    )
                )
    layers.append(("mean", actor["mean"]["kernel"], actor["mean"]["bias"], None, None))
    return [
        (
            n,
            np.asarray(k, np.float32),
            np.asarray(b, np.float32),
            None if s is None else np.asarray(s, np.float32),
            None if o is None else np.asarray(o, np.float32),
        )
        for n, k, b, s, o in layers
    ]


DENSE_ROWS = 8  # input rows per pass over a layer's outputs: the outputs are loaded and stored once per 8 rows
NORM_LANES = 8  # partial sums of the LayerNorm statistics


def _dense_c(name: str, n_in: int, n_out: int) -> list[str]:
    """C of y = bias + x @ kernel for one layer shape (the kernel [in][out], as flax's Dense keeps it).
    Every bound is a literal and the arrays never overlap (restrict), so a compiler vectorises the loop
    over the outputs even at -O2; DENSE_ROWS input rows are added in each pass, in input order."""
    full = n_in - n_in % DENSE_ROWS
    lines = [
        f"static void {name}(const float *restrict x, const float *restrict kernel, const float *restrict bias,",
        f"{' ' * (13 + len(name))}float *restrict y)",
        "{",
        "    int i, o;",
        f"    for (o = 0; o < {n_out}; ++o) y[o] = 0.0f;",
    ]
    if full:
        xs = ", ".join(f"x{k} = x[i + {k}]" for k in range(DENSE_ROWS))
        total = "y[o]" + "".join(f" + x{k} * r{k}[o]" for k in range(DENSE_ROWS))
        lines += [
            f"    for (i = 0; i < {full}; i += {DENSE_ROWS}) {{",
            f"        const float {xs};",
            *[f"        const float *restrict r{k} = kernel + (long)(i + {k}) * {n_out};" for k in range(DENSE_ROWS)],
            f"        for (o = 0; o < {n_out}; ++o) y[o] = {total};",
            "    }",
        ]
    if full < n_in:
        lines += [
            f"    for (i = {full}; i < {n_in}; ++i) {{",
            "        const float xi = x[i];",
            f"        const float *restrict row = kernel + (long)i * {n_out};",
            f"        for (o = 0; o < {n_out}; ++o) y[o] += xi * row[o];",
            "    }",
        ]
    return lines + [f"    for (o = 0; o < {n_out}; ++o) y[o] += bias[o];", "}", ""]


def c_sources(
    actor: Mapping,
    *,
    input_dim: int,
    goal_dim: int,
    action_dim: int,
    reading_dim: int = 0,
    history: int = 0,
    header_comment: str = "",
) -> dict[str, str]:
    """``{"policy.h": ..., "policy.c": ...}`` for the actor's deterministic policy.

    ``input_dim`` is what the actor reads besides the goal (the state, or the stacked sensor vector);
    ``reading_dim`` and ``history`` (both > 0) make it a sensor student with ``distill_step``."""
    layers = _layers(actor)
    width = layers[0][1].shape[1]
    if layers[0][1].shape[0] != input_dim + goal_dim:
        raise DistillError(f"the actor reads {layers[0][1].shape[0]} inputs, not {input_dim} + {goal_dim}")
    if layers[-1][1].shape[1] != action_dim:
        raise DistillError(f"the actor gives {layers[-1][1].shape[1]} actions, not {action_dim}")
    blocks = (len(layers) - 2) // LAYERS_PER_BLOCK
    defines = {"INPUT_DIM": input_dim, "GOAL_DIM": goal_dim, "ACTION_DIM": action_dim, "WIDTH": width, "BLOCKS": blocks}
    defines.update({"READING_DIM": reading_dim, "HISTORY": history} if reading_dim else {"OBS_DIM": input_dim})
    header = _header(defines, reading_dim > 0, header_comment)
    return {"policy.h": header, "policy.c": _source(layers, input_dim, goal_dim, action_dim, blocks, reading_dim > 0)}


def _swish_bound(layers) -> float:
    """After LayerNorm every entry lies within sqrt(width) of zero before its scale and offset, so a
    swish input is bounded by the largest |scale| * sqrt(width) + |offset| of any layer."""
    width = layers[0][1].shape[1]
    return max(
        float(np.abs(sc).max()) * np.sqrt(width) + float(np.abs(of).max())
        for _, _, _, sc, of in layers
        if sc is not None
    )


def _header(defines: dict, sensed: bool, header_comment: str) -> str:
    guard = "DISTILL_POLICY_H"
    network = [
        "/* The network alone on a whole input: action[DISTILL_ACTION_DIM] for input[DISTILL_INPUT_DIM]",
        "   (the stacked history of a sensor student, oldest reading first) and goal[DISTILL_GOAL_DIM]. */",
        "void distill_policy(const float *input, const float *goal, float *action);",
        "",
    ]
    api = network + (
        [
            "typedef struct {",
            "    float history[DISTILL_HISTORY * DISTILL_READING_DIM]; /* oldest reading first */",
            "    int started;                                          /* 0 until the first reading after a reset */",
            "} distill_state;",
            "",
            "/* Forgets the history: call at the start of every episode. */",
            "void distill_reset(distill_state *state);",
            "/* One control tick: the newest reading enters the history (the first after a reset fills it), then",
            "   action[DISTILL_ACTION_DIM] in [-1, 1] for goal[DISTILL_GOAL_DIM]. */",
            "void distill_step(distill_state *state, const float *reading, const float *goal, float *action);",
        ]
        if sensed
        else [
            "/* action[DISTILL_ACTION_DIM] in [-1, 1] for obs[DISTILL_OBS_DIM] and goal[DISTILL_GOAL_DIM]. */",
            "void distill_act(const float *obs, const float *goal, float *action);",
        ]
    )
    comment = "\n".join(f" * {line}".rstrip() for line in header_comment.splitlines())
    return "\n".join(
        [
            f"/*\n{comment}\n */" if comment else "",
            f"#ifndef {guard}",
            f"#define {guard}",
            "",
            *(f"#define DISTILL_{name} {value}" for name, value in defines.items()),
            "",
            "#ifdef __cplusplus",
            'extern "C" {',
            "#endif",
            "",
            *api,
            "",
            "#ifdef __cplusplus",
            "}",
            "#endif",
            "",
            f"#endif /* {guard} */",
            "",
        ]
    )


def _weights(layers) -> list[str]:
    """Every layer's arrays as ``static const float`` initializers."""
    lines = []
    for name, kernel, bias, scale, offset in layers:
        lines.append(f"/* {name}: {kernel.shape[0]} -> {kernel.shape[1]}, kernel[in][out] */")
        lines.append(f"static const float {name}_kernel[{kernel.size}] = {_floats(kernel)};")
        lines.append(f"static const float {name}_bias[{bias.size}] = {_floats(bias)};")
        if scale is not None:
            lines.append(f"static const float {name}_scale[{scale.size}] = {_floats(scale)};")
            lines.append(f"static const float {name}_offset[{offset.size}] = {_floats(offset)};")
    return lines


def _tower_calls(blocks: int) -> list[str]:
    """The body of the residual tower: the input layer, then each block's 4 layers and its skip."""
    calls = ["    dense_input(x, input_kernel, input_bias, h);", "    norm_swish(h, input_scale, input_offset);"]
    for i in range(blocks):
        calls.append("    memcpy(skip, h, sizeof skip);")
        for j in range(LAYERS_PER_BLOCK):
            name = f"block{i}_layer{j}"
            calls.append(f"    dense_hidden(h, {name}_kernel, {name}_bias, t);")
            calls.append(f"    norm_swish(t, {name}_scale, {name}_offset);")
            calls.append("    memcpy(h, t, sizeof t);")
        calls.append("    for (i = 0; i < DISTILL_WIDTH; ++i) h[i] += skip[i];")
    return calls


def _source(layers, input_dim: int, goal_dim: int, action_dim: int, blocks: int, sensed: bool) -> str:
    width = layers[0][1].shape[1]
    weights, calls = _weights(layers), _tower_calls(blocks)
    fast_exp = _swish_bound(layers) <= EXP_POLY_RANGE
    body = [
        "/* Generated by distill: the student's deterministic policy, action = tanh(mean(concat[input, goal])). */",
        "#include <math.h>",
        "#include <string.h>",
        "",
        '#include "policy.h"',
        "",
        *weights,
        "",
        *_dense_c("dense_input", input_dim + goal_dim, width),
        *_dense_c("dense_hidden", width, width),
        *_dense_c("dense_head", width, action_dim),
        "",
        *(EXP_POLY if fast_exp else ["#define EXP(x) expf(x)", ""]),
        "/* The sum of DISTILL_WIDTH floats in NORM_LANES independent partial sums, which a compiler adds as",
        "   vectors (a single running sum cannot be vectorised without reordering the float additions). */",
        f"#define NORM_LANES {NORM_LANES}",
        "static float sum_width(const float *restrict h)",
        "{",
        "    float part[NORM_LANES], total = 0.0f;",
        "    int i, j;",
        "    for (j = 0; j < NORM_LANES; ++j) part[j] = 0.0f;",
        "    for (i = 0; i + NORM_LANES <= DISTILL_WIDTH; i += NORM_LANES)",
        "        for (j = 0; j < NORM_LANES; ++j) part[j] += h[i + j];",
        "    for (; i < DISTILL_WIDTH; ++i) part[0] += h[i];",
        "    for (j = 0; j < NORM_LANES; ++j) total += part[j];",
        "    return total;",
        "}",
        "",
        "/* LayerNorm over the width (flax's epsilon 1e-6), then swish(z) = z / (1 + e^-z), in place. */",
        "static void norm_swish(float *restrict h, const float *restrict scale, const float *restrict offset)",
        "{",
        "    float squares[DISTILL_WIDTH], mean, inv;",
        "    int i;",
        "    mean = sum_width(h) / (float)DISTILL_WIDTH;",
        "    for (i = 0; i < DISTILL_WIDTH; ++i) squares[i] = (h[i] - mean) * (h[i] - mean);",
        f"    inv = 1.0f / sqrtf(sum_width(squares) / (float)DISTILL_WIDTH + {LAYER_NORM_EPSILON});",
        "    for (i = 0; i < DISTILL_WIDTH; ++i) {",
        "        const float v = (h[i] - mean) * inv * scale[i] + offset[i];",
        "        h[i] = v / (1.0f + EXP(-v));",
        "    }",
        "}",
        "",
        "void distill_policy(const float *input, const float *goal, float *action)",
        "{",
        "    float x[DISTILL_INPUT_DIM + DISTILL_GOAL_DIM], h[DISTILL_WIDTH], t[DISTILL_WIDTH], skip[DISTILL_WIDTH];",
        "    float mean[DISTILL_ACTION_DIM];",
        "    int i;",
        "    (void)t;",
        "    (void)skip;",
        "    memcpy(x, input, sizeof(float) * DISTILL_INPUT_DIM);",
        "    memcpy(x + DISTILL_INPUT_DIM, goal, sizeof(float) * DISTILL_GOAL_DIM);",
        *calls,
        "    dense_head(h, mean_kernel, mean_bias, mean);",
        "    for (i = 0; i < DISTILL_ACTION_DIM; ++i) action[i] = tanhf(mean[i]);",
        "}",
        "",
    ]
    if sensed:
        body += [
            "void distill_reset(distill_state *state)",
            "{",
            "    memset(state, 0, sizeof *state);",
            "}",
            "",
            "void distill_step(distill_state *state, const float *reading, const float *goal, float *action)",
            "{",
            "    const size_t size = sizeof(float) * DISTILL_READING_DIM;",
            "    int k;",
            "    if (!state->started) {",
            "        for (k = 0; k < DISTILL_HISTORY; ++k) memcpy(state->history + k * DISTILL_READING_DIM, reading, size);",
            "        state->started = 1;",
            "    } else {",
            "        memmove(state->history, state->history + DISTILL_READING_DIM, size * (DISTILL_HISTORY - 1));",
            "        memcpy(state->history + (DISTILL_HISTORY - 1) * DISTILL_READING_DIM, reading, size);",
            "    }",
            "    distill_policy(state->history, goal, action);",
            "}",
            "",
        ]
    else:
        body += [
            "void distill_act(const float *obs, const float *goal, float *action)",
            "{",
            "    distill_policy(obs, goal, action);",
            "}",
            "",
        ]
    return "\n".join(body)


# ---- compiling and calling -----------------------------------------------------------------------


def compile_library(folder: Path, flags: tuple[str, ...] = CFLAGS) -> Path:
    """``folder/policy.c`` (beside its header) as a shared library ``folder/libpolicy.so``; the compiler's
    first error line in a one-line DistillError if it fails or warns."""
    folder = Path(folder)
    library = folder / "libpolicy.so"
    command = [compiler(), *flags, "-shared", "-fPIC", "-o", str(library), str(folder / "policy.c"), "-lm"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        first = next((line for line in result.stderr.splitlines() if "error" in line), result.stderr.strip()[:300])
        raise DistillError(f"the generated C does not compile cleanly: {first.strip()[:300]}")
    return library


def build_c_program(folder: Path, build: Path, name: str, main_source: str, flags: tuple[str, ...] = CFLAGS) -> Path:
    """``main_source`` compiled with the C export in ``folder`` into the program ``build/name``. The
    program is no part of the policy and may use POSIX clocks, so it is built without -pedantic and
    -Werror; a one-line DistillError if it does not compile."""
    for source in ("policy.c", "policy.h"):
        shutil.copy2(Path(folder) / source, build / source)
    (build / f"{name}.c").write_text(main_source)
    program = build / name
    relaxed = [f for f in flags if f not in ("-pedantic", "-Werror")]
    command = [compiler(), *relaxed, "-o", str(program), str(build / f"{name}.c"), str(build / "policy.c"), "-lm"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["no compiler output"])[0]
        raise DistillError(f"the C {name} program does not compile: {first[:300]}")
    return program


class CPolicy:
    """A compiled C policy through ``ctypes``: ``policy(obs, goal)`` (or ``policy(reading, goal)``
    after ``policy.reset()`` for a sensor student), one input or a batch of rows, like ``OnnxPolicy``."""

    def __init__(
        self, library: Path, input_dim: int, goal_dim: int, action_dim: int, reading_dim: int = 0, history: int = 0
    ):
        self.library = ctypes.CDLL(str(library))
        self.input_dim, self.goal_dim, self.action_dim = input_dim, goal_dim, action_dim
        self.reading_dim, self.history = reading_dim, history
        pointer = ctypes.POINTER(ctypes.c_float)
        self._network = self.library.distill_policy
        self._network.argtypes = [pointer, pointer, pointer]
        if reading_dim:
            self._step = self.library.distill_step
            self._step.argtypes = [ctypes.c_void_p, pointer, pointer, pointer]
            self._reset = self.library.distill_reset
            self._reset.argtypes = [ctypes.c_void_p]
            self._state_size = 4 * reading_dim * history + 16
            self._states: list[ctypes.Array] = []
        else:
            self._act = self.library.distill_act
            self._act.argtypes = [pointer, pointer, pointer]

    def reset(self) -> None:
        self._states = []

    def network(self, x, goal) -> np.ndarray:
        """The network alone on whole inputs (rows): ``distill_policy``."""
        x = np.ascontiguousarray(np.atleast_2d(x), np.float32)
        goal = np.ascontiguousarray(np.atleast_2d(goal), np.float32)
        action = np.empty((x.shape[0], self.action_dim), np.float32)
        pointer = ctypes.POINTER(ctypes.c_float)
        for row in range(x.shape[0]):
            self._network(
                x[row].ctypes.data_as(pointer), goal[row].ctypes.data_as(pointer), action[row].ctypes.data_as(pointer)
            )
        return action

    def __call__(self, x, goal) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        goal = np.ascontiguousarray(goal, np.float32)
        single = x.ndim == 1
        x, goal = np.atleast_2d(x), np.atleast_2d(goal)
        action = np.empty((x.shape[0], self.action_dim), np.float32)
        pointer = ctypes.POINTER(ctypes.c_float)
        if self.reading_dim:
            if not self._states:
                self._states = [ctypes.create_string_buffer(self._state_size) for _ in range(x.shape[0])]
                for state in self._states:
                    self._reset(state)
            for row, state in enumerate(self._states):
                self._step(
                    state,
                    x[row].ctypes.data_as(pointer),
                    goal[row].ctypes.data_as(pointer),
                    action[row].ctypes.data_as(pointer),
                )
        else:
            for row in range(x.shape[0]):
                self._act(
                    x[row].ctypes.data_as(pointer),
                    goal[row].ctypes.data_as(pointer),
                    action[row].ctypes.data_as(pointer),
                )
        return action[0] if single else action


def gate(
    sources: dict[str, str],
    dims: dict,
    reference: Callable[[np.ndarray, np.ndarray], np.ndarray],
    inputs: list[tuple[np.ndarray, np.ndarray]],
) -> float:
    """Compiles ``sources`` in a temporary folder and compares the library with ``reference`` (the JAX
    student on the stacked input and goal, a batch) on ``inputs``; the max abs error, or a one-line
    DistillError if it exceeds ``TOLERANCE``."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in sources.items():
            (Path(tmp) / name).write_text(text)
        policy = CPolicy(
            compile_library(Path(tmp)),
            dims["input_dim"],
            dims["goal_dim"],
            dims["action_dim"],
            dims.get("reading_dim", 0),
            dims.get("history", 0),
        )
        worst = 0.0
        for x, goal in inputs:
            # The gate calls the network on whole stacked inputs: the history is checked on its own.
            got = policy.network(x, goal)
            worst = max(worst, float(np.max(np.abs(got - np.asarray(reference(x, goal))))))
    if not worst <= TOLERANCE:
        raise DistillError(f"the C policy disagrees with the JAX student: max |c - jax| = {worst:.2e} > {TOLERANCE:g}")
    return worst


# ---- a student run as C files ------------------------------------------------------------------

GATE_BATCHES = (1, 2, 7, 64)


def _commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unknown"


def _header_comment(contract: dict, digest: str, run: Path, sensors) -> str:
    lines = ["distill: the deterministic policy of a distilled student, generated as C99.", ""]
    if sensors is None:
        lines.append(f"obs[{contract['state']['size']}]: the state, in this order (state indices):")
        lines += [f"  {s['start']}:{s['stop']}  {s['name']}" for s in contract["state"]["slices"]]
    else:
        obs = contract["observation"]
        lines.append(
            f"reading[{obs['reading_size']}]: one sensor reading a tick, the state slices in this order "
            "(state indices, training noise sigma):"
        )
        lines += [
            f"  {r['state_start']}:{r['state_stop']}  {r['name']}  (noise {r['noise_sigma']:g})" for r in obs["reading"]
        ]
        lines.append(f"history: the last {obs['history']} readings, {obs['history_order']}; distill_state keeps them.")
        lines.append(
            f"latency: trained with readings {obs['latency_steps']} control steps late (the robot's own delay)."
        )
    lines.append(f"goal[{contract['goal']['size']}]: {contract['goal']['meaning']}.")
    lines.append(
        f"action[{contract['action']['size']}]: in [-1, 1]; tanh is inside, no scaling "
        "(the environment maps [-1, 1] onto its actuators)."
    )
    lines.append(
        f"control period: {contract['control']['period_s']:g} s per call; episodes of "
        f"{contract['control']['episode_length']} steps."
    )
    provenance = contract["provenance"]
    lines.append(
        f"made from student run '{run.name}' (depth {provenance['student_depth']}, width "
        f"{provenance['student_width']}) of teacher '{provenance['teacher_run']}' (depth "
        f"{provenance['teacher_depth']}); distill commit {_commit()}."
    )
    lines.append(f"contract sha256: {digest} (policy.json beside this file).")
    return "\n".join(lines)


def write_c_policy(run: Path, out: Path, which: str = "best") -> dict:
    """Writes ``out/policy.h``, ``out/policy.c`` and ``out/policy.json`` for a student run, behind the
    parity gate; returns a summary. Everything is checked before anything is written, and the files
    are renamed into place only after the gate passed, so a refusal leaves nothing."""
    from distill.data.sensors import sensor_model
    from distill.store import runs
    from export.contract import contract_hash, student_contract, write_contract
    from students.train import load_student

    run, out = Path(run), Path(out)
    runs.check_new_out_dir(out, "choose another --out")
    compiler()
    record = runs.read_config(run, kind="student")
    config, spec, networks, params, step = load_student(run, which)
    sensors = sensor_model(config)
    contract = student_contract(run, record, config, spec, sensors)
    digest = contract_hash(contract)
    input_dim = sensors.sensor_dim if sensors else spec.state_dim
    actor = jax.device_get(params["actor"])
    sources = c_sources(
        actor,
        input_dim=input_dim,
        goal_dim=spec.goal_dim,
        action_dim=spec.action_dim,
        reading_dim=sensors.reading_dim if sensors else 0,
        history=sensors.history if sensors else 0,
        header_comment=_header_comment(contract, digest, run, sensors),
    )
    rng = np.random.default_rng(0)
    inputs = [
        (
            rng.standard_normal((b, input_dim)).astype(np.float32),
            rng.standard_normal((b, spec.goal_dim)).astype(np.float32),
        )
        for b in GATE_BATCHES
    ]

    def reference(x, goal):
        return np.asarray(networks.act(params["actor"], np.concatenate([x, goal], axis=-1)))

    dims = {
        "input_dim": input_dim,
        "goal_dim": spec.goal_dim,
        "action_dim": spec.action_dim,
        "reading_dim": sensors.reading_dim if sensors else 0,
        "history": sensors.history if sensors else 0,
    }
    error = gate(sources, dims, reference, inputs)
    tmp = out.parent / f".{out.name}.writing-{os.getpid()}"
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    try:
        tmp.mkdir(parents=True)
        for name, text in sources.items():
            (tmp / name).write_text(text)
        write_contract(contract, tmp / "policy.json")
        if out.exists():
            out.rmdir()  # an empty folder, checked above
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for path in created:
            try:
                path.rmdir()
            except OSError:
                break
        raise
    return {
        "out": str(out),
        "files": sorted(sources) + ["policy.json"],
        "max_abs_error": error,
        "contract_sha256": digest,
        "policy_c_bytes": (out / "policy.c").stat().st_size,
        "checkpoint_step": int(step),
        "sensors": sensors is not None,
    }


def read_c_contract(folder: Path) -> dict:
    """The contract of the C export in ``folder``; a one-line DistillError if the folder holds none."""
    import json

    folder = Path(folder)
    if not (folder / "policy.c").is_file() or not (folder / "policy.json").is_file():
        raise DistillError(f"{folder} holds no C policy (policy.c and policy.json)")
    return json.loads((folder / "policy.json").read_text())


def c_reading_size(contract: dict) -> int:
    """How many floats the C policy reads a tick: a sensor reading, or the whole observation."""
    observation = contract["observation"]
    return observation.get("reading_size", 0) if observation["input"] == "sensors" else observation["size"]


def load_c_policy(folder: Path) -> CPolicy:
    """Compiles the C files in ``folder`` (as ``write_c_policy`` left them) into a temporary library."""
    folder = Path(folder)
    contract = read_c_contract(folder)
    build = Path(tempfile.mkdtemp(prefix="distill-c-"))
    for name in ("policy.c", "policy.h"):
        shutil.copy2(folder / name, build / name)
    obs = contract["observation"]
    sensed = obs["input"] == "sensors"
    try:
        policy = CPolicy(
            compile_library(build),
            obs["size"],
            contract["goal"]["size"],
            contract["action"]["size"],
            obs.get("reading_size", 0) if sensed else 0,
            obs.get("history", 0) if sensed else 0,
        )
    finally:  # a loaded library stays mapped after its file is gone
        shutil.rmtree(build, ignore_errors=True)
    policy.contract = contract
    return policy
