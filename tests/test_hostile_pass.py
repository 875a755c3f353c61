"""The fresh hostile pass of 2026-12-05 (docs/RELIABILITY.md, "Hostile pass 2026-12-05"): each
case that ended in a traceback, a silently wrong result or a lost record, pinned in process
where it can be (seconds), by one subprocess line where the answer is the process's own."""

import functools
import json
import os
import re
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from alexnet_jax.core import errors, runtime
from alexnet_jax.core.errors import ConfigError, DataError, UserError
from alexnet_jax.runs import rundir
from alexnet_jax.tools import figures, sweep
from alexnet_jax.train import checkpoint, config_lib, metrics_io
from configs import default
from tests.conftest import tiny_config, w3_target

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


def test_a_row_whose_split_is_not_a_name_is_dropped_and_each_warning_is_given_once(
    tmp_path, capsys
):
    """Pass 18, #46: an eval row with `"split": null` was dropped with no word (its evaluation
    left out of "best eval"). #48: a line's warning came twice, once per reading of the file."""
    path = tmp_path / rundir.METRICS_FILE
    path.write_text('{"step": 4, "split": null}\n{"step": 4, "split": "eval", "loss": 1.0}\n')
    for _ in range(2):
        assert rundir.read_jsonl(str(path)) == [{"step": 4, "split": "eval", "loss": 1.0}]
    assert _warnings(capsys) == [
        f"warning: {path}: line 1 has a split that is not a name (None); ignored."
    ]


@pytest.mark.parametrize(
    "contents",
    ["5", '{"host": "vm", "pid": "abc"}', '{"host": "vm"}']
    + [f'{{"host": "{socket.gethostname()}", "pid": {p}}}' for p in ("0", "-1", "true", "10**20")],
)
def test_a_lock_file_this_code_did_not_write_is_taken_over(tmp_path, capsys, contents):
    """#45, #46, #47: a .lock holding 5, a pid that is not a number, or no pid: tracebacks, or
    'in use by process None' forever. It is taken over with a warning, as a dead holder's.
    Pass 18, #49-#50: this host's pid 10**20 was an OverflowError traceback; 0, -1 and true
    (os.kill's process group, every process, pid 1) were 'in use ... wait for it' forever."""
    contents = contents.replace("10**20", str(10**20))
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
    damaged = {"examples_consumed": "lots"}  # (with a digest that matches: the type is checked)
    data.write_text(json.dumps({**damaged, "digest": checkpoint._digest(8, damaged)}))
    target = w3_target()
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
    target = w3_target()
    state, record = checkpoint.read_latest_checkpoint(str(tmp_path), target)
    np.testing.assert_array_equal(state["w"], np.full(3, 4, np.float32))
    assert record == {"examples_consumed": 32, "batch_size": 8}  # the digest is not handed on
    assert "its data record was edited" in " ".join(_warnings(capsys))
    # Hostile pass 3, #18: the digest deleted as well. A record without one is refused too.
    data.write_text(json.dumps({"examples_consumed": 72, "batch_size": 8}))
    state, record = checkpoint.read_latest_checkpoint(str(tmp_path), target)
    assert record == {"examples_consumed": 32, "batch_size": 8}
    assert "its data record has no digest" in " ".join(_warnings(capsys))


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
    steps. A warning now says so. Pass 18, #43: the same for a file emptied (or whose rows are
    all after the checkpoint); a checkpoint's save writes its step's row first, so a resumed run
    always has one."""
    path = tmp_path / rundir.METRICS_FILE
    for contents, said in [
        (None, "metrics.jsonl is missing: the metrics of steps 0-48 are lost"),
        ("", "metrics.jsonl holds no metrics: the metrics of steps 0-48 are lost"),
        ('{"step": 50, "split": "train"}\n', "metrics.jsonl holds no metrics: the metrics of"),
        ('{"step": 48, "split": "train"}\n', None),
    ]:
        if contents is not None:
            path.write_text(contents)
        metrics_io.MetricsWriter(str(tmp_path), start_step=48).close()
        warnings = _warnings(capsys)
        assert warnings == ([] if said is None else [warnings[0]])
        assert said is None or said in warnings[0]


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
    with pytest.raises(
        ConfigError, match=r"'seeds' must be a list of distinct integers >= 0, .* got '0,1'"
    ):
        sweep.load_sweep_file(str(spec))
    for seeds in ("[0, 0]", "[]", "[-1]"):  # pass 16, #66: the line named a --seeds flag
        spec.write_text(
            f'def get_sweep():\n    return {{"arms": {{"a": {{}}}}, "seeds": {seeds}}}\n'
        )
        with pytest.raises(
            ConfigError, match=rf"--sweep=.*'seeds' must be .* got {re.escape(seeds)}\."
        ):
            sweep.load_sweep_file(str(spec))
    with pytest.raises(UserError, match=r"--neighbours=10 needs at least as many"):
        figures.check_options("out", k=10, max_train_images=3)
    with pytest.raises(UserError, match=r"--neighbours=1000: at most 50 "):  # pass 19, #30
        figures.check_options("out", k=1000)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["-m", "alexnet_jax.tools.predict", "--workdir=x", "--top_k=0", "a.jpg"], "top_k"),
        (["-m", "alexnet_jax.tools.predict", "--workdir=x", "--batch_size=0", "a.jpg"], "batch"),
        (["-m", "alexnet_jax.tools.figure1", "--sweep_dir=x", "--threshold=25"], "in (0, 1)"),
        (["-m", "alexnet_jax.tools.compare", "x", "x/"], "are the same directory"),
        (["benchmarks/lrn.py", "--layers=conv9"], "--layers must be one or more of: conv1, conv2"),
        (["benchmarks/lrn.py", "--batch_size=-4"], "--batch_size must be integers >= 1"),
        (["benchmarks/input_pipeline.py", "--image_sides=abc"], "--image_sides must be two"),
        (["benchmarks/image_store.py", "--num_images=4"], "must be at least --batch_size=256"),
        (["benchmarks/accelerator.py", "--smoke", "--budget_s=-1"], "--budget_s=-1"),
        (["benchmarks/train_step.py", "--repeats=0"], "--repeats=0"),  # pass 3, #86
        # Pass 15, #65-#72: tracebacks, nothing measured with exit 0, a negative MFU.
        (["benchmarks/train_step.py", "--batch_size=2,abc"], "--batch_size must be integers"),
        (["benchmarks/compare_torch.py", "--variant=cifar4"], "--variant must be one or more of"),
        (["benchmarks/input_pipeline.py", "--config=nonexist.py"], "--config could not be loaded"),
        (["benchmarks/accelerator.py", "--batch_size=0"], "--batch_size must be integers >= 1"),
        # Pass 18, #81: its archive, caches and tfds build were written into a run's folder.
        (["benchmarks/input_pipeline.py", "--bench_dir=run"], "--bench_dir=run is a run's folder"),
    ],
)
def test_bad_values_of_the_tools_and_benchmarks_are_one_error_line(tmp_path, command, message):
    """#55-57, #74, #67-68, #76-79, #82-83: printed nothing, too many classes, 2500%, one run
    counted twice, tracebacks, a hang, a table of zeros or nothing measured, each with exit 0 or
    a traceback. Each is one `error:` line naming the flag, exit 2, before any work."""
    os.makedirs(tmp_path / "x")
    rundir.save_config(default.get_config(), str(tmp_path / "run"))
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
    with pytest.raises(
        DataError, match=r"Writing checkpoints in .* Permission denied \(errno 13\)"
    ):
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


# ---- Hostile pass 3 (2026-12-05, 91 cases at cf65c6d) -------------------------------------------


def test_eval_cadence_is_part_of_a_plateau_runs_experiment():
    """#3: with schedule "plateau" the evaluations drive the learning rate, so another
    eval_every_steps on resume changed the lr silently (1e-4 instead of 1e-5 from step 5). It is
    a change of the experiment there (refused unless --allow_config_change); elsewhere not."""
    config = default.get_config()
    old = json.loads(config.to_json())
    config.eval_every_steps = 4
    assert rundir.config_changes(config, old) == []
    config.schedule, old["schedule"] = "plateau", "plateau"
    assert rundir.config_changes(config, old) == [("eval_every_steps", 0, 4)]


def _started_run(tmp_path) -> str:
    """A workdir as a run leaves it at its start: config.json, the history, run.json and a
    committed checkpoint folder."""
    workdir = str(tmp_path / "run")
    rundir.record_start(default.get_config(), workdir, 0, [], {"dataset": "image_folder"})
    step = os.path.join(rundir.checkpoint_dir(workdir), "4")
    os.makedirs(step)
    open(os.path.join(step, rundir.COMMIT_MARKER), "w").close()
    return workdir


def test_a_run_json_without_the_data_identity_is_refused_like_a_missing_one(tmp_path):
    """#24: run.json emptied to {} switched the data check off: a renamed class folder (every
    label shifted) was accepted without a word."""
    workdir = _started_run(tmp_path)
    (tmp_path / "run" / rundir.RUN_FILE).write_text("{}")
    with pytest.raises(DataError, match=r"holds checkpoints .* but a run\.json without the data"):
        rundir.check_dataset(workdir, {"dataset": "image_folder", "classes": ["b", "a"]})
    rundir.check_dataset(workdir, {"dataset": "image_folder"}, allow_change=True)


@pytest.mark.parametrize("damage", ["cut", "empty"])
def test_a_damaged_or_emptied_run_json_names_a_remedy_that_works(tmp_path, damage):
    """Pass 9, #22: run.json cut in half was one line with no remedy, and no flag got past it
    (resume, resume with --allow_config_change, predict). #23: emptied to {}, the message told
    to restore "<workdir>/data identity in run.json", a path that is none. The refusal names
    run.json and the remedies; --allow_config_change resumes, records the data anew and says
    so; the next plain resume is checked against that record."""
    workdir = _started_run(tmp_path)
    path = tmp_path / "run" / rundir.RUN_FILE
    path.write_text(path.read_text()[:10] if damage == "cut" else "{}")
    identity = {"dataset": "image_folder", "classes": ["a", "b"]}
    with pytest.raises(DataError) as refused:
        rundir.check_dataset(workdir, identity)
    message = str(refused.value)
    assert f"Restore {path} (from a copy" in message or f"{path} is damaged" in message
    assert "--allow_config_change" in message
    assert "data identity in run.json" not in message
    changes = rundir.check_dataset(workdir, identity, allow_change=True)
    rundir.record_start(default.get_config(), workdir, 4, [], identity, changes)
    assert json.loads(path.read_text()) == {"dataset": identity}
    assert rundir.check_dataset(workdir, identity) == []
    with pytest.raises(DataError, match="changed since it started"):
        rundir.check_dataset(workdir, {**identity, "classes": ["b", "a"]})


def test_lines_past_the_step_a_run_finished_at_are_not_its_final_evaluation(tmp_path, capsys):
    """Pass 9, #18: a row {"step": 100, "split": "eval", "top1_error": 0.0} appended to the
    metrics.jsonl of a run finished at step 8 became its final evaluation: compare showed 0.0
    at step 100, and a rerun said "already finished at step 8: final eval top-1 err 0.00% ...
    (step 100)". The readers leave out lines past the finished step, with a warning."""
    from alexnet_jax.runs import report
    from alexnet_jax.tools import compare

    workdir = _started_run(tmp_path)
    metrics = rundir.metrics_path(workdir)
    for step, error in ((4, 0.5), (8, 0.25), (100, 0.0)):
        rundir.append_jsonl(metrics, {"step": step, "split": "eval", "top1_error": error})
    assert report.final_eval(workdir, 8)["step"] == 100  # unfinished: a later row is its own
    rundir.record_finished(workdir, 8)
    capsys.readouterr()
    assert report.final_eval(workdir, 8) == {"step": 8, "split": "eval", "top1_error": 0.25}
    assert "holds 1 line(s) past step 8, where the run finished" in capsys.readouterr().err
    records, skipped = compare.read_records(workdir)
    assert [r["step"] for r in records] == [4, 8]
    assert skipped == 1


def test_an_image_folder_of_one_class_is_refused_without_a_remedy_that_fails(tmp_path):
    """Pass 9, #73: a folder with one class folder and num_classes=2 was told "Set
    --config.num_classes=1.", which is then refused ("must be an integer >= 2"). It says that a
    classifier needs at least two class folders."""
    from PIL import Image

    from alexnet_jax.data import input_pipeline

    for split in ("train", "val"):
        os.makedirs(tmp_path / "one" / split / "a")
        Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "one" / split / "a" / "x.png")
    config = tiny_config(
        str(tmp_path), dataset="image_folder", image_folder=str(tmp_path / "one"),
        num_classes=2, eval_split="val",
    )  # fmt: skip
    with pytest.raises(DataError, match=r"has 1 class folder\(s\) in train/: a classifier needs"):
        input_pipeline.prepare(config)


def test_num_epochs_must_be_finite_even_when_the_step_count_decides():
    """Pass 9, #42: num_epochs=nan with num_train_steps=2 was accepted, recorded as NaN in
    config.json, and every resume then listed "num_epochs: nan -> nan" as a change."""
    config = default.get_config()
    config.num_train_steps = 2
    for value in (float("nan"), float("inf"), -float("inf")):
        config.num_epochs = value
        with pytest.raises(ConfigError, match=r"config\.num_epochs must be a number > 0"):
            config_lib.validate_config(config)
    for value in (-1, 0, 2.5):  # the step count decides; any finite number is recorded as given
        config.num_epochs = value
        config_lib.validate_config(config)


def test_the_recorded_count_of_undecodable_images_is_the_runs_not_process_0s(monkeypatch):
    """Pass 9, #14: a 2-process run on a folder with 2 undecodable training files warned of 4
    skips (2 per process) but recorded "undecodable_images": 2, process 0's count alone. The
    log sums the processes' counts (a collective at each flush, which every process makes at
    the same steps); here the 2-process collective is stood in for."""
    from jax.experimental import multihost_utils

    from alexnet_jax.train import loop

    gathered = []

    def allgather(count):  # process 0 counted `count`, process 1 counted 3
        gathered.append(count)
        return np.stack([count, np.asarray(3, count.dtype)])

    class Writer:
        def write_train(self, step, host, progress, counts):
            self.counts = counts

    class Progress:
        def update(self, step):
            return {}

    config = default.get_config()
    log = loop._TrainLog(config, Writer(), Progress(), steps_per_epoch=10)
    state = type("State", (), {"skipped_steps": 0})()
    log.pending = [(1, {"finite": True, "loss": 1.0})]
    log.flush(1, state, undecodable=2)  # one process: its own count
    assert log.writer.counts["undecodable_images"] == 2
    assert gathered == []
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "process_allgather", allgather)
    log.pending = [(2, {"finite": True, "loss": 1.0})]
    log.flush(2, state, undecodable=2)
    assert log.writer.counts["undecodable_images"] == 5
    assert [int(c) for c in gathered] == [2]


def test_a_hand_edited_config_json_is_refused(tmp_path):
    """#27: config.json edited by hand (normalization) was trusted: --mode=eval scored 14.55
    instead of 0.79, and a resume was accepted with nothing in the history. Each start records
    the config's digest; a config.json that differs from it is refused by every reader."""
    workdir = _started_run(tmp_path)
    assert rundir.read_config_dict(workdir)["normalization"] == "mean_std"
    path = tmp_path / "run" / rundir.CONFIG_FILE
    path.write_text(path.read_text().replace('"mean_std"', '"mean"'))
    with pytest.raises(
        DataError, match="not the config the run recorded when it started at step 0"
    ):
        rundir.read_config_dict(workdir)
    with pytest.raises(DataError, match="edited by hand"):
        config_lib.load_config(workdir)
    # Pass 4, #9-#10: a start that crashed between config.json and its history entry leaves the
    # same state. The remedy the message names works: a resume with --allow_config_change takes
    # config.json as it is, and records it.
    edited = default.get_config()
    edited.normalization = "mean"
    assert rundir.check_resume(edited, workdir, allow_change=True) == []
    rundir.record_start(edited, workdir, 4, [], None)
    assert rundir.read_config_dict(workdir)["normalization"] == "mean"


def test_a_run_with_checkpoints_whose_history_is_gone_is_not_read_unchecked(tmp_path):
    """Pass 4, #8: config.json edited and config_history.jsonl deleted: the digest check was
    skipped and --mode=eval scored 294.50 instead of 5.13, without a word. A run holding
    checkpoints must have the digest of its config; a resume with --allow_config_change takes
    config.json as it is and records it."""
    workdir = _started_run(tmp_path)
    (tmp_path / "run" / rundir.HISTORY_FILE).unlink()
    with pytest.raises(DataError, match=r"holds checkpoints but its config_history\.jsonl"):
        rundir.read_config_dict(workdir)
    with pytest.raises(DataError, match="records no start with the digest"):
        config_lib.load_config(workdir)
    with pytest.raises(DataError, match="records no start with the digest"):
        rundir.check_resume(default.get_config(), workdir)
    assert rundir.check_resume(default.get_config(), workdir, allow_change=True) == []
    rundir.record_start(default.get_config(), workdir, 4, [], None)
    assert rundir.read_config_dict(workdir)["normalization"] == "mean_std"
    # A run without checkpoints has nothing to mismatch: read as it is.
    os.remove(os.path.join(rundir.checkpoint_dir(workdir), "4", rundir.COMMIT_MARKER))
    (tmp_path / "run" / rundir.HISTORY_FILE).unlink()
    assert rundir.read_config_dict(workdir)["normalization"] == "mean_std"


def test_a_record_appended_after_a_cut_off_line_is_kept(tmp_path, capsys):
    """#29: a cut-off last line of config_history.jsonl swallowed the next entry (the new
    "finished" record was glued onto it and lost to every reader). The fragment is dropped, with
    a warning, and the record is a whole line."""
    path = tmp_path / rundir.HISTORY_FILE
    path.write_text('{"step": 0, "event": "start"}\n{"step": 4, "time": "2026-12-05 05:3')
    rundir.append_jsonl(str(path), {"step": 8, "event": "finished"})
    assert rundir.read_jsonl(str(path)) == [
        {"step": 0, "event": "start"}, {"step": 8, "event": "finished"}
    ]  # fmt: skip
    assert "its last line was cut off (36 bytes); dropped." in _warnings(capsys)[0]


def test_a_figure_that_cannot_be_written_keeps_the_earlier_one_and_names_it(tmp_path):
    """#70, #71: on a full disk figures and compare truncated the good PNGs they were replacing,
    and the error named no file. Figures, tables and curves are written whole or not at all (a
    temporary file renamed), and the error names the file."""
    from matplotlib.figure import Figure

    from alexnet_jax.runs import plots

    path = tmp_path / "comparison.png"
    path.write_bytes(b"the earlier, good figure")
    os.makedirs(f"{path}.tmp-{os.getpid()}")  # the temporary file cannot be written
    with pytest.raises(OSError) as failed:
        plots.save_figure(Figure(), str(path))
    assert failed.value.filename.startswith(str(path))  # (its temporary file)
    assert path.read_bytes() == b"the earlier, good figure"


def test_a_tool_does_not_write_over_a_runs_own_records(tmp_path):
    """#79, #87: `compare --out=<run>/training_curves` replaced the run's curves, and
    `benchmarks/train_step.py --json=<run>/config.json` its config (the run's identity: every
    tool then refused the run). Both are refused in one line; the files are kept."""
    from tests.conftest import write_tiny_run

    run = write_tiny_run(str(tmp_path))
    config = (tmp_path / "run" / rundir.CONFIG_FILE).read_text()
    with pytest.raises(UserError, match=r"--out=.*training_curves\.png would replace the run's"):
        rundir.refuse_run_file(os.path.join(run, rundir.CURVES_FILE), "--out")
    rundir.refuse_run_file(os.path.join(run, "comparison.png"), "--out")  # a file of its own
    proc = subprocess.run(
        [sys.executable, "benchmarks/train_step.py", f"--json={run}/config.json", "--repeats=1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.splitlines() == [
        f"error: --json={run}/config.json would replace the run's own config.json in {run}: "
        "choose another file name or folder."
    ]
    assert (tmp_path / "run" / rundir.CONFIG_FILE).read_text() == config


def test_allow_config_change_cannot_continue_a_run_as_another_network(tmp_path):
    """#5: --allow_config_change with another num_classes failed in the restore with three lines
    of Orbax's advice (`strict=False` in ArrayRestoreArgs...). Refused before anything is built,
    in one message naming the field."""
    workdir = _started_run(tmp_path)
    config = default.get_config()
    config.num_classes = 5
    with pytest.raises(ConfigError, match=r"num_classes: 4 -> 5 changes the shapes"):
        rundir.check_resume(config, workdir, allow_change=True)
    config.num_classes, config.learning_rate = 4, 0.02
    assert rundir.check_resume(config, workdir, allow_change=True) == [
        ("learning_rate", 0.01, 0.02)
    ]


def test_the_benchmarks_build_a_valid_config_for_every_variant():
    """#85: `benchmarks/train_step.py --variant=cifar4` always failed ("dropout_rate must be 0.0
    for variant 'cifar4'"), and the benchmark has no flag for it."""
    from alexnet_jax.model import models

    script = (  # in its own process: the benchmarks define absl flags at import
        "import sys; sys.path.insert(0, 'benchmarks'); import common\n"
        "from alexnet_jax.model import models\n"
        "print([common.bench_config(v, 8, 'float32').variant for v in models.REGISTRY])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(list(models.REGISTRY))


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (MemoryError(), "error: out of memory. Free memory, raise the process's limit"),
        (RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 607083780 bytes."),
         "error: out of memory (RESOURCE_EXHAUSTED: Out of memory allocating 607083780 bytes). "),
        (ImportError("_tensorstore.so: failed to map segment from shared object"),
         "error: out of memory while loading a library (_tensorstore.so: failed to map segment"),
        (ImportError("No module named 'optax'"),
         "error: a library cannot be loaded (No module named 'optax'): install the requirements"),
    ],
)  # fmt: skip
def test_running_out_of_memory_is_one_line(capsys, error, line):
    """#72: under a small `ulimit -v` a run ended in a 29-line ImportError traceback, or was told
    "could not write: RESOURCE_EXHAUSTED: Out of memory ... Free disk space" (XLA's out of memory
    taken for a full disk). One line saying what ran out and what to do, exit code 2. (A C++
    std::bad_alloc abort inside XLA stays out of reach: it ends the process before Python.)"""
    from alexnet_jax.core import errors

    with pytest.raises(SystemExit) as exited, errors.reported_as_exit():
        raise error
    assert exited.value.code == 2
    (printed,) = capsys.readouterr().err.splitlines()
    assert printed.startswith(line)


