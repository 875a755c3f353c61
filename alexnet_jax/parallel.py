"""Scaling out: multi-host start-up and the paper's two-tower model parallelism on a device mesh.

Multi-host. `initialize_distributed` starts JAX's distributed runtime (`jax.distributed`) when this
process is one of several, from main.py's --coordinator_address/--num_processes/--process_id or
from a cluster that jax.distributed detects by itself (SLURM's srun, Open MPI's mpirun). Then
`jax.devices()` lists the devices of all hosts and the train loop's one mesh spans them: each host
feeds its own data shard (input_pipeline) into global arrays (train.to_global_batch), process 0
writes the logs, every process writes and restores its part of each Orbax checkpoint, and a SIGTERM
to any process makes all of them save at the same step (metrics_io.PreemptionWatcher).

Towers. With `config.mesh_shape = (D, 2)` the mesh has the axes ("data", "tower") and the `paper`
variant runs as the paper's two GPUs did, one tower per device of each "tower" pair. conv1, conv2,
conv4 and conv5, their LRN and pooling compute one tower's channels per device, from kernels and
biases stored only there (`param_sharding`); conv3 and the FC layers see the whole previous layer,
so the towers exchange activations at exactly these points (all-gathers over "tower" whose
gradients are reduce-scatters: `all_gather_towers` inside conv3 and models.TowerDense,
`gather_towers` for the logits):
  - the input of conv3 (all 256 channels of both towers), each device computing 192 of its 384
    kernels;
  - the inputs of fc6, fc7 and fc8 and fc8's outputs (the logits), each device computing half of
    each FC layer's neurons from all of the previous layer's.
Everything between is per device (shard_map over both axes). "data" replicas sum their gradients
as in plain data parallelism; the global batch is split over "data" and replicated over "tower".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from alexnet_jax.errors import ConfigError

DATA, TOWER = "data", "tower"

# Layers whose output features (kernel's last axis and bias) are split over "tower".
TOWER_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


# ---- Multi-host start-up ----------------------------------------------------------------------


def _cluster_process_count(env: Mapping[str, str]) -> int:
    """Processes in this SLURM step (srun) or Open MPI job (mpirun); 1 outside of both."""
    if "SLURM_STEP_NODELIST" in env and "SLURM_NTASKS" in env:
        return int(env["SLURM_NTASKS"])
    if "OMPI_MCA_orte_hnp_uri" in env and "OMPI_COMM_WORLD_SIZE" in env:
        return int(env["OMPI_COMM_WORLD_SIZE"])
    return 1


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    env: Mapping[str, str] | None = None,
) -> bool:
    """Starts jax.distributed if this is one of several processes; returns whether it did.

    Explicit arguments win; `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`
    fill those left out; with none at all, a SLURM or Open MPI job of more than one process is
    detected and jax.distributed finds its own parameters. A single process is a no-op (it catches
    SIGTERM itself). Must run before anything initializes a JAX backend.
    """
    env = os.environ if env is None else env
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    explicit = (coordinator_address, num_processes, process_id)
    if all(v is None for v in explicit):
        if _cluster_process_count(env) <= 1:
            return False
        jax.distributed.initialize()  # SLURM / Open MPI: parameters detected by jax
        return True
    if num_processes == 1 and coordinator_address is None:
        return False
    if None in explicit:
        raise ConfigError(
            "A multi-process run needs --coordinator_address (host:port of process 0), "
            "--num_processes and --process_id together; got "
            f"coordinator_address={coordinator_address!r}, num_processes={num_processes!r}, "
            f"process_id={process_id!r}."
        )
    if not 0 <= process_id < num_processes:
        raise ConfigError(
            f"--process_id={process_id} must be in [0, --num_processes={num_processes})."
        )
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return True


# ---- The tower axis: which mesh, which shardings ----------------------------------------------


def tower_size(mesh: jax.sharding.Mesh | None) -> int:
    """Size of the mesh's "tower" axis (1 without one)."""
    return 1 if mesh is None else dict(mesh.shape).get(TOWER, 1)


def tower_mesh(config: Any, mesh: jax.sharding.Mesh) -> jax.sharding.Mesh | None:
    """The mesh for `create_model(config, mesh=...)`: `mesh` if it splits the towers, else None.

    Raises ConfigError for a "tower" axis the config cannot use: only the two-tower `paper`
    variant has towers, and it has two.
    """
    towers = tower_size(mesh)
    if towers == 1:
        return None
    if config.variant != "paper" or towers != 2:
        raise ConfigError(
            f"config.mesh_shape={tuple(config.mesh_shape)} has a 'tower' axis of size {towers}, "
            f"which needs config.variant='paper' (two towers) and size 2; got variant "
            f"{config.variant!r}. Use (data, 2) with --config.variant=paper, or () for data "
            "parallelism."
        )
    return mesh


def splits_over_towers(features: int, towers: int) -> bool:
    """Whether a layer's `features` outputs are split over a "tower" axis of size `towers`."""
    return towers > 1 and features % towers == 0


def _layer_and_name(path: tuple) -> tuple[str | None, str | None]:
    """("conv1", "kernel") for a leaf at .../conv1/kernel of params or optimizer state."""
    keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    return (keys[-2], keys[-1]) if len(keys) >= 2 else (None, None)


def param_spec(path: tuple, shape: tuple[int, ...], towers: int) -> P:
    """PartitionSpec of a parameter (or its optimizer state) at `path`: the tower layers' kernels
    and biases split on their output-feature (last) axis over "tower", all else replicated."""
    layer, name = _layer_and_name(path)
    tower_layer = layer in TOWER_LAYERS and name in ("kernel", "bias") and len(shape) > 0
    if tower_layer and splits_over_towers(shape[-1], towers):
        return P(*(None,) * (len(shape) - 1), TOWER)
    return P()


def abstract_params(model: Any) -> Any:
    """Shapes and dtypes of an AlexNet's parameters (for its `input_size`), computing nothing."""
    image = jax.ShapeDtypeStruct((1, model.input_size, model.input_size, 3), jnp.float32)
    init = lambda key, x: model.init(key, x, train=False)["params"]
    return jax.eval_shape(init, jax.random.key(0), image)


def param_sharding(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """NamedShardings for a pytree of params or optimizer state (arrays or ShapeDtypeStructs)."""
    towers = tower_size(mesh)
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: NamedSharding(mesh, param_spec(path, leaf.shape, towers)), tree
    )


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
    "DATA",
    "TOWER",
    "TOWER_LAYERS",
    "abstract_params",
    "all_gather_towers",
    "all_gather_towers_invariant",
    "batch_spec",
    "channel_spec",
    "gather_towers",
    "initialize_distributed",
    "out_feature_spec",
    "param_sharding",
    "param_spec",
    "splits_over_towers",
    "tower_map",
    "tower_mesh",
    "tower_size",
)
