"""The run directory (`--workdir`): its files and records.

    <workdir>/config.json            the config the run trains with (process 0 writes it)
    <workdir>/config_history.jsonl   every start (its step, host, the fields that changed) and
                                     every end of training ("finished": the final eval is saved)
    <workdir>/run.json               what identifies the run's data (recorded at its first start)
    <workdir>/.lock                  held by the process writing the run (host, pid)
    <workdir>/metrics.jsonl          one JSON object per line: step, split ("train"/"eval"), metrics
    <workdir>/events.out.tfevents.*  TensorBoard (metrics_io.ScalarEvents)
    <workdir>/training_curves.png    plots.plot_training_curves, at the end of every run
    <workdir>/checkpoints/<step>/    Orbax checkpoints: the train state and the input position

Every module that reads or writes these names goes through here. It imports neither the training
loop nor TensorFlow; the tools load a run's parameters through tools/load.py and never create
files in a run they read.

A run is one experiment: its first start records the config and the data's identity; a later
start in the same workdir may change only the fields that do not change what is trained
(RESUMABLE_FIELDS: logging and checkpoint cadence, length, where the data lives), else it is
refused with the list of differences (`check_resume`), unless the user continues on purpose
(`allow_change`), which the history records.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import stat
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

from alexnet_jax.core import console, errors
from alexnet_jax.core.errors import ConfigError, DataError, UserError
from alexnet_jax.data import image_files
from alexnet_jax.model import models

CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"
RUN_FILE = "run.json"
LOCK_FILE = ".lock"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "training_curves.png"
CHECKPOINTS = "checkpoints"
DAMAGED_CHECKPOINTS = "damaged_checkpoints"  # beside checkpoints/: the steps a run set aside
COMMIT_MARKER = "commit_success.txt"  # Orbax writes it into a step folder before committing it
MEAN_IMAGE_FILE = "mean_image.npy"  # normalization "mean_image": the mean the run subtracts

# Fields a resumed run may change without changing what it trains: logging, evaluation and
# checkpoint cadence, its length, and where its data lives (the data's own identity is checked).
RESUMABLE_FIELDS = frozenset(
    {
        "log_every_steps",
        "eval_every_steps",
        "eval_batch_size",
        "checkpoint_every_steps",
        "keep_checkpoints",
        "num_epochs",
        "num_train_steps",
        "max_consecutive_skipped_steps",
        "mesh_shape",  # the layout over the devices: a checkpoint restores onto any
        "data_dir",
        "manual_dir",
        "miniature_dir",
        "image_folder",
        "resized_cache_dir",
        "image_store_dir",
    }
)
# Resumable locations that also decide the data's order (the JPEG cache's and the image store's
# shards are not the dataset's): a resumed run may move them, not turn them on or off.
ORDER_FIELDS = ("resized_cache_dir", "image_store_dir")
# Fields added to the config after runs were made, with the value that keeps an older run's
# behaviour: filled in when an older config.json is read. The model's forward options
# (block1_order, spatial_norm2, conv1_padding, activation, lrn, pool_window, pool_stride, width)
# default to the network those runs trained.
ADDED_FIELDS = {
    "max_consecutive_skipped_steps": 3,
    "warmup_epochs": 0.0,
    "grad_clip_norm": 0.0,
    "param_groups": {},
    "pca_lighting_stop_epoch": 0,
    "augment_on": "host",
    "image_store_dir": "",
    "miniature_task": "shapes",
    **models.FORWARD_OPTIONS,
}
# Fields `--mode=eval` may take from the command line: what is evaluated, never how inputs are
# preprocessed or which model it is (augment_on moves the eval views' normalization between host
# and device, bit for bit the same).
EVAL_FIELDS = frozenset(
    {
        "augment_on",
        "eval_split",
        "eval_crops",
        "eval_batch_size",
        "data_dir",
        "manual_dir",
        "miniature_dir",
        "image_folder",
        "resized_cache_dir",
        "image_store_dir",
        "torch_weights",
    }
)
# The EVAL_FIELDS that say which data is evaluated (the caches are the training's): an evaluation
# whose value differs from the run's own is not the run's evaluation (hostile pass 24, #38).
EVAL_DATA_FIELDS = ("data_dir", "manual_dir", "miniature_dir", "image_folder")


def config_path(workdir: str) -> str:
    return os.path.join(workdir, CONFIG_FILE)


def metrics_path(workdir: str) -> str:
    return os.path.join(workdir, METRICS_FILE)


def curves_path(workdir: str) -> str:
    return os.path.join(workdir, CURVES_FILE)


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), CHECKPOINTS)


RUN_FILES = (CONFIG_FILE, HISTORY_FILE, RUN_FILE, LOCK_FILE, METRICS_FILE, CURVES_FILE,
             MEAN_IMAGE_FILE)  # fmt: skip


def refuse_run_file(path: str, flag: str) -> None:
    """UserError when a tool's output `path` (given as `flag`) is one of a run's own records in a
    run directory (a comparison's curves over training_curves.png, a benchmark's JSON over
    config.json, the run's identity): those belong to main.py."""
    refuse_inside_checkpoints(path, flag)
    folder = os.path.dirname(os.path.abspath(os.path.expanduser(path)))
    name = os.path.basename(path)
    if name == SWEEP_FILE and os.path.isfile(os.path.join(folder, SWEEP_FILE)):  # a sweep's plan
        raise UserError(
            f"{flag}={path} would replace the sweep's own {SWEEP_FILE} in {folder}: choose "
            "another file name or folder."
        )
    if name in RUN_FILES and os.path.isfile(os.path.join(folder, CONFIG_FILE)):
        raise UserError(
            f"{flag}={path} would replace the run's own {os.path.basename(path)} in {folder}: "
            "choose another file name or folder."
        )


def refuse_a_run_folder(path: str, flag: str) -> None:
    """UserError when the folder `path`, where a tool would write files of its own (a
    benchmark's data), is a run's or a sweep's folder, which main.py and sweep own (hostile pass
    18, #81: a benchmark's archive, caches and tfds build landed in a run), or lies inside a
    run's checkpoints."""
    refuse_inside_checkpoints(path, flag)
    for name in (CONFIG_FILE, SWEEP_FILE):
        if os.path.isfile(os.path.join(path, name)):
            raise UserError(
                f"{flag}={path} is a run's folder (its {name}): choose a folder of its own."
            )


def refuse_inside_checkpoints(path: str, flag: str) -> None:
    """UserError when `path` lies inside a run's checkpoints/ (or damaged_checkpoints/) folder:
    Orbax replaces and deletes the step folders there, and whatever was put in them with them."""
    place = os.path.realpath(os.path.expanduser(path))  # through links to such a folder too
    while os.path.dirname(place) != place:
        parent = os.path.dirname(place)
        if os.path.basename(place).isdigit() and is_committed(place):  # a step folder, wherever
            raise UserError(
                f"{flag}={path} lies inside the checkpoint folder {place}, which is replaced and "
                "deleted (with what is in it) as its run trains: choose a folder outside it."
            )
        if os.path.basename(place) in (CHECKPOINTS, DAMAGED_CHECKPOINTS) and os.path.isfile(
            os.path.join(parent, CONFIG_FILE)
        ):
            raise UserError(
                f"{flag}={path} lies inside the checkpoints of the run in {parent}, whose step "
                "folders are replaced and deleted as it trains (with what is in them): choose a "
                "folder outside it."
            )
        place = parent


def check_is_directory(workdir: str) -> None:
    """DataError when `workdir` exists and is not a directory, or holds a directory (or other
    non-file) under the name of one of a run's files, or a file named like its checkpoints;
    UserError when it lies inside another run's checkpoints."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise DataError(
            f"--workdir={workdir} is a file, not a directory: choose another --workdir."
        )
    if os.path.realpath(workdir) == os.path.realpath(os.sep):  # (pass 23, #37: $UNSET/)
        raise UserError(
            f"--workdir={workdir} is the file system's root (a variable that is not set?): a run "
            "writes its files into its --workdir; name a folder of its own."
        )
    parts = workdir.split(os.sep)
    for i, part in enumerate(parts):  # (os.makedirs made the missing folder before a `..`: an
        # empty folder left behind, hostile pass 20, #42)
        before = os.sep.join(parts[:i]) or (os.sep if workdir.startswith(os.sep) else ".")
        if part == ".." and not os.path.isdir(before):
            raise UserError(
                f"--workdir={workdir} goes up (..) out of {before}, which does not exist: give "
                "the path without it."
            )
    refuse_inside_checkpoints(workdir, "--workdir")
    for name in (CONFIG_FILE, HISTORY_FILE, RUN_FILE, LOCK_FILE, METRICS_FILE, CURVES_FILE):
        path = os.path.join(workdir, name)
        if os.path.lexists(path) and not os.path.isfile(path):
            what = errors.broken_link(path) or "a directory?"
            raise DataError(
                f"{path} is not a file ({what}), but a run writes its {name} there: move "
                "it out of the way, or choose another --workdir."
            )
    for name in (CONFIG_FILE, HISTORY_FILE, RUN_FILE, METRICS_FILE):  # (hostile pass 16, #78)
        path = os.path.join(workdir, name)
        owner = os.path.dirname(os.path.realpath(path))
        if (
            os.path.islink(path)
            and os.path.isfile(os.path.join(owner, CONFIG_FILE))
            and owner != os.path.realpath(workdir)
        ):  # its entries would go into that run's records, which then no longer fit that run
            raise DataError(
                f"{path} is a link to the {name} of the run in {owner}: this run would write its "
                "records into that run's. Replace the link with a copy of the file (or remove it "
                "and choose another --workdir)."
            )
    for name, what in ((CHECKPOINTS, "its checkpoints"), (DAMAGED_CHECKPOINTS, "damaged ones")):
        path = os.path.join(workdir, name)
        if os.path.lexists(path) and not os.path.isdir(path):
            raise DataError(
                f"{path} is not a directory, but a run keeps {what} there: move it out of the "
                "way, or choose another --workdir."
            )
    folder = checkpoint_dir(workdir)
    target = os.path.realpath(folder)
    owner = os.path.dirname(target)
    if (
        os.path.islink(folder)
        and os.path.isfile(os.path.join(owner, CONFIG_FILE))
        and owner != os.path.realpath(workdir)
    ):  # two runs saving (and deleting) steps in one folder
        raise DataError(
            f"{folder} is a link to the checkpoints of the run in {owner}: this run would replace "
            "and delete that run's steps, and each would read the other's. Give it a checkpoints "
            "folder of its own (a link to an empty folder elsewhere is fine)."
        )
    names = os.listdir(folder) if os.path.isdir(folder) else []
    links = sorted(n for n in names if os.path.islink(os.path.join(folder, n)))
    if links:  # Orbax moves and deletes them as its own folders
        link = os.path.join(folder, links[0])
        remedy = (
            "replace the link with a copy of the folder it points to, or move it out of the way"
            if links[0].isdigit()
            else f"remove the link (rm {link}): its name is no step, so it is nothing of the run"
        )
        raise DataError(
            f"{link} is a link, but a run's checkpoint folders must be its own (they are replaced "
            f"and deleted as it trains): {remedy}."
        )


# The longest path below a workdir that a run writes (Orbax's temporary checkpoint files).
_DEEPEST_FILE = "checkpoints/12345678.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/" + "x" * 150


def make_workdir(workdir: str, flag: str = "--workdir") -> None:
    """Creates `workdir` if missing; one UserError when it is a file, cannot be created, or is
    so long a path that the run's deepest files would pass the system's limit (the first
    checkpoint would fail after the first steps)."""
    check_is_directory(workdir)
    errors.make_directory(workdir, flag)
    deepest = len(os.path.join(os.path.abspath(workdir), _DEEPEST_FILE))
    limit = os.pathconf(workdir, "PC_PATH_MAX")
    if deepest >= limit:
        raise UserError(
            f"{flag} is {len(os.path.abspath(workdir))} characters long: the checkpoint files "
            f"under it would pass the system's limit of {limit} characters for a path. Choose "
            f"a shorter {flag}."
        )


@contextlib.contextmanager
def _named(path: str) -> Iterator[None]:
    """A failed write in the block names `path` (a write call's OSError names no file)."""
    try:
        yield
    except OSError as e:
        if e.filename or e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, path) from e


def write_atomically(path: str, data: str | bytes) -> None:
    """Writes `data` to `path` through a temporary file and a rename: never half a file, and an
    earlier file at `path` stays whole when the write fails (a full disk); the OSError names
    `path`."""
    tmp = errors.temporary_path(path, suffix=f".tmp-{os.getpid()}")
    try:
        with _named(path):
            with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
                f.write(data)
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ---- One writer -------------------------------------------------------------------------------


def _process_start_time(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux), or None."""
    status = errors.process_status(pid)
    return None if status is None else status[1]


def _holds_a_pid(holder: Any) -> bool:
    """Whether a lock file's contents name a process as this code writes them: a dict whose
    "pid" is a positive int of pid_t's range. A pid 0 or -1 is a process group or every process
    to os.kill (the lock looked held forever), True is 1, and 10**20 raised OverflowError
    (hostile pass 18, #49-#50): such a lock is nobody's."""
    if not isinstance(holder, dict):
        return False
    pid = holder.get("pid")
    return type(pid) is int and 0 < pid < 2**31


def _is_alive(holder: dict) -> bool | None:
    """Whether the lock's holder still runs: None when that cannot be told (another host)."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = holder["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = holder.get("started")
    return started is None or _process_start_time(pid) == started  # else: the pid was reused


def live_writer(workdir: str) -> str | None:
    """Who holds the lock of the run in `workdir` ("process PID on host HOST"), when that is
    another process of this host that still runs (a training run writing its checkpoints);
    else None."""
    try:
        with open_record(os.path.join(workdir, LOCK_FILE)) as f:
            holder = json.load(f)
    except (OSError, ValueError, DataError):
        return None
    if not _holds_a_pid(holder):
        return None
    if holder["pid"] == os.getpid() or not _is_alive(holder):
        return None
    return f"process {holder['pid']} on host {holder.get('host')}"


@contextlib.contextmanager
def exclusive(workdir: str, flag: str = "--workdir") -> Iterator[None]:
    """Holds the run's lock while the block writes to it (process 0; the other processes of a
    multi-host run write only their checkpoint shards).

    A second writer is refused with one message naming the holder's host and pid; the lock of a
    process that died (kill -9) is taken over with a warning.
    """
    if jax.process_index() != 0:
        yield
        return
    make_workdir(workdir, flag)
    if flag == "--workdir" and os.path.isfile(os.path.join(workdir, SWEEP_FILE)):
        raise UserError(
            f"--workdir={workdir} is a sweep's folder (its {SWEEP_FILE}), which holds its runs in "
            "folders of their own: choose another --workdir (one arm's run is "
            f"{os.path.join(workdir, '<arm>')})."
        )
    if flag == "--workdir" and not os.path.exists(config_path(workdir)):
        _refuse_a_folder_of_runs(workdir)
    path = os.path.join(workdir, LOCK_FILE)
    pid = os.getpid()
    me = {"host": socket.gethostname(), "pid": pid, "started": _process_start_time(pid)}
    me["since"] = time.strftime("%Y-%m-%d %H:%M:%S")
    # The lock appears with its contents (a hard link of a whole file): a reader never sees it
    # empty, which would read as a holder killed mid-write and be taken over.
    mine = f"{path}.{pid}"
    try:  # a full disk: the message names the lock, and no empty lock file is left behind
        with _named(mine), open(mine, "w") as f:
            json.dump(me, f)
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(mine)
        raise
    try:
        while True:
            try:
                _link_or_create(mine, path, me)
            except FileExistsError:
                _take_over_if_stale(path, workdir, flag)
                continue
            break
    finally:
        os.remove(mine)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError, AttributeError), open(path) as f:
            if json.load(f).get("pid") == pid:
                os.remove(path)


def _refuse_a_folder_of_runs(workdir: str) -> None:
    """A new run in a folder that holds runs in folders of its own (`runs/` of `runs/a`,
    `runs/b`) is refused: compare of that folder then showed the new run alone, its runs
    hidden below it (hostile pass 18, #55)."""
    with contextlib.suppress(OSError):
        inside = sorted(
            entry.name
            for entry in os.scandir(workdir)
            if entry.is_dir() and os.path.isfile(config_path(entry.path))
        )
        if inside:
            shown = ", ".join(inside[:3]) + (", ..." if len(inside) > 3 else "")
            raise UserError(
                f"--workdir={workdir} holds runs in folders of its own ({shown}): a run's folder "
                "holds one run. Choose another --workdir (a new run beside them is "
                f"{os.path.join(workdir, '<name>')})."
            )


def _link_or_create(source: str, path: str, contents: dict) -> None:
    """Makes `path` a hard link of `source`, or (a file system without hard links) creates it
    exclusively and writes `contents`; FileExistsError when it exists."""
    try:
        os.link(source, path)
    except FileExistsError:
        raise
    except OSError:
        with os.fdopen(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644), "w") as f:
            json.dump(contents, f)


def _take_over_if_stale(path: str, workdir: str, flag: str) -> None:
    """Removes the lock file of a dead holder (with a warning); UserError for a live one."""
    try:
        with open(path) as f:
            holder = json.load(f)
    except FileNotFoundError:
        return  # released meanwhile
    except (OSError, ValueError):
        holder = {}  # written by a process killed mid-write
    if not _holds_a_pid(holder):
        holder = {}  # not a lock this code wrote (an edited or foreign file): nobody holds it
    alive = _is_alive(holder) if holder else False
    who = f"process {holder.get('pid')} on host {holder.get('host')} (since {holder.get('since')})"
    if alive is False:
        console.warning(f"Taking over the lock of {workdir}: {who if holder else '?'} is gone.")
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return
    how = (
        "wait for it to finish, or stop it (it saves on SIGTERM or Ctrl-C)"
        if alive
        else f"if that process is gone, delete {path}"
    )
    raise UserError(
        f"{workdir} is in use by {who}: one process writes a {flag[2:]} at a time. Use another "
        f"{flag}, or {how}."
    )


# ---- One run, one experiment ------------------------------------------------------------------


def _differences(old: dict, new: dict, ignore: frozenset = frozenset()) -> list[tuple]:
    """(field, old value, new value) for each field that differs (JSON forms compared); fields
    the old config lacks (added to the code since) are not differences."""
    return [
        (field, old[field], value)
        for field, value in sorted(new.items())
        if field in old and field not in ignore and old[field] != value
    ]


def _describe(differences: list[tuple], limit: int = 12) -> str:
    shown = [f"{f}: {old!r} -> {new!r}" for f, old, new in differences[:limit]]
    more = len(differences) - limit
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def _as_json(config: ml_collections.ConfigDict) -> dict:
    return json.loads(config.to_json())


def check_resume(
    config: ml_collections.ConfigDict, workdir: str, allow_change: bool = False
) -> list[tuple]:
    """The differences between `config` and the run's config.json that change the experiment
    ([] for a new run). Raises ConfigError listing them unless `allow_change`."""
    old = read_config_dict(workdir, check_digest=not allow_change)
    if old is None:
        _refuse_unrecorded(workdir, CONFIG_FILE, "config", allow_change)
        return []
    _refuse_lost_checkpoints(workdir, allow_change)
    changed = config_changes(config, old)
    reshaped = [c for c in changed if c[0] in SHAPE_FIELDS]
    if reshaped and allow_change and saved_steps(workdir):
        raise ConfigError(
            f"{workdir} holds checkpoints of another network: {_describe(reshaped)} changes the "
            "shapes of its parameters, which --allow_config_change cannot continue. Start a new "
            "run in another --workdir."
        )
    counted = [c for c in changed if c[0] in COUNT_FIELDS]
    if counted and allow_change and saved_steps(workdir):
        raise ConfigError(
            f"--allow_config_change cannot continue the run in {workdir} with "
            f"{_describe(counted)}: its steps are counted in its batches (the epochs logged, the "
            "schedule's drops, its length) and its evaluation rows all measure one split and "
            "view. Evaluate another split or view "
            "with --mode=eval (--config.eval_split / --config.eval_crops), or start a new run "
            "in another --workdir."
        )
    if changed and not allow_change:
        raise ConfigError(
            f"{workdir} holds a run with another config; resuming it with this one would mix two "
            f"experiments. Differences (run's -> now): {_describe(changed)}. To start a new run, "
            "choose another --workdir; to resume this one, use its own config (--config="
            f"configs/run.py:{workdir}); to continue it with these changes on purpose, add "
            "--allow_config_change (recorded in its config_history.jsonl)."
        )
    return changed


SHAPE_FIELDS = ("variant", "num_classes", "width")  # a checkpoint cannot be resumed across them
# Nor can a run with checkpoints change how it counts (hostile pass 16, #11: a batch size changed
# on resume logged epochs it had not trained and ended short of num_epochs) or what its
# evaluations measure (#17: eval rows of the training split, unlabelled, among the validation's).
COUNT_FIELDS = ("batch_size", "eval_split", "eval_crops")


def config_changes(config: ml_collections.ConfigDict, old: dict) -> list[tuple]:
    """(field, old, new) for each difference between `config` and a run's config.json `old`
    that changes the experiment (not the RESUMABLE_FIELDS; eval_every_steps does with the
    "plateau" schedule, whose learning rate the evaluations drive)."""
    new = _as_json(config)
    resumable = RESUMABLE_FIELDS
    if "plateau" in (old.get("schedule"), new.get("schedule")):
        resumable = resumable - {"eval_every_steps"}
    changed = _differences(old, new, ignore=resumable)
    return changed + [  # moving these is a location change; turning them on or off is not
        (field, old[field], new[field])
        for field in ORDER_FIELDS
        if field in old and bool(old[field]) != bool(new[field])
    ]


def apply_eval_overrides(
    config: ml_collections.ConfigDict, workdir: str, overrides: dict[str, Any] | None = None
) -> ml_collections.ConfigDict:
    """The run's own `config` with the command line's `overrides` of what is evaluated
    (EVAL_FIELDS); the training's cadence and length (RESUMABLE_FIELDS) change nothing evaluated
    and are ignored; an override of any other field that differs from the run is refused."""
    overrides = dict(overrides or {})
    refused = _differences(
        {k: v for k, v in _as_json(config).items() if k in overrides},
        json.loads(json.dumps(overrides, default=list)),
        ignore=EVAL_FIELDS | RESUMABLE_FIELDS,
    )
    if refused:
        raise ConfigError(
            f"--mode=eval evaluates the run in {workdir} with its own config; these overrides "
            f"would change the model or its preprocessing: {_describe(refused)}. Only "
            f"{', '.join(sorted(EVAL_FIELDS))} may be set for an evaluation."
        )
    with config.unlocked():
        for field, value in overrides.items():
            if field in EVAL_FIELDS:
                config[field] = value
    return config


def _history_entry(step: int, event: str, **fields: Any) -> dict:
    """A config_history.jsonl entry: the step, when, where, what happened, then `fields`."""
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    return {"step": step, "time": when, "host": socket.gethostname(), "event": event, **fields}


def _xla_settings(xla_flags: Any) -> dict[str, str]:
    """What an XLA_FLAGS value sets: each flag's last value, whatever their order and spacing
    (the same flags reordered were warned about as a change: hostile pass 21, #32, #33); a bare
    `--flag` sets it true, as `--flag=true` (pass 22, #36), and so does `=1` (pass 23, #70)."""
    words = xla_flags.split() if isinstance(xla_flags, str) else []
    settings = dict([*word.split("=", 1), "true"][:2] for word in words)
    same = {"1": "true", "true": "true", "0": "false", "false": "false"}
    return {flag: same.get(value.lower(), value) for flag, value in settings.items()}


def record_start(
    config: ml_collections.ConfigDict,
    workdir: str,
    step: int,
    changes: list[tuple],
    dataset: dict | None = None,
    dataset_changes: list[tuple] = (),
    mean_image_digest: str | None = None,
) -> None:
    """Writes the run's config.json (atomically), appends this start to its history (with the
    digest of the run's copy of its mean image, `save_mean_image`), and records the data's
    identity at the first start, or again when it changed on purpose (`dataset_changes`,
    allowed by --allow_config_change; process 0)."""
    if jax.process_index() != 0:
        return
    os.makedirs(workdir, exist_ok=True)
    previous = read_config_dict(workdir, check_digest=False)  # (check_resume checked it)
    resumable = _differences(previous or {}, _as_json(config))
    entry = _history_entry(
        step,
        "start" if previous is None else "resume",
        changed={f: {"old": old, "new": new} for f, old, new in resumable},
        config_digest=_config_digest(_as_json(config)),
    )
    if previous is not None and _config_json_unrecorded(workdir):
        # Taken by --allow_config_change: "changed" is measured from a file the run never
        # recorded (edited by hand, copied, or written by a start that crashed), not from the
        # config its steps so far were trained with; the entry says so.
        entry["config_json_edited"] = True
        console.warning(
            f"{config_path(workdir)} was not the config the run recorded at its last start (edited "
            "by hand, copied, or written by a start that crashed): the changes are listed from "
            f"it, and {HISTORY_FILE} marks this entry config_json_edited."
        )
    # XLA's flags change the last bits of the numbers (--noproject_xla_flags on a resume made
    # the resumed steps differ from the uninterrupted run's, no word: hostile pass 20, #15).
    entry["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    last = next((e for e in reversed(read_history(workdir, warn=False)) if "xla_flags" in e), {})
    if last and _xla_settings(last["xla_flags"]) != _xla_settings(entry["xla_flags"]):
        console.warning(
            f"XLA_FLAGS is {entry['xla_flags']!r}, where the run's last start (step "
            f"{last.get('step')}) had {last['xla_flags']!r}: the steps from here may differ from "
            "an uninterrupted run's in their last bits (recorded in its history)."
        )
    if mean_image_digest:
        entry[MEAN_IMAGE_DIGEST] = mean_image_digest
    if dataset_changes:
        entry["dataset_changed"] = {f: {"old": old, "new": new} for f, old, new in dataset_changes}
    if changes or dataset_changes:
        entry["allowed_config_change"] = True
    if dataset_changes:  # (allowed: recorded in the history, and said: hostile pass 27, N55)
        console.info(f"Data changes (allowed): {_describe(list(dataset_changes), limit=100)}")
    if resumable:  # (at step 0 no checkpoint was kept: the run starts again, no resume; hostile
        when = "on resume" if step else "since the last start, which kept no checkpoint"  # pass
        console.info(f"Config changes {when}: {_describe(resumable, limit=100)}")  # 25, #24)
    save_config(config, workdir)
    append_jsonl(os.path.join(workdir, HISTORY_FILE), entry)
    record_dataset(workdir, dataset, replace=bool(dataset_changes))


def record_dataset(workdir: str, dataset: dict | None, replace: bool = False) -> None:
    """Writes the data's identity to run.json when the run has none (no run.json, or one
    emptied by hand), or (`replace`) when it changed on purpose (process 0)."""
    if jax.process_index() != 0 or dataset is None:
        return
    if not replace and "dataset" in (read_run_record(workdir) or {}):
        return
    write_atomically(os.path.join(workdir, RUN_FILE), json.dumps({"dataset": dataset}))


# Fields that lengthen a finished run: main.py trains on when they change (is_finished).
LENGTH_FIELDS = frozenset({"num_epochs", "num_train_steps"})


def record_finished(workdir: str, step: int) -> None:
    """Appends the run's end to its history (process 0): trained to `step`, evaluated and saved.
    A later start (to train longer) appends after it, so `finished_step` is None again."""
    if jax.process_index() != 0:
        return
    entry = _history_entry(step, "finished")
    append_jsonl(os.path.join(workdir, HISTORY_FILE), entry)


def accept_config_json(
    workdir: str, step: int, validate: Callable[[ml_collections.ConfigDict], None] | None = None
) -> bool:
    """--allow_config_change on a run with nothing left to train: its config.json is taken as
    it is, as a resume would take it, when the history lacks its digest or records another
    (a resume entry at `step` that trains nothing; process 0), once `validate` (the config's
    rules: ConfigError) accepts it. Whether it recorded one."""
    path = config_path(workdir)
    if jax.process_index() != 0 or not os.path.isfile(path):
        return False
    config = _read_config_file(workdir)
    digest = _config_digest(config)
    recorded = _recorded_config_digest(workdir)
    if recorded is not None and recorded[1] == digest:
        return False
    if validate is not None:
        try:
            validate(ml_collections.ConfigDict({**ADDED_FIELDS, **config}))
        except ConfigError as e:
            raise DataError(
                f"{path} is not a valid run config ({e}), so --allow_config_change cannot take "
                "it as the run's config. Restore it from a copy of the run, or mend that field."
            ) from None
    entry = _history_entry(
        step, "resume", config_json_edited=True, config_digest=digest, allowed_config_change=True
    )
    append_jsonl(os.path.join(workdir, HISTORY_FILE), entry)
    console.info(f"{path} taken as it is (--allow_config_change), and recorded.")
    return True


def read_history(workdir: str, warn: bool = True) -> list[dict]:
    """The records of the run's config_history.jsonl ([] when it has none)."""
    path = os.path.join(workdir, HISTORY_FILE)  # (a link to nothing is no missing history:
    # pass 22, #26, whose remedy then failed on the link)
    return read_jsonl(path, warn) if os.path.lexists(path) else []


def finished_step(workdir: str) -> int | None:
    """The step the run finished at when its history's last entry is its end, else None (never
    started, still training, stopped, crashed, or resumed to train longer)."""
    history = read_history(workdir)
    last = history[-1] if history else {}
    return int(last["step"]) if last.get("event") == "finished" else None


def is_finished(config: ml_collections.ConfigDict, workdir: str) -> bool:
    """Whether main.py with `config` would have nothing to do in `workdir`, read from the run's
    files alone: the run recorded its end, and `config` differs from its config.json at most in
    fields that neither change the experiment nor lengthen it (logging cadence, data paths).
    For tools that schedule runs (sweep.py) without starting a process to find out."""
    if finished_step(workdir) is None:
        return False
    old = read_config_dict(workdir)
    ignore = RESUMABLE_FIELDS - LENGTH_FIELDS
    return old is not None and not _differences(old, _as_json(config), ignore=ignore)


def read_run_record(workdir: str) -> dict | None:
    """The run's run.json (None when it has none); DataError when it is damaged: not JSON, or
    not an object whose "dataset" (when present) is an object."""
    path = os.path.join(workdir, RUN_FILE)
    if not os.path.exists(path):
        return None
    try:
        record = _read_json(path, "a run record")
        if not isinstance(record, dict) or not isinstance(record.get("dataset", {}), dict):
            raise DataError(f"{path} is damaged: it is not a run record (an object with a dataset)")
    except DataError as e:
        raise DataError(
            f"{str(e).rstrip('.')}. It records the data the run trained on (an image folder's "
            "class names among it): restore it from a copy of the run, or resume the run with "
            "main.py --allow_config_change, which records the data it finds anew."
        ) from None
    return record


def is_committed(step_dir: str) -> bool:
    """Whether the checkpoint folder `step_dir` was committed (a copy or a save cut short lacks
    the marker)."""
    return os.path.exists(os.path.join(step_dir, COMMIT_MARKER))


def saved_steps(workdir: str) -> list[int]:
    """The committed checkpoint steps of the run (their folders' names), oldest first."""
    folder = checkpoint_dir(workdir)
    names = os.listdir(folder) if os.path.isdir(folder) else []
    steps = [name for name in names if name.isdigit() and is_committed(os.path.join(folder, name))]
    return sorted(int(name) for name in steps)


def _refuse_unrecorded(
    workdir: str, name: str, what: str, allow_change: bool, missing: str | None = None
) -> None:
    """A workdir with checkpoints but without the record `name` (deleted, or never copied), or
    without its part `missing`, cannot be checked: resuming it unchecked could silently make
    another experiment of it."""
    steps = saved_steps(workdir)
    if steps and not allow_change:
        lacks = f"no {name}" if missing is None else f"a {name} without the {missing}"
        raise DataError(
            f"{workdir} holds checkpoints (up to step {steps[-1]}) but {lacks}, so this resume "
            f"cannot be checked against the run's {what}. Restore {os.path.join(workdir, name)} "
            "(from a copy of the run), start a new run in another --workdir, or add "
            "--allow_config_change to continue it with this config and data on purpose "
            "(recorded in its config_history.jsonl)."
        )


def reached_step(workdir: str) -> int:
    """The step the run's history shows it trained to: its last "finished" or "resume" entry's
    (0: no history, or never past its start)."""
    events = ("finished", "resume")
    history = read_history(workdir, warn=False)
    return max((r.get("step", 0) for r in history if r.get("event") in events), default=0)


def no_checkpoint_error(workdir: str, remedy: str) -> UserError:
    """The error of a read of the run's checkpoint that finds none: `remedy` for a run that never
    trained; a run that did lost its checkpoints (training would start it over: restore them)."""
    reached = reached_step(workdir)
    if reached > 0:
        return DataError(
            f"{workdir} holds a run that reached step {reached} ({HISTORY_FILE}) but no "
            f"checkpoint in {checkpoint_dir(workdir)}: restore that folder from a copy of the "
            "run, then rerun this command."
        )
    return UserError(f"No checkpoint in {checkpoint_dir(workdir)}: {remedy}")


def _refuse_lost_checkpoints(workdir: str, allow_change: bool) -> None:
    """A run whose history shows it trained past step 0 (it finished, or resumed from a
    checkpoint) but that holds no checkpoint any more would start over and overwrite its
    metrics: refused unless `allow_change`."""
    reached = reached_step(workdir)
    if reached > 0 and not saved_steps(workdir) and not allow_change:
        raise DataError(
            f"{workdir} holds a run that reached step {reached} (config_history.jsonl) but no "
            "checkpoint: training would start over from step 0 and overwrite its metrics. "
            f"Restore {checkpoint_dir(workdir)} (from a copy of the run), start a new run in "
            "another --workdir, or add --allow_config_change to start this one over on purpose."
        )


def check_dataset(workdir: str, dataset: dict, allow_change: bool = False) -> list[tuple]:
    """The differences (field, old, new) between the data's identity and the one the run
    started with (a class folder added shifts every label): DataError listing them unless
    `allow_change`; DataError when a run with checkpoints has no run.json to compare with, or a
    damaged one. With `allow_change` a damaged or emptied run.json counts as a change (its
    "dataset" is "damaged"), so that the data is recorded anew."""
    try:
        record = read_run_record(workdir)
    except DataError:
        if not allow_change:
            raise
        console.warning(
            f"{os.path.join(workdir, RUN_FILE)} is damaged: the data is recorded anew "
            "(--allow_config_change), unchecked against the data the run trained on."
        )
        return [("dataset", "damaged", "recorded anew")]
    if record is None:
        _refuse_unrecorded(workdir, RUN_FILE, "data", allow_change)
        return []
    if "dataset" not in record:  # emptied by hand: as good as missing
        _refuse_unrecorded(workdir, RUN_FILE, "data", allow_change, missing="data identity")
        return []  # (record_dataset writes it)
    changed = _dataset_differences(record["dataset"], dataset)
    if changed and not allow_change:
        raise DataError(
            f"The data of the run in {workdir} changed since it started: {_describe(changed)}. "
            "Its labels or examples would no longer mean what they meant: restore the data, or "
            "start a new run in another --workdir (or add --allow_config_change on purpose)."
            + (  # (pass 23, #59: the fingerprint reads more files now)
                " A run started before the fingerprint read up to 64 files per class records "
                "another one: if the image folder is unchanged, add --allow_config_change once."
                if [field for field, _, _ in changed] == ["files_fingerprint"]
                else ""
            )
        )
    return changed


def _dataset_differences(old: dict, dataset: dict) -> list[tuple]:
    new = json.loads(json.dumps(dataset))  # the JSON form (tuples as lists), as recorded
    return _differences(old, new) + [(f, old[f], None) for f in old if f not in new]


def dataset_changes(workdir: str, dataset: dict) -> list[str] | None:  # (None: no record)
    """The fields of the data's identity that differ from the one the run recorded (run.json);
    None when it recorded none, or a damaged one (an evaluation does not refuse a run for that)."""
    try:
        record = read_run_record(workdir)
    except DataError:
        return None
    old = (record or {}).get("dataset")
    if not isinstance(old, dict):
        return None
    return [field for field, _, _ in _dataset_differences(old, dataset)]


# ---- Config ----------------------------------------------------------------------------------


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes the run's config to `workdir/config.json` (process 0, atomically), for tools that
    read the run."""
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        write_atomically(config_path(workdir), config.to_json(indent=2))


def open_record(path: str, mode: str = "r"):
    """`open(path, mode)` for reading one of a run's records, which must be a regular file
    (through links): a FIFO in its place hung compare, sweep and --mode=eval (its open waits
    for a writer), /dev/zero filled the memory (hostile pass 20, #30-#33). DataError for one
    that is not; FileNotFoundError as open's."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # (a FIFO opens at once, then refused)
    except OSError:
        if link := errors.broken_link(path):  # (pass 21, #55: "no config.json: train first",
            # which failed; pass 22, #23: a link to itself was an ELOOP traceback)
            raise DataError(
                f"{path} is {link}: restore the file from a copy of the run, or remove the link."
            ) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError(
            f"{path} is not a regular file (a FIFO, a device or a directory), so it cannot be "
            "the run's record: restore it from a copy of the run, or remove it."
        )
    os.set_blocking(fd, True)
    return os.fdopen(fd, mode)


def _read_json(path: str, what: str) -> Any:
    """The JSON value in `path`; DataError saying it is not `what` when it cannot be parsed."""
    try:
        with open_record(path) as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is damaged ({e}): it is not {what}.") from None


def read_config_dict(workdir: str, check_digest: bool = True) -> dict[str, Any] | None:
    """The run's config.json as a plain dict, or None when the run has none. DataError when it
    is damaged, or (`check_digest`) differs from the config the run recorded at its last start
    (its digest in config_history.jsonl): edited by hand, copied from another run, or written by
    a start that crashed before its history entry (a resume with --allow_config_change takes it
    as it is, and records it)."""
    path = config_path(workdir)
    if link := errors.broken_link(workdir.rstrip(os.sep) or os.sep):  # (pass 23, #55: "train
        # first", which then named the loop)
        raise DataError(f"--workdir={workdir} is {link}: remove the link, or name the run itself.")
    if not os.path.lexists(path):  # (a link to nothing is refused by name: open_record)
        return None
    config = _read_config_file(workdir)
    recorded = _recorded_config_digest(workdir) if check_digest else None
    if check_digest and recorded is None and saved_steps(workdir):
        raise DataError(
            f"{workdir} holds checkpoints but its {HISTORY_FILE} records no start with the "
            f"digest of {CONFIG_FILE} (deleted, cut short, or written before 2026-12-05), so "
            f"{path} cannot be checked against the config the checkpoints were trained with. "
            f"Restore {os.path.join(workdir, HISTORY_FILE)} from a copy of the run, or resume "
            "the run with --allow_config_change to take config.json as it is (then recorded)."
        )
    if recorded is not None and recorded[1] != _config_digest(config):
        raise DataError(
            f"{path} is not the config the run recorded when it started at step {recorded[0]} "
            f"({HISTORY_FILE} holds its digest): it was edited by hand or copied from another "
            "run, so its checkpoints would be read (or resumed) with another config. Restore it "
            "from a copy of the run, or start a new run in another --workdir; if a start crashed "
            "before recording it, or to keep the edit on purpose, resume the run with its own "
            f"config and --allow_config_change (--config=configs/run.py:{workdir} "
            "--allow_config_change; it is then recorded)."
        )
    return {**ADDED_FIELDS, **config}


def _read_config_file(workdir: str) -> dict:
    """The run's config.json as written, unchecked; DataError when it is no JSON object."""
    path = config_path(workdir)
    config = _read_json(
        path,
        "the JSON config main.py writes. Restore it from a copy of the run, or start a new run "
        "in another --workdir",
    )
    if not isinstance(config, dict):
        raise DataError(f"{path} is damaged: it holds a {type(config).__name__}, not a config.")
    return config


def _config_json_unrecorded(workdir: str) -> bool:
    """Whether the run's config.json differs from the config its history recorded last, or the
    history records none (the file is then unchecked)."""
    recorded = _recorded_config_digest(workdir)
    return recorded is None or recorded[1] != _config_digest(_read_config_file(workdir))


def _config_digest(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _recorded_config_digest(workdir: str) -> tuple[int, str] | None:
    """(step, digest) of the config the run's last start or resume wrote (None: no history, or
    one written before the digests)."""
    history = read_history(workdir, warn=False)
    starts = [r for r in history if r.get("event") in ("start", "resume")]
    if not starts or not isinstance(starts[-1].get("config_digest"), str):
        return None
    return starts[-1]["step"], starts[-1]["config_digest"]


# ---- Metrics ---------------------------------------------------------------------------------


# The numbers of a metrics line: a line where one is not a number (an edited file) is dropped.
NUMBER_FIELDS = ("loss", "top1_error", "top5_error", "top1", "top5", "epoch", "images_per_sec",
                 "step_time_ms", "learning_rate", "grad_norm", "examples")  # fmt: skip


def _non_numbers(record: dict) -> list[str]:
    return [
        k
        for k in NUMBER_FIELDS
        if k in record and (type(record[k]) is bool or not isinstance(record[k], int | float))
    ]


_TOLD: set[str] = set()  # read_jsonl's warnings given (one each: a file is read several times)


def read_jsonl(path: str, warn: bool = True) -> list[dict]:
    """The JSON records of a .jsonl file in order; blank lines skipped, and a line that is not
    whole JSON (the last line of a crashed write), not an object, or whose "step" is not an
    integer or "split" not a name (an edited file) dropped, with a warning when `warn` (once
    per process: hostile pass 18, #48)."""
    records = []
    with open_record(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                problem = None
            except ValueError:
                problem = "is not whole JSON (a cut-off write)"
            if problem is None and not isinstance(record, dict):
                problem = f"holds a {type(record).__name__}, not a record"
            elif problem is None and type(record.get("step", 0)) is not int:
                problem = f"has a step that is not an integer ({record['step']!r})"
            elif problem is None and not isinstance(record.get("split", ""), str):
                problem = f"has a split that is not a name ({record['split']!r})"  # (pass 18 #46)
            elif problem is None and (odd := _non_numbers(record)):
                problem = f"has {odd[0]} that is not a number ({record[odd[0]]!r})"
            if problem is None:
                records.append(record)
            elif warn and (told := f"{path}: line {number} {problem}; ignored.") not in _TOLD:
                _TOLD.add(told)
                console.warning(told)
    return records


def append_jsonl(path: str, record: dict) -> None:
    """Appends one whole line: one write call, and a write that fails part-way is cut back off,
    so a reader never meets half a line from this process."""
    line = (json.dumps(record) + "\n").encode()
    _own_copy(path)
    _cut_off_partial_line(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            with _named(path):
                written = os.write(fd, line)
            if written != len(line):
                raise OSError(28, "No space left on device (short write)", path)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def _own_copy(path: str) -> None:
    """A file with other hard links (a run copied with `cp -al`, as snapshot backups do) is
    replaced by a copy of its own before it is appended to or cut: the copy's resume wrote its
    history lines into the original run's too, which then refused to resume or evaluate
    (hostile pass 21, #57). Other records are written whole, through a rename."""
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_nlink > 1:
            with open_record(path, "rb") as f:
                write_atomically(path, f.read())


def _cut_off_partial_line(path: str) -> None:
    """A last line without its newline (a write cut short by a crash or a full disk) is cut off,
    with a warning, so that the next record starts a line of its own instead of being glued to
    it (and lost to every reader)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size == 0:
                return
            f.seek(max(0, size - 65536))
            tail = f.read()
    except FileNotFoundError:
        return
    if tail.endswith(b"\n"):
        return
    keep = size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
    with _named(path):
        os.truncate(path, keep)
    console.warning(f"{path}: its last line was cut off ({size - keep} bytes); dropped.")


def rewrite_jsonl(path: str, records: list[dict]) -> None:
    """Replaces a .jsonl file's records (atomically)."""
    write_atomically(path, "".join(json.dumps(r) + "\n" for r in records))


# metrics.jsonl's metric names. A run reports error rates, as the paper does: "top1_error" and
# "top5_error" (fractions: 0.25 is 25%) on its train and eval lines. An eval line whose
# "reeval" is true is a later `--mode=eval` of a step the run had already evaluated (perhaps with
# other eval_crops or eval_split): kept in the file, left out of the run's curves, final and
# best evaluation (`run_evals`).
TOP1_ERROR, TOP5_ERROR = "top1_error", "top5_error"
# Files written before errors were the convention hold accuracies under these names.
_OLD_ACCURACIES = {"top1": TOP1_ERROR, "top5": TOP5_ERROR}


def _upgrade_metrics(records: list) -> list:
    """Records of any version of metrics.jsonl as this version writes them: accuracies ("top1",
    "top5") become errors ("top1_error", "top5_error"; old eval lines held both); an eval line
    of a step evaluated before it, which older `--mode=eval`s appended unmarked, is marked
    "reeval". Anything that is not a metrics record passes unchanged."""
    upgraded, evaluated = [], set()
    for record in records:
        if not isinstance(record, dict):
            upgraded.append(record)
            continue
        record = dict(record)
        for old, new in _OLD_ACCURACIES.items():
            value = record.pop(old, None)
            if isinstance(value, int | float) and not isinstance(value, bool):
                record.setdefault(new, 1.0 - value)
        if record.get("split") == "eval" and not record.get("reeval"):
            if record.get("step") in evaluated:
                record["reeval"] = True
            evaluated.add(record.get("step"))
        upgraded.append(record)
    return upgraded


def read_metrics(workdir: str, warn: bool = True) -> list[dict]:
    """The metrics records of `workdir/metrics.jsonl` in file order, in this version's names
    whatever version wrote them (error rates: see `_upgrade_metrics`); a cut-off line is skipped
    (with a warning when `warn`, see read_jsonl), and so are the lines of a finished run past
    the step it finished at (an edit, or lines of another run): the readers would take them for
    its final evaluation."""
    path = metrics_path(workdir)
    if not os.path.lexists(path):  # (a link to nothing is named by read_jsonl: pass 22, #25)
        raise UserError(f"{path} not found: --workdir must be a directory written by main.py.")
    records = _upgrade_metrics(read_jsonl(path, warn))
    end = finished_step(workdir)
    past = [r for r in records if end is not None and r["step"] > end]
    if past and warn:
        console.warning(
            f"{path} holds {len(past)} line(s) past step {end}, where the run finished "
            f"({HISTORY_FILE}): ignored (edited by hand, or copied from another run?)."
        )
    return [r for r in records if end is None or r["step"] <= end]


def run_evals(records: list[dict]) -> list[dict]:
    """The run's own evaluations among `records` (read_metrics'), in file order: its eval lines
    with a top-1 error, less the re-evaluations of a step already evaluated ("reeval")."""
    return [
        r for r in records if r.get("split") == "eval" and TOP1_ERROR in r and not r.get("reeval")
    ]


def is_evaluated(workdir: str, step: int) -> bool:
    """Whether the run's metrics.jsonl holds an evaluation of `step` already."""
    if not os.path.exists(metrics_path(workdir)):
        return False
    return any(r.get("step") == step for r in run_evals(read_metrics(workdir, warn=False)))


def shows_top5(num_classes: int | None) -> bool:
    """Whether a model's top-5 error is worth showing: only with more than 5 classes (with 5 or
    fewer it is always 0). Unknown (None): shown."""
    return not isinstance(num_classes, int) or num_classes > 5


def read_num_classes(workdir: str) -> int | None:
    """The run's num_classes from its config.json; None without a readable one."""
    try:
        config = read_config_dict(workdir)
    except (OSError, DataError):
        return None
    return (config or {}).get("num_classes")


# ---- Sweeps: directories of runs --------------------------------------------------------------
#
#     <sweep_dir>/sweep.json                   the plan (sweep.py): base config, arms, seeds, and
#                                              each run's arm, seed, workdir, log, command, outcome
#     <sweep_dir>/<arm>[/seed_<s>]/            each run's workdir (the files above)
#     <sweep_dir>/logs/<arm>[.seed_<s>].log    each run's console output (sweep.py)

SWEEP_FILE = "sweep.json"
SWEEP_LOGS = "logs"


def write_sweep_plan(sweep_dir: str, plan: dict) -> None:
    """Writes `sweep_dir/sweep.json` (atomically); paths in it are relative to `sweep_dir`, so a
    copied sweep directory reads the same anywhere."""
    errors.make_directory(sweep_dir, "--sweep_dir")
    write_atomically(os.path.join(sweep_dir, SWEEP_FILE), json.dumps(plan, indent=2) + "\n")


def read_sweep_plan(sweep_dir: str) -> dict | None:
    """The plan of the sweep in `sweep_dir`, or None when it is not a sweep directory."""
    path = os.path.join(sweep_dir, SWEEP_FILE)
    if not os.path.isfile(path):
        return None
    plan = _read_json(path, "the plan sweep.py writes")
    if not isinstance(plan, dict) or not isinstance(plan.get("runs"), list):
        raise DataError(f"{path} is damaged: it holds no list of runs.")
    for run in plan["runs"]:
        if not (
            isinstance(run, dict) and all(isinstance(run.get(k), str) for k in ("name", "workdir"))
        ):
            raise DataError(
                f"{path} is damaged: a run of its list lacks its name or workdir ({run!r:.80}). "
                "Rerun the sweep's command, which writes it again."
            )
    return plan


def save_mean_image(workdir: str, source_path: str) -> str | None:
    """Copies the training set's mean image (input_pipeline.build_mean_image) into the run
    (process 0, atomically), so the tools can preprocess like the run without its data; returns
    the copy's digest, which the start's history entry keeps (`read_mean_image` checks it)."""
    if jax.process_index() != 0:
        return None
    target = os.path.join(workdir, MEAN_IMAGE_FILE)
    tmp = f"{target}.tmp-{os.getpid()}"
    shutil.copyfile(source_path, tmp)
    digest = _file_digest(tmp)
    os.replace(tmp, target)
    return digest


MEAN_IMAGE_DIGEST = "mean_image_digest"  # in a start's history entry


def _file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


# The identity (device, inode) of each folder a run writes into, taken when it began: a folder
# moved or deleted while the run wrote made saves fail in tracebacks, or made the path again and
# wrote the rest of the run there, exit 0 (hostile pass 24, #52, #53); a workdir that is a link
# swapped to another folder took metrics lines there (25, #16).
_PINNED: dict[str, tuple[int, int] | None] = {}


def _folder_identity(path: str) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def pin_folder(workdir: str) -> None:
    """Remembers which folder `workdir` is now (checked by `moved_away`)."""
    _PINNED[os.path.abspath(workdir)] = _folder_identity(workdir)


def moved_away(workdir: str, what: str, where: str | None = None) -> DataError | None:
    """The DataError of a run whose folder `workdir` (pinned by `pin_folder`) is no longer the
    folder it was: moved, deleted, or a link now to another; else None. `what` is being
    written in `where` (the workdir by default)."""
    known = _PINNED.get(os.path.abspath(workdir))
    if known is None or _folder_identity(workdir) == known:
        return None
    return DataError(
        f"Writing {what} in {where or workdir} failed: the run's folder {workdir} was moved or "
        "deleted while it ran. Put the run's folder back where it was, then rerun the same "
        "command: it resumes from its last complete checkpoint."
    )


def check_data_mean_image(workdir: str, config: Any) -> str | None:
    """The data build's mean image of a run that subtracts one (normalization "mean_image"),
    checked against the run (`check_mean_image`); None when the run subtracts none, or its data
    is gone (the tools then use the run's copy alone: hostile pass 24, #55)."""
    if config.normalization != "mean_image" or config.dataset == "synthetic":
        return None
    from alexnet_jax.data import input_pipeline  # (not at import: the tools stay light)

    try:
        source = input_pipeline.mean_image_path(config)
    except (DataError, OSError):
        return None
    check_mean_image(workdir, source, int(config.resize_size))
    return source


def check_mean_image(workdir: str, source: str, resize_size: int) -> None:
    """DataError when the data build's mean image (`source`, what training and evaluation
    subtract) is damaged (image_files.checked_mean_image), or is not the one the run started
    with: its digest is not the one the run's start recorded, and it is not the run's own copy
    (within a rebuild's last bits). The numbers would silently be another preprocessing's
    (hostile pass 25, #7, #12; 26, #12-#15). Returns when the data has none yet."""
    if not os.path.lexists(source):
        return
    data = image_files.checked_mean_image(source, resize_size)
    starts = [e for e in read_history(workdir, warn=False) if MEAN_IMAGE_DIGEST in e]
    recorded = starts[-1] if starts else None
    if recorded and _file_digest(source) == recorded[MEAN_IMAGE_DIGEST]:
        return
    own = os.path.join(workdir, MEAN_IMAGE_FILE)
    kept = None
    with contextlib.suppress(OSError, ValueError):  # (damaged: read_mean_image names it)
        if recorded is None or _file_digest(own) == recorded[MEAN_IMAGE_DIGEST]:
            kept = np.load(own)  # the copy the run started with
    if kept is None and recorded is None:  # nothing to compare it with
        if read_history(workdir, warn=False):  # (a run started before the digests, its copy
            console.warning(  # gone: said, not passed over: hostile pass 27)
                f"{workdir} keeps no copy of its mean image and records no digest of it (a run "
                f"started before they were kept): {source} cannot be checked against the mean "
                "image the run trained with."
            )
        return
    redo = "delete it: the next training or evaluation computes it again from the training split"
    # (allclose: the last bits may differ where the mean was computed on another machine)
    if kept is not None and kept.shape == data.shape and np.allclose(kept, data, 0, 1e-3):
        return
    if kept is not None:
        raise DataError(
            f"The data build's mean image {source} differs from the run's copy {own}, kept when "
            "the run started: one of them was edited or rebuilt since, or the training data "
            f"changed (a resume names what). If the data's was edited, {redo}; if the run's, "
            "copy the data's over it."
        )
    raise DataError(
        f"The data build's mean image {source} is not the one this run started with (its digest "
        f"differs from the one {HISTORY_FILE} recorded at step {recorded.get('step')}), and the "
        f"run's copy {own} is missing or differs too: the data's was edited or rebuilt since "
        f"(or {HISTORY_FILE} was edited). Restore the run's copy (or its history) from a copy of "
        f"the run, or {redo}."
    )


def read_mean_image(workdir: str, size: int | None = None, source: str | None = None) -> np.ndarray:
    """The run's mean image (float32 [R, R, 3], 0-255, R >= `size`, the input size: the run's
    by default), for runs with normalization "mean_image"; DataError when the run's copy is
    missing or damaged (the remedy names `source`, the data build's copy it was made from: by
    default the run's data_dir/mean_images)."""
    if size is None or source is None:
        from alexnet_jax.data.input_pipeline import MEAN_IMAGE_DIR

        config = read_config_dict(workdir) or {}
        size = int(config.get("input_size", 0)) if size is None else size
        data_dir = os.path.expanduser(str(config.get("data_dir", "data_dir")))
        source = source or os.path.join(data_dir, MEAN_IMAGE_DIR)
    path = os.path.join(workdir, MEAN_IMAGE_FILE)
    remedy = (
        "this run subtracts the training set's mean image and keeps a copy there: copy it again "
        f"from {source} (the data build's), or from a copy of the run"
    )
    try:
        image = np.load(path)
    except (OSError, ValueError) as e:  # (NumPy's word for no array file offered to load it
        # unsafely: hostile pass 25, #39)
        why = "not a whole NumPy array file" if isinstance(e, ValueError) else str(e)
        raise DataError(f"{path} cannot be read ({why}): {remedy}.") from None
    if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < size:
        raise DataError(
            f"{path} is damaged: shape {image.shape}, not [>={size}, >={size}, 3]; {remedy}."
        )
    if not (np.all(np.isfinite(image)) and image.min() >= 0 and image.max() <= 255):
        raise DataError(f"{path} is damaged: its values are not all numbers in 0..255; {remedy}.")
    starts = [e for e in read_history(workdir, warn=False) if MEAN_IMAGE_DIGEST in e]
    if starts and _file_digest(path) != starts[-1][MEAN_IMAGE_DIGEST]:  # (edited within 0..255,
        raise DataError(  # with the data gone: hostile pass 23, #60)
            f"{path} is not the copy the run kept at its start (step {starts[-1].get('step')}): "
            f"edited or replaced since; {remedy}."
        )
    return image
