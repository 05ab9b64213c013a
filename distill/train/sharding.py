"""Data-parallel layout shared by teachers and students.

Environment slots and replay columns are split over the devices of a 1-D mesh named "data";
parameters, optimiser states, counters and rng keys are replicated. XLA then inserts the
cross-device reductions, so the same jitted code runs on one device, several, or several hosts.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from distill.data.replay import TrajectoryBuffer

# shard_map specs of a replay buffer: columns (environment slots) split, the write counter replicated.
BUFFER_SPEC = TrajectoryBuffer(P(None, "data"), P(None, "data"), P(None, "data"), P(None, "data"), P())


def make_mesh() -> Mesh:
    return Mesh(np.array(jax.devices()), ("data",))


def replicated(mesh: Mesh, tree):
    return jax.tree.map(lambda _: NamedSharding(mesh, P()), tree)


def env_shardings(mesh: Mesh, vec_shape):
    """Per-slot leaves split over devices; the reset key and scalars replicated."""

    def leaf_sharding(path, leaf):
        is_key = any(getattr(p, "name", None) == "key" for p in path)
        return NamedSharding(mesh, P() if is_key or leaf.ndim == 0 else P("data"))

    return jax.tree_util.tree_map_with_path(leaf_sharding, vec_shape)


def buffer_shardings(mesh: Mesh, buffer_shape: TrajectoryBuffer) -> TrajectoryBuffer:
    by_column = NamedSharding(mesh, P(None, "data"))
    return buffer_shape.replace(
        states=by_column,
        actions=by_column,
        traj_ids=by_column,
        steps=by_column,
        rows_written=NamedSharding(mesh, P()),
    )


def with_shardings(abstract, shardings):
    """Attaches shardings to an abstract pytree (an orbax restore target)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def stacked_shardings(shardings):
    """Shardings of runs stacked on a new leading axis: that axis is never split, the rest as before."""
    return jax.tree.map(lambda s: NamedSharding(s.mesh, P(None, *s.spec)) if len(s.spec) else s, shardings)