def test_too_small_an_address_space_limit_is_one_line_before_jax_starts():
    """#72: under `ulimit -v` of 1.0-1.4 GB XLA aborted in C++ (std::bad_alloc, a crash dump),
    at 1.6-1.8 GB it hung. main.py checks the limit first: one line, exit 2."""
    script = "import resource; resource.setrlimit(resource.RLIMIT_AS, (1000 * 2**20,) * 2); "
    script += "import os, sys; os.execv(sys.executable, [sys.executable, 'main.py', '--mode=eval'])"
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.splitlines() == [
        "error: the process may use 1000 MB of address space (ulimit -v), too little for JAX and "
        "TensorFlow to start (at least 2048 MB; they reserve more than they use): raise it, e.g. "
        "ulimit -v unlimited."
    ]


def test_a_tight_address_space_limit_is_named_at_start():
    """Pass 8, #20: under `ulimit -v 4000000` a 169 Mpx PNG (below the bomb limit) in a training
    folder aborted TensorFlow in C++ (pthread_create failed), and so did an 88 Mpx one: a run
    needs 2.5-3 GB of address space before any data. No pixel limit that keeps today's photos
    prevents it, so a limit under 8 GB is named at start with what it means and the fix."""
    script = "import resource, sys; limit = int(sys.argv[1]); "
    script += "resource.setrlimit(resource.RLIMIT_AS, (limit, limit)) if limit else None; "
    script += "from alexnet_jax.core import runtime; runtime.check_environment()"
    printed = {}
    for limit in (4000 * 2**20, 0):
        proc = subprocess.run(
            [sys.executable, "-c", script, str(limit)], cwd=REPO, capture_output=True,
            text=True, timeout=120, env={**os.environ, "XLA_FLAGS": ""},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        printed[limit] = proc.stderr.splitlines()
    (line,) = printed[4000 * 2**20]
    assert line.startswith("warning: the process may use 4000 MB of address space (ulimit -v).")
    assert "abort in C++" in line
    assert line.endswith("raise it if that happens (ulimit -v unlimited).")
    assert printed[0] == []


def test_config_rules_found_in_pass_3_name_the_field():
    """#61-#63: bias_one NaN or 1e30 trained a step, then diverged naming no field; an empty
    synthetic evaluation set was found only after training; num_classes=1 trained a net with no
    gradient and reported 0% error. Each is refused at start naming the field; and #9: on a
    device count that does not divide the batch, the remedy works for a resumed run too."""
    for field, value in (("bias_one", float("nan")), ("bias_one", 1e30), ("num_classes", 1),
                         ("synthetic_eval_examples", 0)):  # fmt: skip
        config = default.get_config()
        config.dataset = "synthetic"
        config[field] = value
        with pytest.raises(ConfigError, match=rf"^config\.{field} must be"):
            config_lib.validate_config(config)
    config = default.get_config()
    config.batch_size = 8
    with pytest.raises(ConfigError, match="resume it on a device count that divides 8, or change"):
        config_lib.validate_config(config, num_devices=3)


def test_figure1_refuses_to_write_over_a_runs_or_a_sweeps_records(tmp_path, capsys):
    """Pass 4, #53-#55, #25: `figure1 --out=<sweep>/sweep.json` replaced the sweep's plan with a
    PNG (and --out=<run>/metrics.jsonl the run's metrics), exit 0; an --out in a folder that does
    not exist was a traceback after all the work. One line each, before any work."""
    from alexnet_jax.tools import figure1

    rundir.write_sweep_plan(str(tmp_path), {"runs": []})
    plan = (tmp_path / rundir.SWEEP_FILE).read_text()
    for out, message in (
        (str(tmp_path / rundir.SWEEP_FILE), "would replace the sweep's own sweep.json"),
        (str(tmp_path / "a file" / "x" / "f.png"), "cannot be created"),
    ):
        if "a file" in out:
            (tmp_path / "a file").write_text("in the way")
        with pytest.raises(SystemExit) as exited:
            figure1.main(["--sweep_dir", str(tmp_path), "--out", out])
        assert exited.value.code == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert message in line
    assert (tmp_path / rundir.SWEEP_FILE).read_text() == plan


def _with_stdout_closed_after_one_line(command: list[str], cwd: str) -> tuple[int, str]:
    """(exit code, stderr) of `command | head -1`: its stdout is closed after the first line."""
    proc = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "XLA_FLAGS": ""},
    )  # fmt: skip
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    return proc.wait(timeout=120), err


def _sweep_of_two_failing_arms(tmp_path, prints: str = "") -> list[str]:
    """The command of a sweep of arms a and b (seed 1) into tmp_path/s whose "main.py" runs
    `prints` and exits 3: quick, no JAX."""
    fake_main = tmp_path / "fake_main.py"
    fake_main.write_text(f"import sys\n{prints}sys.exit(3)\n")
    sweep_dir, main = f"--sweep_dir={tmp_path / 's'}", f"--main={fake_main}"
    tool = [sys.executable, "-m", "alexnet_jax.tools.sweep", "--config=configs/default.py"]
    return [*tool, "--arm=a", "--arm=b:seed=1", sweep_dir, main]


def test_sweep_and_launch_go_on_when_their_reader_closes_stdout(tmp_path):
    """Pass 4, #42-#43: `sweep ... | head -1` died with a BrokenPipeError traceback after the
    first arm (the second never ran, sweep.json recorded no outcome); `launch ... | head -1`
    did at its second line and left its workers unsupervised. The rest of stdout is dropped and
    both go on to the end."""
    command = _sweep_of_two_failing_arms(tmp_path, "for i in range(50): print('line', i)\n")
    code, err = _with_stdout_closed_after_one_line(command, REPO)  # fmt: skip
    assert "Traceback" not in err, err
    assert code == 1, err
    assert "error: 2 of 2 runs did not finish" in err, err
    runs = json.loads((tmp_path / "s" / rundir.SWEEP_FILE).read_text())["runs"]
    assert [(r["name"], r["outcome"]["exit_code"]) for r in runs] == [("a", 3), ("b", 3)]

    script = "import time\nfor i in range(20): print('x', i, flush=True); time.sleep(0.01)\n"
    command = [sys.executable, "-m", "alexnet_jax.tools.launch", "--num_processes=2", "--",
               sys.executable, "-c", script]  # fmt: skip
    code, err = _with_stdout_closed_after_one_line(command, REPO)
    assert (code, err) == (0, "")


_LOW_ADDRESS_SPACE = (
    "import resource; resource.setrlimit(resource.RLIMIT_AS, (1000 * 2**20,) * 2); "
)


@pytest.mark.parametrize(
    ("tool", "args", "env", "message"),
    [
        ("predict", ["--workdir=w", "x.jpg"], {"JAX_PLATFORMS": "gpu"},
         "error: JAX_PLATFORMS='gpu' asks for a platform that cannot start here"),
        ("export", ["--workdir=w", "--to=x.pth"], {"XLA_FLAGS": "garbage words"},
         "error: XLA_FLAGS holds 'garbage', which is not a flag"),
        ("figures", ["--workdir=w"], {"XLA_FLAGS": "--xla_force_host_platform_device_count=abc"},
         "error: XLA_FLAGS holds '--xla_force_host_platform_device_count=abc': the number of"),
        ("sweep", ["--config=configs/default.py", "--arm=a", "--sweep_dir=s"], None,
         "error: the process may use 1000 MB of address space (ulimit -v), too little"),
        ("compare", ["w"], None,  # pass 5, #25: checked before NumPy's import
         "error: the process may use 1000 MB of address space (ulimit -v), too little"),
    ],
)  # fmt: skip
def test_the_tools_answer_the_environment_in_one_line(tmp_path, tool, args, env, message):
    """Pass 4, #32-#38: main.py's checks of JAX_PLATFORMS, XLA_FLAGS and ulimit -v were main.py's
    alone: the tools printed 38-94 line tracebacks or XLA's C++ abort (sweep under ulimit -v:
    exit 134 and an empty sweep folder). One line, exit 2, nothing written."""
    (tmp_path / "x.jpg").write_bytes(b"")
    if env is None:  # the address-space limit, then the tool
        launcher = _LOW_ADDRESS_SPACE + "import os, sys; "
        launcher += "os.execv(sys.executable, [sys.executable, '-m', *sys.argv[1:]])"
        command = [sys.executable, "-c", launcher]
    else:
        command = [sys.executable, "-m"]
    command += [f"alexnet_jax.tools.{tool}", *args]
    proc = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "XLA_FLAGS": "", "PYTHONPATH": REPO, **(env or {})},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines()[-1].startswith(message), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["x.jpg"]


def test_a_cpu_device_count_that_is_not_a_positive_integer_names_xla_flags(monkeypatch):
    """Pass 4, #33-#34: device_count=0 was blamed on JAX_PLATFORMS (not set); =abc aborted in
    C++ with 94 lines. Pass 5, #15-#17: a superscript two was a ValueError traceback, an
    Arabic-Indic three and 99999999999 passed the check and XLA aborted."""
    for value in ("0", "abc", "-1", "", "\u00b2", "\u0663", "99999999999", "1025", "1e1"):
        monkeypatch.setenv("XLA_FLAGS", f"--xla_force_host_platform_device_count={value}")
        with pytest.raises(UserError, match="the number of CPU devices must be an integer from 1"):
            runtime.check_environment()
    for value in ("2", "08", "1024"):
        monkeypatch.setenv("XLA_FLAGS", f"--xla_force_host_platform_device_count={value}")
        runtime.check_environment()


@pytest.mark.parametrize(
    ("env", "error", "message"),
    [
        ({"JAX_PLATFORM_NAME": "gpu"}, RuntimeError("Unknown backend gpu"),
         "JAX_PLATFORM_NAME='gpu' asks for a platform that cannot start here (Unknown backend"),
        ({"JAX_CPU_COLLECTIVES_IMPLEMENTATION": "bogus"}, ValueError("bogus collectives"),
         "JAX could not start here (bogus collectives): check the settings it starts with "
         "(JAX_CPU_COLLECTIVES_IMPLEMENTATION, XLA_FLAGS)"),
    ],
)  # fmt: skip
def test_a_backend_that_cannot_start_names_the_setting(monkeypatch, env, error, message):
    """Pass 5, #18-#19: JAX_PLATFORM_NAME (JAX_PLATFORMS' old name) was blamed on XLA_FLAGS
    (empty); an unknown JAX_CPU_COLLECTIVES_IMPLEMENTATION was a ValueError traceback."""
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def fails():
        raise error

    monkeypatch.setattr(runtime.jax, "devices", fails)
    with pytest.raises(UserError) as refused:
        runtime.start_backend()
    assert str(refused.value).startswith(message), str(refused.value)


def test_a_comparison_stopped_while_drawn_keeps_the_earlier_set_whole(tmp_path, monkeypatch):
    """Pass 4, #23: a Ctrl-C while compare drew its plot left the new .md and .csv beside the
    old .png. The plot is drawn first; the tables follow in a moment."""
    from alexnet_jax.tools import compare

    out = tmp_path / "c"
    for suffix in (".md", ".csv", ".png"):
        (tmp_path / f"c{suffix}").write_text("earlier")

    def stopped_while_drawing(summaries, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(compare, "collect", lambda dirs: [])
    monkeypatch.setattr(compare, "plot_curves", stopped_while_drawing)
    with pytest.raises(KeyboardInterrupt):
        compare.write_comparison([str(tmp_path)], str(out))
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {
        "c.md": "earlier",
        "c.csv": "earlier",
        "c.png": "earlier",
    }


def test_nothing_is_written_inside_a_runs_checkpoints_or_over_a_sweep(tmp_path):
    """Pass 4, #51 and #56: a --workdir (or figures' --out) inside a run's checkpoints/ step folder
    was deleted with it when the run saved its next step; #12: main.py trained a run into a
    sweep's folder, beside its arms, after which the sweep refused its own folder."""
    workdir = _started_run(tmp_path)
    step = os.path.join(rundir.checkpoint_dir(workdir), "4")
    for path in (step, os.path.join(step, "nested", "deeper")):
        with pytest.raises(
            UserError, match=r"lies inside the checkpoint folder .*/run/checkpoints/4,"
        ):
            rundir.make_workdir(path)
        with pytest.raises(UserError, match=r"--out=.* lies inside the checkpoint folder"):
            figures.make_figures(workdir, path)
        with pytest.raises(UserError, match=r"--out=.* lies inside the checkpoint folder"):
            rundir.refuse_run_file(os.path.join(path, "c.md"), "--out")
    rundir.make_workdir(os.path.join(workdir, "figures"))  # beside the checkpoints: fine
    sweep_dir = tmp_path / "sweep"
    rundir.write_sweep_plan(str(sweep_dir), {"runs": []})
    with (
        pytest.raises(UserError, match=r"--workdir=.*/sweep is a sweep's folder"),
        rundir.exclusive(str(sweep_dir)),
    ):
        pass
    with rundir.exclusive(str(sweep_dir), "--sweep_dir"):  # the sweep's own lock
        pass


def test_a_finished_runs_refused_config_is_taken_with_the_remedy_the_message_names(tmp_path):
    """Pass 5, #1-#3: a finished run whose history was deleted (or whose config.json was edited)
    was refused by every reader, and the remedy named, a resume with --allow_config_change,
    printed "already finished ... Nothing to do" and recorded nothing. It records config.json
    as it is; the readers then accept it. #4: configs/run.py read it with the digest check, so
    `--config=configs/run.py:<run> --allow_config_change` was refused by the config file itself;
    it reads it as it is (a resume without the flag is still refused by main.py's check)."""
    from alexnet_jax.runs import run as run_lib
    from configs import run as run_config

    workdir = _started_run(tmp_path)
    line = {"step": 4, "split": "eval", "top1_error": 0.5, "top5_error": 0.1, "loss": 1.0}
    (tmp_path / "run" / rundir.METRICS_FILE).write_text(json.dumps(line) + "\n")
    rundir.record_finished(workdir, 4)
    (tmp_path / "run" / rundir.HISTORY_FILE).unlink()
    with pytest.raises(DataError, match="records no start with the digest"):
        rundir.read_config_dict(workdir)
    config = run_config.get_config(workdir)  # #4
    with pytest.raises(DataError, match="records no start with the digest"):
        rundir.check_resume(config, workdir)
    with run_lib.Run(workdir, config, allow_change=True) as run:
        assert run.finished_before(4, 4)["top1_error"] == 0.5
    assert rundir.read_config_dict(workdir)["normalization"] == "mean_std"
    assert rundir.finished_step(workdir) == 4
    history = rundir.read_history(workdir)
    assert [(r["event"], r.get("allowed_config_change")) for r in history] == [
        ("resume", True),
        ("finished", None),
    ]
    with run_lib.Run(workdir, config, allow_change=True) as run:  # nothing more to record
        run.finished_before(4, 4)
    assert len(rundir.read_history(workdir)) == 2
    # #59, the same with run.json: taken with the data's identity of this command.
    (tmp_path / "run" / rundir.RUN_FILE).unlink()
    with run_lib.Run(workdir, config, allow_change=True) as run:
        run.check_dataset({"dataset": "image_folder", "classes": ["a", "b"]})
        run.finished_before(4, 4)
    assert rundir.read_run_record(workdir)["dataset"]["classes"] == ["a", "b"]


def test_an_edited_config_json_is_taken_only_when_valid_and_recorded_as_an_edit(tmp_path, capsys):
    """Pass 6, #9: --allow_config_change on a finished run took a hand-edited config.json that
    broke the rules (and had a field this version lacks) and recorded it with `"changed": {}`;
    every reader then refused the run. It is refused by name and nothing is recorded; a valid
    edit is taken and its entry says config_json_edited. #10: an allowed resume after a hand
    edit listed the changes from the edit as if the run had trained with it; the entry is marked
    config_json_edited and a warning says so."""
    import functools

    from alexnet_jax.runs import run as run_lib
    from alexnet_jax.train import config_lib

    workdir = _started_run(tmp_path)
    line = {"step": 4, "split": "eval", "top1_error": 0.5, "top5_error": 0.1, "loss": 1.0}
    (tmp_path / "run" / rundir.METRICS_FILE).write_text(json.dumps(line) + "\n")
    rundir.record_finished(workdir, 4)
    config = default.get_config()
    validate = functools.partial(config_lib.check_like, like=config)
    path = tmp_path / "run" / rundir.CONFIG_FILE
    recorded = json.loads(path.read_text())
    for edit, reason in [
        ({"learning_rate": -1.0}, "config.learning_rate must be a number > 0"),
        ({"unknown_field": 1}, r"fields this version lacks: \['unknown_field'\]"),
    ]:
        path.write_text(json.dumps({**recorded, **edit}))
        with (
            pytest.raises(DataError, match=f"is not a valid run config .*{reason}"),
            run_lib.Run(workdir, config, allow_change=True, validate=validate) as run,
        ):
            run.finished_before(4, 4)
        assert [r["event"] for r in rundir.read_history(workdir)] == ["start", "finished"]
    path.write_text(json.dumps({**recorded, "learning_rate": 0.02}))
    with run_lib.Run(workdir, config, allow_change=True, validate=validate) as run:
        run.finished_before(4, 4)
    entry = rundir.read_history(workdir)[2]
    assert (entry["event"], entry["config_json_edited"]) == ("resume", True)
    assert rundir.read_config_dict(workdir)["learning_rate"] == 0.02
    # #10: edited again, then resumed to train on with the command line's config.
    path.write_text(json.dumps({**recorded, "learning_rate": 0.03}))
    with pytest.raises(DataError, match=r"--config=configs/run\.py:.*run --allow_config_change"):
        rundir.read_config_dict(workdir)
    changes = rundir.check_resume(config, workdir, allow_change=True)
    rundir.record_start(config, workdir, 4, changes)
    entry = rundir.read_history(workdir)[-1]
    assert entry["config_json_edited"] is True
    assert entry["changed"]["learning_rate"] == {"old": 0.03, "new": config.learning_rate}
    assert "was not the config the run recorded" in " ".join(_warnings(capsys))
    rundir.record_start(config, workdir, 4, [])  # a plain resume after it: no mark
    assert "config_json_edited" not in rundir.read_history(workdir)[-1]


def test_a_sweep_arm_with_damaged_records_fails_alone(tmp_path):
    """Pass 5, #10-#11: an arm whose records could not be read (a damaged config.json of a
    finished arm) stopped the whole sweep with exit 2: the other arms never ran and sweep.json
    kept stale outcomes. That arm fails, named with the reason; the others run. #28: an arm
    stopped after it had finished is recorded finished."""
    arm_a = tmp_path / "s" / "a"
    arm_a.mkdir(parents=True)
    (arm_a / rundir.CONFIG_FILE).write_text("{")
    rundir.record_finished(str(arm_a), 4)
    command = _sweep_of_two_failing_arms(tmp_path)
    proc = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "XLA_FLAGS": ""},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "[sweep] a: FAILED before starting: " in proc.stdout
    runs = json.loads((tmp_path / "s" / rundir.SWEEP_FILE).read_text())["runs"]
    assert [(r["name"], r["outcome"]["status"]) for r in runs] == [("a", "failed"), ("b", "failed")]
    assert runs[1]["outcome"]["exit_code"] == 3
    said = []
    finished = sweep.Run("a", "a", None, str(_started_run(tmp_path / "t")), "x.log", (), None)
    rundir.record_finished(finished.workdir, 4)
    outcome = sweep._outcome(finished, 143, 1.0, said.append, stopped=True)
    assert (outcome["status"], outcome["step"]) == ("finished", 4)


