"""The fresh hostile pass of 2026-12-05 (docs/RELIABILITY.md, "Hostile pass 2026-12-05"): each
case that ended in a traceback, a silently wrong result or a lost record, pinned in process
where it can be (seconds), by one subprocess line where the answer is the process's own."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from alexnet_jax.core import runtime
from alexnet_jax.core.errors import ConfigError, DataError, UserError
from alexnet_jax.runs import rundir
from alexnet_jax.tools import figures, sweep
from alexnet_jax.train import checkpoint, config_lib, metrics_io
from configs import default

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _warnings(capsys) -> list[str]:
    return [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning: ")]


def test_records_of_an_edited_jsonl_file_that_are_not_records_are_dropped_with_a_warning(
    tmp_path, capsys
):
    """#28, #29: a metrics line that is a JSON list, or whose step is a string, made the resume
    fail (AttributeError, TypeError). Such lines are dropped, each named in a warning."""
    path = tmp_path / "metrics.jsonl"
    lines = ['{"step": 1, "split": "train"}', "[1, 2, 3]", '{"step": "four"}', '{"step": 9}']
    path.write_text("\n".join(lines) + "\n")
    metrics_io._truncate_jsonl(str(path), after_step=4)  # what a resume at step 4 does
    assert rundir.read_jsonl(str(path)) == [{"step": 1, "split": "train"}]
    warnings = _warnings(capsys)
    assert "line 2 holds a list, not a record; ignored." in warnings[0]
    assert "line 3 has a step that is not an integer ('four'); ignored." in warnings[1]


@pytest.mark.parametrize("contents", ["5", '{"host": "vm", "pid": "abc"}', '{"host": "vm"}'])
def test_a_lock_file_this_code_did_not_write_is_taken_over(tmp_path, capsys, contents):
    """#45, #46, #47: a .lock holding 5, a pid that is not a number, or no pid: tracebacks, or
    'in use by process None' forever. It is taken over with a warning, as a dead holder's."""
    (tmp_path / rundir.LOCK_FILE).write_text(contents)
    with rundir.exclusive(str(tmp_path)):
        holder = json.loads((tmp_path / rundir.LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid()
    assert "Taking over the lock" in _warnings(capsys)[0]
    assert sorted(os.listdir(tmp_path)) == []  # released; no temporary file left


def test_a_checkpoint_whose_data_record_is_damaged_is_not_restored(tmp_path, capsys):
    """#34: examples_consumed edited to "lots" ended the resume in a ValueError. The step is
    taken as damaged: the previous checkpoint is restored, with a warning naming the reason."""
    manager = checkpoint.checkpoint_manager(str(tmp_path), keep=3)
    for step in (4, 8):
        tree = {"w": np.full(3, step, np.float32)}
        checkpoint.save(manager, step, tree, {"examples_consumed": step * 8})
    checkpoint.wait(manager)
    manager.close()
    data = tmp_path / "checkpoints" / "8" / "data" / "metadata"
    data.write_text(json.dumps({"examples_consumed": "lots"}))
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = {"w": jax.ShapeDtypeStruct((3,), np.float32, sharding=sharding)}
    state, record = checkpoint.read_latest_checkpoint(str(tmp_path), target)
    np.testing.assert_array_equal(state["w"], np.full(3, 4, np.float32))
    assert record == {"examples_consumed": 32}
    assert "examples_consumed='lots'" in " ".join(_warnings(capsys))


def test_a_plausible_edit_of_a_checkpoints_data_record_is_refused(tmp_path, capsys):
    """#33: examples_consumed edited from 64 to 72 (a number the run could have reached) was
    restored: the run went on with another data order, silently. The record carries a digest of
    itself and its step; an edited record is refused and the previous checkpoint restored."""
    manager = checkpoint.checkpoint_manager(str(tmp_path), keep=3)
    for step in (4, 8):
        tree = {"w": np.full(3, step, np.float32)}
        checkpoint.save(manager, step, tree, {"examples_consumed": step * 8, "batch_size": 8})
    checkpoint.wait(manager)
    manager.close()
    data = tmp_path / "checkpoints" / "8" / "data" / "metadata"
    record = json.loads(data.read_text())
    assert record["examples_consumed"] == 64
    assert "digest" in record
    data.write_text(json.dumps({**record, "examples_consumed": 72}))
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = {"w": jax.ShapeDtypeStruct((3,), np.float32, sharding=sharding)}
    state, record = checkpoint.read_latest_checkpoint(str(tmp_path), target)
    np.testing.assert_array_equal(state["w"], np.full(3, 4, np.float32))
    assert record == {"examples_consumed": 32, "batch_size": 8}  # the digest is not handed on
    assert "its data record was edited" in " ".join(_warnings(capsys))


def test_a_run_that_lost_its_checkpoints_is_not_started_over(tmp_path):
    """#37: checkpoints/ deleted from a finished run; the same command retrained from step 0 as
    a new run and overwrote its metrics. Now it is refused, naming the step the run reached."""
    config = default.get_config()
    rundir.save_config(config, str(tmp_path))
    history = tmp_path / rundir.HISTORY_FILE
    history.write_text('{"step": 0, "event": "start"}\n{"step": 72, "event": "finished"}\n')
    with pytest.raises(DataError, match=r"reached step 72 .* but no checkpoint"):
        rundir.check_resume(config, str(tmp_path))
    assert rundir.check_resume(config, str(tmp_path), allow_change=True) == []
    history.write_text('{"step": 0, "event": "start"}\n')  # killed before its first checkpoint
    assert rundir.check_resume(config, str(tmp_path)) == []


def test_a_resume_without_metrics_jsonl_says_the_earlier_metrics_are_lost(tmp_path, capsys):
    """#93: metrics.jsonl deleted, then a resume: no word, and "best eval" counted only the new
    steps. A warning now says so."""
    writer = metrics_io.MetricsWriter(str(tmp_path), start_step=48)
    writer.close()
    assert "metrics of steps 0-48 are lost" in _warnings(capsys)[0]


def test_an_unusable_compilation_cache_folder_costs_only_the_cache(tmp_path, capsys):
    """#86, #87: ALEXNET_JAX_CACHE_DIR naming a file, or a HOME without rights: main.py could
    not start (FileExistsError, PermissionError). It warns and compiles without the cache."""
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert runtime.enable_compilation_cache(str(a_file)) is None
    assert "No compilation cache" in _warnings(capsys)[0]


def test_the_mesh_shape_may_change_on_resume(tmp_path):
    """#96: a run on mesh (1,) could not resume on (2,) (refused as another experiment); the
    layout over the devices is not the experiment: a checkpoint restores onto any."""
    config = default.get_config()
    config.mesh_shape = (1,)
    rundir.save_config(config, str(tmp_path))
    config.mesh_shape = (2,)
    assert rundir.check_resume(config, str(tmp_path)) == []


def test_config_and_option_messages_are_one_line(tmp_path):
    """#94: an invalid param_groups regex printed the section over 4 lines; #70: a sweep's
    seeds as a string named a flag that was never given; #64: figures drew fewer neighbours
    than its caption said."""
    config = default.get_config()
    config.param_groups = {"b": {"params": "conv(", "learning_rate": 0.1}}
    with pytest.raises(ConfigError) as refused:
        config_lib.validate_config(config)
    assert "\n" not in str(refused.value)
    assert str(refused.value).endswith('got {"b": {"learning_rate": 0.1, "params": "conv("}}.')
    spec = tmp_path / "sweep.py"
    spec.write_text('def get_sweep():\n    return {"arms": {"a": {}}, "seeds": "0,1"}\n')
    with pytest.raises(ConfigError, match=r"'seeds' must be a list of integers, .* got '0,1'"):
        sweep.load_sweep_file(str(spec))
    with pytest.raises(UserError, match=r"--neighbours=10 needs at least as many"):
        figures.check_options("out", k=10, max_train_images=3)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["-m", "alexnet_jax.tools.predict", "--workdir=x", "--top_k=0", "a.jpg"], "top_k"),
        (["-m", "alexnet_jax.tools.predict", "--workdir=x", "--batch_size=0", "a.jpg"], "batch"),
        (["-m", "alexnet_jax.tools.figure1", "--sweep_dir=x", "--threshold=25"], "in (0, 1)"),
        (["-m", "alexnet_jax.tools.compare", "x", "x/"], "are the same directory"),
        (["benchmarks/lrn.py", "--layers=conv9"], "--layers: no activation shape ['conv9']"),
        (["benchmarks/lrn.py", "--batch_size=-4"], "--batch_size must be integers >= 1"),
        (["benchmarks/input_pipeline.py", "--image_sides=abc"], "--image_sides must be two"),
        (["benchmarks/image_store.py", "--num_images=4"], "must be at least --batch_size=256"),
        (["benchmarks/accelerator.py", "--smoke", "--budget_s=-1"], "--budget_s=-1"),
    ],
)
def test_bad_values_of_the_tools_and_benchmarks_are_one_error_line(tmp_path, command, message):
    """#55-57, #74, #67-68, #76-79, #82-83: printed nothing, too many classes, 2500%, one run
    counted twice, tracebacks, a hang, a table of zeros or nothing measured, each with exit 0 or
    a traceback. Each is one `error:` line naming the flag, exit 2, before any work."""
    os.makedirs(tmp_path / "x")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = REPO
    args = [a.replace("benchmarks/", f"{REPO}/benchmarks/") for a in command]
    proc = subprocess.run(
        [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.strip()]
    assert line.startswith("error: ")
    assert message in line


def test_an_image_folder_runs_class_names_come_from_its_record(tmp_path):
    """#90, #91: once the image folder moved, predict printed "class 0" and export dropped the
    class names, though run.json records them. The tools take them from the record (the labels
    the run trained with, even when the folder changed since)."""
    from alexnet_jax.tools import load, predict
    from tests.conftest import write_tiny_run

    run = write_tiny_run(str(tmp_path), dataset="image_folder", image_folder=str(tmp_path / "x"))
    classes = ["a b", "ünï", "c", "d"]
    record = {"dataset": {"dataset": "image_folder", "classes": classes, "num_files": {}}}
    (tmp_path / "run" / rundir.RUN_FILE).write_text(json.dumps(record))
    config, _ = load.load_run(run)  # the folder does not exist
    assert predict.known_class_names(config) == [(None, c) for c in classes]


def _as_if_read_only(monkeypatch, read_only: str) -> None:
    """What a user without write rights meets at `read_only` and below (these tests run as root,
    whom chmod does not stop): os.access says no, and creating a file there fails with EACCES."""
    access, open_ = os.access, os.open

    def no_access(path, mode, *args, **kwargs):
        if os.fspath(path).startswith(read_only) and mode & os.W_OK:
            return False
        return access(path, mode, *args, **kwargs)

    def no_create(path, flags, *args, **kwargs):
        if os.fspath(path).startswith(read_only) and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return open_(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "access", no_access)
    monkeypatch.setattr(os, "open", no_create)


def test_a_read_only_checkpoints_folder_is_one_message_at_start(tmp_path, monkeypatch):
    """#39: with checkpoints/ read-only (the rest of the run writable) the first save waited 300 s
    in Orbax, then printed 12 RuntimeWarning lines. The folder is tried when the run opens it."""
    checkpoints = rundir.checkpoint_dir(str(tmp_path))
    os.makedirs(checkpoints)
    _as_if_read_only(monkeypatch, checkpoints)
    with pytest.raises(DataError, match=r"Writing checkpoints in .* Permission denied \(errno 13\)"):
        checkpoint.checkpoint_manager(str(tmp_path), keep=1)
    assert os.listdir(checkpoints) == []


def test_export_over_a_read_only_file_is_refused(run_dir, tmp_path, monkeypatch):
    """#59: export over a file the user may not write (in a folder they may) replaced it, as the
    rename allows. It is refused with one message; the file is kept."""
    from alexnet_jax.interop import weights_io
    from alexnet_jax.tools import export

    out = tmp_path / "theirs.npz"
    out.write_bytes(b"someone else's weights")
    _as_if_read_only(monkeypatch, str(out))
    with pytest.raises(weights_io.WeightsFileError, match="exists and is read-only"):
        export.export_run(run_dir, str(out))
    assert out.read_bytes() == b"someone else's weights"


def test_mode_eval_of_a_read_only_run_prints_the_evaluation_and_records_nothing(
    tmp_path, monkeypatch, capsys
):
    """#38b: `--mode=eval` of a run in a read-only folder was refused (its lock could not be
    written) with a remedy about resuming training. It evaluates and prints, and says in a
    warning that nothing is recorded."""
    from alexnet_jax.train import loop
    from tests.conftest import write_tiny_run

    workdir = write_tiny_run(
        str(tmp_path), dataset="synthetic", synthetic_eval_examples=8, num_classes=4
    )
    before = sorted(os.listdir(workdir))
    _as_if_read_only(monkeypatch, workdir)
    metrics = loop.evaluate_checkpoint(config_lib.load_config(workdir), workdir)
    assert np.isfinite(metrics["loss"])
    out, err = capsys.readouterr()
    assert "eval at step 1: loss" in out
    assert err.splitlines() == [
        f"warning: {workdir} is read-only: the evaluation is printed, not recorded in its "
        "metrics.jsonl."
    ]
    assert sorted(os.listdir(workdir)) == before
