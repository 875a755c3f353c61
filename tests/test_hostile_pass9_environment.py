"""Hostile pass 9 (docs/RELIABILITY.md): the environment and the edges of a run's life. An
image-folder run under an address-space limit JAX alone survives (#60, #61), benchmarks under one
(#4), a tool reading a run that is still training (#47), Ctrl-C during a tool's checkpoint read
(#62), and what a diverged run says it kept (#66). In process where the case can be made
deterministic, in a subprocess where the answer is the process's own."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import types

import numpy as np
import pytest

from alexnet_jax.core import errors, runtime
from alexnet_jax.core.errors import DataError, NonFiniteError, UserError
from alexnet_jax.runs import rundir
from alexnet_jax.train import checkpoint
from configs import default
from tests.conftest import w3_target

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _with_address_space(limit_mb: int, *command: str, env: dict | None = None):
    """`command` (python's arguments) run from the repository under `ulimit -v` of `limit_mb`."""
    script = "import resource, os, sys; limit = int(sys.argv[1]) * 2**20; "
    script += "resource.setrlimit(resource.RLIMIT_AS, (limit, limit)); "
    script += "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"
    return subprocess.run(
        [sys.executable, "-c", script, str(limit_mb), *command], cwd=REPO, capture_output=True,
        text=True, timeout=240, env={**os.environ, "XLA_FLAGS": "", **(env or {})},
    )  # fmt: skip


def _checkpoints(workdir: str, steps: tuple[int, ...], keep: int = 1) -> None:
    manager = checkpoint.checkpoint_manager(workdir, keep=keep)
    for step in steps:
        tree = {"w": np.full(3, step, np.float32)}
        checkpoint.save(manager, step, tree, {"examples_consumed": 8})
        checkpoint.wait(manager)
    manager.close()


# ---- #62: Ctrl-C during a tool's checkpoint read -------------------------------------------------


def test_a_checkpoint_read_cut_short_by_ctrl_c_is_the_stop_not_a_damaged_checkpoint(
    tmp_path, monkeypatch, capsys
):
    """#62: Ctrl-C to predict during its checkpoint read printed `interrupted: ...` and then
    `error: No checkpoint of this run can be read: step 2 ... TensorStore ...`: the signal's
    exception, raised inside TensorStore's read, came back as a failed restore. A restore that
    fails after the stop was told is the stop (exit 130), with no warning and no second line; the
    same read serves predict, figures, export and --mode=eval (read_latest_checkpoint)."""
    workdir = str(tmp_path)
    _checkpoints(workdir, (2,))

    def cut_short(*args, **kwargs):
        raise Exception("Encountered error while reading array index: (). See full TensorStore")

    monkeypatch.setattr(checkpoint, "_restore", cut_short)
    monkeypatch.setattr(errors, "_told", [signal.SIGINT])  # stop_now told `interrupted:` already
    with pytest.raises(SystemExit) as stopped:
        checkpoint.read_latest_checkpoint(workdir, w3_target())
    assert stopped.value.code == 130
    assert capsys.readouterr().err == ""
    assert os.listdir(os.path.join(workdir, "checkpoints")) == ["2"]  # untouched


def test_an_error_reported_after_the_stop_was_told_prints_no_second_line(monkeypatch, capsys):
    """#62, whatever else a cut-short read raises: once `interrupted:` is out, an error on the
    way out is its echo: reported_as_exit prints nothing more and exits 130."""
    monkeypatch.setattr(errors, "_told", [signal.SIGINT])
    with pytest.raises(SystemExit) as exited, errors.reported_as_exit():
        raise DataError("No checkpoint of this run can be read: step 2 (...): Exception: ...")
    assert exited.value.code == 130
    assert capsys.readouterr().err == ""


# ---- #47: a tool reading a run that is still training --------------------------------------------


def test_a_step_replaced_while_it_is_read_is_read_again_at_the_newest_step(
    tmp_path, monkeypatch, capsys
):
    """#47: predict while the run trains with checkpoint_every_steps=1 keep_checkpoints=1: the
    step listed was removed (a newer one replaced it) while it was read, and the tool said no
    checkpoint can be read and to move the step directories away. The steps are listed again and
    the newest one is read, without a word."""
    workdir = str(tmp_path)
    _checkpoints(workdir, (8,))
    restore, calls = checkpoint._restore, []

    def rotated_while_read(manager, step, target):
        calls.append(step)
        if step == 8:  # the training run saves step 9, which removes step 8 (keep 1)
            _checkpoints(workdir, (9,))
            raise ValueError(f"NOT_FOUND: Error opening file {workdir}/checkpoints/8/state")
        return restore(manager, step, target)

    monkeypatch.setattr(checkpoint, "_restore", rotated_while_read)
    state, _ = checkpoint.read_latest_checkpoint(workdir, w3_target())
    np.testing.assert_array_equal(state["w"], np.full(3, 9, np.float32))
    assert calls == [8, 9]
    assert capsys.readouterr().err == ""


def _live_lock(workdir: str) -> int:
    """A lock held by a live process other than this one (pytest's parent), as a training
    run's."""
    pid = os.getppid()
    holder = {"host": socket.gethostname(), "pid": pid, "started": rundir._process_start_time(pid)}
    with open(os.path.join(workdir, rundir.LOCK_FILE), "w") as f:
        json.dump(holder, f)
    return pid


def test_a_run_whose_steps_keep_vanishing_under_a_live_trainer_is_not_called_damaged(
    tmp_path, monkeypatch, capsys
):
    """#47: when every listed step is replaced while read and the run's lock is held by a live
    process, the message says a training run is writing the checkpoints (retry, or wait) and
    never advises moving the step directories of that live run away."""
    workdir = str(tmp_path)
    _checkpoints(workdir, (8,))
    pid = _live_lock(workdir)
    steps = iter(range(9, 30))

    def always_rotated(manager, step, target):
        _checkpoints(workdir, (next(steps),))
        raise ValueError(f"NOT_FOUND: Error opening file {workdir}/checkpoints/{step}/state")

    monkeypatch.setattr(checkpoint, "_restore", always_rotated)
    with pytest.raises(DataError) as refused:
        checkpoint.read_latest_checkpoint(workdir, w3_target())
    message = str(refused.value)
    assert message.startswith(f"A training run (process {pid} on host {socket.gethostname()}) ")
    assert "retry, or wait for the run to finish" in message
    assert "move those step directories" not in message
    assert capsys.readouterr().err == ""  # no warning line per step either


def test_a_step_being_removed_by_a_live_trainer_is_read_again_at_the_newest_step(
    tmp_path, monkeypatch, capsys
):
    """#47, the same while the step's folder is still being removed (its files go one by one):
    a failed read of a step of a run whose lock a live process holds, when a newer step is saved
    by then, is a replaced step, not a damaged one (no warning), and the newest step is read."""
    workdir = str(tmp_path)
    _checkpoints(workdir, (8,))
    _live_lock(workdir)
    restore, calls = checkpoint._restore, []

    def being_removed(manager, step, target):
        calls.append(step)
        if step == 8:  # step 9 saved; step 8's folder is still there, its array file is not
            _checkpoints(workdir, (9,), keep=2)
            raise Exception("Encountered error while reading array index: (slice(0, 64, 1),).")
        return restore(manager, step, target)

    monkeypatch.setattr(checkpoint, "_restore", being_removed)
    state, _ = checkpoint.read_latest_checkpoint(workdir, w3_target())
    np.testing.assert_array_equal(state["w"], np.full(3, 9, np.float32))
    assert calls == [8, 9]
    assert capsys.readouterr().err == ""


def test_a_step_gone_while_orbax_lists_the_steps_is_listed_again(tmp_path, monkeypatch, capsys):
    """#47: a predict while the run trained ended in a 30-line FileNotFoundError traceback from
    Orbax's CheckpointManager: it lists the step folders, then reads each one's time, and one
    was replaced in between. The steps are listed again."""
    workdir = str(tmp_path)
    _checkpoints(workdir, (8,))
    manager, tries = checkpoint.checkpoint_manager, []

    def listed_as_one_vanished(*args, **kwargs):
        if not kwargs.get("read_only"):  # (the training run's, below)
            return manager(*args, **kwargs)
        tries.append(1)
        if len(tries) == 1:
            _checkpoints(workdir, (9,))
            raise FileNotFoundError(2, "No such file or directory", f"{workdir}/checkpoints/8")
        return manager(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "checkpoint_manager", listed_as_one_vanished)
    state, _ = checkpoint.read_latest_checkpoint(workdir, w3_target())
    np.testing.assert_array_equal(state["w"], np.full(3, 9, np.float32))
    assert len(tries) == 2
    assert capsys.readouterr().err == ""


def test_orbaxs_warning_of_a_step_folder_gone_before_its_metadata_was_read_is_not_printed():
    """#47: a predict that read a run while it trained printed Orbax's absl line `W1205 ...
    checkpoint.py:202] Metadata file does not exist: .../checkpoints/174/_CHECKPOINT_METADATA`
    (the step was replaced meanwhile) before its own output."""
    record = logging.LogRecord(
        "absl", logging.WARNING, os.path.join("site-packages", "orbax", "checkpoint", "x.py"),
        202, "Metadata file does not exist: %s", ("/run/checkpoints/174/_CHECKPOINT_METADATA",),
        None,
    )  # fmt: skip
    assert not runtime._DropHarmlessWarnings().filter(record)
    assert not runtime._DropLibraryNoise().filter(record)


def test_orbaxs_abandoned_reads_of_a_replaced_step_print_no_tracebacks(monkeypatch):
    """#47: a figures run that read a step while the run replaced it printed 1118 lines of
    "Exception ignored in: <coroutine object _read_array_index_and_device_put ...>" tracebacks
    (Orbax's abandoned reads of the step's other arrays) before reading the newest step and
    succeeding. They are echoes of the failure restore_latest handles; the hook drops them."""
    from absl import logging as absl_logging

    heard = []
    monkeypatch.setattr(sys, "unraisablehook", heard.append)
    handler = absl_logging.get_absl_handler()
    monkeypatch.setattr(handler, "filters", list(handler.filters))
    runtime.quiet_library_logs()
    read_failed = Exception(
        "Encountered error while reading array index: (slice(0, 64, 1),). See full TensorStore "
        "details: <bound method ...>"
    )
    sys.unraisablehook(types.SimpleNamespace(exc_value=read_failed))
    assert heard == []
    other = types.SimpleNamespace(exc_value=ValueError("something else"))
    sys.unraisablehook(other)
    assert heard == [other]


# ---- #66: what a diverged run kept -------------------------------------------------------------


def _diverging_config(**overrides):
    config = default.get_config()
    config.update(
        variant="torchvision", input_size=64, num_classes=10, dataset="synthetic",
        synthetic_train_examples=64, synthetic_eval_examples=8, batch_size=8, eval_batch_size=8,
        num_train_steps=4, learning_rate=1e30, warmup_epochs=0.0,
    )  # fmt: skip
    config.update(overrides)
    return config


@pytest.mark.parametrize("skip", [False, True])
def test_a_run_that_diverged_before_any_checkpoint_says_nothing_was_saved(
    tmp_path, monkeypatch, skip
):
    """#66: learning_rate=1e30 (also with skip_nonfinite_steps) stopped with "the last good
    checkpoint is kept" when no checkpoint existed. It says nothing was saved."""
    from alexnet_jax.train import loop
    from tests import multihost_worker

    multihost_worker.narrow_fc_layers(monkeypatch.setattr)
    config = _diverging_config(skip_nonfinite_steps=skip, max_consecutive_skipped_steps=1)
    with pytest.raises(NonFiniteError) as diverged:
        loop.train_and_evaluate(config, str(tmp_path / "run"))
    message = str(diverged.value)
    assert "No checkpoint was saved: there is nothing to resume from." in message
    assert "checkpoint is kept" not in message


def test_a_diverged_run_names_the_step_of_the_checkpoint_it_kept(tmp_path):
    """#66: with a checkpoint on disk, the message names its step."""
    from alexnet_jax.train import loop

    workdir = str(tmp_path)
    _checkpoints(workdir, (2, 4), keep=2)
    assert loop._kept(workdir) == "The last good checkpoint, step 4, is kept."


# ---- #60, #61: TensorFlow under an address-space limit JAX alone survives ------------------------


def _without_tensorflow(monkeypatch) -> runtime.LazyModule:
    """A fresh `runtime.tensorflow` in a process where TensorFlow is not imported yet."""
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    return runtime.LazyModule("tensorflow", runtime.load_tensorflow)


def test_too_little_address_space_for_tensorflow_is_one_line_where_it_is_loaded(
    monkeypatch, capsys
):
    """#60, #61: under `ulimit -v` of 2050-2300 MB (above the 2048 MB JAX needs) an image-folder
    run failed importing TensorFlow: "install the requirements", a 125-line MemoryError
    traceback, a C++ abort or a segmentation fault. Loading TensorFlow (lazily, where the data
    is first read) refuses first, in one line naming the limit, the need and the fix."""
    monkeypatch.setattr(errors, "address_space_limit", lambda: 2929 * 2**20)
    tf = _without_tensorflow(monkeypatch)
    with pytest.raises(SystemExit) as exited, errors.reported_as_exit():
        tf.constant(1)
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: the process may use 2929 MB of address space (ulimit -v), too little for "
        "TensorFlow, which reads the data, to start beside JAX (it needs about "
        f"{runtime.TENSORFLOW_ADDRESS_SPACE // 2**20} MB): raise it, e.g. ulimit -v unlimited."
    ]
    assert "tensorflow" not in sys.modules