def test_no_tool_writes_inside_a_runs_checkpoints_even_through_a_link(tmp_path):
    """Pass 5, #33-#38: a sweep_dir inside checkpoints/ was refused naming --workdir after its
    folder was made; a link to checkpoints/ let main.py and figures in (the next save deleted
    what they wrote); export --to and launch --process_log_dir were not checked; compare made
    its --out folder inside damaged_checkpoints/ before refusing. Each is refused, naming its
    flag, and makes nothing."""
    from alexnet_jax.tools import compare, export, launch

    workdir = _started_run(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(rundir.checkpoint_dir(workdir))
    before = sorted(p for p in tmp_path.rglob("*"))
    inside = os.path.join(workdir, rundir.DAMAGED_CHECKPOINTS, "sub")
    for call, flag in [
        (lambda: rundir.make_workdir(str(link / "4" / "nest")), "--workdir"),
        (lambda: figures.make_figures(workdir, str(link / "4" / "figs")), "--out"),
        (lambda: sweep.run_sweep(None, [], str(link / "sw"), print), "--sweep_dir"),
        (lambda: export.export_run(workdir, str(link / "4" / "m.npz")), "--to"),
        (lambda: compare.write_comparison([workdir], os.path.join(inside, "c")), "--out"),
    ]:
        with pytest.raises(UserError, match=rf"^{flag}=.* lies inside the checkpoint"):
            call()
    with pytest.raises(SystemExit):
        launch._parse(["--process_log_dir", str(link / "4" / "logs"), "--", "main.py"])
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_miniature_sizes_that_cannot_be_generated_are_refused_by_the_rules():
    """Pass 5, #50: miniature_image_sides (40, 48, 50) or (40,) were tracebacks at generation;
    #53: a billion pictures per class ran the machine out of memory (killed, no message)."""
    for field, value, message in [
        ("miniature_image_sides", (40, 48, 50), "side_range must be a pair"),
        ("miniature_image_sides", (40,), "side_range must be a pair"),
        ("miniature_train_per_class", 10**9, "train_per_class must be in 1..1300"),
    ]:
        config = default.get_config()
        config[field] = value
        with pytest.raises(ConfigError, match=message):
            config_lib.validate_config(config)


def test_a_config_field_given_twice_is_refused():
    """Pass 5, #51: `--config.lr_drop_epochs=(2,) --config.lr_drop_epochs=(3,)` trained with
    (2, 3): ml_collections joins repeated tuples."""
    command = [sys.executable, "main.py", "--config.lr_drop_epochs=(2,)",
               "--config.lr_drop_epochs=(3,)", "--mode=eval"]  # fmt: skip
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "error: --config.lr_drop_epochs is given twice: give it once.\n"


# ---- Hostile pass 6 (docs/RELIABILITY.md) ----------------------------------------------------


def test_a_config_field_given_twice_in_any_spelling_is_refused(tmp_path):
    """Pass 6, #1-#4, #7: the check saw only `--config.F=V` twice: `--config.F V` (two words),
    `-config.F` (one dash), `--noconfig.F` and a --flagfile giving it again got through (tuples
    joined: (2, 3)); #6: a stray word after `--` printed absl's whole flag help."""
    (tmp_path / "ff.txt").write_text("--config.seed=7\n")
    for args, line in [
        (["--config.lr_drop_epochs=(2,)", "--config.lr_drop_epochs", "(3,)"], "lr_drop_epochs"),
        (["-config.lr_drop_epochs=(2,)", "--config.lr_drop_epochs=(3,)"], "lr_drop_epochs"),
        (["--config.random_flip", "--noconfig.random_flip"], "random_flip"),
        ([f"--flagfile={tmp_path / 'ff.txt'}", "--config.seed=3"], "seed"),
        (["--mode=eval", "--", "--config.seed=2"], None),
    ]:
        proc = subprocess.run(
            [sys.executable, "main.py", *args], cwd=REPO, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr[-2000:]
        expected = (
            f"error: --config.{line} is given twice: give it once."
            if line
            else "error: unexpected arguments ['--config.seed=2']: main.py takes only flags"
        )
        assert proc.stderr.splitlines() == [proc.stderr.splitlines()[0]], proc.stderr
        assert proc.stderr.startswith(expected), proc.stderr


def test_stdout_closed_or_full_is_not_a_traceback(monkeypatch, capsys, tmp_path):
    """Pass 6, #24-#26, #51: started with stdout closed (`>&-`), main.py printed logging-error
    tracebacks and sweep and launch died; with stdout on a full disk (/dev/full) compare and
    predict ended in OSError tracebacks. Nothing is written where stdout is closed; on a full
    disk one warning, then the rest is dropped; the work goes on."""
    from alexnet_jax.core import console

    monkeypatch.setattr(sys, "stdout", None)
    console.out("a table")
    console.info("a progress line")
    with open("/dev/full", "w") as full:
        monkeypatch.setattr(sys, "stdout", full)
        console.out("a table")
        console.out("its last line")
    warnings = capsys.readouterr().err.splitlines()
    assert warnings == [
        "warning: stdout cannot be written (No space left on device): the rest of the output "
        "is dropped; the files are written as usual."
    ]
    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    (runs / "a" / rundir.METRICS_FILE).write_text('{"step": 1, "split": "train", "loss": 1.0}\n')
    (runs / "a" / rundir.CONFIG_FILE).write_text("{}")
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "alexnet_jax.tools.compare", str(runs)], cwd=REPO,
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("warning: stdout cannot be written"), proc.stderr
    assert (runs / "comparison.md").is_file()


def test_a_checkpoints_folder_that_is_a_link_is_guarded_too(tmp_path):
    """Pass 6, #13, #48: with a run's checkpoints/ a link to a folder elsewhere, main.py, figures,
    compare, figure1 and launch wrote into its step folders (deleted by the next save); #46: a
    run whose checkpoints/ linked to another run's deleted that run's steps, whose evaluation
    then scored the other run's parameters. A committed step folder is guarded wherever it is,
    and a link to another run's checkpoints is refused."""
    store = tmp_path / "store"
    (store / "4").mkdir(parents=True)
    (store / "4" / rundir.COMMIT_MARKER).write_text("")
    workdir = _started_run(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / rundir.CHECKPOINTS).symlink_to(store)
    for path in (store / "4" / "nest", other / rundir.CHECKPOINTS / "4" / "figs"):
        with pytest.raises(UserError, match=r"lies inside the checkpoint folder .*/store/4,"):
            rundir.make_workdir(str(path))
        with pytest.raises(UserError, match=r"^--out=.* lies inside the checkpoint folder"):
            rundir.refuse_run_file(str(path / "figure1.png"), "--out")
    second = tmp_path / "second"
    second.mkdir()
    (second / rundir.CHECKPOINTS).symlink_to(rundir.checkpoint_dir(workdir))
    with pytest.raises(DataError, match=r"is a link to the checkpoints of the run in .*/run:"):
        rundir.check_is_directory(str(second))
    rundir.check_is_directory(str(other))  # a link to a folder of its own: fine


def test_hand_edited_numbers_and_sweep_entries_are_damaged_records(tmp_path, capsys):
    """Pass 6, #37-#40: a metrics line whose error, epoch or loss is a string (an edit) made
    compare, figure1 and the end of a resumed run fail with TypeError tracebacks (after the run
    had trained and saved: no `finished` entry); a sweep.json run without its workdir was a
    KeyError. The line is dropped with a warning; the plan is one DataError."""
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": 1, "split": "eval", "top1_error": "0.9"}, {"step": 2, "epoch": "one"},
             {"step": 3, "split": "eval", "top1_error": 0.5, "loss": True},
             {"step": 4, "split": "eval", "top1_error": 0.25, "examples": 8}]  # fmt: skip
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert rundir.read_jsonl(str(path)) == [lines[-1]]
    warnings = _warnings(capsys)
    assert [w.split(": line ")[1] for w in warnings] == [
        "1 has top1_error that is not a number ('0.9'); ignored.",
        "2 has epoch that is not a number ('one'); ignored.",
        "3 has loss that is not a number (True); ignored.",
    ]
    rundir.write_sweep_plan(str(tmp_path / "s"), {"runs": [{"name": "a", "workdir": None}]})
    with pytest.raises(DataError, match="a run of its list lacks its name or workdir"):
        rundir.read_sweep_plan(str(tmp_path / "s"))


def test_miniature_sides_are_whole_and_bounded():
    """Pass 6, #29: (36.5, 40) was recorded as 36.5 and generated at 36; #31: (100000, 100000)
    needed about 30 GB a picture and ended in an out-of-memory message naming other fields."""
    for sides, message in [((36.5, 40), "must hold whole numbers"), ((100_000,) * 2, "<= 4096")]:
        config = default.get_config()
        config.miniature_image_sides = sides
        with pytest.raises(ConfigError, match=message):
            config_lib.validate_config(config)


def test_a_lock_that_cannot_be_written_is_named_and_leaves_nothing(tmp_path, monkeypatch):
    """Pass 6, #32: on a full disk the start said `could not write: No space left on device`,
    naming no file, and left an empty `.lock.<pid>` on each try."""
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir.json, "dump", full)
    with pytest.raises(OSError) as failed, rundir.exclusive(str(tmp_path / "w")):
        pass
    assert failed.value.filename == str(tmp_path / "w" / f"{rundir.LOCK_FILE}.{os.getpid()}")
    assert os.listdir(tmp_path / "w") == []


def test_a_data_change_allowed_on_purpose_is_recorded(tmp_path):
    """Pass 6, #11: run.json edited (another data identity) and the run resumed with
    --allow_config_change: accepted, but nothing recorded, so the next plain resume was refused
    again. The new identity replaces run.json and the history says what changed."""
    from alexnet_jax.runs import run as run_lib

    workdir = _started_run(tmp_path)
    config = default.get_config()
    new = {"dataset": "miniature"}
    with pytest.raises(DataError, match="The data of the run"):
        rundir.check_dataset(workdir, new)
    with run_lib.Run(workdir, config, allow_change=True) as run:
        run.check_dataset(new)
        run.start(4, "banner")
    assert rundir.read_run_record(workdir)["dataset"] == new
    assert rundir.read_history(workdir)[-1]["dataset_changed"] == {
        "dataset": {"old": "image_folder", "new": "miniature"}
    }
    rundir.check_dataset(workdir, new)  # the next plain resume


def _python(code: str) -> subprocess.CompletedProcess:
    """`python -c code` in the repository, its output captured."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_a_library_logging_the_stop_on_its_way_up_is_not_heard():
    """Seen in the suite (test_main's Ctrl-C twice): a second Ctrl-C while Orbax waited for a
    save in progress was raised inside its wait, which logged "Save Finalize thread failed"
    with the whole traceback after the `interrupted:` line. The line is the last word."""
    code = (
        "import os, signal\n"
        "from absl import logging\n"
        "from alexnet_jax.core import errors\n"
        "errors.exit_on_ctrl_c()\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    signal.pause()\n"
        "except BaseException:\n"
        "    logging.exception('Save Finalize thread (save_finalize) failed.')  # as Orbax does\n"
        "    raise\n"
    )
    proc = _python(code)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.splitlines() == [f"interrupted: {errors.CTRL_C}"]


def test_a_signal_after_the_work_during_python_s_shutdown_still_exits_130():
    """Pass 4, #22: SIGINT or SIGTERM to `figures` after it had written its files and lines
    printed the `interrupted:` line but exited 0 (now and then 130 with no line): the signal
    came while Python was shutting down, where the exit could no longer be registered and the
    exception was ignored. It exits 128 + the signal with its one line."""
    code = (
        "import atexit, os, signal\n"
        "from alexnet_jax.core import errors\n"
        "errors.exit_on_ctrl_c(sigterm=True)\n"
        "atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))  # after threads joined\n"
        "print('wrote figure.png')\n"
    )
    proc = _python(code)
    assert (proc.returncode, proc.stdout) == (143, "wrote figure.png\n"), proc.stderr
    assert proc.stderr.splitlines() == [f"terminated: {errors.SIGTERM}"]


def test_a_signal_during_python_s_last_teardown_is_ignored_not_a_silent_death():
    """Pass 18, #66: SIGINT to compare, figure1, figures or an evaluation just after their files
    were written: exit 130 with no `interrupted:` line. The signal came after Python's atexit
    callbacks, where Python runs no handler and gives the signals back to the system. From there
    on they are ignored: the work is done, exit 0."""
    code = (
        "import os, signal, time\n"
        "from alexnet_jax.core import errors\n"
        "errors.exit_on_ctrl_c(sigterm=True)\n"
        "class Late:\n"
        "    def __del__(self):  # runs as Python tears its modules down, after atexit\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(0.2)\n"
        "late = Late()\n"
        "print('wrote figure.png')\n"
    )
    proc = _python(code)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "wrote figure.png\n", "")


def test_predict_reads_a_transparent_picture_as_the_input_pipeline_does(tmp_path):
    """Pass 7, #15: predict composited transparent pictures (RGBA, LA, a palette with a
    transparent index) over white, while training and --mode=eval decode them with
    tf.io.decode_image(channels=3), which drops the alpha and keeps the colours under it (a
    GIF's transparent pixels are black): the same file got 25.1% from predict and 41.5% from
    the evaluation. Golden: Pillow's view equals TensorFlow's, exactly. Pass 8, #24: a WebP with
    alpha was refused by decode_image(channels=3), so training skipped what predict read; the
    pipeline's decode_rgb reads it too, and equals decode_image(channels=3) where that reads."""
    import io

    import tensorflow as tf
    from PIL import Image

    from alexnet_jax.data import image_files, preprocessing

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (6, 8, 4), np.uint8)
    pixels[..., 3] = rng.choice([0, 128, 255], (6, 8))  # transparent, half, opaque
    palette = Image.fromarray(pixels[..., :3]).quantize(16)
    pictures = {
        "rgba.png": (Image.fromarray(pixels, "RGBA"), {}),
        "la.png": (Image.fromarray(pixels[..., [0, 3]], "LA"), {}),
        "palette.png": (palette, {"transparency": 3}),
        "palette.gif": (palette, {"transparency": 3}),
        "rgba.webp": (Image.fromarray(pixels, "RGBA"), {"lossless": True}),
        "grey.png": (Image.fromarray(pixels[..., 0], "L"), {}),
    }
    for name, (picture, options) in pictures.items():
        buffer = io.BytesIO()
        picture.save(buffer, name.split(".")[1].upper(), **options)
        expected = preprocessing.decode_rgb(tf.constant(buffer.getvalue())).numpy()
        with Image.open(io.BytesIO(buffer.getvalue())) as image:
            seen = np.asarray(image_files._to_rgb(image))
        np.testing.assert_array_equal(seen, expected, err_msg=name)
        if name != "rgba.webp":  # pass 8, #24: decode_image(channels=3) refuses that one
            tf_view = tf.io.decode_image(buffer.getvalue(), channels=3, expand_animations=False)
            np.testing.assert_array_equal(expected, tf_view.numpy(), err_msg=name)


def test_a_gif_whose_first_frame_is_smaller_than_its_screen_is_read_as_predict_reads_it():
    """Pass 8, #41: a GIF whose 20x15 frame sits at (10, 5) on a 40x30 screen was decoded by
    TensorFlow at the frame's size with a third of its pixels black (out of place), by Pillow
    (predict) as the screen: eval and predict gave 50.63% and 52.41% for the same file. The
    pipeline reads GIFs with Pillow now. Golden: the screen, filled with the frame's colour where
    the frame lies and with the background colour (index 0, here the same red) elsewhere."""
    import io

    import tensorflow as tf
    from PIL import Image

    from alexnet_jax.data import image_files, preprocessing
    from alexnet_jax.data.recipe import Recipe

    frame = Image.new("P", (20, 15), 0)
    frame.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    buffer = io.BytesIO()
    frame.save(buffer, "GIF")
    data = bytearray(buffer.getvalue())
    data[6:10] = (40).to_bytes(2, "little") + (30).to_bytes(2, "little")  # the screen
    at = data.index(b"\x2c", 13)  # the image descriptor: the frame's left, top
    data[at + 1 : at + 5] = (10).to_bytes(2, "little") + (5).to_bytes(2, "little")
    seen = preprocessing.decode_rgb(tf.constant(bytes(data))).numpy()
    np.testing.assert_array_equal(seen, np.broadcast_to([255, 0, 0], (30, 40, 3)))
    with Image.open(io.BytesIO(bytes(data))) as image:
        np.testing.assert_array_equal(np.asarray(image_files._to_rgb(image)), seen)
    tf_view = tf.io.decode_image(bytes(data), channels=3, expand_animations=False).numpy()
    assert tf_view.shape == (15, 20, 3)  # TensorFlow's own reading, which the pipeline avoids
    recipe = Recipe(input_size=24, resize_size=32)
    views = preprocessing.eval_views(tf.constant(bytes(data)), recipe)
    np.testing.assert_array_equal(views.numpy(), np.broadcast_to([255, 0, 0], (1, 24, 24, 3)))
    with pytest.raises(ValueError, match="not a readable GIF"):
        preprocessing.decode_rgb(tf.constant(b"GIF89a and nothing else"))


def test_a_refused_evaluation_of_weights_leaves_no_folders(tmp_path):
    """Pass 7, #39: `--mode=eval --config.torch_weights=<not a torch file>` with a new
    --workdir=new/sub/tw was refused in one line but left the folders new/sub/tw behind (pass 1
    fixed this for training runs only)."""
    from alexnet_jax.train import loop

    weights = tmp_path / "text.pth"
    weights.write_text("hi")
    config = tiny_config(
        str(tmp_path), dataset="synthetic", normalization="mean_std", synthetic_eval_examples=8,
        torch_weights=str(weights),
    )  # fmt: skip
    with pytest.raises(UserError, match=r"text\.pth refused"):
        loop.evaluate_checkpoint(config, str(tmp_path / "new" / "sub" / "tw"))
    assert not (tmp_path / "new").exists()


