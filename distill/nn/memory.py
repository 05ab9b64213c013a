"""How much memory a training run will need, estimated before anything is built.

A network that cannot fit should be refused at once with a number, not after minutes of building
(a depth of a million, or a width whose matrices exceed the machine). The estimate is the network
family's exact parameter count times what training keeps per parameter, plus the activations the
backward pass keeps, with the constants measured on the teacher's update at depth 1024 (width 256,
batch 256: 5.6 GB with rematerialisation, 11.0 GB without; ``benchmarks/compile_depth.py``).
"""

from __future__ import annotations

import dataclasses
import os

from distill.errors import DistillError
from distill.nn.networks import LAYERS_PER_BLOCK

FLOAT_BYTES = 4
# Parameters, gradients, two Adam moments and the updated copies XLA holds while applying them.
TRAINING_COPIES_PER_PARAM = 7
# Tensors of batch x width that the backward pass keeps per Dense-LayerNorm-swish layer.
ACTIVATIONS_PER_LAYER = 5
# The runtime, compiled programs and environments, whatever the network.
BASE_BYTES = 300 * 2**20
# Above this depth rematerialisation is on unless forced off: memory, not compute, binds there.
AUTO_REMAT_DEPTH = 256


def tower_params(in_dim: int, out_dim: int, width: int, depth: int) -> int:
    """Parameters of one network of the family: input projection, residual blocks, head."""
    layer = width * width + 3 * width  # Dense kernel and bias, LayerNorm scale and offset
    blocks = depth // LAYERS_PER_BLOCK
    return in_dim * width + 3 * width + blocks * LAYERS_PER_BLOCK * layer + width * out_dim + out_dim


@dataclasses.dataclass(frozen=True)
class Network:
    in_dim: int
    out_dim: int
    depth: int
    passes: int = 1
    """Forward passes per update whose activations the backward pass keeps."""


def training_bytes(networks: list[Network], width: int, batch: int, remat: bool, extra_bytes: int = 0) -> int:
    params = sum(tower_params(n.in_dim, n.out_dim, width, n.depth) for n in networks)
    tensor = batch * width * FLOAT_BYTES
    if remat:  # only block inputs are kept; one block's internals are recomputed at a time
        kept = sum(
            n.passes * (n.depth // LAYERS_PER_BLOCK + LAYERS_PER_BLOCK * ACTIVATIONS_PER_LAYER) for n in networks
        )
    else:
        kept = sum(n.passes * (n.depth + 1) * ACTIVATIONS_PER_LAYER for n in networks)
    return TRAINING_COPIES_PER_PARAM * FLOAT_BYTES * params + kept * tensor + BASE_BYTES + extra_bytes


def available_bytes() -> int:
    """Memory of the first device: an accelerator's limit, or the host's available memory."""
    import jax

    device = jax.local_devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if stats.get("bytes_limit"):
            return int(stats["bytes_limit"])
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def gigabytes(n: int) -> str:
    return f"{n / 2**30:.1f} GB"


def auto_remat(needed_without: int, depth: int, available: int) -> bool:
    return depth >= AUTO_REMAT_DEPTH or needed_without > available // 2


def check_fits(needed: int, available: int, what: str) -> None:
    if needed > available:
        raise DistillError(
            f"{what} needs an estimated {gigabytes(needed)} to train but {gigabytes(available)} is available; "
            "use a smaller depth, width or batch"
        )


__all__ = ["Network", "auto_remat", "available_bytes", "check_fits", "training_bytes", "tower_params"]
