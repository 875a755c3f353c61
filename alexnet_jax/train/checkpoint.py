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

import functools
import hashlib
import json
import os
import re
import signal
import threading
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from alexnet_jax.core import console, errors, runtime
from alexnet_jax.core.errors import (
    DataError,
    NonFiniteError,
    is_storage_error,
    storage_error,
    storage_errors_as,
)
from alexnet_jax.runs import rundir


def create_manager(directory: str, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
    """A manager of the checkpoints in `directory` that keeps the last `keep` steps; saving
    cadence is decided by the caller. A run's directory: checkpoint_manager.

    read_only: for tools that only read a run: creates nothing and leaves the temporary
    directories of saves in flight (a run still training) alone.
    """
    if not read_only:  # else Orbax's first save waits 300 s, then prints a dozen warnings
        with storage_errors_as(lambda e: storage_error("checkpoints", directory, e)):
            os.makedirs(directory, exist_ok=True)
            probe = os.path.join(directory, f".write_test.{os.getpid()}")
            os.close(os.open(probe, os.O_CREAT | os.O_WRONLY))
            os.remove(probe)
        rundir.pin_folder(os.path.dirname(os.path.abspath(directory)))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(keep),
        enable_async_checkpointing=not read_only,
        cleanup_tmp_directories=not read_only,
        create=not read_only,
        read_only=read_only,
    )
    return ocp.CheckpointManager(directory, item_names=("state", "data"), options=options)


def checkpoint_manager(workdir: str, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
    """The Orbax manager of a run's checkpoints (keeps the last `keep`); `read_only` for
    tools, which must not create or clean anything in a run."""
    return create_manager(rundir.checkpoint_dir(workdir), keep, read_only=read_only)


def read_latest_checkpoint(workdir: str, target: Any) -> tuple[Any, dict] | None:
    """(state, data state) of the run's latest readable checkpoint restored into `target`
    (ShapeDtypeStructs with shardings), or None; creates and cleans nothing in the run, and
    prints none of Orbax's warnings about opening it read-only."""
    if not os.path.isdir(rundir.checkpoint_dir(workdir)):
        return None
    with runtime.harmless_warnings_muted():
        manager = _listed(workdir, lambda: checkpoint_manager(workdir, keep=1, read_only=True))
        try:
            restored = restore_latest(manager, target, already_abstract=True)
        finally:
            manager.close()
    if restored is not None and not all_finite(_weights(restored[0])):
        step = int(restored[0].step) if hasattr(restored[0], "step") else "latest"
        raise NonFiniteError(
            f"The checkpoint of step {step} in {rundir.checkpoint_dir(workdir)} "
            "holds NaN/Inf parameters (the run diverged before runs refused to save such "
            "parameters): nothing sensible to predict, export or evaluate. Train again with a "
            "lower config.learning_rate."
        )
    return restored


def _storage_error(
    manager: ocp.CheckpointManager, error: BaseException, step: int | None = None
) -> DataError:
    """The DataError of a failed save. An async save fails at the next call, so the step comes
    from the temporary directory named in the error when it can."""
    failed = re.search(r"(\d+)\.orbax-checkpoint-tmp", str(error))
    step = int(failed.group(1)) if failed else step
    what = f"the checkpoint of step {step}" if step is not None else "a checkpoint"
    return _moved_away(manager, what) or storage_error(what, str(manager.directory), error)


def _moved_away(manager: ocp.CheckpointManager, what: str) -> DataError | None:
    """rundir.moved_away of the run's folder that holds the manager's checkpoints."""
    directory = os.path.abspath(str(manager.directory))
    return rundir.moved_away(os.path.dirname(directory), what, directory)


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def all_finite(tree: Any) -> bool:
    """Whether every number of a pytree is finite: one reduction on the devices, one scalar read
    back."""
    return bool(jax.device_get(_all_finite(tree)))


def _words(x: jax.Array) -> jax.Array:
    """The wrapping sum of a leaf's bits as unsigned words: any one flipped bit changes it (by
    2^k), and integer sums do not depend on the order or the devices that add them."""
    width = {1: jnp.uint8, 2: jnp.uint16}.get(x.dtype.itemsize, jnp.uint32)
    return jnp.sum(jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32), dtype=jnp.uint32)


