"""The paper's two-tower model parallelism: per-device computation over the mesh's "tower" axis.

With `config.mesh_shape = (D, 2)` the mesh has the axes ("data", "tower") (sharding.py makes it
and places the parameters) and the `paper` variant runs as the paper's two GPUs did, one tower
per device of each "tower" pair. conv1, conv2, conv4 and conv5, their LRN and pooling compute one
tower's channels per device, from kernels and biases stored only there
(`sharding.param_sharding`); conv3 and the FC layers see the whole previous layer, so the towers
exchange activations at exactly these points (all-gathers over "tower" whose gradients are
reduce-scatters: `all_gather_towers` inside conv3 and models.TowerDense, `gather_towers` for the
logits):
  - the input of conv3 (all 256 channels of both towers), each device computing 192 of its 384
    kernels;
  - the inputs of fc6, fc7 and fc8 and fc8's outputs (the logits), each device computing half of
    each FC layer's neurons from all of the previous layer's.
Everything between is per device (shard_map over both axes). "data" replicas sum their gradients
as in plain data parallelism; the global batch is split over "data" and replicated over "tower".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax import lax
from jax.sharding import PartitionSpec as P

DATA, TOWER = "data", "tower"  # the mesh's axes: the batch is split over "data"


def tower_size(mesh: jax.sharding.Mesh | None) -> int:
    """Size of the mesh's "tower" axis (1 without one)."""
    return 1 if mesh is None else dict(mesh.shape).get(TOWER, 1)


def splits_over_towers(features: int, towers: int) -> bool:
    """Whether a layer's `features` outputs are split over a "tower" axis of size `towers`."""
    return towers > 1 and features % towers == 0


# ---- Per-device computation over the tower axis (used by models.AlexNet) ----------------------


def channel_spec(ndim: int) -> P:
    """Batch over "data", last (channel/feature) axis over "tower": one tower per device."""
    return P(DATA, *(None,) * (ndim - 2), TOWER)


def batch_spec(ndim: int) -> P:
    """Batch over "data", replicated over "tower": every tower device holds all channels."""
    return P(DATA, *(None,) * (ndim - 1))


def out_feature_spec(ndim: int) -> P:
    """A kernel or bias split on its last (output-feature) axis over "tower"."""
    return P(*(None,) * (ndim - 1), TOWER)


def tower_map(fn: Callable, mesh: jax.sharding.Mesh, in_specs: Any, out_specs: Any) -> Callable:
    """`fn` run on each device's block of its arguments (shard_map, manual over both axes)."""
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs)


def all_gather_towers(x: jax.Array) -> jax.Array:
    """Inside `tower_map`: this device's tower block of the last axis -> all towers' blocks.

    The paper's GPUs exchanging activations. The result stays "varying" over "tower" (it feeds
    per-tower kernels), so its gradient is a reduce-scatter: each tower gets the sum of both
    towers' gradients for its own channels.
    """
    return lax.all_gather(x, TOWER, axis=x.ndim - 1, tiled=True)


def all_gather_towers_invariant(x: jax.Array) -> jax.Array:
    """`all_gather_towers` for a result that every tower device then uses identically (its
    gradient is this device's slice of the one gradient; no communication)."""
    return lax.all_gather(x, TOWER, axis=x.ndim - 1, tiled=True, to="invarying")


def gather_towers(x: jax.Array, mesh: jax.sharding.Mesh) -> jax.Array:
    """Global activations split by tower on their last axis -> replicated over "tower"."""
    return tower_map(all_gather_towers_invariant, mesh, channel_spec(x.ndim), batch_spec(x.ndim))(x)


__all__ = (
    "all_gather_towers",
    "all_gather_towers_invariant",
    "batch_spec",
    "channel_spec",
    "gather_towers",
    "out_feature_spec",
    "tower_map",
)
