"""Orbax checkpoints of the train state and the input position, and saving on preemption.

The checkpoints of a run live in `workdir/checkpoints/<step>` (rundir.checkpoint_dir).

Each checkpoint holds two items: "state" (the TrainState pytree, saved asynchronously by every
process) and "data" (a small JSON record of the input pipeline's position: the number of training
examples consumed, which is the whole state of the deterministic iterator). Orbax commits a step by
renaming its temporary directory, so a half-written checkpoint is never restored and is removed at
start (`cleanup_tmp_directories`). Restoring goes through an abstract target carrying the current
mesh's shardings, so a checkpoint written on D devices restores onto any other device count.
"""

from __future__ import annotations

import re
import signal
import threading
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from alexnet_jax.errors import DataError, is_storage_error, storage_error, storage_errors_as


def create_manager(directory: str, keep: int) -> ocp.CheckpointManager:
    """A manager of the checkpoints in `directory` that keeps the last `keep` steps; saving
    cadence is decided by the caller. A run's directory: rundir.checkpoint_manager."""
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(keep),
        enable_async_checkpointing=True,
        cleanup_tmp_directories=True,
        create=True,
    )
    return ocp.CheckpointManager(directory, item_names=("state", "data"), options=options)


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


class PreemptionWatcher:
    """Tells the loop when to save and exit because the job is being preempted (SIGTERM).

    With several processes Orbax's `reached_preemption` (JAX's distributed preemption sync) makes
    every process agree on the same step. A single process catches SIGTERM itself.
    """

    def __init__(self, manager: Any):
        self.manager = manager
        self.event = threading.Event()
        self.previous = None
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, lambda *_: self.event.set())

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            return bool(self.manager.reached_preemption(step))
        return self.event.is_set()

    def close(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None