@jax.jit
def _fingerprint(tree: Any) -> jax.Array:
    return jnp.stack([_words(x) for x in jax.tree_util.tree_leaves(tree)])


def fingerprint(tree: Any) -> list[list]:
    """[dtype name, sum of its words] per leaf of a pytree (`_words`): recorded with each
    checkpoint and compared when it is read, so that a file damaged on disk in a way its format
    does not notice (a flipped bit in a compressed chunk decodes to other numbers) is refused
    instead of resumed."""
    leaves = jax.tree_util.tree_leaves(tree)
    sums = jax.device_get(_fingerprint(tree)) if leaves else []
    return [[str(x.dtype), int(v)] for x, v in zip(leaves, sums, strict=True)]


def _check_fingerprint(state: Any, recorded: Any) -> None:
    """DataError when `state`, as read, is not what was saved (the record's fingerprint). Leaves
    read as another dtype than saved (a resume that changed the dtype on purpose) are not
    compared."""
    found = fingerprint(state)
    if not isinstance(recorded, list) or len(recorded) != len(found):
        raise DataError(f"its record's fingerprint does not fit its state ({recorded!r:.80})")
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(state)]
    differ = [
        path
        for path, (dtype, value), saved in zip(paths, found, recorded, strict=True)
        if saved[0] == dtype and saved[1] != value
    ]
    if differ:
        raise DataError(
            f"its arrays are not the ones saved ({', '.join(differ[:3])} differ from the "
            "fingerprint recorded at the save): a file of the step was damaged on disk"
        )


def _weights(state: Any) -> Any:
    """What must be finite in a train state: the parameters and the optimizer's state (the
    momentum); not the plateau bookkeeping, whose best error starts at inf."""
    return (state.params, state.opt_state) if hasattr(state, "params") else state


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_state: dict) -> None:
    """Starts an async save of `state` and `data_state` at `step`.

    A state that is not all finite is never saved (a diverged update can leave NaN parameters
    after a finite loss and gradient): NonFiniteError names the last finite checkpoint.
    Errors of an earlier async save surface here or in `close`. A full disk or an unwritable
    directory becomes one DataError; earlier checkpoints stay intact because Orbax writes into a
    temporary directory and renames it only when complete.
    """
    if not all_finite(_weights(state)):
        last = manager.latest_step()
        kept = f"the last checkpoint, step {last}, is kept" if last is not None else "none saved"
        raise NonFiniteError(
            f"Step {step}: the parameters are NaN/Inf after the update, so they were not saved "
            f"({kept}): the run has diverged."
        )
    if moved := _moved_away(manager, f"the checkpoint of step {step}"):
        raise moved
    data_state = {**data_state, _FINGERPRINT: fingerprint(state)}
    record = {**data_state, _DIGEST: _digest(step, data_state)}
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(record))
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
        console.warning(str(e))
    finally:
        try:
            manager.close()
        except Exception as e:  # the same failed save, reported above
            if not is_storage_error(e):
                raise
            console.warning(f"Closing the checkpoint manager: {str(e).splitlines()[0]}")


def abstract_like(state: Any) -> Any:
    """Shape/dtype/sharding structs of `state`: the restore target for the current topology."""
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )


def _restore(manager: ocp.CheckpointManager, step: int, target: Any) -> tuple[Any, dict]:
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()
        ),
    )
    record = dict(restored["data"])
    digest = record.pop(_DIGEST, None)
    if digest is None:
        raise DataError(
            "its data record has no digest: edited by hand, or written before 2026-12-05 "
            "(such runs do not resume)"
        )
    if digest != _digest(step, record):
        raise DataError(f"its data record was edited: {record} does not match its digest")
    if _FINGERPRINT in record:  # (checkpoints saved before 2026-12-05 have none)
        _check_fingerprint(restored["state"], record.pop(_FINGERPRINT))
    return restored["state"], record


