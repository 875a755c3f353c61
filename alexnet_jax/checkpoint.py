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
import re
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from alexnet_jax.errors import DataError, is_storage_error, storage_error, storage_errors_as


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


def _storage_error(
    manager: ocp.CheckpointManager, error: BaseException, step: int | None = None
) -> DataError:
    """The DataError of a failed save. An async save fails at the next call, so the step comes
    from the temporary directory named in the error when it can."""
    failed = re.search(r"(\d+)\.orbax-checkpoint-tmp", str(error))
    step = int(failed.group(1)) if failed else step
    what = f"the checkpoint of step {step}" if step is not None else "a checkpoint"
    return storage_error(what, str(manager.directory), error)


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_state: dict) -> None:
    """Starts an async save of `state` and `data_state` at `step`.

    Errors of an earlier async save surface here or in `close`. A full disk or an unwritable
    directory becomes one DataError; earlier checkpoints stay intact because Orbax writes into a
    temporary directory and renames it only when complete.
    """
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)
    )
    with storage_errors_as(lambda e: _storage_error(manager, e, step)):
        manager.save(step, args=args, force=True)


def wait(manager: ocp.CheckpointManager) -> None:
    """Blocks until the saves in flight are committed; a failed one raises DataError."""
    with storage_errors_as(lambda e: _storage_error(manager, e)):
        manager.wait_until_finished()


def close(manager: ocp.CheckpointManager, raise_errors: bool = True) -> None:
    """Commits the saves in flight and closes `manager`, whatever happens.

    raise_errors: a failed save raises DataError (the run was ending normally), or is only
    logged (another error is already on its way out and must not be replaced).
    """
    try:
        wait(manager)
    except DataError as e:
        if raise_errors:
            raise
        logging.warning("%s", e)
    finally:
        try:
            manager.close()
        except Exception as e:  # the same failed save, reported above
            if not is_storage_error(e):
                raise
            logging.warning("Closing the checkpoint manager: %s", str(e).splitlines()[0])


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
