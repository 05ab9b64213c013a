"""``distill loop-check``: a policy in a fixed-rate control loop, what a deployer runs on the robot
computer before the first run.

The loop calls the policy once per tick at the given rate, on recorded readings (a ``.npy`` file of
shape (ticks, size)) or random ones, with absolute deadlines: tick k is due at start + k / rate, the
loop sleeps until then, and a call that ends after the next tick's start is an overrun. It reports
the overruns, the jitter (how late each call started, p99) and the worst tick.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from distill.errors import DistillError


def load_policy(path: Path):
    """An exported policy to call: an ONNX file (``OnnxPolicy``) or a folder the C export wrote."""
    from export.c_policy import load_c_policy
    from export.runtime import OnnxPolicy, PolicyFileError

    path = Path(path)
    if path.is_dir():
        policy = load_c_policy(path)
        return policy, policy.reading_dim or policy.input_dim, policy.goal_dim, "C"
    if path.suffix != ".onnx" or not path.is_file():
        raise DistillError(f"{path} is not a policy: give an exported .onnx file or a folder written by --format c")
    try:
        policy = OnnxPolicy(path)
    except PolicyFileError as err:
        raise DistillError(str(err)) from None
    return policy, policy.sensor_dim and policy.reading_dim or policy.state_dim, policy.goal_dim, "ONNX"


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
    goal = np.zeros(goal_dim, np.float32)
    if hasattr(policy, "reset"):
        policy.reset()
    for i in range(200):  # warm caches and lazy initialisation before the clock starts
        policy(recorded[i % len(recorded)], goal)
    if hasattr(policy, "reset"):
        policy.reset()
    period = 1.0 / rate_hz
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
    # A tick overruns when its call ends after the next tick was due.
    finished_late = late + took > period
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