def test_a_decompression_bomb_is_an_undecodable_example_by_its_header(tmp_path, monkeypatch):
    """Pass 7, #18: a 20000 x 20000 one-colour PNG (1.2 MB) in a training folder was decoded
    whole (1.2 GB); under a memory limit TensorFlow aborted in C++ (exit 134, a stack, no
    error line). Its header is read first: more than preprocessing.MAX_PIXELS (Pillow's limit,
    which predict applies) makes it an undecodable example, skipped and counted. Golden: the
    header's width x height equals Pillow's for each format the pipeline reads."""
    import io

    import tensorflow as tf
    from PIL import Image

    from alexnet_jax.data import preprocessing

    rng = np.random.default_rng(0)
    formats = [("JPEG", {}), ("PNG", {}), ("GIF", {}), ("BMP", {}), ("WEBP", {"lossless": True})]
    formats += [("WEBP", {"quality": 80}), ("WEBP", {"quality": 80, "mode": "RGBA"})]
    shapes = [(37, 53), (300, 17), (5, 4000)] * 3
    for (fmt, options), (height, width) in zip(formats, shapes, strict=False):
        mode = options.pop("mode", "RGB")
        picture = Image.fromarray(rng.integers(0, 256, (height, width, len(mode)), np.uint8), mode)
        buffer = io.BytesIO()
        picture.save(buffer, fmt, **options)
        pixels = preprocessing.header_pixels(tf.constant(buffer.getvalue()))
        assert int(pixels) == height * width, (fmt, options)
    assert int(preprocessing.header_pixels(tf.constant(b"not a picture"))) == 0
    # Pass 8, #22: a GIF whose screen says 10 x 10 but whose frame is 300 x 200 (TensorFlow
    # decodes the frame) got by with the screen's 100 pixels; its frames are read too. #41's
    # frame placed past the screen's edge counts where it lies.
    gif = io.BytesIO()
    Image.new("P", (300, 200)).save(gif, "GIF")
    lying = bytearray(gif.getvalue())
    lying[6:10] = (10).to_bytes(2, "little") + (10).to_bytes(2, "little")
    assert int(preprocessing.header_pixels(tf.constant(bytes(lying)))) == 300 * 200
    at = 13 + 3 * 2 ** ((lying[10] & 7) + 1)  # after the colour table: the image descriptor
    assert lying[at] == 0x2C  # (Pillow writes no extension for one still frame)
    lying[at + 1 : at + 5] = (50).to_bytes(2, "little") + (7).to_bytes(2, "little")
    assert int(preprocessing.header_pixels(tf.constant(bytes(lying)))) == 350 * 207

    buffer = io.BytesIO()
    Image.new("RGB", (300, 200)).save(buffer, "PNG")
    monkeypatch.setattr(preprocessing, "MAX_PIXELS", 300 * 200 - 1)
    plan = functools.partial(preprocessing.center_crop_plan, resize_size=64, crop_size=32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than 59999 pixels"):
        preprocessing.decode_view(tf.constant(buffer.getvalue()), plan)


def test_predict_names_the_objects_tasks_classes():
    """Pass 8, #37: predict (and export, which writes the names into the weights file) named the
    10 classes of an objects-task run by the shapes task's drawings ("triangle", "star", two
    "circle"s ...). Each is named by its own kind of object."""
    from alexnet_jax.data import objects
    from alexnet_jax.tools import predict
    from configs import objects as objects_config

    config = objects_config.get_config()
    names = predict.class_names(config)
    assert [name for _, name in names] == [objects.class_name(i) for i in range(10)]
    assert len({name for _, name in names}) == 10
    assert names[1][1] == "vertical object of hue 36 deg (objects)"
    config.miniature_task = "shapes"
    assert "(miniature)" in predict.class_names(config)[0][1]


def test_predict_reads_a_large_photo_without_pillows_warning(tmp_path, monkeypatch):
    """Pass 8, #21: predict of a photo over Pillow's 89 Mpx printed Pillow's 2-line
    DecompressionBombWarning: the filter was set after Image.open, which warns. (The limit is
    lowered here to 1,000 pixels: a 40 x 40 picture is over it, below twice it.)"""
    import warnings

    from PIL import Image

    from alexnet_jax.data import image_files

    Image.new("RGB", (40, 40), (200, 10, 10)).save(tmp_path / "large.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    config = default.get_config()
    config.input_size, config.resize_size, config.normalization = 16, 20, "mean_std"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pixels = image_files.load_image(str(tmp_path / "large.png"), config)
    assert pixels.shape == (16, 16, 3)
    assert [str(w.message) for w in caught] == []


def test_a_workdir_too_long_for_the_checkpoints_is_refused_at_start(tmp_path):
    """Pass 8, #34: a 4,026-character --workdir trained until its first checkpoint, then failed
    with "File name too long" and advice to free disk space (and, 1 time in 3, Orbax's
    traceback). It is refused before anything runs; a long one that fits is taken."""
    from alexnet_jax.runs import run as run_lib

    part = "x" * 200
    fits = os.path.join(str(tmp_path), *[part] * 12)  # about 2,500 characters
    rundir.make_workdir(fits)
    too_long = os.path.join(str(tmp_path), *[part] * 19)
    refused = r"--workdir is \d+ characters long: .* Choose a shorter"
    with pytest.raises(UserError, match=refused), run_lib.removed_if_failed(too_long):
        rundir.make_workdir(too_long)
    assert os.listdir(fits) == []
    assert not os.path.exists(os.path.join(fits, part))


# ---- Hostile pass 10 (docs/RELIABILITY.md) ---------------------------------------------------


def test_a_lost_peer_process_is_one_line_and_an_exit_that_does_not_wait(monkeypatch, capsys):
    """Pass 10, #46: kill -9 of process 1 of a 2-process run: process 0's next collective raised
    `JaxRuntimeError: UNKNOWN: Gloo all-reduce failed: ... Connection reset by peer`, printed a
    43-line traceback, then hung in its exit (JAX's shutdown waits for the peer) and ignored
    launch's SIGTERM until SIGKILL. It is one line, exit 1, and the process ends before the
    finalizers that wait (errors._exit_without_finalizing)."""

    class JaxRuntimeError(RuntimeError):  # as jax.errors.JaxRuntimeError
        pass

    ending = []
    monkeypatch.setattr(errors, "_exit_without_finalizing", ending.append)
    lost = JaxRuntimeError(
        "UNKNOWN: Gloo all-reduce failed: [../gloo/transport/tcp/pair.cc:534] Read error "
        "[127.0.0.1]:11692: Connection reset by peer"
    )
    with pytest.raises(SystemExit) as exited, errors.reported_as_exit():
        raise lost
    assert exited.value.code == 1
    assert ending == [1]
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {errors.LOST_PEER} (UNKNOWN: Gloo all-reduce failed:")
    capsys.readouterr()
    gathered = ValueError("UNKNOWN: Gloo AllGather failed: [pair.cc:547] Connection closed by peer")
    with pytest.raises(SystemExit), errors.reported_as_exit():  # multihost_utils' allgather
        raise gathered
    assert capsys.readouterr().err.startswith(f"error: {errors.LOST_PEER} (UNKNOWN: Gloo AllGather")
    with pytest.raises(JaxRuntimeError, match="bad spec"), errors.reported_as_exit():
        raise JaxRuntimeError("INVALID_ARGUMENT: bad spec")  # not a lost peer: its traceback


def test_a_tilde_in_the_configs_paths_is_the_home_folder(tmp_path):
    """Pass 10, #62-#63: `--config.image_folder=~/F` was "no train/ directory" while
    --workdir=~/... was expanded, and `--config.resized_cache_dir=~/rc` built the cache in a
    folder named "~" under the current directory (an `rm -rf ~` to clean it up would hit the
    home folder). main.py expands a leading ~ in every path field of the config."""
    from PIL import Image

    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    for split in ("train", "val"):
        for k, name in enumerate(("a", "b")):
            os.makedirs(home / "F" / split / name)
            Image.new("RGB", (24, 20), (90 * k, 40, 40)).save(home / "F" / split / name / "0.png")
    flags = {"dataset": "image_folder", "image_folder": "~/F", "resized_cache_dir": "~/rc",
             "num_classes": 2, "eval_split": "val", "data_dir": "~/tfds"}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "main.py"), "--mode=prepare",
         *(f"--config.{k}={v}" for k, v in flags.items())],
        cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HOME": str(home), "XLA_FLAGS": ""},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.listdir(cwd) == []  # no folder named "~"
    (key,) = os.listdir(home / "rc")
    assert any(name.endswith(".tfrecord") for name in os.listdir(home / "rc" / key))
    assert f"in {home / 'rc'}" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "command",
    [["-m", "alexnet_jax.tools.figures", "--workdir=w", "x.png"], ["benchmarks/lrn.py", "stray"]],
)
def test_a_stray_word_is_one_error_line_for_figures_and_the_benchmarks(command):
    """Pass 10, #36: `figures --workdir=w x.png` printed its 40-line docstring and `Unexpected
    arguments: ['x.png']`, exit 1 (export and main.py: one error line, exit 2); a benchmark
    ignored a stray word and ran in full. One `error:` line, exit 2, before any work."""
    proc = subprocess.run(
        [sys.executable, *command], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "XLA_FLAGS": "", "PYTHONPATH": REPO},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"error: unexpected arguments ['{command[-1]}']: ")
    assert line.endswith("takes only flags.")
    assert proc.stdout == ""


def test_the_summary_of_a_run_stopped_before_its_end_calls_its_evaluation_the_last(tmp_path):
    """Pass 10, #58: a run stopped by SIGTERM at step 33 printed "final eval: ... (step 32)",
    the words of a finished run; its final evaluation is still to come."""
    from alexnet_jax.runs import report

    workdir = str(tmp_path)
    rundir.append_jsonl(rundir.metrics_path(workdir), {"step": 32, "split": "eval",
                                                        "top1_error": 0.5})  # fmt: skip
    stopped = report.summary(workdir, 0, 33, 10.0, 8, 10, stopped=True).splitlines()
    assert stopped[1] == "last eval: top-1 err 50.00% (step 32)"
    finished = report.summary(workdir, 0, 32, 10.0, 8, 10).splitlines()
    assert finished[1] == "final eval: top-1 err 50.00% (step 32)"


def test_a_run_refused_for_tensorflows_address_space_makes_no_cache_folder(tmp_path, monkeypatch):
    """Pass 10, #40: under `ulimit -v 2500000` an image-folder run with resized_cache_dir=RCu
    was refused in one line (TensorFlow needs about 3200 MB), but RCu was made first and left
    empty. The limit is checked before any folder of the data is made."""
    from alexnet_jax.data import input_pipeline

    monkeypatch.setattr(errors, "address_space_limit", lambda: 2500 * 2**20)
    config = tiny_config(
        str(tmp_path), dataset="image_folder", image_folder=str(tmp_path / "F"), num_classes=2,
        eval_split="val", resized_cache_dir=str(tmp_path / "RCu"),
    )  # fmt: skip
    with pytest.raises(UserError, match="too little for TensorFlow"):
        input_pipeline.prepare(config)
    assert not (tmp_path / "RCu").exists()


# ---- Hostile pass 11 (docs/RELIABILITY.md) ---------------------------------------------------


def test_a_tilde_in_the_tools_paths_is_the_home_folder(tmp_path, monkeypatch):
    """Pass 11, #27-#31, #37: a quoted ~ in the tools' own path flags was taken literally
    (`export --to=~/m.npz` wrote 228 MB into a folder named "~" under the cwd; `figures
    --out=~/figs` and `launch --process_log_dir=~/plogs` made the folder in $HOME and wrote
    under ./~; `sweep --sweep_dir=~/sw3` was a traceback; configs/run.py:~/x not found). The
    tools' flag parsers (absl and argparse) expand a leading ~, as main.py does."""
    monkeypatch.setenv("HOME", str(tmp_path))
    home = str(tmp_path)
    assert errors.expand_user("--to=~/m.pth") == f"--to={home}/m.pth"
    assert errors.expand_user("~/runs/a") == f"{home}/runs/a"
    for word in ("--top_k=5", "x~y", "--name=a~b", "-"):  # no leading ~ of a value: as it is
        assert errors.expand_user(word) == word
    parser = errors.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("runs", nargs="*")
    args = parser.parse_args(["--out=~/cmp", "~/a", "b"])
    assert (args.out, args.runs) == (f"{home}/cmp", [f"{home}/a", "b"])
    proc = subprocess.run(
        [sys.executable, "-m", "alexnet_jax.tools.export", "--workdir=~/nothing", "--to=~/m.pth"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "HOME": home, "XLA_FLAGS": "", "PYTHONPATH": REPO},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{home}/nothing" in proc.stderr
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize(
    "error",
    [
        NotADirectoryError(20, "Not a directory", "out/.tmp-7", "out/"),
        IsADirectoryError(21, "Is a directory", "out.tmp-7", "out"),
        FileNotFoundError(2, "No such file or directory", "/proc/1/cmp.png.tmp-7"),
    ],
)
def test_a_path_that_cannot_be_written_is_one_line_naming_it(error, capsys):
    """Pass 11, #15, #19, #20: `compare --out=/proc/1/cmp`, `figure1 --out=<an existing
    folder>` and `figure1 --out=/proc/1/f.png` ended in FileNotFoundError, NotADirectoryError
    and IsADirectoryError tracebacks from the atomic write's rename. One line naming the path
    and the system's reason, exit 2."""
    with pytest.raises(SystemExit) as exited, errors.reported_as_exit():
        raise error
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {error.filename}")
    assert f"{error.strerror} (errno {error.errno}): check the path" in line


def test_compare_refuses_an_out_that_is_a_folder(tmp_path):
    """Pass 11, #18: `compare --out=cmpd/ run` wrote cmpd/.md, cmpd/.csv and cmpd/.png, three
    files that `ls` does not show. --out is a path without its extension: a folder's path (a
    trailing slash) is refused in one line that names the path to give, before any work."""
    from alexnet_jax.tools import compare

    (tmp_path / "cmpd").mkdir()
    with pytest.raises(UserError, match=r"is a folder: --out is the files' path without"):
        compare.write_comparison([str(tmp_path / "no_run")], str(tmp_path / "cmpd") + os.sep)
    assert os.listdir(tmp_path / "cmpd") == []


def _filtered(data: bytes) -> bytes:
    """What core/stderr_filter.py passes on of `data` (the stderr of a multi-process run)."""
    from alexnet_jax.core import stderr_filter

    source, sink = os.pipe(), os.pipe()
    os.write(source[1], data)
    os.close(source[1])
    stderr_filter.run(b"error: lost", b"error: lost (JAX).", source[0], sink[1])
    os.close(sink[1])
    with os.fdopen(source[0], "rb") as f, os.fdopen(sink[0], "rb") as out:
        assert f.read() == b""  # everything was read
        return out.read()


# What process 1 printed when process 0, the coordinator, was killed (jaxlib 0.10.2; shortened).
_COORDINATOR_GONE = b"""\
W1205 16:32:09.110653   24362 preemption_sync_manager.cc:147] Failed to retrieve preemption \
notice from coordination service: UNAVAILABLE: Socket closed
Additional GRPC error information from remote target coordination_service while calling ...
E1205 16:32:09.110936   24362 coordination_service_agent.cc:289] Polled an error from \
coordination service (this can be an error from this or another task).
F1205 16:32:09.110940   24362 client.h:80] Terminating process because the JAX distributed \
service detected fatal errors. This most likely indicates that another task died; ...
*** Check failure stack trace: ***
    @     0x7f4587a20634  absl::lts_20260107::log_internal::LogMessage::SendToLog()
Fatal Python error: Aborted

Thread 0x00007f4bba492b80 (most recent call first):
  File ".../jax/_src/distributed.py", line 199 in shutdown
"""


def test_a_killed_coordinator_is_one_line_on_the_other_processes():
    """Pass 11, #43: kill -9 of process 0 (the coordinator of jax.distributed): the survivor's
    JAX client ended it in C++ before Python could speak, with 45 lines (JAX's fatal log line, a
    C++ stack, Python's fault-handler thread dump). Multi-process runs send stderr through
    core/stderr_filter.py, which prints the lost peer's one line instead (none more when Python
    told it first), and passes every other line, in order; native log lines that no abort
    follows come through after HOLD_S."""
    before = b"[ok] step 10\n"
    assert _filtered(before + _COORDINATOR_GONE) == before + b"error: lost (JAX).\n"
    told = b"error: lost (UNKNOWN: Gloo all-reduce failed ...).\n"
    assert _filtered(told + _COORDINATOR_GONE) == told
    warning = b"W1205 16:32:09.110653   24362 some_file.cc:147] a warning\nafter\n"
    assert _filtered(warning + b"no newline at the end") == warning + b"no newline at the end"


_GATHERS = """
import sys, time
sys.path.insert(0, {repo!r})
from alexnet_jax.core import errors, runtime
runtime.initialize_distributed("localhost:{port}", 2, int(sys.argv[1]))
from jax.experimental import multihost_utils
import jax.numpy as jnp
with errors.reported_as_exit():
    for step in range(2000):
        multihost_utils.process_allgather(jnp.ones(2))
        if step == 2:
            print("gathered", flush=True)
        time.sleep(3 if step >= 2 else 0.02)  # process 0 dies here, between two gathers
"""


def test_a_killed_coordinator_ends_the_real_survivor_with_one_line(tmp_path):
    """#43 end to end: two processes of a jax.distributed job gather in a loop; process 0 is
    killed with SIGKILL between two gathers, so that JAX's C++ client, not a collective, finds
    it gone. Process 1 ends non-zero with exactly one line on stderr, the lost peer's."""
    from alexnet_jax.tools import launch

    script = tmp_path / "gathers.py"
    script.write_text(_GATHERS.format(repo=REPO, port=launch.free_port()))
    env = {**os.environ, "XLA_FLAGS": ""}
    procs = [
        subprocess.Popen([sys.executable, str(script), str(i)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
        for i in (0, 1)
    ]  # fmt: skip
    try:
        assert procs[0].stdout.readline() == "gathered\n", procs[0].communicate()[1][-3000:]
        procs[0].kill()
        _, err = procs[1].communicate(timeout=120)
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate()
    assert procs[1].returncode != 0
    (line,) = err.splitlines()
    assert line.startswith(f"error: {errors.LOST_PEER} (")


def test_weights_are_not_evaluated_on_a_folder_of_other_classes(folder, monkeypatch):
    """Pass 11, #10: `--mode=eval` of a .pth trained on classes a, b over a folder whose class
    folders are b, c (folder class b is label 0, the file's b is label 1) printed an error rate
    with no word; so did a run evaluated with --config.image_folder at another folder. The
    classes the weights were trained on (a .pth's recorded names or synsets; a run's run.json)
    must be the folder's, in the same order; a file that records none (torchvision's) is not
    checked."""
    from alexnet_jax.interop import weights_io
    from alexnet_jax.train import loop

    config = tiny_config(os.path.dirname(folder), dataset="image_folder", image_folder=folder)
    recorded = {}
    monkeypatch.setattr(rundir, "read_run_record", lambda workdir: recorded)
    for classes in (["ant", "bee"], None):
        recorded["dataset"] = {"classes": classes}
        loop._check_trained_classes(config, "w")
    recorded["dataset"] = {"classes": ["bee", "cat"]}
    with pytest.raises(
        ConfigError,
        match=r"The run in w was trained on the classes bee, cat .*"
        r"the class folders ant, bee: its labels would not be the weights'",
    ):
        loop._check_trained_classes(config, "w")
    config.torch_weights = "x.pth"
    conventions = {"class_names": ["tench", "goldfish"], "class_synsets": ["ant", "bee"]}
    monkeypatch.setattr(weights_io, "read_conventions", lambda path: conventions)
    loop._check_trained_classes(config, "w")  # the synsets are the folder names
    conventions["class_synsets"] = None
    with pytest.raises(
        ConfigError,
        match=r"x.pth records that its weights were trained on the "
        r"classes tench, goldfish",
    ):
        loop._check_trained_classes(config, "w")
    monkeypatch.setattr(weights_io, "read_conventions", lambda path: None)
    loop._check_trained_classes(config, "w")


def test_the_decodability_check_prints_no_tensorflow_log_line(tmp_path):
    """Pass 10, #49: a class whose only image does not decode was refused in one line, but
    TensorFlow's C++ line for the failed decode came first (`W0000 ... local_rendezvous.cc:412]
    Local rendezvous is aborting with status: INVALID_ARGUMENT: Unknown image file format`)."""
    (tmp_path / "x.png").write_bytes(b"not an image")
    script = (
        "from alexnet_jax.data import data_sources\n"
        "print(data_sources._decodes('x.png'), data_sources._decodes('x.png'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": REPO, "XLA_FLAGS": "", "TF_CPP_MIN_LOG_LEVEL": "1"},
    )  # fmt: skip  (TensorFlow's warnings shown, as main.py's quiet_native_logs leaves them)
    assert (proc.returncode, proc.stdout) == (0, "False False\n"), proc.stderr[-2000:]
    assert "rendezvous" not in proc.stderr, proc.stderr


# ---- Hostile pass 12 (docs/RELIABILITY.md) ---------------------------------------------------


def _main_py(cwd, *flags: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """`python main.py FLAGS` in `cwd`, its output captured as text (stderr to `kwargs` if
    given), the environment plus `env`."""
    kwargs = {"capture_output": True, **kwargs} if "stderr" not in kwargs else kwargs
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "main.py"), *flags], cwd=cwd, text=True,
        timeout=120, env={**os.environ, **(env or {})}, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("variable", "value", "command"),
    [
        ("JAX_DEFAULT_MATMUL_PRECISION", "bogus", ["main.py", "--workdir=w"]),
        ("JAX_ENABLE_X64", "maybe", ["-m", "alexnet_jax.tools.predict", "--workdir=w", "x.png"]),
        ("JAX_NUM_CPU_DEVICES", "abc", ["benchmarks/lrn.py"]),
    ],
)
def test_a_jax_variable_jax_refuses_is_one_line(tmp_path, variable, value, command):
    """Pass 12, #18-#21: JAX_DEFAULT_MATMUL_PRECISION=bogus, JAX_TRACEBACK_FILTERING=bogus,
    JAX_NUM_CPU_DEVICES=abc, JAX_ENABLE_X64=maybe: JAX's import raised a ValueError, a 20-32
    line traceback from main.py and every tool. Every entry point imports JAX through
    errors.import_jax: one line naming the variable, exit code 2."""
    command = [
        sys.executable,
        *(os.path.join(REPO, w) if w.endswith(".py") else w for w in command),
    ]
    proc = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": REPO, "XLA_FLAGS": "", variable: value},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [
        f"error: the environment variable {variable}={value!r} is not a value JAX accepts "
        f"({proc.stderr.split(' accepts (', 1)[1].split('): fix', 1)[0]}): fix it or unset it "
        f"(unset {variable})."
    ]


