"""``distill loop-check``: a policy in a fixed-rate control loop, what a deployer runs on the robot
computer before the first run.

The loop calls the policy once per tick at the given rate, on recorded readings (a ``.npy`` file of
shape (ticks, size)) or random ones, with absolute deadlines: tick k is due at start + k / rate, the
loop sleeps until then, and a call that ends after the next tick's start is an overrun. It reports
the overruns, the jitter (how late each call started, p99) and the worst tick. An ONNX file runs in
this process through ``OnnxPolicy``, as a Python controller would call it; a C export runs in a C
loop (``clock_nanosleep`` to absolute deadlines) compiled with the policy, as a C controller would.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from distill.errors import DistillError


def load_policy(path: Path):
    """An exported policy to call: an ONNX file (``OnnxPolicy``) or a folder the C export wrote."""
    from export.c_policy import c_reading_size, read_c_contract
    from export.runtime import OnnxPolicy, PolicyFileError

    path = Path(path)
    if path.is_dir():  # the C loop is compiled with the policy: only its sizes are needed here
        contract = read_c_contract(path)
        return None, c_reading_size(contract), contract["goal"]["size"], "C"
    if path.suffix != ".onnx" or not path.is_file():
        raise DistillError(f"{path} is not a policy: give an exported .onnx file or a folder written by --format c")
    try:
        policy = OnnxPolicy(path)
    except PolicyFileError as err:
        raise DistillError(str(err)) from None
    return policy, policy.sensor_dim and policy.reading_dim or policy.state_dim, policy.goal_dim, "ONNX"


C_LOOP = r"""
#define _POSIX_C_SOURCE 200112L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "policy.h"

#ifdef DISTILL_HISTORY
#define READ_DIM DISTILL_READING_DIM
#else
#define READ_DIM DISTILL_OBS_DIM
#endif

/* argv: ticks, period in ns, readings file (float32 rows), rows, output file (late and took, ns). */
int main(int argc, char **argv)
{
    long ticks = atol(argv[1]), period = atol(argv[2]), rows = atol(argv[4]), k;
    float *readings = malloc(sizeof(float) * rows * READ_DIM), goal[DISTILL_GOAL_DIM] = {0};
    double *times = malloc(sizeof(double) * 2 * ticks);
    float action[DISTILL_ACTION_DIM];
    FILE *in = fopen(argv[3], "rb"), *out;
    struct timespec start, due, began, ended;
#ifdef DISTILL_HISTORY
    distill_state state;
#endif
    if (argc < 6 || !readings || !times || !in || fread(readings, sizeof(float) * READ_DIM, rows, in) != (size_t)rows)
        return 2;
    fclose(in);
#ifdef DISTILL_HISTORY
    distill_reset(&state);
    for (k = 0; k < 200; ++k) distill_step(&state, readings + (k % rows) * READ_DIM, goal, action);
    distill_reset(&state);
#else
    for (k = 0; k < 200; ++k) distill_act(readings + (k % rows) * READ_DIM, goal, action);
#endif
    clock_gettime(CLOCK_MONOTONIC, &start);
    start.tv_nsec += 10000000L;
    for (k = 0; k < ticks; ++k) {
        long long at = (long long)start.tv_sec * 1000000000LL + start.tv_nsec + (long long)k * period;
        due.tv_sec = (time_t)(at / 1000000000LL);
        due.tv_nsec = (long)(at % 1000000000LL);
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL);
        clock_gettime(CLOCK_MONOTONIC, &began);
#ifdef DISTILL_HISTORY
        distill_step(&state, readings + (k % rows) * READ_DIM, goal, action);
#else
        distill_act(readings + (k % rows) * READ_DIM, goal, action);
#endif
        clock_gettime(CLOCK_MONOTONIC, &ended);
        times[2 * k] = (double)(began.tv_sec - due.tv_sec) * 1e9 + (double)(began.tv_nsec - due.tv_nsec);
        times[2 * k + 1] = (double)(ended.tv_sec - began.tv_sec) * 1e9 + (double)(ended.tv_nsec - began.tv_nsec);
    }
    out = fopen(argv[5], "wb");
    if (!out) return 2;
    fwrite(times, sizeof(double), (size_t)(2 * ticks), out);
    fclose(out);
    return action[0] != action[0];
}
"""


def _c_loop(folder: Path, ticks: int, period_s: float, recorded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(late, took) in seconds per tick, from the C loop compiled with the C export in ``folder``."""
    import subprocess
    import tempfile

    from export.c_policy import build_c_program

    with tempfile.TemporaryDirectory() as tmp:
        build = Path(tmp)
        program = build_c_program(folder, build, "loop", C_LOOP)
        recorded.astype(np.float32).tofile(build / "readings.bin")
        run = subprocess.run(
            [
                str(program),
                str(ticks),
                str(int(round(period_s * 1e9))),
                str(build / "readings.bin"),
                str(len(recorded)),
                str(build / "times.bin"),
            ],
            capture_output=True,
        )
        if run.returncode != 0:
            raise DistillError(f"the C loop failed (status {run.returncode})")
        times = np.fromfile(build / "times.bin", dtype=np.float64).reshape(ticks, 2) / 1e9
    return times[:, 0], times[:, 1]