_DIGEST = "digest"  # of the data record and its step: a hand edit of the JSON is refused
_FINGERPRINT = "fingerprint"  # of the state's arrays (`fingerprint`): a damaged file is refused


def _digest(step: int, record: dict) -> str:
    return hashlib.sha256(json.dumps([step, record], sort_keys=True).encode()).hexdigest()[:16]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def restore_latest(
    manager: ocp.CheckpointManager,
    target_state: Any,
    already_abstract: bool = False,
    set_aside: bool = False,
) -> tuple[Any, dict] | None:
    """(state, data_state) of the latest committed step that can be read, laid out like
    `target_state`; None when there is no checkpoint.

    `target_state` holds arrays (their shardings are copied) or, with `already_abstract`,
    `jax.ShapeDtypeStruct`s with shardings. A step folder without Orbax's commit marker, or one
    that fails to restore (a damaged file) or holds another step's state, is reported by step and
    path with a warning and the previous one is tried; when none can be read, DataError names each
    step and its reason. With `set_aside` (a training run, which will save those steps again) the
    refused folders newer than the one restored are moved to `damaged_checkpoints/` beside the
    checkpoints, named in a warning.

    A step that vanished while it was read (a run still training removed it for a newer one,
    keep_checkpoints) is no damage: the steps are listed again and the newest is read. A read cut
    short by Ctrl-C or SIGTERM (errors.stop_now) is that stop, not a damaged checkpoint.
    """
    target = target_state if already_abstract else abstract_like(target_state)
    workdir = os.path.dirname(str(manager.directory))
    # Another process writing the run: never while the training run itself restores (it holds
    # the lock, and the other processes of a multi-process run see process 0 hold it).
    writer = (lambda: None) if set_aside else functools.partial(rundir.live_writer, workdir)
    for attempt in range(_RELISTS + 1):
        restored, failures, refused, vanished = _restore_newest(manager, target, writer)
        if restored is not None or not vanished or attempt == _RELISTS:
            break
        _listed(workdir, manager.reload)  # the training run saved a newer step: read that one
    if refused and set_aside and restored is not None:
        _set_aside(manager, refused)  # (when none can be read, nothing moves: a wrong config?)
    live = writer() if restored is None and (failures or vanished) else None
    if live is not None:  # not damaged: replaced by the run being trained
        raise _replaced_while_read(live, str(manager.directory))
    if restored is None:
        failures += [f"step {step} ({path}): removed while it was read" for step, path in vanished]
    if failures and restored is None:
        raise DataError(
            "No checkpoint of this run can be read: "
            + "; ".join(failures)
            + ". If the files are damaged, move those step directories out of "
            f"{manager.directory} and train with --allow_config_change to start the run over; "
            f"if the config changed, use the run's own config: --config=configs/run.py:{workdir}."
        )
    return restored


# How many times the steps are listed again when the ones listed vanished while being read (a
# run saving every step with keep_checkpoints=1 replaces a step in well under a second).
_RELISTS = 5


def _replaced_while_read(writer: str, directory: str) -> DataError:
    return DataError(
        f"A training run ({writer}) is writing this run's checkpoints in {directory} and "
        "replaced the ones listed while they were read: retry, or wait for the run to finish."
    )


def _listed(workdir: str, list_steps: Callable[[], Any]) -> Any:
    """`list_steps()` (a manager made, or reloaded: Orbax lists the step folders, then reads
    each one's time), again when a folder it listed was gone when it was read (a run still
    training replaced that step)."""
    for attempt in range(_RELISTS + 1):
        try:
            return list_steps()
        except FileNotFoundError:
            if attempt < _RELISTS:
                continue
            writer = rundir.live_writer(workdir)
            if writer is None:
                raise
            raise _replaced_while_read(writer, rundir.checkpoint_dir(workdir)) from None