def test_warnings_made_errors_do_not_break_main(tmp_path):
    """Pass 12, #22: PYTHONWARNINGS=error: main.py crashed loading its default config (a
    40-line traceback of ml_collections' deprecated load_module), an explicit --config was
    "could not be loaded", and a training step used optax.global_norm (deprecated). The config
    is loaded with DeprecationWarnings ignored, and the step uses optax.tree.norm."""
    proc = _main_py(tmp_path, "--workdir=nothing", "--mode=eval", env={"PYTHONWARNINGS": "error"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines()[-1].startswith("error: nothing holds no run")
    from alexnet_jax.train import experiment

    with open(experiment.__file__) as f:
        assert "optax.global_norm" not in f.read()


def test_a_long_output_name_is_written_or_refused_in_one_line(tmp_path, capsys):
    """Pass 12, #50-#51: `compare --out=<250 characters>` failed with a traceback for its
    temporary file's name (`<name>.png.tmp-<pid>`, over the 255-byte limit) and export refused a
    legal 252-character name the same way. Temporary names are cut to fit; a name that is itself
    too long is one line naming it."""
    from alexnet_jax.interop import weights_io

    name = "y" * 250
    rundir.write_atomically(str(tmp_path / f"{name}.png"), b"png")
    weights_io._replace_file(str(tmp_path / f"{name}.pth"), b"pth")
    assert sorted(os.listdir(tmp_path)) == [f"{name}.png", f"{name}.pth"]  # no temporary left
    too_long = str(tmp_path / ("z" * 300))
    with pytest.raises(SystemExit) as exited, errors.reported_as_exit():
        rundir.write_atomically(too_long, b"png")
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {too_long}: File name too long (errno 36): check the path, or choose another."
    ]
    assert sorted(os.listdir(tmp_path)) == [f"{name}.png", f"{name}.pth"]


def test_a_checkpoint_whose_arrays_are_not_the_ones_saved_is_refused(tmp_path, monkeypatch, capsys):
    """Pass 12, #2-#3: a flipped bit in a checkpoint's compressed data decoded to other numbers:
    the resume went on from them with no word (1 or 13 of 62 arrays differed from the
    uninterrupted run at step 8), or from NaN, reported as divergence while the intact step
    before it was never tried. Each checkpoint records a fingerprint of its arrays (per leaf,
    the wrapping sum of its bits as words), compared when it is read: the step is refused as
    damaged, and the previous one is restored."""
    workdir = str(tmp_path)
    manager = checkpoint.checkpoint_manager(workdir, keep=2)
    checkpoint.save(manager, 1, {"w": np.full(3, 1, np.float32)}, {"examples_consumed": 8})
    checkpoint.wait(manager)
    saved = checkpoint.fingerprint
    # Step 2's arrays as a damaged file would give them back: not the ones fingerprinted.
    monkeypatch.setattr(
        checkpoint, "fingerprint", lambda tree: saved({"w": np.full(3, 2.0000002, np.float32)})
    )
    checkpoint.save(manager, 2, {"w": np.full(3, 2, np.float32)}, {"examples_consumed": 16})
    checkpoint.wait(manager)
    manager.close()
    monkeypatch.setattr(checkpoint, "fingerprint", saved)
    target = w3_target()
    state, record = checkpoint.read_latest_checkpoint(workdir, target)
    np.testing.assert_array_equal(state["w"], np.full(3, 1, np.float32))
    assert record == {"examples_consumed": 8}
    warned = capsys.readouterr().err
    assert (
        "checkpoints/2 cannot be read (DataError: its arrays are not the ones saved (['w']"
        in warned
    )
    assert "a file of the step was damaged on disk" in warned


def test_the_fingerprint_sees_one_flipped_bit_and_not_the_devices():
    """The fingerprint changes with any one bit of any leaf (float32, bfloat16, int32), and is
    the same for an array on one device and sharded over eight."""
    rng = np.random.default_rng(0)
    tree = {
        "f": rng.normal(size=(8, 5)).astype(np.float32),
        "h": rng.normal(size=(8,)).astype(jax.numpy.bfloat16),
        "i": np.arange(8, dtype=np.int32),
    }
    base = checkpoint.fingerprint(tree)
    for name, leaf in tree.items():
        words = leaf.view(np.uint16 if leaf.itemsize == 2 else np.uint32)
        for bit in (0, leaf.itemsize * 8 - 1):
            flipped = words.copy()
            flipped.flat[3] ^= type(flipped.flat[3])(1 << bit)
            other = checkpoint.fingerprint({**tree, name: flipped.view(leaf.dtype)})
            assert other != base, (name, bit)
    mesh = jax.make_mesh((8,), ("data",))
    spread = jax.device_put(
        tree["f"], jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    )
    assert checkpoint.fingerprint({**tree, "f": spread}) == base


def test_an_allowed_change_that_reshapes_the_train_state_is_refused_before_the_restore(tmp_path):
    """Pass 12, #14: `--allow_config_change --config.optimizer=sgd` (the run's paper_sgd keeps a
    velocity, sgd none) was "No checkpoint of this run can be read ... tree structures do not
    match ... If the files are damaged, move those step directories out": a remedy that would
    throw away an intact run. The state the changed config builds is compared with the one the
    run's config.json builds, before any restore: one line naming the change; a change that
    keeps the state's shapes passes."""
    from alexnet_jax.train import experiment, loop, sharding
    from tests.conftest import write_tiny_run

    workdir = write_tiny_run(str(tmp_path))
    mesh = sharding.single_device_mesh()
    changed = [("optimizer", "paper_sgd", "sgd")]
    sgd = experiment.build(tiny_config(str(tmp_path), optimizer="sgd"), mesh, steps_per_epoch=3)
    with pytest.raises(ConfigError, match=r"whose train state these changes reshape \(optimizer: "
                       r"'paper_sgd' -> 'sgd'\).* Undo them, or start a new run"):  # fmt: skip
        loop._refuse_a_reshaped_state(workdir, sgd, changed)
    faster = experiment.build(
        tiny_config(str(tmp_path), learning_rate=0.5), mesh, steps_per_epoch=3
    )
    loop._refuse_a_reshaped_state(workdir, faster, [("learning_rate", 0.01, 0.5)])


def test_figure1_names_the_sweeps_own_failure_not_the_papers_sweep_file(tmp_path):
    """Pass 12, #37: figure1 on a sweep of another sweep file whose tanh arm diverged said to run
    `sweep --sweep=sweeps/figure1.py --sweep_dir=...`; following it set tanh aside and failed
    the finished relu arm ("holds a run with another config"). The remedy now quotes the sweep's
    own record of the arm (failed, its log) and says to rerun the sweep's own command."""
    from alexnet_jax.tools import figure1

    sweep_dir = str(tmp_path / "S3")
    run = {"name": "tanh", "arm": "tanh", "seed": None, "workdir": "tanh", "log": "logs/tanh.log"}
    run["outcome"] = {"status": "failed", "exit_code": 1}
    rundir.write_sweep_plan(sweep_dir, {"config": "c.py", "arms": {"tanh": {}}, "runs": [run]})
    with pytest.raises(DataError) as refused:
        figure1.arm_records(sweep_dir, ["tanh"])
    assert str(refused.value) == (
        f"{sweep_dir} has no logged run of arm(s) tanh: the sweep's record says: tanh failed "
        f"(log {sweep_dir}/logs/tanh.log). Fix what stopped them, then rerun the sweep command "
        f"that made {sweep_dir} (the same --sweep file: its finished runs are not run again)."
    )
    assert "sweeps/figure1.py" in str(figure1._missing_remedy(str(tmp_path / "new"), ["relu"]))


def test_jax_num_cpu_devices_zero_is_named_not_jax_platforms(monkeypatch):
    """Pass 12, #24: JAX_NUM_CPU_DEVICES=0 with JAX_PLATFORMS=cpu was reported as
    "JAX_PLATFORMS='cpu' asks for a platform that cannot start here ... unset JAX_PLATFORMS".
    The count is checked with the environment, before JAX starts; -1 (JAX's "not set") passes."""
    for value in ("-1", "4", "abc"):  # (abc: JAX's import refuses it, errors.import_jax)
        monkeypatch.setenv("JAX_NUM_CPU_DEVICES", value)
        runtime.check_cpu_device_count()
    for value in ("0", "-2", "5000"):
        monkeypatch.setenv("JAX_NUM_CPU_DEVICES", value)
        with pytest.raises(UserError, match=rf"JAX_NUM_CPU_DEVICES={value}: the number of CPU"):
            runtime.check_cpu_device_count()


def test_weights_read_by_torchvisions_conventions_say_so(monkeypatch, capsys):
    """Pass 12, #9: a run's weights saved without export (`torch.save(model.state_dict())`, or
    an .npz without its conventions) were read by torchvision's conventions (images resized to
    256) with no word: 50.02% where the run says 70.11%. Such a file is still read that way
    (torchvision's own weights record nothing), with one warning that says so and what to do."""
    from alexnet_jax.interop import weights_io
    from alexnet_jax.tools import predict

    monkeypatch.setattr(weights_io, "read_conventions", lambda path: None)
    fc8 = {"fc8": {"bias": np.zeros(4, np.float32)}}
    monkeypatch.setattr(weights_io, "load_weights", lambda path, variant: fc8)
    config, params = predict.load_weights_file("sd.pth")
    assert (params, config.num_classes, config.resize_size) == (fc8, 4, 256)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(
        "warning: sd.pth records no conventions (export records them), so it is read as "
        "PyTorch-trained torchvision weights: mean/std-normalized 224-pixel crops of images "
        "resized to 256."
    )


def test_jax_enable_x64_is_told_at_start(monkeypatch, capsys):
    """Pass 12, #16: a run under JAX_ENABLE_X64=1 gave other numbers (eval 2.3045 / 100% for
    2.3038 / 87.5%) while its banner said float32 and its config recorded nothing. The
    environment check warns, in one line, with the way back."""
    monkeypatch.setattr(runtime, "_x64_enabled", lambda: True)
    runtime.check_environment()
    assert "warning: JAX_ENABLE_X64 is on: JAX computes in 64 bits" in capsys.readouterr().err


def test_orbaxs_error_line_for_an_empty_step_metadata_file_is_not_printed():
    """Pass 12, #4: an empty checkpoints/4/_CHECKPOINT_METADATA (the step's creation time only)
    resumed exactly, but printed Orbax's `E1205 ... checkpoint.py:219] Failed to json parse
    Metadata file: ...` line. The arrays themselves are checked (their fingerprint)."""
    import logging

    record = logging.LogRecord(
        "absl", logging.ERROR, os.path.join("site-packages", "orbax", "checkpoint", "x.py"), 219,
        "Failed to json parse Metadata file: %s, file content: , error: Expecting value",
        ("/w/checkpoints/4/_CHECKPOINT_METADATA",), None,
    )  # fmt: skip
    assert not runtime._DropLibraryNoise().filter(record)


def test_a_sweep_does_not_say_it_killed_a_run_that_had_finished(tmp_path, monkeypatch):
    """Pass 12, #34: two SIGTERMs at once to a sweep (timeout's and the shell's) printed
    "a/seed_1: killed (SIGKILL) before it finished saving." and then "a/seed_1: finished at step
    4": the run had ended, saved, before the SIGKILL (a no-op) was sent. The line is said only
    when the SIGKILL ended the run."""

    class Ended:  # a run that ends (exit 0) just as the second signal comes
        returncode = None
        polls = iter([None, 0])

        def __init__(self, *args, **kwargs):
            pass

        def poll(self):
            self.returncode = next(self.polls, 0)
            return self.returncode

        def send_signal(self, signum):
            pass

        def kill(self):
            pass

    monkeypatch.setattr(sweep.subprocess, "Popen", Ended)
    run = sweep.Run("a/seed_1", "a", 1, str(tmp_path / "a"), str(tmp_path / "a.log"), ("x",), None)
    stop, said = sweep._Signals(), []
    stop.received += [15, 15]
    assert sweep._run_one(run, stop, said.append) == 0
    assert said == ["SIGTERM: asked a/seed_1 to save and exit (SIGTERM); SIGTERM again kills it."]


def test_a_config_file_given_an_argument_it_does_not_take_names_the_remedy(tmp_path):
    """Pass 12, #42: `--config=configs/figure1.py:extra` (or `configs/default.py:`) said only
    "TypeError: get_config() takes 0 positional arguments but 1 was given."."""
    proc = _main_py(tmp_path, f"--config={REPO}/configs/figure1.py:x")
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.endswith(
        "get_config() takes 0 positional arguments but 1 was given. That config file takes no "
        "argument after ':' (configs/run.py does: --config=configs/run.py:<run directory>); "
        "remove it."
    )


def test_an_error_line_stderr_cannot_take_keeps_its_exit_code(tmp_path):
    """Pass 12, #45: with `2>/dev/full` a config error exited 1 (the failed print's traceback,
    unseen) instead of 2: scripts testing for a usage error got another code."""
    with open("/dev/full", "w") as full:
        proc = _main_py(tmp_path, "--config.batch_size=-1", stderr=full, stdout=subprocess.PIPE)
    assert proc.returncode == 2


def test_a_link_in_the_checkpoints_that_is_no_step_is_to_be_removed(tmp_path):
    """Pass 12, #63: a link `checkpoints/latest -> 4` was refused with "replace the link with a
    copy of the folder it points to", which works but keeps a second full copy of step 4 for
    ever. A link whose name is no step is to be removed."""
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "4").mkdir(parents=True)
    (checkpoints / "latest").symlink_to("4")
    with pytest.raises(DataError, match=r"latest is a link, .*: remove the link \(rm .*latest\)"):
        rundir.check_is_directory(str(tmp_path))


def test_a_flagfile_that_includes_itself_is_refused(tmp_path):
    """Pass 12, #52: `--flagfile=ff.txt` holding `--flagfile=ff.txt` printed absl's "Hit
    circular flagfile dependency. Ignoring flagfile" four times and trained the default config
    into runs/default (a 58M-parameter run nobody asked for)."""
    (tmp_path / "a.txt").write_text("--flagfile=b.txt\n")
    (tmp_path / "b.txt").write_text("--config.seed=1\n--flagfile=a.txt\n")
    proc = _main_py(tmp_path, "--flagfile=a.txt")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: --flagfile=a.txt includes itself ({tmp_path}/a.txt -> {tmp_path}/b.txt -> "
        f"{tmp_path}/a.txt): remove the --flagfile line that closes the circle."
    ]
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt"]  # no run was made


