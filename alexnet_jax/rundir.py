"""The run directory (`--workdir`): its files, and loading a run's config and parameters.

    <workdir>/config.json            the config the run was trained with (process 0 writes it)
    <workdir>/metrics.jsonl          one JSON object per line: step, split ("train"/"eval"), metrics
    <workdir>/events.out.tfevents.*  TensorBoard (clu metric writers)
    <workdir>/training_curves.png    plots.plot_training_curves, at the end of every run
    <workdir>/checkpoints/<step>/    Orbax checkpoints: the train state and the input position

Every module that reads or writes these names goes through here. The tools (predict, figures,
export, plots) load runs through this module, which imports neither the training loop nor
TensorFlow.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections

from alexnet_jax import checkpoint, experiment, sharding
from alexnet_jax.errors import UserError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "training_curves.png"
CHECKPOINTS = "checkpoints"


def config_path(workdir: str) -> str:
    return os.path.join(workdir, CONFIG_FILE)


def metrics_path(workdir: str) -> str:
    return os.path.join(workdir, METRICS_FILE)


def curves_path(workdir: str) -> str:
    return os.path.join(workdir, CURVES_FILE)


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), CHECKPOINTS)


def checkpoint_manager(workdir: str, keep: int) -> Any:
    """The Orbax manager of the run's checkpoints (keeps the last `keep`)."""
    return checkpoint.create_manager(checkpoint_dir(workdir), keep)


# ---- Config ----------------------------------------------------------------------------------


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes the run's config to `workdir/config.json` (process 0), for tools that read the run."""
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(config_path(workdir), "w") as f:
            f.write(config.to_json(indent=2))


def read_config_dict(workdir: str) -> dict[str, Any] | None:
    """The run's config.json as a plain dict, or None when the run has none."""
    path = config_path(workdir)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run in `workdir` was trained with (saved by train.train_and_evaluate)."""
    config = read_config_dict(workdir)
    if config is None:
        raise UserError(
            f"{config_path(workdir)} not found: --workdir must be a directory written by main.py."
        )
    return ml_collections.ConfigDict(config)


# ---- Metrics ---------------------------------------------------------------------------------


def read_metrics(workdir: str) -> list[dict]:
    """The JSON records of `workdir/metrics.jsonl`, in file order (blank lines skipped)."""
    path = metrics_path(workdir)
    if not os.path.exists(path):
        raise UserError(f"{path} not found: --workdir must be a directory written by main.py.")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ---- Parameters ------------------------------------------------------------------------------


def load_params(workdir: str, mesh: Any = None) -> tuple[ml_collections.ConfigDict, Any]:
    """(config, params) of the latest checkpoint in `workdir`, without touching the dataset.

    The params come back replicated over `mesh` (default: every device on one "data" axis,
    whatever mesh the run was trained on: checkpoints restore onto any topology).
    """
    config = load_config(workdir)
    if mesh is None:
        mesh = jax.make_mesh((jax.device_count(),), (sharding.DATA,))
    # Shapes from a one-device build (any mesh has the same shapes; the schedule changes none),
    # then every leaf replicated over `mesh`.
    target = experiment.build(config, sharding.single_device_mesh()).abstract_state()
    replicated = sharding.replicated(mesh)
    target = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), target
    )
    manager = checkpoint_manager(workdir, config.keep_checkpoints)
    restored = checkpoint.restore_latest(manager, target, already_abstract=True)
    manager.close()
    if restored is None:
        raise UserError(f"No checkpoint in {checkpoint_dir(workdir)}: train first.")
    return config, restored[0].params


def load_run(workdir: str) -> tuple[ml_collections.ConfigDict, Any]:
    """(config, params) of the latest checkpoint of a training run, placed on one device.

    The tools (predict, figures, export) run the model on a single device, and restoring
    replicated over all of them would copy the parameters (and momentum) once per device.
    """
    return load_params(workdir, mesh=sharding.single_device_mesh())