class _FailingImport:
    """A finder that fails the import of TensorFlow with `error`."""

    def __init__(self, error: BaseException):
        self.error = error

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow":
            raise self.error


def _memory_error_inside() -> BaseException:
    try:
        try:
            raise MemoryError()
        except MemoryError:
            raise SystemError("error return without exception set")  # noqa: B904
    except SystemError as e:
        return e


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        ImportError("Traceback (most recent call last):\n  ...\nMemoryError"),
        _memory_error_inside(),
    ],
    ids=["MemoryError", "ImportError of a MemoryError", "SystemError after a MemoryError"],
)
def test_running_out_of_memory_while_importing_tensorflow_is_the_out_of_memory_line(
    monkeypatch, error
):
    """#60: a MemoryError in TensorFlow's import came out as "a library cannot be loaded ...
    install the requirements" or a traceback. It is the one out-of-memory line."""
    monkeypatch.setattr(errors, "address_space_limit", lambda: None)
    tf = _without_tensorflow(monkeypatch)
    monkeypatch.setattr(sys, "meta_path", [_FailingImport(error), *sys.meta_path])
    with pytest.raises(UserError, match=r"^out of memory while loading TensorFlow \(it reads"):
        tf.constant(1)


def test_an_import_error_holding_a_memory_error_is_the_out_of_memory_line(capsys):
    """#60, try 1, for any library: an ImportError whose text is the traceback of a MemoryError
    (a C extension that ran out of memory while it started) said "a library cannot be loaded
    (Traceback (most recent call last):): install the requirements"."""
    error = ImportError("Traceback (most recent call last):\n  File ...\nMemoryError\n")
    with pytest.raises(SystemExit) as exited, errors.reported_as_exit():
        raise error
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: out of memory while loading a library (MemoryError). Free memory, raise the "
        "process's limit (ulimit -v), or lower config.batch_size / config.shuffle_buffer_size."
    ]