def test_launch_refuses_a_tool(tmp_path):
    """Pass 12, #33: `launch --num_processes=2 -- python -m alexnet_jax.tools.predict ...` ran
    each worker into "Unknown command line flag 'coordinator_address'"."""
    proc = subprocess.run(
        [sys.executable, "-m", "alexnet_jax.tools.launch", "--num_processes=2", "--", "python",
         "-m", "alexnet_jax.tools.predict", "--workdir=w", "x.png"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "alexnet_jax.tools.predict runs in one process: run it without launch" in proc.stderr
    assert "[launch] process" not in proc.stdout + proc.stderr


def test_an_xla_dump_folder_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    """Pass 12, #25: XLA_FLAGS=--xla_dump_to=/proc/1/xd ran with one C++ `E... dump.cc:118]
    Could not create directory` line per compiled program (22 for main.py, 130 for predict)."""
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("XLA_FLAGS", f"--xla_dump_to={tmp_path}/a_file/dumps")
    with pytest.raises(UserError, match=r"--xla_dump_to=.*/a_file/dumps cannot be written: Not a"):
        runtime.check_xla_flags()
    monkeypatch.setenv("XLA_FLAGS", f"--xla_dump_to={tmp_path}/dumps")
    runtime.check_xla_flags()
    assert os.path.isdir(tmp_path / "dumps")


# ---- Hostile pass 13 (docs/RELIABILITY.md) ---------------------------------------------------


def test_jaxs_sigterm_caught_line_is_not_passed_on():
    """Pass 13, #20: every SIGTERM to a multi-process run (launch's, on Ctrl-C or a stop) printed
    JAX's C++ `W1205 ... preemption_notifier.cc:90] SIGTERM caught at ...` before the run's own
    "Preemption signal: saving step N" line. The stderr filter drops it."""
    caught = b"W1205 17:26:04.478442   26365 preemption_notifier.cc:90] SIGTERM caught at 2026\n"
    saving = b"warning: Preemption signal: saving step 41 and exiting.\n"
    assert _filtered(caught + saving) == saving


def test_jax_debug_mode_stopping_at_an_inf_is_one_line(capsys):
    """Pass 13, #27: JAX_DEBUG_INFS=1 main.py ended in a 50-line traceback (FloatingPointError:
    invalid value (inf) encountered in stage, from the max pool's -inf padding)."""
    with pytest.raises(SystemExit) as exited, errors.reported_as_exit():
        raise FloatingPointError("invalid value (inf) encountered in stage")
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: invalid value (inf) encountered in stage: JAX's debug mode")


def test_sighup_saves_like_sigterm():
    """Pass 13, #44: SIGHUP to main.py (the terminal closed, an ssh session lost) killed the run
    at once: no line, no save (52 to 92 steps since the last checkpoint lost). The training
    loop's watcher takes SIGHUP as it takes SIGTERM: save at the next step and exit (it
    restores the previous handler after). No signal is sent to the test process itself."""
    import signal

    before = signal.getsignal(signal.SIGHUP)
    watcher = checkpoint.PreemptionWatcher(manager=None)
    try:
        assert signal.getsignal(signal.SIGHUP) == watcher._on_signal
        assert not watcher.reached(3)
        watcher._on_signal(signal.SIGHUP, None)
        assert watcher.reached(3)
        assert watcher.signal_name == "SIGHUP"
        assert not watcher.interrupted  # (exit 0 after the save, as for SIGTERM)
    finally:
        watcher.close()
    assert signal.getsignal(signal.SIGHUP) == before


def test_a_tool_refuses_a_flagfile_that_includes_itself(tmp_path):
    """Pass 13, #36: main.py refused a circular --flagfile since pass 12, but predict and figures
    printed absl's "Hit circular flagfile dependency. Ignoring flagfile" and ran on without the
    file's flags. errors.parse_flags (every tool, the benchmarks) refuses it the same way."""
    (tmp_path / "e.flags").write_text("--top_k=1\n--flagfile=e.flags\n")
    proc = subprocess.run(
        [sys.executable, "-m", "alexnet_jax.tools.predict", "--flagfile=e.flags", "--workdir=w",
         "x.png"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": REPO},
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: --flagfile=e.flags includes itself ({tmp_path}/e.flags -> {tmp_path}/e.flags): "
        "remove the --flagfile line that closes the circle."
    ]


def test_the_remedy_for_no_readable_checkpoint_names_the_whole_way(tmp_path, monkeypatch):
    """Pass 13, #6: with its only step damaged, a run said "move those step directories out ... to
    start over"; doing so met a second refusal (the run reached step 4 but has no checkpoint:
    add --allow_config_change). The first message names both steps."""
    manager = checkpoint.checkpoint_manager(str(tmp_path), keep=1)
    checkpoint.save(manager, 4, {"w": np.full(3, 4, np.float32)}, {"examples_consumed": 8})
    checkpoint.wait(manager)
    manager.close()
    monkeypatch.setattr(checkpoint, "_check_fingerprint", _damaged)
    target = w3_target()
    with pytest.raises(DataError, match=r"move those step directories out of .*checkpoints and "
                       r"train with --allow_config_change to start the run over"):  # fmt: skip
        checkpoint.read_latest_checkpoint(str(tmp_path), target)


def _damaged(state, recorded):
    raise DataError("its arrays are not the ones saved")


def test_a_workdir_that_is_a_dangling_link_says_so(tmp_path):
    """Pass 13, #63: `--workdir=w/dang` (a link to a folder that does not exist) was "cannot be
    created (File exists, errno 17)" for a path that does not exist."""
    (tmp_path / "dang").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"--workdir=.*/dang is a link to .*/nowhere, which does "
                       r"not exist: make that folder, or remove the link"):  # fmt: skip
        errors.make_directory(str(tmp_path / "dang"), "--workdir")


def test_an_xla_flag_xla_cannot_read_is_one_line(monkeypatch):
    """Pass 13, #40: XLA_FLAGS=--xla_cpu_enable_fast_math=maybe (or an unknown --xla_bogus=1)
    aborted main.py and predict in C++ with XLA's whole flag list (94-95 lines). The flags the
    project does not set itself are tried in a short process first: one line quoting XLA."""
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2 --xla_bogus=1")
    refused = (
        r"XLA_FLAGS holds a flag XLA cannot read: Unknown flag in XLA_FLAGS: --xla_bogus=1 "
        r"\(XLA_FLAGS='--xla_force_host_platform_device_count=2 --xla_bogus=1'\): fix or remove"
    )
    with pytest.raises(UserError, match=refused):
        runtime.check_xla_flags()
    # Pass 14, #18: the value quoted was not the user's (the flags checked here were left out),
    # and a bad value came with XLA's C++ "Check failed: ... Flag parsing failed" line.
    flags = "--xla_b=1 --xla_cpu_enable_fast_math=maybe --xla_force_host_platform_device_count=2"
    monkeypatch.setenv("XLA_FLAGS", flags)
    with pytest.raises(UserError) as refused:
        runtime.check_xla_flags()
    assert str(refused.value) == (
        "XLA_FLAGS holds a flag XLA cannot read: Couldn't interpret value maybe for flag "
        f"xla_cpu_enable_fast_math (XLA_FLAGS={flags!r}): fix or remove it."
    )
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    runtime.check_xla_flags()


# ---- Hostile pass 14 (docs/RELIABILITY.md) ---------------------------------------------------


def test_a_double_quoted_xla_flag_value_with_a_space_is_taken(tmp_path, monkeypatch):
    """Pass 14, #19: XLA_FLAGS='--xla_dump_to="/tmp/a b"' (XLA reads it) was refused: "XLA_FLAGS
    holds 'b\\"', which is not a flag". Quoted values are one word, as XLA takes them."""
    monkeypatch.setenv("XLA_FLAGS", f'--xla_dump_to="{tmp_path}/a b"')
    runtime.check_xla_flags()
    assert os.path.isdir(tmp_path / "a b")


def test_the_sweep_loads_its_config_under_pythonwarnings_error(tmp_path):
    """Pass 14, #28: under PYTHONWARNINGS=error every sweep failed with "--config=... could not
    be loaded (DeprecationWarning: the load_module() method is deprecated ...)"."""
    proc = subprocess.run(
        [sys.executable, "-m", "alexnet_jax.tools.sweep", "--sweep=sweeps/figure1.py",
         f"--sweep_dir={tmp_path}/s", "--print_commands"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("main.py --config=configs/figure1.py") == 2


@pytest.mark.parametrize(
    "command",
    [["main.py", "--workdir=w\udcff"], ["-m", "alexnet_jax.tools.compare", "w\udcff"],
     ["-m", "alexnet_jax.tools.sweep", "--sweep=sweeps/figure1.py", "--sweep_dir=S\udcff"],
     # Pass 16, #70: an arm's value (the run's log line could not be written).
     ["-m", "alexnet_jax.tools.sweep", "--config=configs/figure1.py", "--sweep_dir=S",
      "--arm=a:data_dir=x\udcff"]],
)  # fmt: skip
def test_a_run_folder_whose_name_is_not_utf8_is_one_line(command):
    """Pass 14, #36-#38: a --workdir, a compare folder or a --sweep_dir named with bytes that are
    not UTF-8 ended in tracebacks (Orbax's C++ cast after 4 trained steps, matplotlib's label, the
    sweep's log line). Refused first, in one line."""
    args = [os.fsencode(os.path.join(REPO, a) if a == "main.py" else a) for a in command]
    proc = subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, timeout=120,
        env={**os.environ, "XLA_FLAGS": ""},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = proc.stderr.decode(errors="replace").splitlines()
    assert "holds bytes that are not UTF-8" in line


@pytest.mark.parametrize("kind", ["file", "class folder"])
def test_an_image_folder_name_that_is_not_utf8_is_one_line(folder, kind):
    """Pass 14, #39 and #40: an image named `train/ant/\\xe9.png` ended in a TensorFlow tracing
    traceback (UnicodeEncodeError); a class folder `train/b\\xff/` of 16 good PNGs was refused as
    having "no image that decodes", a remedy that cannot work. Either is now named, with the fix."""
    from alexnet_jax.data import data_sources

    root = os.fsencode(folder)
    if kind == "file":
        ant = os.path.join(root, b"train/ant")
        os.rename(os.path.join(ant, b"ant0.png"), os.path.join(ant, b"\xe9.png"))
        named = "'train/ant/\\udce9.png'"
    else:
        os.rename(os.path.join(root, b"train/bee"), os.path.join(root, b"train/b\xff"))
        os.rename(os.path.join(root, b"val/bee"), os.path.join(root, b"val/b\xff"))
        named = "'train/b\\udcff/'"
    with pytest.raises(DataError) as caught:
        data_sources._open_folder(folder)
    assert f"has a name that is not UTF-8, {named} (bytes shown as \\udc..)" in str(caught.value)
    assert "Rename it to a UTF-8 name" in str(caught.value)


def test_a_write_over_the_file_size_limit_names_the_limit():
    """Pass 14, #33: a save under `ulimit -f 50` said "File too large (errno 27). Free disk
    space ...", never naming the limit that was hit (the disk had room)."""
    import errno

    limit = "over the file-size limit, `ulimit -f` (raise it), or the file system's"
    too_large = OSError(errno.EFBIG, "File too large", "/w/checkpoints/4/x")
    assert (
        errors.storage_error_reason(too_large)
        == f"File too large (errno 27: {limit}): /w/checkpoints/4/x"
    )
    tensorstore = RuntimeError('UNKNOWN: Error writing local file "/w/x": [os_error_code=27]')
    assert errors.storage_error_reason(tensorstore) == f"File too large (errno 27: {limit})"
    full = OSError(errno.ENOSPC, "No space left on device")
    assert errors.storage_error_reason(full) == "No space left on device (errno 28)"


@pytest.mark.parametrize(
    "tool", ["compare", "export", "figure1", "figures", "launch", "load", "predict", "sweep"]
)
def test_a_tool_run_by_its_path_says_how_to_run_it(tool):
    """Pass 13, #38: `python alexnet_jax/tools/predict.py` (the path a shell completes) ended in
    `ModuleNotFoundError: No module named 'alexnet_jax'`, a traceback."""
    proc = subprocess.run(
        [sys.executable, f"alexnet_jax/tools/{tool}.py", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (1, ""), proc.stderr
    if tool == "load":  # no tool: a library module of the tools
        assert proc.stderr.startswith("error: alexnet_jax/tools/load.py is a library module")
        return
    assert proc.stderr == (
        f"error: run it as a module, from the repository: python -m alexnet_jax.tools.{tool}\n"
    )


def test_figure1_says_which_runs_are_unfinished_and_that_the_sweep_still_runs(tmp_path, capsys):
    """Pass 14, #51 and #52: figure1 while the sweep's first arm still ran said its other arm
    had "no logged run: Fix what stopped them" (nothing had); on a sweep whose tanh run was
    stopped at a third of its steps it printed `tanh: 25% training error at not reached`, with
    no word that the run had not finished."""
    import socket
    import time

    from alexnet_jax.tools import figure1

    sweep_dir = tmp_path / "S"
    for arm, end in (("relu", "finished"), ("tanh", "resume")):
        workdir = sweep_dir / arm
        workdir.mkdir(parents=True)
        lines = [{"step": s, "split": "train", "loss": 1.0, "top1_error": 0.5, "epoch": s / 4}
                 for s in (2, 4, 6, 8)]  # fmt: skip
        (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        (workdir / rundir.CONFIG_FILE).write_text(json.dumps({"activation": arm}))
        history = [{"step": 0, "event": "start"}, {"step": 8, "event": end}]
        (workdir / rundir.HISTORY_FILE).write_text("".join(json.dumps(r) + "\n" for r in history))
    figure1.arm_records(str(sweep_dir), ["relu", "tanh"])
    err = capsys.readouterr().err
    assert err == (
        f"warning: arm tanh: run(s) not finished (still training, or stopped): {sweep_dir}/tanh "
        "(epoch 2); their curves end there. Rerun the sweep's command to finish them.\n"
    )
    rundir.write_sweep_plan(str(sweep_dir), {"config": "c.py", "arms": {"x": {}}, "runs": []})
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        time.sleep(0.1)
        holder = {"pid": sleeper.pid, "host": socket.gethostname(),
                  "started": rundir._process_start_time(sleeper.pid)}  # fmt: skip
        (sweep_dir / rundir.LOCK_FILE).write_text(json.dumps(holder))
        with pytest.raises(DataError) as refused:
            figure1.arm_records(str(sweep_dir), ["x"])
    finally:
        sleeper.kill()
        sleeper.wait()
    assert str(refused.value) == (
        f"{sweep_dir} has no logged run of arm(s) x: the sweep is still running (process "
        f"{sleeper.pid} on host {socket.gethostname()}): rerun figure1 when it has finished."
    )


def test_launch_says_when_it_replaces_the_device_count_of_xla_flags(monkeypatch, capsys):
    """Pass 14, #21: `XLA_FLAGS=--xla_force_host_platform_device_count=4 launch ...` gave each
    process 1 device (--devices_per_process's default) with no word."""
    from alexnet_jax.tools import launch

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    launch.warn_of_a_replaced_device_count(4)
    assert capsys.readouterr().err == ""
    launch.warn_of_a_replaced_device_count(1)
    assert capsys.readouterr().err == (
        "warning: XLA_FLAGS' --xla_force_host_platform_device_count=4 is replaced by "
        "--devices_per_process=1 (launch sets each process's CPU devices): to give each 4, pass "
        "--devices_per_process=4.\n"
    )


def test_hidden_folders_of_an_image_folder_are_no_classes(folder, capsys):
    """Pass 13, #54: a hidden folder `train/.ipynb_checkpoints/` (Jupyter's) holding an image was
    a class: the run was refused for its class count, and following the remedy trained it as
    class 0. Hidden folders are left out, named in one warning."""
    from alexnet_jax.data import data_sources
    from tests.conftest import png

    png(os.path.join(folder, "train", ".ipynb_checkpoints", "x.png"), 7)
    png(os.path.join(folder, "val", ".git", "y.png"), 8)
    os.makedirs(os.path.join(folder, ".cache", "ant"))
    source = data_sources._open_folder(folder)
    assert source.classes == ("ant", "bee")
    assert source.split_names() == ["train", "val"]
    assert len(source.files("train")) == 4
    assert capsys.readouterr().err == ""
    source.check_classes()
    assert capsys.readouterr().err == (
        f"warning: Left out the hidden folder(s) train/.ipynb_checkpoints/, val/.git/ of "
        f"{source.root!r}: a folder whose name starts with a dot is no class.\n"
    )


# ---- Hostile pass 15 (docs/RELIABILITY.md) ---------------------------------------------------


def test_a_platform_jax_has_no_plugin_for_is_one_line(monkeypatch):
    """Pass 15, #21: JAX_PLATFORMS=cuda on a machine (or install) without CUDA ended main.py and
    every tool in a 26-line traceback: jax 0.10.2's `assert _default_backend is not None`."""

    def no_backend():
        raise AssertionError

    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    monkeypatch.setattr(jax, "devices", no_backend)
    with pytest.raises(UserError) as refused:
        runtime.start_backend()
    assert str(refused.value).startswith(
        "JAX_PLATFORMS='cuda' asks for a platform that cannot start here (no backend of it "
        "started): unset JAX_PLATFORMS"
    )


def test_the_stderr_filter_takes_only_jaxs_own_fatal_line_for_a_lost_peer():
    """Pass 15, #34: a warning that quoted JAX's fatal phrase (a --workdir so named, in the lock
    take-over warning) became a false "another process ... stopped" line, and the rest of that
    process's stderr was dropped. Only a native log line with the phrase is the abort."""
    from alexnet_jax.core import stderr_filter

    quoted = b"warning: Taking over the lock of w/" + stderr_filter.FATAL + b": gone.\nlater\n"
    assert _filtered(quoted) == quoted
    assert _filtered(quoted + _COORDINATOR_GONE) == quoted + b"error: lost (JAX).\n"


def test_a_flagfile_that_is_not_utf8_text_is_one_line(tmp_path):
    """Pass 15, #41: a flagfile saved as UTF-16 (bytes ff fe ...) ended main.py, predict, export
    and figures in absl's UnicodeDecodeError traceback; also when another flagfile names it."""
    bad = tmp_path / "bad.flags"
    bad.write_bytes(b"\xff\xfe--config.seed=1\n")
    (tmp_path / "outer.flags").write_text(f"--workdir=w\n--flagfile={bad}\n")
    for flagfile in (bad, tmp_path / "outer.flags"):
        with pytest.raises(UserError) as refused:
            errors.refuse_circular_flagfiles(["main.py", f"--flagfile={flagfile}"])
        assert str(refused.value) == (
            f"--flagfile={bad} is not UTF-8 text (invalid start byte at byte 0; saved as UTF-16, "
            "or not a text file): save it as UTF-8, one --flag=value per line."
        )


_SHORT_WRITES = """
import resource, signal, sys, numpy as np
sys.path.insert(0, {repo!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
from alexnet_jax.core import errors
from alexnet_jax.data import image_store, input_pipeline
from alexnet_jax.core.errors import DataError
squares = np.zeros((4, 256, 256, 3), np.uint8)
chunks = iter([(squares, np.zeros(4, np.int32), np.zeros((4, 2), np.uint32))])
try:
    image_store.write("store", chunks, "train", 256)
except DataError as e:
    print(e)
input_pipeline.mean_image_path = lambda config: "mean/m.npy"
input_pipeline.compute_mean_image = lambda config, source: np.zeros((256, 256, 3), np.float32)
try:
    input_pipeline.build_mean_image(None, None)
except DataError as e:
    print(e)
"""


def test_a_short_write_of_the_image_store_or_the_mean_image_is_one_line(tmp_path):
    """Pass 15, #49 and #50: the image store and the mean image written under `ulimit -f` (as on a
    full disk) ended in tracebacks: NumPy's short write is `OSError: 196608 requested and 25568
    written`, with no errno, which no storage check knew. The mean image's temporary file was
    left behind."""
    (tmp_path / "store").mkdir()
    (tmp_path / "mean").mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", _SHORT_WRITES.format(repo=REPO)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    limit = "(a full disk, or over the file-size limit, ulimit -f)"

    assert re.sub(r"only \d+ of", "only N of", proc.stdout).splitlines() == [
        f"Writing the image store in 'store' failed: only N of 786432 bytes were written "
        f"{limit}; the partial store was removed. Fix that, or point --config.image_store_dir "
        "at another disk, then run again.",
        "Computing the training set's mean image once, into mean/m.npy.",
        f"Writing the mean image mean/m.npy failed: only N of 196608 bytes were written "
        f"{limit}. Fix that, or set --config.data_dir to another disk, then run again.",
    ]
    assert os.listdir(tmp_path / "store") == []
    assert os.listdir(tmp_path / "mean") == [".build.lock"] or os.listdir(tmp_path / "mean") == []


def test_a_negative_count_of_corrupt_miniature_files_is_refused():
    """Pass 15, #63: --config.miniature_corrupt_files=-1 passed validation and `--mode=prepare`
    ended in an IndexError traceback inside the archive's writer."""
    config = default.get_config()
    config.miniature_corrupt_files = -1
    with pytest.raises(ConfigError, match=r"num_corrupt must be >= 0, got -1"):
        config_lib.validate_config(config)


def test_a_learning_rate_that_is_zero_in_float32_is_refused():
    """Pass 15, #16: --config.learning_rate=1e-46 trained with a learning rate of exactly 0 in
    float32 (the step lines said `lr 0`, the banner `lr 1e-46`): no update, and no word."""
    config = default.get_config()
    for rate in (1e-46, 1e-39):
        config.learning_rate = rate
        with pytest.raises(ConfigError, match=r"at least 1.18e-38 \(smaller ones are 0 in float32"):
            config_lib.validate_config(config)
    config.learning_rate = 1e-30
    config_lib.validate_config(config)


def test_the_benchmark_flag_checks_refuse_what_measures_nothing():
    """Pass 15, #65-#72: the benchmarks' list flags took an empty value (nothing measured, exit
    0), a word in a list of batch sizes (a ValueError traceback mid-run), a variant the script
    cannot build, a negative peak (a negative MFU) and an unknown augment_on (rows labelled with
    it). benchmarks/common.py's validators refuse each when the flags are parsed."""
    from absl import flags

    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import common

    values = flags.FlagValues()
    sizes = common.positive_ints(flags.DEFINE_list("sizes", ["1"], "", flag_values=values))
    kinds = common.one_or_more_of(
        flags.DEFINE_list("kinds", ["a"], "", flag_values=values), ("a", "b")
    )
    values(["x", "--sizes=8,16", "--kinds=b,a"])
    assert (sizes.value, kinds.value) == (["8", "16"], ["b", "a"])
    for bad in ("--sizes=2,abc", "--sizes=0", "--sizes=", "--kinds=", "--kinds=a,c"):
        with pytest.raises(flags.IllegalFlagValueError):
            values(["x", bad])
    assert "cifar4" in common.variants()


_LOOP_STORE = """
import sys, types
sys.argv = ["accelerator.py"]
sys.path.insert(0, {repo!r} + "/benchmarks")
import accelerator
from alexnet_jax.data import miniature
from configs import default
case = accelerator.Case("paper", "bfloat16", 512)
settings = types.SimpleNamespace(store_dir="s", smoke=False)
config = accelerator._store_config(default.get_config(), case, settings)
miniature.MiniatureSpec.from_config(config).validate()
print(config.miniature_val_per_class)
"""


def test_the_accelerator_benchmarks_store_loop_runs_at_its_default_batch():
    """Pass 15, #69: at the default --loop_batch_size=512 the store loop asked for 128
    validation images per class, over the 50 a miniature archive has (as ImageNet): the README's
    one-command GPU benchmark could never measure that cell."""
    proc = subprocess.run(
        [sys.executable, "-c", _LOOP_STORE.format(repo=REPO)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": REPO, "XLA_FLAGS": ""},
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (0, "50\n"), proc.stderr[-3000:]


def test_figure1_refuses_an_empty_arm_name(capsys):
    """Pass 15, #74: `figure1 --arms=` said the sweep `has no logged run of arm(s) : Fix what
    stopped them`, naming neither the flag nor its empty value."""
    from alexnet_jax.tools import figure1

    with pytest.raises(SystemExit) as stopped:
        figure1.main(["--sweep_dir=s", "--arms=relu,"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "error: argument --arms: the sweep's arm names, comma-separated (e.g. relu,tanh); got "
        "'relu,'. See --help.\n"
    )


def test_an_evaluation_stopped_by_sigterm_or_sighup_is_one_line_and_releases_the_lock(tmp_path):
    """Pass 15, #45: SIGTERM or SIGHUP to `--mode=eval` ended it with exit code 143 / 129 and no
    word, and left its .lock behind (the next command warned of a holder that is gone). Now one
    `terminated:` line, and the lock released as the evaluation unwinds."""
    import signal
    import time

    flags = (f"--config={REPO}/configs/figure1.py", "--config.dataset=synthetic",
             "--config.normalization=mean_std", "--config.batch_size=8", "--workdir=w",
             "--config.synthetic_train_examples=64", "--config.synthetic_eval_examples=30000",
             "--config.eval_batch_size=500")  # fmt: skip
    trained = _main_py(tmp_path, *flags, "--config.num_train_steps=1", env={"XLA_FLAGS": ""})
    assert trained.returncode == 0, trained.stderr[-3000:]
    proc = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "main.py"), *flags, "--mode=eval"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": REPO, "XLA_FLAGS": ""},
    )  # fmt: skip
    while not os.path.exists(tmp_path / "w" / rundir.LOCK_FILE) and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(1)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 129, err[-3000:]
    assert err.splitlines() == [f"terminated: {errors.SIGTERM.replace('SIGTERM', 'SIGHUP')}"]
    assert not os.path.exists(tmp_path / "w" / rundir.LOCK_FILE)


# ---- Hostile pass 16 (docs/RELIABILITY.md) ---------------------------------------------------


_NOT_UTF8_CWD = """
import os, sys
sys.path.insert(0, {repo!r})
from alexnet_jax.core import errors, runtime
try:
    errors.refuse_a_path_not_utf8("w", "--workdir")
except errors.UserError as e:
    print(ascii(str(e)))
errors.refuse_a_path_not_utf8({absolute!r}, "--workdir")  # an absolute UTF-8 path
print(runtime.enable_compilation_cache(os.getcwd() + "/cache"), os.path.exists("cache"))
"""


def test_paths_not_utf8_once_made_absolute_are_one_line(tmp_path):
    """Pass 16, #81, #82, #86: a relative --workdir inside a current directory whose name is not
    UTF-8 trained, then failed in 480 lines of Orbax tracebacks at the save (`--mode=eval` blamed
    an intact checkpoint); a HOME (the compilation cache's folder) so named was a 66-line XLA
    TypeError. The first is refused in one line; the second only costs the cache, with a word.
    (In a process of its own: pytest-xdist cannot send a report holding such a path.)"""
    odd = os.path.join(os.fsencode(tmp_path), b"D\xff")
    os.mkdir(odd)
    script = _NOT_UTF8_CWD.format(repo=REPO, absolute=str(tmp_path / "w"))
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=odd, capture_output=True, timeout=120,
        env={**os.environ, "XLA_FLAGS": "", "PYTHONIOENCODING": "utf-8:backslashreplace"},
    )  # fmt: skip
    out, err = proc.stdout.decode("ascii"), proc.stderr.decode("ascii", "replace")
    assert proc.returncode == 0, err[-3000:]
    refused, cached = out.splitlines()
    assert refused.startswith('"--workdir=w lies in the current directory ')
    assert "whose name holds bytes that are not UTF-8" in refused
    assert cached == "None False"
    assert "(its path is not UTF-8); every run compiles afresh" in err


def test_compare_refuses_a_run_inside_its_folder_whose_name_is_not_utf8(tmp_path):
    """Pass 16, #85: compare of a folder holding a run named `r\\xff` (the folder's own name is
    UTF-8) ended in matplotlib's `TypeError: set_text()` traceback."""
    from alexnet_jax.tools import compare
    from tests.conftest import write_tiny_run

    workdir = write_tiny_run(str(tmp_path / "r"))  # (Orbax cannot write it under that name)
    line = {"step": 1, "split": "train", "loss": 1.0, "top1_error": 0.5, "epoch": 0.1}
    with open(rundir.metrics_path(workdir), "w") as f:
        f.write(json.dumps(line) + "\n")
    os.rename(tmp_path / "r", os.path.join(os.fsencode(tmp_path), b"r\xff"))
    with pytest.raises(UserError, match=r"the run folder .*r\\udcff/run' has a path that is not"):
        compare.collect([str(tmp_path)])


def test_a_record_file_linked_to_another_runs_is_refused(tmp_path):
    """Pass 16, #78: run B, whose config_history.jsonl was a link to run A's, resumed and wrote
    its entries into A's history; A was then refused as "config.json ... edited by hand". A link
    to another run's record is refused, naming that run; a link to a file of its own is not."""
    for run in ("A", "B"):
        (tmp_path / run).mkdir()
        (tmp_path / run / rundir.CONFIG_FILE).write_text("{}")
        (tmp_path / run / rundir.HISTORY_FILE).write_text("")
    (tmp_path / "B" / rundir.HISTORY_FILE).unlink()
    (tmp_path / "B" / rundir.HISTORY_FILE).symlink_to(tmp_path / "A" / rundir.HISTORY_FILE)
    with pytest.raises(DataError, match=r"is a link to the config_history.jsonl of the run in"):
        rundir.check_is_directory(str(tmp_path / "B"))
    (tmp_path / "A" / rundir.METRICS_FILE).write_text("")
    (tmp_path / "A" / "mine.jsonl").write_text("")
    (tmp_path / "A" / rundir.METRICS_FILE).unlink()
    (tmp_path / "A" / rundir.METRICS_FILE).symlink_to(tmp_path / "A" / "mine.jsonl")
    rundir.check_is_directory(str(tmp_path / "A"))


@pytest.mark.parametrize(
    ("field", "value"), [("batch_size", 16), ("eval_split", "train"), ("eval_crops", 10)]
)
def test_an_allowed_change_of_how_a_run_counts_or_evaluates_is_refused(tmp_path, field, value):
    """Pass 16, #11 and #17: --allow_config_change --config.batch_size=16 (from 8) on a resume
    logged epochs the run had not trained (0.5 for 0.375) and ended short of num_epochs; a
    changed eval_split wrote training-split error into eval rows that record no split. A run with
    checkpoints cannot change them; a run without any still can."""
    from tests.conftest import write_tiny_run

    workdir = write_tiny_run(str(tmp_path / "r"))
    config = config_lib.load_config(workdir)
    config[field] = value
    with pytest.raises(ConfigError, match=rf"cannot continue the run in .* with {field}: "):
        rundir.check_resume(config, workdir, allow_change=True)
    for step in rundir.saved_steps(workdir):
        os.rename(os.path.join(rundir.checkpoint_dir(workdir), str(step)), tmp_path / "aside")
    assert [c[0] for c in rundir.check_resume(config, workdir, allow_change=True)] == [field]


@pytest.mark.parametrize(
    ("override", "named"),
    [("--config.nonexistent=1", "'nonexistent'"),
     ("--config.param_groups.nope.learning_rate=1", "'param_groups.nope.learning_rate'")],
)  # fmt: skip
def test_a_misspelled_field_with_an_explicit_config_names_the_field(tmp_path, override, named):
    """Pass 16, #62, #63: with any explicit --config, a misspelled --config.FIELD was reported as
    `--config could not be loaded (AttributeError: "'nonexistent'"). It must be a Python file
    with a get_config() function`, blaming a config file that was fine."""
    proc = _main_py(tmp_path, f"--config={REPO}/configs/figure1.py", override, "--workdir=w")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [
        f"error: no config field {named} (every field is listed, with a comment, in "
        "configs/default.py)"
    ]


def test_a_finished_runs_remedy_to_train_longer_names_the_field_that_sets_its_length():
    """Pass 16, #18: a finished run of num_train_steps=4 rerun with --config.num_epochs=100 said
    "Nothing to do ... to train longer raise --config.num_epochs", which had just been done and
    cannot help while num_train_steps (> 0) sets the length."""
    from alexnet_jax.runs import report

    record = {"step": 4, "top1_error": 0.5, "loss": 1.0}
    by_steps = report.already_finished("w", 4, record, None, by_steps=True)
    assert by_steps.endswith("raise --config.num_train_steps (now 4; it overrides num_epochs).")
    assert report.already_finished("w", 4, record, None).endswith(
        "raise --config.num_epochs (or set num_train_steps)."
    )


def test_the_best_evaluation_of_a_summary_is_never_a_nan_row(tmp_path):
    """Pass 16, #75: with an eval row of NaN error in metrics.jsonl (a run stopped by a NaN
    evaluation writes one; here edited in), the summary said `best eval: top-1 err nan% (step
    4)`: NaN compares false with everything, so min() kept it. The best is among finite rows."""
    from alexnet_jax.runs import report

    rows = [{"step": 4, "split": "eval", "loss": float("inf"), "top1_error": float("nan")},
            {"step": 8, "split": "eval", "loss": 2.3, "top1_error": 0.875}]  # fmt: skip
    (tmp_path / rundir.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = report.summary(str(tmp_path), 4, 8, 1.0, 8)
    assert "best eval: top-1 err 87.50% (step 8)" in text, text


def test_figure1_names_the_arms_of_a_sweep_that_has_no_such_arm(tmp_path):
    """Pass 16, #65: after the sweep file renamed arm relu to relu_b and ran again, figure1 (its
    default --arms=relu,tanh) said the sweep `has no logged run of arm(s) relu: Fix what stopped
    them`, though nothing had stopped: the sweep has no arm relu any more."""
    from alexnet_jax.tools import figure1

    sweep_dir = str(tmp_path / "S")
    runs = [{"name": a, "arm": a, "seed": None, "workdir": a, "log": f"logs/{a}.log",
             "outcome": {"status": "finished"}} for a in ("relu_b", "tanh")]  # fmt: skip
    rundir.write_sweep_plan(sweep_dir, {"config": "c.py", "arms": {"relu_b": {}, "tanh": {}},
                                        "runs": runs})  # fmt: skip
    assert figure1._missing_remedy(sweep_dir, ["relu"]) == (
        "its sweep has no arm relu (its arms: relu_b, tanh): choose --arms from them."
    )


# ---- Hostile pass 17 (docs/RELIABILITY.md) ---------------------------------------------------


def test_a_finished_plateau_run_extended_resumes_as_the_uninterrupted_run(tmp_path):
    """Pass 17, #2: the final evaluation's plateau decision was never made, so the final
    checkpoint lacked it: a finished plateau run extended from 4 to 8 steps kept lr 0.01 at step
    5 where the uninterrupted 8-step run had dropped it to 0.001 after its step-4 evaluation, and
    every later row differed (exit 0, no word)."""
    from alexnet_jax.train import loop
    from configs import figure1 as figure1_config

    def run(workdir: str, steps: int) -> list[dict]:
        config = figure1_config.get_config()
        config.update_from_flattened_dict({
            "dataset": "synthetic", "normalization": "mean_std", "batch_size": 8,
            "eval_batch_size": 8, "synthetic_train_examples": 64, "synthetic_eval_examples": 16,
            "schedule": "plateau", "plateau_patience": 1, "eval_every_steps": 2,
            "log_every_steps": 1, "checkpoint_every_steps": 2, "learning_rate": 0.01,
            "num_train_steps": steps,
        })  # fmt: skip
        config.param_groups = {}
        loop.train_and_evaluate(config, str(tmp_path / workdir))
        return rundir.read_metrics(str(tmp_path / workdir))

    def rates(rows):
        return [(r["step"], r["learning_rate"]) for r in rows if r["split"] == "train"]

    reference = run("ref", 8)
    run("res", 4)
    extended = run("res", 8)
    assert rates(extended) == rates(reference)
    assert [r["loss"] for r in extended if r["split"] == "train"] == [
        r["loss"] for r in reference if r["split"] == "train"
    ]


def test_a_backend_matplotlib_does_not_know_is_dropped_with_a_word():
    """Pass 17, #59: MPLBACKEND=bogus made matplotlib's import raise, a traceback from main.py,
    compare and figures, which draw on canvases of their own and need no backend."""
    script = "import alexnet_jax\nfrom matplotlib.figure import Figure\nprint(Figure().dpi > 0)\n"
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "MPLBACKEND": "bogus"},
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (0, "True\n"), proc.stderr[-3000:]
    assert proc.stderr == (
        "warning: MPLBACKEND='bogus' is not a backend matplotlib knows: ignored (the figures are "
        "drawn without one).\n"
    )


def test_lines_a_stream_cannot_encode_are_escaped_not_logging_errors():
    """Pass 17, #64: with PYTHONIOENCODING=ascii, a workdir named `Eü` made every line naming it
    a `--- Logging error --- ... UnicodeEncodeError` (116 lines; compare and figures ended in a
    traceback after writing their files). Such characters are escaped, as Python's stderr does."""
    import io

    from alexnet_jax.core import console

    stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    console._write_to(stream, "run: /w/Eü\n")
    assert stream.buffer.getvalue() == b"run: /w/E\\xfc\n"


def test_a_streak_of_skipped_steps_goes_on_across_a_resume(tmp_path):
    """Pass 17, #53: the count of NaN/Inf steps skipped in a row restarted at 0 on resume: with
    steps 2-3 skipped at the end of a 3-step run, the run extended to 12 stopped at step 6
    ("Steps 4-6"), the uninterrupted one at step 4 ("Steps 2-4"). The checkpoint's data record
    carries the streak, so both stop at step 4 with the same message."""
    from alexnet_jax.train import loop
    from configs import figure1 as figure1_config

    def run(workdir: str, steps: int) -> None:
        config = figure1_config.get_config()
        config.update_from_flattened_dict({
            "dataset": "synthetic", "normalization": "mean_std", "batch_size": 8,
            "eval_batch_size": 8, "synthetic_train_examples": 64, "synthetic_eval_examples": 16,
            "skip_nonfinite_steps": True, "max_consecutive_skipped_steps": 2,
            "learning_rate": 1e8, "log_every_steps": 1, "checkpoint_every_steps": 1,
            "num_train_steps": steps,
        })  # fmt: skip
        config.param_groups = {}
        loop.train_and_evaluate(config, str(tmp_path / workdir))

    with pytest.raises(errors.NonFiniteError, match=r"^Steps 2-4: 3 steps in a row"):
        run("ref", 12)
    run("res", 3)  # steps 2 and 3 skipped, within the limit: the run finishes
    with pytest.raises(errors.NonFiniteError, match=r"^Steps 2-4: 3 steps in a row"):
        run("res", 12)


def test_an_empty_home_is_taken_as_unset_with_a_word():
    """Pass 17, #20: with `HOME=` (set, empty) Python's expanduser made `~` into `/`: the
    compilation cache went to `/.cache` without a word. An empty HOME is dropped at start with
    one warning, and `~` is the user's home in the password database, as with HOME unset."""
    import pwd

    script = (
        "import os\n"
        "from alexnet_jax.core import errors\n"
        "errors.check_start()\n"
        "errors.check_start()  # (main.py checks twice: one warning)\n"
        "from alexnet_jax.core import runtime\n"
        "print(os.path.expanduser(runtime.DEFAULT_CACHE_DIR))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "HOME": ""},
    )  # fmt: skip
    home = pwd.getpwuid(os.getuid()).pw_dir
    assert (proc.returncode, proc.stdout) == (0, f"{home}/.cache/alexnet_jax/jax_cache\n")
    said = f"warning: HOME is empty: ~ is taken as {home}, the user's home directory.\n"
    assert proc.stderr == said


# ---- Hostile pass 18 (docs/RELIABILITY.md) ---------------------------------------------------


def test_a_new_run_in_a_folder_of_runs_is_refused(tmp_path):
    """Pass 18, #55: a new run in `P` holding runs `P/a` and `P/b` was accepted; compare of `P`
    then showed the new run alone. It is refused in one line; a run there already resumes."""
    folder = tmp_path / "P"
    for name in ("a", "b"):
        rundir.save_config(default.get_config(), str(folder / name))
    refused = pytest.raises(UserError, match=r"holds runs in folders of its own \(a, b\)")
    with refused, rundir.exclusive(str(folder)):
        pass
    assert sorted(os.listdir(folder)) == ["a", "b"]  # nothing left behind
    rundir.save_config(default.get_config(), str(folder))  # a run whose folder holds runs
    with rundir.exclusive(str(folder)):
        pass


# ---- Hostile pass 19 (docs/RELIABILITY.md) ---------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("JAX_DEFAULT_PRNG_IMPL", "rbg", "sets jax_default_prng_impl='rbg', under which"),
        ("JAX_THREEFRY_PARTITIONABLE", "0", "sets jax_threefry_partitionable=False, under"),
        ("JAX_TRANSFER_GUARD", "disallow", "sets jax_transfer_guard='disallow', under which"),
        ("JAX_NUMPY_RANK_PROMOTION", "raise", "sets jax_numpy_rank_promotion='raise', under"),
        ("JAX_DEFAULT_DEVICE", "bogus", "JAX refused the environment at its import (jax.default"),
        ("JAX_DISTRIBUTED_TIMEOUT_S", "1e20", "at most 604800 (a week)"),
    ],
)
def test_a_jax_setting_this_project_cannot_run_under_is_one_line(tmp_path, variable, value, said):
    """Pass 19, #16, #17: a resume under JAX_DEFAULT_PRNG_IMPL=rbg could not restore its key
    ("no checkpoint can be read", a remedy that failed) and JAX_THREEFRY_PARTITIONABLE=0 went on
    with other random numbers, no word; #40: JAX_TRANSFER_GUARD=disallow,
    JAX_NUMPY_RANK_PROMOTION=raise and JAX_DEFAULT_DEVICE=bogus were 31-61-line tracebacks;
    #33: JAX_DISTRIBUTED_TIMEOUT_S=1e20 an OverflowError in each process. One line each."""
    flags = ["--workdir=w", "--num_processes=2", "--process_id=0", "--coordinator_address=h:1"]
    proc = _main_py(tmp_path, *flags, env={"XLA_FLAGS": "", variable: value})
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: ")
    assert said in line
    assert not os.path.exists(tmp_path / "w")


def test_a_sweep_file_that_is_not_python_or_names_an_arm_by_a_number_is_one_line(tmp_path):
    """Pass 19, #19: a sweep file written as .json (or .yaml, or a .py copied to a name without
    the extension) was an AttributeError traceback; #20: an arm named 1 or None a TypeError."""
    spec = tmp_path / "sweep.json"
    spec.write_text('{"config": "configs/figure1.py", "arms": {"a": {}}}')
    with pytest.raises(UserError, match=r"sweep.json: a sweep file is a Python file \(\.py\)"):
        sweep.load_sweep_file(str(spec))
    spec = tmp_path / "sweep.py"
    for name in ("1", "None"):
        spec.write_text(f'def get_sweep():\n    return {{"arms": {{{name}: {{}}}}}}\n')
        with pytest.raises(UserError, match=rf"arm names must be strings, got {name}\."):
            sweep.load_sweep_file(str(spec))


def test_a_curves_file_that_cannot_be_written_is_a_warning_after_the_finish(
    tmp_path, monkeypatch, capsys
):
    """Pass 19, #38: a write-protected training_curves.png made a finished run end with an error
    whose advice ("rerun: training resumes") found nothing to do, the PNG stale. The run is
    finished and recorded; the curves' failure is one warning naming another way to draw them."""
    import errno

    from alexnet_jax.runs import plots
    from alexnet_jax.runs.run import Run

    def refused(fig, path):
        raise PermissionError(errno.EPERM, "Operation not permitted", path)

    monkeypatch.setattr(plots, "save_figure", refused)
    (tmp_path / rundir.METRICS_FILE).write_text('{"step": 12, "split": "train", "loss": 1.0}\n')
    Run(str(tmp_path), default.get_config()).finish(12)
    assert rundir.finished_step(str(tmp_path)) == 12
    (warning,) = _warnings(capsys)
    assert "The training curves could not be written (Operation not permitted" in warning
    assert f"python -m alexnet_jax.tools.compare {tmp_path}` draws them too." in warning


def test_a_failed_events_write_names_the_events_not_the_metrics(tmp_path, monkeypatch):
    """Pass 19, #10: under `ulimit -f` the TensorBoard events file met the limit first, and the
    error said "Writing the train metrics of step 766" (metrics.jsonl was well under it)."""
    import errno

    writer = metrics_io.MetricsWriter(str(tmp_path), start_step=0)

    def too_large(*_):
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(writer.summary, "write_scalars", too_large)
    with pytest.raises(DataError, match=r"^Writing the TensorBoard events of step 4 in "):
        writer.write_eval(4, {"loss": 1.0, "top1_error": 0.5, "num_examples": 8})
    assert not (tmp_path / rundir.METRICS_FILE).exists()  # nothing half-recorded
    writer.close()


def test_an_evaluation_is_not_refused_for_a_batch_larger_than_the_training_set():
    """Pass 19, #35: `--mode=eval --config.torch_weights=...` with configs/imagenet_torchvision.py
    (batch 256) on a small dataset was refused: "batch_size=256 exceeds the 64 training
    examples", a rule about training; an evaluation trains nothing."""
    from alexnet_jax.train import loop
    from configs import figure1 as figure1_config

    config = figure1_config.get_config()
    config.update_from_flattened_dict({
        "dataset": "synthetic", "normalization": "mean_std", "batch_size": 16,
        "eval_batch_size": 8, "synthetic_train_examples": 8, "synthetic_eval_examples": 8,
    })  # fmt: skip
    with pytest.raises(ConfigError, match=r"batch_size=16 exceeds the 8 training examples"):
        loop._build(config)
    exp, _ = loop._build(config, training=False)
    assert exp.steps_per_epoch == 1


# ---- Hostile pass 20 (docs/RELIABILITY.md) ---------------------------------------------------


@pytest.mark.parametrize("record", [rundir.CONFIG_FILE, rundir.HISTORY_FILE])
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_run_record_that_is_a_fifo_or_a_device_is_one_line_not_a_hang(tmp_path, record, kind):
    """Pass 20, #30-#33: config.json or config_history.jsonl made a FIFO hung compare,
    `--mode=eval`, `--config=configs/run.py:<run>`, a sweep's rerun and figure1 (the open waits
    for a writer); linked to /dev/zero, each read until the memory ran out ("out of memory ...
    lower config.batch_size"). Every record is opened as a regular file or refused in one line."""
    from tests.conftest import write_tiny_run

    workdir = write_tiny_run(str(tmp_path))
    with open(rundir.metrics_path(workdir), "w") as f:  # (compare reads a run that logged)
        f.write(json.dumps({"step": 1, "split": "train", "loss": 2.3}) + "\n")
    path = os.path.join(workdir, record)
    os.remove(path)
    os.mkfifo(path) if kind == "fifo" else os.symlink("/dev/zero", path)
    with pytest.raises(DataError, match=rf"{re.escape(path)} is not a regular file \(a FIFO"):
        rundir.open_record(path)  # (what every record's reader opens it with)
    if kind != "fifo":  # (a reader that regressed would fill the memory: not run)
        return
    compare = [sys.executable, "-m", "alexnet_jax.tools.compare", workdir, f"--out={tmp_path}/c"]
    evaluate = [
        sys.executable,
        os.path.join(REPO, "main.py"),
        f"--workdir={workdir}",
        "--mode=eval",
    ]
    for command in (compare, evaluate):
        proc = subprocess.run(
            command, cwd=REPO, capture_output=True, text=True, timeout=60,
            env={**os.environ, "XLA_FLAGS": ""},
        )  # fmt: skip
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        if command is compare and proc.returncode == 0:  # (a record it does not need here)
            continue
        assert proc.returncode != 0, proc.stdout + proc.stderr
        errors_said = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors_said) == 1, proc.stderr[-3000:]
        assert f"{path} is not a regular file" in errors_said[0]


def test_epochs_past_the_update_counts_range_are_schedules_not_overflow_errors():
    """Pass 20, #50, #51: warmup_epochs=1e30 and lr_drop_epochs=(1e18,) passed validation, then
    the first step was a 63-line OverflowError (a Python int past int64 in the jitted
    schedule). A drop past the int32 update count is never reached; a warm-up of 1e30 epochs
    ramps as slowly as it says. #52: warmup_epochs=1e39 said "must be a number >= 0"."""
    from alexnet_jax.train import optim

    config = default.get_config()
    config.update(schedule="step", lr_drop_epochs=(1e18,), learning_rate=0.01, warmup_epochs=0.0)
    step = jax.jit(optim.make_schedule(config, steps_per_epoch=32))
    assert float(step(0)) == pytest.approx(0.01)
    assert float(step(2**31 - 2)) == pytest.approx(0.01)  # the last count before the drop
    config.update(schedule="constant", warmup_epochs=1e30)
    warm = jax.jit(optim.make_schedule(config, steps_per_epoch=32))
    assert 0 < float(warm(0)) == pytest.approx(0.01 / 3.2e31, rel=1e-5)
    config.warmup_epochs = 1e39
    with pytest.raises(ConfigError, match=r"warmup_epochs must be a number >= 0 and finite in"):
        config_lib.validate_config(config)


@pytest.mark.parametrize(
    ("signum", "code", "said"), [(2, 130, "interrupted: "), (15, 143, "terminated: ")]
)
def test_a_benchmark_stopped_by_ctrl_c_or_sigterm_is_one_line_not_a_crash(signum, code, said):
    """Pass 20, #73: Ctrl-C to benchmarks/train_step.py during its compile printed its line, then
    "Fatal Python error: Segmentation fault" (exit 139, 4 of 6 tries; compare_torch.py 2 of 2);
    #75: a SIGTERM ended it with exit 143 and no line at all. The benchmarks now stop as the
    tools do (errors.exit_on_ctrl_c): one line, 130 or 143, before Python's teardown."""
    command = [sys.executable, "benchmarks/train_step.py", "--variant=one_tower", "--batch_size=8"]
    proc = subprocess.Popen(
        [*command, "--compile=none", "--repeats=50"], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "XLA_FLAGS": ""},
    )  # fmt: skip
    assert proc.stdout.readline().startswith("# ")  # its header: imports done, compiling next
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr[-3000:]
    assert stderr.splitlines()[-1:][0].startswith(said), stderr[-3000:]
    assert "Fatal Python error" not in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "alexnet_jax.tools.compare", "r", "--out=a", "--out=b"],
        ["-m", "alexnet_jax.tools.launch", "--num_processes=2", "--num_processes=3", "--", "x"],
        ["-m", "alexnet_jax.tools.predict", "--workdir=a", "--workdir=b", "x.png"],
        ["-m", "alexnet_jax.tools.export", "--workdir=a", "--to=b.npz", "--to=c.npz"],
        ["-m", "alexnet_jax.tools.figures", "--workdir=a", "--workdir=b"],
    ],
)
def test_a_tools_flag_given_twice_is_one_line(tmp_path, command):
    """Pass 20, #69, #70: predict, figures and export (absl) and compare, sweep, figure1 and
    launch (argparse) took the last of a flag given twice with no word (`launch
    --num_processes=2 --num_processes=3` ran 3), as main.py did before pass 18 #57."""
    proc = subprocess.run(
        [sys.executable, *command], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "XLA_FLAGS": "", "PYTHONPATH": REPO},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = proc.stderr.splitlines()
    flag = next(a for a in command[2:] if a.startswith("--") and a.endswith(("=b", "=3", "=c.npz")))
    assert line.startswith(f"error: {flag.split('=')[0]} is given twice: give it once."), line


