"""Runs made before the stacked block layout saved each residual block apart (``block_0``,
``block_1``, ...); checkpoints convert them when read."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np


def _unrolled_names(tree: dict) -> list[str]:
    return sorted((k for k in tree if k.startswith("block_") and k[6:].isdigit()), key=lambda k: int(k[6:]))


def _map_dicts(tree, fn):
    """Applies ``fn`` to every dict of a nested structure, innermost first; other containers
    (flax structs, optax states, tuples, lists) are rebuilt around the converted dicts."""
    if isinstance(tree, dict):
        return fn({k: _map_dicts(v, fn) for k, v in tree.items()})
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        return tree.replace(**{f.name: _map_dicts(getattr(tree, f.name), fn) for f in dataclasses.fields(tree)})
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(_map_dicts(v, fn) for v in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(_map_dicts(v, fn) for v in tree)
    return tree


def stack_blocks(tree):
    """Unrolled-layout parameters (``block_i`` per block) as the stacked layout (``blocks/block``
    with a leading block axis); anything else is left as it is."""

    def convert(d: dict) -> dict:
        names = _unrolled_names(d)
        if not names:
            return d
        rest = {k: v for k, v in d.items() if k not in names}
        stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *[d[n] for n in names])
        return {**rest, "blocks": {"block": stacked}}

    return _map_dicts(tree, convert)


def unstack_blocks(tree):
    """The inverse of ``stack_blocks`` on arrays or abstract shapes: the layout an unrolled run saved."""

    def convert(d: dict) -> dict:
        if set(d.get("blocks", {})) != {"block"}:
            return d
        stacked = d["blocks"]["block"]
        count = jax.tree.leaves(stacked)[0].shape[0]

        def take(x, i):
            if isinstance(x, jax.ShapeDtypeStruct):
                # Parameters are replicated, so the stacked array's sharding fits each block too.
                return jax.ShapeDtypeStruct(x.shape[1:], x.dtype, sharding=getattr(x, "sharding", None))
            return x[i]

        rest = {k: v for k, v in d.items() if k != "blocks"}
        return {**rest, **{f"block_{i}": jax.tree.map(lambda x: take(x, i), stacked) for i in range(count)}}

    return _map_dicts(tree, convert)
