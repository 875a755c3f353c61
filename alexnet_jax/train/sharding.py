"""The device mesh, the shardings of parameters and batches, and placing host batches on the mesh.

One mesh over every device of every host: axis "data" (the global batch is split over it), and
with `config.mesh_shape = (D, 2)` a second axis "tower" over which the `paper` variant's tower
layers keep their kernels and biases (parallel.py has the per-device tower computation).
Parameters and optimizer state are replicated, except those tower layers: their output-feature
(last) axis is split over "tower". Batches arrive as each host's local numpy rows and become
global arrays split over "data" (`to_global_batch`); `prefetch_to_mesh` keeps a few in flight.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from alexnet_jax.core.errors import ConfigError
from alexnet_jax.model import models
from alexnet_jax.model.parallel import DATA, TOWER, splits_over_towers, tower_size

# Layers whose output features (kernel's last axis and bias) are split over "tower".
TOWER_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


# ---- The mesh -------------------------------------------------------------------------------


def make_mesh(config: Any, devices: Any = None) -> jax.sharding.Mesh:
    """One mesh over all devices: axis "data" (and "tower" when config.mesh_shape has two sizes)."""
    devices = jax.devices() if devices is None else list(devices)
    n = len(devices)
    shape = tuple(config.mesh_shape) or (n,)
    if int(np.prod(shape)) != n or len(shape) not in (1, 2):
        raise ConfigError(
            f"config.mesh_shape={tuple(config.mesh_shape)} must be () or (data,) or (data, tower) "
            f"with a product equal to the {n} available devices."
        )
    names = (DATA, TOWER)[: len(shape)]
    return jax.make_mesh(
        shape, names, axis_types=(jax.sharding.AxisType.Auto,) * len(shape), devices=devices
    )


def single_device_mesh() -> jax.sharding.Mesh:
    """A "data" mesh of the first device: where the tools (predict, figures, export) run."""
    return jax.sharding.Mesh(np.array(jax.devices()[:1]), (DATA,))


def tower_mesh(config: Any, mesh: jax.sharding.Mesh) -> jax.sharding.Mesh | None:
    """The mesh for `create_model(config, mesh=...)`: `mesh` if it splits the towers, else None.

    Raises ConfigError for a "tower" axis the config cannot use: only the two-tower `paper`
    variant has towers, and it has two.
    """
    towers = tower_size(mesh)
    if towers == 1:
        return None
    if towers != models.get_variant(config.variant).towers:  # the paper's net has two towers
        raise ConfigError(
            f"config.mesh_shape={tuple(config.mesh_shape)} has a 'tower' axis of size {towers}, "
            f"which needs config.variant='paper' (two towers) and size 2; got variant "
            f"{config.variant!r}. Use (data, 2) with --config.variant=paper, or () for data "
            "parallelism."
        )
    return mesh


# ---- Shardings --------------------------------------------------------------------------------


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Leading (batch) axis split over "data", replicated over "tower"."""
    return NamedSharding(mesh, P(DATA))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


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


def params_sharding(model: Any, mesh: jax.sharding.Mesh) -> Any:
    """Shardings of a model's params: replicated, except for a tower-parallel model (`model.mesh`
    set), whose tower layers keep each tower's kernels and biases on its own devices."""
    if getattr(model, "mesh", None) is None:
        return replicated(mesh)
    return param_sharding(abstract_params(model), mesh)


# ---- Batches ----------------------------------------------------------------------------------


def to_global_batch(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Assembles each host's local batch into global arrays split over the "data" axis."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
    }


def prefetch_to_mesh(
    batches: Iterator[dict[str, np.ndarray]], mesh: jax.sharding.Mesh, size: int = 2
) -> Iterator[dict[str, jax.Array]]:
    """Keeps `size` batches in flight to the devices so host-to-device copies overlap compute."""
    queue: list[dict[str, jax.Array]] = []
    for batch in batches:
        queue.append(to_global_batch(batch, mesh))
        if len(queue) > size:
            yield queue.pop(0)
    yield from queue
