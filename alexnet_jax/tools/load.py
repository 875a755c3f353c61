"""Loading a trained run: its config and the parameters of its latest checkpoint, for the tools.

    config, params = load.load_run("runs/default")  # on one device

Reads only the run directory (config.json, checkpoints/): no dataset, no TensorFlow.
"""

from __future__ import annotations

import sys

if not __package__:  # run by its path, where Python cannot import the package
    sys.exit(
        "error: alexnet_jax/tools/load.py is a library module of the tools, not a tool: run "
        "`python -m alexnet_jax.tools.<tool> --help` (README, Tools)."
    )

from typing import Any

import jax
import ml_collections

from alexnet_jax.core import errors
from alexnet_jax.runs import rundir
from alexnet_jax.train import checkpoint, config_lib, experiment, sharding


def load_params(workdir: str, mesh: Any = None) -> tuple[ml_collections.ConfigDict, Any]:
    """(config, params) of the latest checkpoint in `workdir`, without touching the dataset.

    The params come back replicated over `mesh` (default: every device on one "data" axis,
    whatever mesh the run was trained on: checkpoints restore onto any topology).
    """
    config, params, _ = load_params_and_step(workdir, mesh)
    return config, params


def load_params_and_step(
    workdir: str, mesh: Any = None
) -> tuple[ml_collections.ConfigDict, Any, int]:
    """`load_params`, plus the training step of the checkpoint the params come from. An image
    folder run's config carries its class names as recorded at its start (run.json):
    `config.class_folders`, which the tools use even when the folder has moved or changed."""
    errors.refuse_a_path_not_utf8(workdir, "--workdir")  # (Orbax's C++ cannot take it)
    config = config_lib.load_config(workdir)
    record = rundir.read_run_record(workdir) or {}
    classes = record.get("dataset", {}).get("classes")
    if config.dataset == "image_folder" and isinstance(classes, list):
        with config.unlocked():
            config.class_folders = [str(c) for c in classes]
    if mesh is None:
        mesh = jax.make_mesh((jax.device_count(),), (sharding.DATA,))
    # Shapes from a one-device build (any mesh has the same shapes; the schedule changes none),
    # then every leaf replicated over `mesh`.
    target = experiment.build(config, sharding.single_device_mesh()).abstract_state()
    replicated = sharding.replicated(mesh)
    target = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), target
    )
    restored = checkpoint.read_latest_checkpoint(workdir, target)
    if restored is None:  # never trained, or (its history says) its checkpoints are gone
        raise rundir.no_checkpoint_error(workdir, "train first.")
    return config, restored[0].params, int(restored[0].step)


def load_run(workdir: str) -> tuple[ml_collections.ConfigDict, Any]:
    """(config, params) of the latest checkpoint of a training run, placed on one device.

    The tools (predict, figures, export) run the model on a single device, and restoring
    replicated over all of them would copy the parameters (and momentum) once per device.
    """
    return load_params(workdir, mesh=sharding.single_device_mesh())


if __name__ == "__main__":
    from alexnet_jax import tools

    tools.refuse_to_run("alexnet_jax.tools.load")
