"""Batch-1, single-thread latency: teacher (its depth and depth 1024) and student in JAX, student in onnxruntime.

    python benchmarks/latency.py [--teacher-run RUN] [--student-run RUN] [--onnx policy.onnx] --json results/latency.json

JAX is limited to one thread here, as a robot's control loop would be; onnxruntime sessions use one
intra-op thread. Prints a table and writes JSON and a PNG.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + SINGLE_THREAD).strip()

if __name__ == "__main__":
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        import distill.envs  # noqa: F401
    from distill.app.latency import main

    main()
