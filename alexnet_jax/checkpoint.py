"""Orbax checkpoints of the train state and the input position, in `workdir/checkpoints/<step>`.

Each checkpoint holds two items: "state" (the TrainState pytree, saved asynchronously by every
process) and "data" (a small JSON record of the input pipeline's position: the number of training
examples consumed, which is the whole state of the deterministic iterator). Orbax commits a step by
renaming its temporary directory, so a half-written checkpoint is never restored and is removed at
start (`cleanup_tmp_directories`). Restoring goes through an abstract target carrying the current
mesh's shardings, so a checkpoint written on D devices restores onto any other device count.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from alexnet_jax.errors import DataError


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def create_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
    """A manager that keeps the last `keep` steps; saving cadence is decided by the caller."""
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(keep),
        enable_async_checkpointing=True,
        cleanup_tmp_directories=True,
        create=True,
    )
    return ocp.CheckpointManager(
        checkpoint_dir(workdir), item_names=("state", "data"), options=options
    )


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_state: dict) -> None:
    """Starts an async save of `state` and `data_state` at `step` (errors surface at the next call).

    A full disk or an unwritable directory becomes one DataError; earlier checkpoints stay intact
    because Orbax writes into a temporary directory and renames it only when complete.
    """
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)
    )
    try:
        manager.save(step, args=args, force=True)
    except OSError as e:
        raise DataError(
            f"Could not write the checkpoint of step {step} to {manager.directory}: {e}. "
            "Free disk space or choose another --workdir; earlier checkpoints are intact."
        ) from e


def wait(manager: ocp.CheckpointManager) -> None:
    """Blocks until pending async saves are committed (raising their errors as DataError)."""
    try:
        manager.wait_until_finished()
    except OSError as e:
        raise DataError(
            f"Writing a checkpoint to {manager.directory} failed: {e}. Free disk space or choose "
            "another --workdir; earlier checkpoints are intact."
        ) from e


def abstract_like(state: Any) -> Any:
    """Shape/dtype/sharding structs of `state`: the restore target for the current topology."""
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )


def restore_latest(
    manager: ocp.CheckpointManager, target_state: Any, already_abstract: bool = False
) -> tuple[Any, dict] | None:
    """(state, data_state) of the latest committed step laid out like `target_state`, or None.

    `target_state` holds arrays (their shardings are copied) or, with `already_abstract`,
    `jax.ShapeDtypeStruct`s with shardings.
    """
    step = manager.latest_step()
    if step is None:
        return None
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(
                target_state if already_abstract else abstract_like(target_state)
            ),
            data=ocp.args.JsonRestore(),
        ),
    )
    return restored["state"], dict(restored["data"])