@pytest.mark.parametrize("tool", ["compare", "sweep", "figure1", "launch"])
def test_the_argparse_tools_run_under_python_oo(tool):
    """Pass 20, #71: `python -OO -m alexnet_jax.tools.compare` (sweep, figure1, launch), any
    arguments, was an AttributeError traceback: -OO drops the docstring their --help is
    described by."""
    proc = subprocess.run(
        [sys.executable, "-OO", "-m", f"alexnet_jax.tools.{tool}", "--help"], cwd=REPO,
        capture_output=True, text=True, timeout=60, env={**os.environ, "XLA_FLAGS": ""},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("usage: python -m alexnet_jax.tools.")


def test_a_resume_under_other_xla_flags_is_recorded_and_warned(tmp_path, monkeypatch, capsys):
    """Pass 20, #15: a resume with --noproject_xla_flags (XLA's defaults) went on without a word:
    its steps differed from the uninterrupted run's in the last bits (grad_norm 0.70761931 vs
    0.70761937), and nothing in the run said why. Each start records XLA_FLAGS in its history;
    a resume under others is warned about. Pass 21, #32, #33: the same flags reordered or
    respaced are no change."""
    config, workdir = tiny_config(str(tmp_path)), str(tmp_path / "run")
    starts = [
        "--xla_cpu_enable_fast_math=false --xla_cpu_multi_thread_eigen=true",
        "  --xla_cpu_multi_thread_eigen=true   --xla_cpu_enable_fast_math=false ",  # the same
        "--xla_cpu_multi_thread_eigen --xla_cpu_enable_fast_math=false",  # (pass 22, #36)
        "",
    ]
    for step, flags in enumerate(starts):
        monkeypatch.setenv("XLA_FLAGS", flags)
        rundir.record_start(config, workdir, 4 * step, [])
    (warning,) = [w for w in _warnings(capsys) if "XLA_FLAGS is" in w]
    assert f"XLA_FLAGS is '', where the run's last start (step 8) had {starts[2]!r}" in warning
    assert [e["xla_flags"] for e in rundir.read_history(workdir)] == starts


def test_compare_leaves_out_timings_that_are_not_finite():
    """Pass 20, #27: a train row with `"images_per_sec": NaN, "step_time_ms": Infinity` (written
    by hand) made compare's table say `nan` images/s and `inf` train s, no word (pass 15 #75
    fixed the same for evaluations). A speed that is not finite is left out of the median; a
    step time that is not finite leaves the train time unknown ("-")."""
    from alexnet_jax.tools import compare

    rows = [
        {"step": 1, "split": "train", "loss": 2.0, "images_per_sec": float("nan"),
         "step_time_ms": float("inf")},
        {"step": 2, "split": "train", "loss": 1.9, "images_per_sec": 80.0, "step_time_ms": 100.0},
        {"step": 3, "split": "train", "loss": 1.8, "images_per_sec": 120.0, "step_time_ms": 100.0},
    ]  # fmt: skip
    values = compare.summarize_records(rows)
    assert values["images_per_sec"] == 100.0
    assert "train_seconds" not in values
    assert compare.summarize_records(rows[1:])["train_seconds"] == pytest.approx(0.3)


def test_matplotlibs_config_folder_warnings_do_not_reach_compare_s_console(tmp_path):
    """Pass 20, #76: with MPLCONFIGDIR a regular file, compare printed matplotlib's two lines
    ("mkdir -p failed ...", "Matplotlib created a temporary cache directory ...") where main.py,
    figures and predict stay silent; they have no bearing on the figures."""
    from tests.conftest import write_tiny_run

    workdir = write_tiny_run(str(tmp_path))
    with open(rundir.metrics_path(workdir), "w") as f:
        f.write(json.dumps({"step": 1, "split": "train", "loss": 2.3}) + "\n")
    (tmp_path / "a_file").write_text("x")
    proc = subprocess.run(
        [sys.executable, "-m", "alexnet_jax.tools.compare", workdir, f"--out={tmp_path}/c"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "MPLCONFIGDIR": str(tmp_path / "a_file"), "XLA_FLAGS": ""},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_a_workdir_that_goes_up_out_of_a_missing_folder_is_refused_before_making_it(tmp_path):
    """Pass 20, #42: `--workdir=scratch/nx/../W5`, nx missing, trained in W5 and left an empty
    scratch/nx behind (os.makedirs made it to go up out of it); refused runs left one too. The
    path is refused before any folder is made; one whose folders exist is taken as it is."""
    with pytest.raises(UserError, match=r"goes up \(\.\.\) out of .*/nx, which does not exist"):
        rundir.check_is_directory(str(tmp_path / "nx" / ".." / "w"))
    assert os.listdir(tmp_path) == []
    (tmp_path / "there").mkdir()
    rundir.check_is_directory(str(tmp_path / "there" / ".." / "w"))


def test_a_signal_after_the_exits_line_ends_with_that_line_and_its_code():
    """Pass 20, #12: a SIGTERM 0.1 s after a Ctrl-C (the run saved and printed `interrupted:
    saved step 7 ...`) printed a second line, `terminated: ...`, and exit code 143 for 130 (2 of
    4 tries). Once the exit's line is out, a stop signal ends the process at once with that
    line's code and no line of its own."""
    script = (
        "import os, signal, sys, time\n"
        "from alexnet_jax.core import errors\n"
        "errors.exit_on_ctrl_c(sigterm=True)\n"
        "try:\n"
        "    with errors.reported_as_exit():\n"
        "        raise errors.Interrupted('saved step 7 in w; rerun the same command to resume.')\n"
        "finally:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)  # (during the unwinding after the line)\n"
        "    time.sleep(5)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.splitlines() == [
        "interrupted: saved step 7 in w; rerun the same command to resume."
    ]


def test_a_hard_linked_copy_of_a_run_writes_no_line_into_the_original(tmp_path):
    """Pass 21, #57: a `cp -al` copy of a finished run (its files hard links to the original's,
    as snapshot backups make them), extended, appended its `resume` and `finished` lines to the
    original's config_history.jsonl (and would have to its metrics.jsonl), which then refused to
    resume or evaluate ("config.json is not the config the run recorded"). A record shared with
    another file is made the run's own before it is appended to."""
    original = tmp_path / "original"
    original.mkdir()
    history = original / rundir.HISTORY_FILE
    rundir.append_jsonl(str(history), {"step": 16, "event": "finished"})
    copy = tmp_path / "copy"
    copy.mkdir()
    os.link(history, copy / rundir.HISTORY_FILE)
    rundir.append_jsonl(str(copy / rundir.HISTORY_FILE), {"step": 20, "event": "finished"})
    assert rundir.read_jsonl(str(history)) == [{"step": 16, "event": "finished"}]
    assert [e["step"] for e in rundir.read_jsonl(str(copy / rundir.HISTORY_FILE))] == [16, 20]
    assert os.stat(history).st_nlink == 1


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("/nonexistent/config.json", "which does not exist"),
        ("config.json", "which leads back to itself"),
    ],
)
def test_a_config_json_linked_to_nothing_or_itself_is_named_as_such(tmp_path, target, why):
    """Pass 21, #55: config.json a link to a file that does not exist: `--mode=eval` said "holds
    no run (no config.json): train first", and training then "is not a file (a directory?)".
    Pass 22, #23-#24: a link to itself was an `OSError: [Errno 40] Too many levels of symbolic
    links` traceback, then "which does not exist". Both name the link, its target and why."""
    from tests.conftest import write_tiny_run

    workdir = write_tiny_run(str(tmp_path))
    os.remove(rundir.config_path(workdir))
    os.symlink(target, rundir.config_path(workdir))
    said = f"config.json is .*a link to {re.escape(target)}, {why}"
    with pytest.raises(DataError, match=said):
        rundir.read_config_dict(workdir)
    with pytest.raises(DataError, match=said):
        rundir.check_is_directory(workdir)