def test_a_missing_tensorflow_is_still_told_to_install_the_requirements(monkeypatch):
    monkeypatch.setattr(errors, "address_space_limit", lambda: None)
    tf = _without_tensorflow(monkeypatch)
    error = ModuleNotFoundError("No module named 'tensorflow'")
    monkeypatch.setattr(sys, "meta_path", [_FailingImport(error), *sys.meta_path])
    with pytest.raises(ModuleNotFoundError):
        tf.constant(1)


def test_an_image_folder_run_without_room_for_tensorflow_is_refused_and_leaves_no_folder(
    tmp_path,
):
    """#60, #61 end to end: main.py on an image folder under `ulimit -v` of 2900 MB (measured:
    a C++ abort 4 times of 5): exit 2, the refusal as the last line, and the new run's folder
    removed (a rerun with more room starts afresh)."""
    from PIL import Image

    for split, count in (("train", 8), ("val", 2)):
        for name in ("a", "b"):
            os.makedirs(tmp_path / "images" / split / name)
            for i in range(count):
                pixels = np.full((40, 50, 3), 30 * i, np.uint8)
                Image.fromarray(pixels).save(tmp_path / "images" / split / name / f"{i}.png")
    workdir = tmp_path / "run"
    proc = _with_address_space(
        2900, "main.py", "--config=configs/figure1.py", "--config.normalization=mean_std",
        "--config.num_train_steps=2", "--config.batch_size=8", "--config.eval_batch_size=4",
        "--config.dataset=image_folder", "--config.eval_split=val", "--config.num_classes=2",
        f"--config.image_folder={tmp_path / 'images'}", f"--workdir={workdir}",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines()[-1].startswith(
        "error: the process may use 2900 MB of address space (ulimit -v), too little for TensorFlow"
    )
    assert "Traceback" not in proc.stderr
    assert not workdir.exists()


# ---- #4: the benchmarks check the environment as the tools do ------------------------------------

BENCHMARKS = ("accelerator", "compare_torch", "image_store", "input_pipeline", "lrn", "train_step")


@pytest.mark.parametrize("script", BENCHMARKS)
def test_a_benchmark_under_too_small_an_address_space_is_the_tools_one_line(script):
    """#4: under `ulimit -v 1500000` benchmarks/lrn.py said "out of memory ... lower
    config.batch_size / config.shuffle_buffer_size", config fields it has not: the benchmarks
    skipped the environment checks of main.py and the tools. Every benchmark makes them first."""
    proc = _with_address_space(1464, f"benchmarks/{script}.py")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [
        "error: the process may use 1464 MB of address space (ulimit -v), too little for JAX and "
        "TensorFlow to start (at least 2048 MB; they reserve more than they use): raise it, e.g. "
        "ulimit -v unlimited."
    ]


def test_a_benchmark_checks_xla_flags_and_names_its_own_flag_when_memory_runs_out():
    """#4: XLA_FLAGS holding a word that is no flag is the tools' one line (XLA aborts on it);
    running out of memory names --batch_size, not a run's config fields."""
    env = {**os.environ, "XLA_FLAGS": "oops"}
    proc = subprocess.run(
        [sys.executable, "benchmarks/train_step.py"], cwd=REPO, capture_output=True, text=True,
        timeout=240, env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [
        "error: XLA_FLAGS holds 'oops', which is not a flag (XLA's flags read --name=value): fix "
        "or unset XLA_FLAGS."
    ]
    script = "import sys; sys.path.insert(0, 'benchmarks'); import common\n"
    script += "def main(argv):\n    raise MemoryError()\n"
    script += "common.run(main)"
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=240,
        env={**os.environ, "XLA_FLAGS": ""},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [
        "error: out of memory. Free memory, raise the process's limit (ulimit -v), or lower "
        "--batch_size."
    ]