def loop_check(path: Path, rate_hz: float, seconds: float, readings: Path | None = None, seed: int = 0) -> dict:
    """Runs the policy at ``rate_hz`` for ``seconds``; ticks, overruns, jitter p99, worst tick, call p50."""
    if not rate_hz > 0:
        raise DistillError(f"--rate must be positive, got {rate_hz}")
    if not seconds > 0:
        raise DistillError(f"--seconds must be positive, got {seconds}")
    policy, size, goal_dim, kind = load_policy(path)
    ticks = max(1, int(round(rate_hz * seconds)))
    if readings is not None:
        try:
            recorded = np.load(readings).astype(np.float32)
        except (OSError, ValueError) as err:
            raise DistillError(f"cannot read the readings {readings}: {err}") from None
        if recorded.ndim != 2 or recorded.shape[1] != size:
            raise DistillError(
                f"{readings} holds readings of shape {recorded.shape}; the policy reads ({size},) a tick"
            )
    else:
        recorded = np.random.default_rng(seed).standard_normal((min(ticks, 4096), size)).astype(np.float32)
    period = 1.0 / rate_hz
    if kind == "C":
        late, took = _c_loop(Path(path), ticks, period, recorded)
        return _summary(path, kind, rate_hz, period, late, took, readings)
    goal = np.zeros(goal_dim, np.float32)
    if hasattr(policy, "reset"):
        policy.reset()
    for i in range(200):  # warm caches and lazy initialisation before the clock starts
        policy(recorded[i % len(recorded)], goal)
    if hasattr(policy, "reset"):
        policy.reset()
    late = np.empty(ticks)
    took = np.empty(ticks)
    clock = time.perf_counter
    start = clock() + 0.01
    for k in range(ticks):
        due = start + k * period
        while (now := clock()) < due:
            if due - now > 2e-4:
                time.sleep(due - now - 1e-4)
        began = clock()
        policy(recorded[k % len(recorded)], goal)
        ended = clock()
        late[k], took[k] = began - due, ended - began
    return _summary(path, kind, rate_hz, period, late, took, readings)


def _summary(path, kind: str, rate_hz: float, period: float, late: np.ndarray, took: np.ndarray, readings) -> dict:
    # A tick overruns when its call ends after the next tick was due.
    finished_late = late + took > period
    ticks = len(late)
    return {
        "policy": str(path),
        "kind": kind,
        "rate_hz": rate_hz,
        "period_us": period * 1e6,
        "ticks": ticks,
        "overruns": int(finished_late.sum()),
        "overrun_share": float(finished_late.mean()),
        "jitter_p99_us": float(np.percentile(late, 99) * 1e6),
        "worst_tick_us": float((late + took).max() * 1e6),
        "call_p50_us": float(np.percentile(took, 50) * 1e6),
        "call_p99_us": float(np.percentile(took, 99) * 1e6),
        "readings": "recorded" if readings is not None else "random",
    }