def test_compare_names_a_metrics_file_linked_to_itself(tmp_path):
    """Pass 22, #25: metrics.jsonl a link to itself: compare said "not found"."""
    from alexnet_jax.tools import compare
    from tests.conftest import write_tiny_run

    workdir = write_tiny_run(str(tmp_path))
    os.symlink("metrics.jsonl", rundir.metrics_path(workdir))
    with pytest.raises(DataError, match=r"metrics.jsonl is a link to metrics.jsonl, which leads"):
        compare.read_records(workdir)


def test_a_history_linked_to_nothing_is_named_not_taken_as_missing(tmp_path):
    """Pass 22, #26: config_history.jsonl a link to nothing was read as no history: eval blamed
    a deleted history, whose remedy (--allow_config_change) then failed on the link, and compare
    showed the finished run as unfinished. Every reader now names the link."""
    from tests.conftest import write_tiny_run

    workdir = write_tiny_run(str(tmp_path))
    history = os.path.join(workdir, rundir.HISTORY_FILE)
    os.remove(history)
    os.symlink("/nonexistent/history.jsonl", history)
    said = r"config_history.jsonl is a link to /nonexistent/history.jsonl, which does not exist"
    for read in (rundir.read_history, rundir.finished_step):
        with pytest.raises(DataError, match=said):
            read(workdir)


def test_a_workdir_linked_to_itself_is_not_told_to_make_that_folder(tmp_path):
    """Pass 22, #43: --workdir a link to itself: "which does not exist: make that folder", and
    the mkdir then failed. It is named as a loop, to be removed."""
    from alexnet_jax.core import errors

    link = tmp_path / "WL"
    os.symlink("WL", link)
    problem = errors.directory_creation_problem(str(link))
    loop = "which leads back to itself (a loop of links)"
    assert problem == f"is a link to WL, {loop}: remove the link"


# ---- Hostile pass 23 (docs/RELIABILITY.md) ---------------------------------------------------


def test_main_under_a_python_without_the_requirements_is_one_line():
    """Pass 23, #49: `/usr/bin/python3 main.py` (the virtualenv not activated) was a 5-line
    ModuleNotFoundError traceback; the tools said one line. `python -S` is such a python here."""
    proc = subprocess.run(
        [sys.executable, "-S", "main.py", "--workdir=/nonexistent"], cwd=REPO,
        capture_output=True, text=True, timeout=60, env={**os.environ, "XLA_FLAGS": ""},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: a library cannot be loaded (No module named 'absl')"), line


def test_the_tools_name_a_workdir_linked_to_itself(tmp_path):
    """Pass 23, #55: --workdir a link to itself: eval said "holds no run: train first", predict
    "config.json not found", compare "is not a directory"; training named the loop."""
    from alexnet_jax.tools import compare

    link = str(tmp_path / "WL")
    os.symlink("WL", link)
    loop = "is a link to WL, which leads back to itself"
    with pytest.raises(DataError, match=f"--workdir={link} {loop}"):
        rundir.read_config_dict(link)  # (eval, predict, export, figures read it first)
    with pytest.raises(DataError, match=f"{link} {loop}"):
        compare.collect([link])


def test_the_root_of_the_file_system_is_no_workdir():
    """Pass 23, #37: `--workdir=$UNSET/` wrote a whole run into / (as root)."""
    with pytest.raises(UserError, match=r"--workdir=/ is the file system's root"):
        rundir.check_is_directory("/")


@pytest.mark.parametrize("value", ["--config.", "--config.=5", "--config..seed=5"])
def test_a_config_flag_without_a_field_is_named_as_such(value):
    """Pass 23, #33: a stray `--config.` blamed the config file ("It must be a Python file
    with a get_config() function")."""
    proc = subprocess.run(
        [sys.executable, "main.py", "--config=configs/figure1.py", value, "--workdir=/nonexistent"],
        cwd=REPO, capture_output=True, text=True, timeout=60, env={**os.environ, "XLA_FLAGS": ""},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"error: {value} names no config field: --config.FIELD=VALUE"), line


def test_a_tools_interrupt_promises_no_resume():
    """Pass 23, #69: Ctrl-C to figures or predict said "rerun the same command to resume": they
    have nothing to resume. The line says what holds for every entry point."""
    for line in (errors.CTRL_C, errors.SIGTERM):
        assert "to resume)" not in line
        assert line.endswith("what was saved before is intact (a run resumes by the same command).")


def test_xla_flags_set_true_as_1_or_true_are_the_same_setting():
    """Pass 23, #70: `=1` after `=true` was warned about as an XLA_FLAGS change."""
    read = rundir._xla_settings
    assert read("--a=1 --b=0 --c") == read("--a=true --b=False --c=TRUE")
    assert read("--xla_dump_to=/tmp/A") != read("--xla_dump_to=/tmp/a")


# ---- Hostile pass 24 (docs/RELIABILITY.md) ---------------------------------------------------


def test_a_run_folder_moved_while_it_ran_is_one_message(tmp_path):
    """Pass 24, #52-#53: the run's folder moved (or deleted) while a checkpoint was written: 250
    to 825 lines of Orbax tracebacks; moved during an evaluation, the next save made the path
    again and the run wrote the rest of itself there, exit 0. The save says what happened."""
    workdir = tmp_path / "run"
    manager = checkpoint.checkpoint_manager(str(workdir), keep=2)
    tree = {"w": np.ones(3, np.float32)}
    checkpoint.save(manager, 1, tree, {"examples_consumed": 8})
    checkpoint.wait(manager)
    os.rename(workdir, tmp_path / "moved")
    said = f"the run's folder {workdir} was moved or deleted while it ran. Put the run's folder"
    with pytest.raises(DataError, match=re.escape(said)):
        checkpoint.save(manager, 2, tree, {"examples_consumed": 16})
    missing = FileNotFoundError(2, "No such file or directory", str(workdir / "metrics.jsonl"))
    line = str(errors.storage_error("the train metrics of step 2", str(workdir), missing))
    assert "the folder was moved or deleted while the run wrote into it. Put it back" in line


def test_compare_names_a_finished_run_whose_metrics_were_emptied(tmp_path, capsys):
    """Pass 24, #59: a finished run whose metrics.jsonl was emptied showed as "finished, no eval
    yet", no word: its records are lost."""
    from alexnet_jax.tools import compare
    from tests.conftest import write_tiny_run

    workdir = write_tiny_run(str(tmp_path))
    rundir.record_finished(workdir, 1)
    open(rundir.metrics_path(workdir), "w").close()
    (summary,) = compare.collect([workdir])
    assert summary.state == "finished, its metrics lost"
    (warning,) = [w for w in _warnings(capsys) if "holds no record" in w]
    assert "but the run finished at step 1 (config_history.jsonl)" in warning


# ---- Hostile pass 25 (docs/RELIABILITY.md) ---------------------------------------------------


def test_a_run_mean_image_that_is_no_numpy_file_is_named_without_numpys_advice(tmp_path):
    """Pass 25, #39: a run's mean_image.npy that is a text file quoted NumPy's "you can load it
    unsafely using the allow_pickle= keyword": advice to load a damaged file unsafely."""
    (tmp_path / rundir.MEAN_IMAGE_FILE).write_text("junk\n")
    with pytest.raises(DataError) as error:
        rundir.read_mean_image(str(tmp_path), 32, "/data/mean_images/x.npy")
    assert "mean_image.npy cannot be read (not a whole NumPy array file): " in str(error.value)
    assert "pickle" not in str(error.value)


def test_a_restart_after_a_start_that_kept_no_checkpoint_says_so_not_resume(tmp_path, capsys):
    """Pass 25, #24: a rerun of a run that kept no checkpoint (stopped or moved before its first
    save) printed "Config changes on resume: ..." and then "(new run)": it starts again at
    step 0. The line says the changes are since a start that kept no checkpoint."""
    config = tiny_config(str(tmp_path))
    workdir = str(tmp_path / "run")
    rundir.record_start(config, workdir, 0, [])
    config.num_train_steps = 3  # a resumable field
    rundir.record_start(config, workdir, 0, [])
    assert capsys.readouterr().out == (
        "Config changes since the last start, which kept no checkpoint: num_train_steps: 1 -> 3\n"
    )
    rundir.record_start(tiny_config(str(tmp_path)), workdir, 2, [])
    assert capsys.readouterr().out.startswith("Config changes on resume: num_train_steps: 3 -> 1")


def test_a_workdir_link_swapped_mid_run_takes_no_metrics_line_into_the_new_folder(tmp_path):
    """Pass 25, #16: a workdir that is a link, pointed at another folder while the run ran:
    4 metrics lines (and a temporary checkpoint) went into the new folder before the next save
    noticed. Every metrics line checks that the folder is still the one the run began in."""
    first, second, workdir = tmp_path / "a", tmp_path / "b", tmp_path / "run"
    first.mkdir(), second.mkdir()
    workdir.symlink_to(first)
    manager = checkpoint.checkpoint_manager(str(workdir), keep=2)  # pins the run's folder
    writer = metrics_io.MetricsWriter(str(workdir), 0, num_classes=4)
    writer.write_eval(1, {"loss": 1.0, "top1_error": 0.5, "top5_error": 0.0, "num_examples": 8})
    workdir.unlink()
    workdir.symlink_to(second)
    said = f"the run's folder {workdir} was moved or deleted while it ran. Put the run's folder"
    with pytest.raises(DataError, match=re.escape(said)):
        writer.write_eval(2, {"loss": 1.0, "top1_error": 0.5, "top5_error": 0.0, "num_examples": 8})
    assert os.listdir(second) == []
    assert len(rundir.read_metrics(str(first))) == 1
    manager.close()


def test_a_run_copy_of_its_mean_image_edited_after_its_start_is_refused(tmp_path):
    """Pass 23, #60 (the part left open): with the data's mean image gone, an edited run copy
    (still 0..255, the right shape) had nothing to be compared with, and predict named the
    wrong class at 100%. The start's history entry keeps the copy's digest, checked on read."""
    config = tiny_config(str(tmp_path), normalization="mean_image")
    workdir, source = str(tmp_path / "run"), str(tmp_path / "m.npy")
    mean = np.random.default_rng(0).uniform(0, 255, (72, 72, 3)).astype(np.float32)
    np.save(source, mean)
    os.makedirs(workdir)
    digest = rundir.save_mean_image(workdir, source)
    rundir.record_start(config, workdir, 0, [], mean_image_digest=digest)
    assert rundir.read_history(workdir)[-1][rundir.MEAN_IMAGE_DIGEST] == digest
    assert np.array_equal(rundir.read_mean_image(workdir, 64, source), mean)
    os.remove(source)  # the data gone: the run's copy alone
    np.save(os.path.join(workdir, rundir.MEAN_IMAGE_FILE), mean / 2)
    with pytest.raises(DataError, match=r"is not the copy the run kept at its start \(step 0\)"):
        rundir.read_mean_image(workdir, 64, source)


# ---- Hostile pass 26 (docs/RELIABILITY.md) ---------------------------------------------------


def test_a_runs_paths_are_recorded_absolute_and_normalized(tmp_path, monkeypatch):
    """Pass 26, #46, #47, #80: a relative image_folder or data_dir was recorded as typed, so an
    evaluation from another folder looked for the data there (and computed the mean image again
    into the current folder), and `x/../tfds/` was a data_dir change on resume. main.py makes
    the path fields absolute (a ~ expanded) before the run records them; "" stays "" (none)."""
    monkeypatch.chdir(tmp_path)
    config = default.get_config()
    config.image_folder, config.data_dir, config.torch_weights = "imgs", "x/../tfds/", ""
    config.miniature_dir = "~/mini"
    config_lib.absolute_paths(config)
    assert config.image_folder == str(tmp_path / "imgs")
    assert config.data_dir == str(tmp_path / "tfds")
    assert config.miniature_dir == os.path.join(os.path.expanduser("~"), "mini")
    assert config.torch_weights == ""


def test_a_data_dir_where_the_mean_image_cannot_be_written_is_named(tmp_path, monkeypatch):
    """Pass 26, #69: a read-only data_dir without the mean image: "could not write ...: training
    resumes from the last complete checkpoint", for an evaluation and a new run alike. The line
    names the folder and what to do; a read-only data_dir that holds the mean image serves."""
    from alexnet_jax.data import data_sources, input_pipeline

    blocked = tmp_path / "a_file"
    blocked.write_text("")
    path = str(blocked / "mean_images" / "m.npy")
    monkeypatch.setattr(input_pipeline, "mean_image_path", lambda config: path)
    with pytest.raises(DataError) as error:
        input_pipeline.build_mean_image(None, None)
    assert str(error.value).startswith(
        "The training set's mean image, which this config subtracts (normalization "
        f"'mean_image'), is computed once into {blocked / 'mean_images'}, and that folder cannot "
        "be written: "
    )
    assert str(error.value).endswith("set --config.data_dir to a folder you can write.")
    present = tmp_path / "ro" / "mean_images" / "m.npy"
    present.parent.mkdir(parents=True)
    np.save(present, np.zeros((4, 4, 3), np.float32))

    def read_only(directory):
        raise OSError(30, "Read-only file system", directory)

    monkeypatch.setattr(data_sources, "exclusive_build", read_only)
    monkeypatch.setattr(input_pipeline, "mean_image_path", lambda config: str(present))
    assert input_pipeline.build_mean_image(None, None) == str(present)


def test_an_image_folder_that_does_not_exist_is_said_not_to_exist(tmp_path):
    """Pass 26, #47 (and 27): an image folder that is not there at all was said to have "no
    train/ directory"; one that exists without train/ still is."""
    from alexnet_jax.data import data_sources

    missing = str(tmp_path / "imgs")
    with pytest.raises(DataError, match=re.escape(f"The image folder {missing!r} does not exist.")):
        data_sources._open_folder(missing)
    os.makedirs(missing)
    with pytest.raises(DataError, match="has no train/ directory"):
        data_sources._open_folder(missing)


# ---- Hostile pass 27 (docs/RELIABILITY.md) ---------------------------------------------------


def test_a_path_through_a_link_and_dotdot_is_recorded_where_the_shell_finds_it(
    tmp_path, monkeypatch
):
    """Pass 27: `--config.image_folder=lnk/../imgs` with lnk a link to real/sub named real/imgs
    for the shell, but was recorded (and looked for) as ./imgs: resolved lexically."""
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "imgs").mkdir()
    (tmp_path / "lnk").symlink_to(tmp_path / "real" / "sub")
    monkeypatch.chdir(tmp_path)
    config = default.get_config()
    config.image_folder = "lnk/../imgs"
    config_lib.absolute_paths(config)
    assert config.image_folder == str(tmp_path / "real" / "imgs")


def test_a_mean_image_that_cannot_be_checked_is_said_so(tmp_path, capsys):
    """Pass 27: a run started before the digests, its copy of the mean image gone: an edited data
    mean image was used with no word. Nothing can tell; a warning says so (not for a new run)."""
    config = tiny_config(str(tmp_path), normalization="mean_image")
    workdir, source = str(tmp_path / "run"), str(tmp_path / "m.npy")
    np.save(source, np.full((72, 72, 3), 100.0, np.float32))
    rundir.check_mean_image(workdir, source, 72)  # a new run: nothing to say
    assert capsys.readouterr().err == ""
    rundir.record_start(config, workdir, 0, [])  # a start that kept no digest
    rundir.check_mean_image(workdir, source, 72)
    assert f"{source} cannot be checked against the mean image" in capsys.readouterr().err