def _restore_newest(
    manager: ocp.CheckpointManager, target: Any, writer: Callable[[], str | None]
) -> tuple[tuple[Any, dict] | None, list[str], list[int], list[tuple[int, str]]]:
    """One pass of restore_latest over the listed steps, newest first: (what was restored or
    None, the reasons of the steps refused, those steps, the (step, path) that vanished).
    `writer()`: who else is writing the run (rundir.live_writer), or None."""
    failures, refused, vanished = [], [], []
    workdir = os.path.dirname(str(manager.directory))
    for step in sorted(manager.all_steps(), reverse=True):
        path = os.path.join(str(manager.directory), str(step))
        try:
            if not rundir.is_committed(path):
                raise DataError(f"no {rundir.COMMIT_MARKER}: the save of this step never completed")
            restored = _restore(manager, step, target)
            held = getattr(restored[0], "step", step)
            if int(held) != step:
                raise DataError(f"it holds the state of step {int(held)}")
            consumed = restored[1].get("examples_consumed", 0)
            if type(consumed) is not int or consumed < 0:
                raise DataError(f"its data record is damaged (examples_consumed={consumed!r})")
        except Exception as e:  # a damaged checkpoint: any error of Orbax/TensorStore
            stopped = errors.stop_signal()
            if stopped is not None:  # the signal cut the read short: the stop, told already
                errors.stop_now(stopped)
            if not os.path.isdir(path) or (  # removed meanwhile (a newer step replaced it)
                writer() is not None and max(rundir.saved_steps(workdir), default=-1) > step
            ):  # (or being removed, its files one by one: a failure of any kind)
                vanished.append((step, path))
                continue
            console.warning(f"Checkpoint {path} cannot be read ({_first_line(e)}).")
            failures.append(f"step {step} ({path}): {_first_line(e)}")
            refused.append(step)
            continue
        if failures:
            console.warning(
                f"Restored the previous intact checkpoint, step {step}, instead of the latest."
            )
        return restored, failures, refused, vanished
    return None, failures, refused, vanished


def _set_aside(manager: ocp.CheckpointManager, steps: list[int]) -> None:
    """Moves the step folders `steps` out of the checkpoints (the first process; the others
    wait) so that the run can save those steps again, and makes `manager` forget them."""
    directory = str(manager.directory)
    aside = os.path.join(os.path.dirname(directory), rundir.DAMAGED_CHECKPOINTS)
    if jax.process_index() == 0:
        for step in steps:
            destination, n = os.path.join(aside, str(step)), 1
            while os.path.exists(destination):
                n += 1
                destination = os.path.join(aside, f"{step}-{n}")
            with storage_errors_as(lambda e: storage_error("a damaged checkpoint", aside, e)):
                os.makedirs(aside, exist_ok=True)
                os.rename(os.path.join(directory, str(step)), destination)
            console.warning(f"Moved the unreadable checkpoint of step {step} to {destination}.")
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("alexnet_jax: damaged checkpoints set aside")
    manager.reload()


class PreemptionWatcher:
    """Tells the loop when to save and exit: the job is being preempted (SIGTERM), its terminal
    closed (SIGHUP), or the user pressed Ctrl-C (SIGINT). A second Ctrl-C while the run saves
    stops it at once.

    With several processes Orbax's `reached_preemption` (JAX's distributed preemption sync) makes
    every process agree on the same step; a SIGINT is turned into the SIGTERM that sync watches.
    A single process catches both signals itself.
    """

    def __init__(self, manager: Any):
        self.manager = manager
        self.event = threading.Event()
        self.signal_name: str | None = None  # "SIGTERM" or "SIGINT" once one arrived
        self.previous: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return
        if jax.process_count() == 1:
            self.previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_signal)
        self.previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_signal)
        # The terminal closed (an ssh session lost): saved as for SIGTERM, not lost with it.
        self.previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.event.is_set() and signum == signal.SIGINT:  # the second Ctrl-C
            errors.stop_now()
        self.signal_name = signal.Signals(signum).name
        self.event.set()
        if jax.process_count() > 1 and signum != signal.SIGTERM:
            os.kill(os.getpid(), signal.SIGTERM)  # JAX's preemption sync listens for SIGTERM

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            return bool(self.manager.reached_preemption(step))
        return self.event.is_set()

    @property
    def interrupted(self) -> bool:
        """Whether the user pressed Ctrl-C (the run then exits with code 130)."""
        return self.signal_name == "SIGINT"

    def close(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}
