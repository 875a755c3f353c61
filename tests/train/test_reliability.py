"""A run is one experiment and survives faults: its identity on resume and in --mode=eval, one
writer at a time, Ctrl-C saves, whole metrics lines, a damaged checkpoint falls back to the
previous one, divergence is never silent, and every bad command line is one message (exit 2).

The cases are listed with their tests in docs/RELIABILITY.md. The end-to-end runs use main.py
with fc6/fc7 narrowed (tests/multihost_worker.py) on synthetic data: seconds each.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from alexnet_jax.core import errors
from alexnet_jax.core.errors import ConfigError, DataError, UserError
from alexnet_jax.runs import rundir
from alexnet_jax.tools import load
from alexnet_jax.train import checkpoint, config_lib
from configs import default
from tests.conftest import QUICK_COMPILES
from tests.train.test_main import REPO, _env, _narrow_main


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, jax_cache_dir):
    root = tmp_path_factory.mktemp("reliability")
    return {"data": str(root / "data"), "cache": jax_cache_dir, "root": root}


@pytest.fixture(scope="module")
def finished_run(dirs):
    """A complete 8-step run (narrowed FC layers, synthetic data), checkpoints at 4 and 8."""
    workdir = str(dirs["root"] / "finished")
    proc = _narrow_main(dirs, workdir, steps=8)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# ---- A run's identity ---------------------------------------------------------------------------


def test_resume_with_another_batch_size_or_seed_is_refused_listing_each_field(finished_run):
    """Case 7: resuming with another batch size and seed is refused before anything is built,
    naming each field with its old and new value; config.json and the checkpoints are
    untouched. (In process: main.py turns the ConfigError into one line and exit 2.)"""
    from alexnet_jax.train import loop

    with open(rundir.config_path(finished_run)) as f:
        before = f.read()
    checkpoints = sorted(os.listdir(rundir.checkpoint_dir(finished_run)))
    config = config_lib.load_config(finished_run)
    config.batch_size, config.seed = 16, 5
    with pytest.raises(ConfigError) as refused:
        loop.train_and_evaluate(config, finished_run)
    assert "batch_size: 8 -> 16" in str(refused.value)
    assert "seed: 0 -> 5" in str(refused.value)
    assert "--allow_config_change" in str(refused.value)
    with open(rundir.config_path(finished_run)) as f:
        assert f.read() == before
    assert sorted(os.listdir(rundir.checkpoint_dir(finished_run))) == checkpoints


def test_the_refusals_remedy_resumes_the_run_with_its_own_config(dirs, finished_run):
    """Traceback case: the refusal told the user to pass --config=<run>/config.json, which failed
    (NameError). Its remedy is now --config=configs/run.py:<run>, which loads the run's own config:
    main.py run as printed (without --workdir: it defaults to that run) says the run finished.
    A missing run is one `error:` line."""
    from alexnet_jax.train import loop

    config = config_lib.load_config(finished_run)
    config.seed = 5
    with pytest.raises(ConfigError) as refused:
        loop.train_and_evaluate(config, finished_run)
    remedy = re.search(r"\(--config=(\S+)\);", str(refused.value)).group(1)
    assert remedy == f"configs/run.py:{finished_run}"
    worker = os.path.join(REPO, "tests", "multihost_worker.py")
    cases = ((remedy, 0, "already finished at step 8"), ("configs/run.py:/x", 2, ""))
    for flag, code, out in cases:
        proc = subprocess.run(
            [sys.executable, worker, f"--config={flag}"],
            cwd=REPO, env=_env(dirs), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == code, proc.stderr[-3000:]
        assert out in proc.stdout
    assert _error_lines(proc.stderr) == [
        "error: flag --config=configs/run.py:/x: ValueError: /x/config.json not found: it is "
        "written by main.py."
    ]
    assert proc.stderr.strip().splitlines()[-1].startswith("error:")


def test_an_allowed_config_change_continues_is_recorded_and_drops_a_cut_off_metrics_line(
    dirs, finished_run, tmp_path, capsys
):
    """Cases 7 and 4: with --allow_config_change the run continues with the new value, config.json
    holds it and config_history.jsonl records each start and end and the change (old and new); the
    length and logging cadence may change without the flag. A half line at the end of
    metrics.jsonl (a crash mid-write) no longer breaks the rerun: readers skip it with a
    warning and the resumed run drops it. (On a copy of the finished 8-step run.)"""
    workdir = str(tmp_path / "run")
    shutil.copytree(finished_run, workdir)
    with open(rundir.metrics_path(workdir), "a") as f:
        f.write('{"step": 9, "split": "tra')
    logged = [r["step"] for r in rundir.read_metrics(workdir) if r["split"] == "train"]
    assert max(logged) == 8
    (warning,) = capsys.readouterr().err.splitlines()  # on stderr, as a warning
    assert warning.startswith("warning: ")
    assert "is not whole JSON" in warning

    proc = _narrow_main(
        dirs,
        workdir,
        steps=10,
        log_every_steps=2,
        learning_rate=0.002,
        extra_flags=["--allow_config_change"],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Config changes on resume" in proc.stdout
    history = rundir.read_jsonl(os.path.join(workdir, rundir.HISTORY_FILE))
    assert [h["event"] for h in history] == ["start", "finished", "resume", "finished"]
    assert [h["step"] for h in history] == [0, 8, 8, 10]
    assert history[2]["changed"]["learning_rate"] == {"old": 0.001, "new": 0.002}
    assert history[2]["changed"]["num_train_steps"] == {"old": 8, "new": 10}
    assert config_lib.load_config(workdir).learning_rate == 0.002
    with open(rundir.metrics_path(workdir)) as f:
        lines = f.read().splitlines()
    assert all(json.loads(line) for line in lines)
    assert [json.loads(x)["step"] for x in lines if '"train"' in x] == [*logged, 10]


def test_eval_overrides_may_change_only_what_is_evaluated(tmp_path):
    """Case 5: `--mode=eval --config.normalization=mean` on a mean/std run is refused (it reported
    a loss of 60.5 instead of 1.86 and appended it to the run's metrics); another num_classes or
    variant likewise; the eval split, crops and batch size may be overridden."""
    rundir.save_config(default.get_config(), str(tmp_path))
    for field, value, shown in (
        ("normalization", "mean", "normalization: 'mean_std' -> 'mean'"),
        ("num_classes", 5, "num_classes: 4 -> 5"),
        ("variant", "paper", "variant: 'one_tower' -> 'paper'"),
    ):
        with pytest.raises(ConfigError, match=re.escape(shown)):
            config_lib.eval_config(str(tmp_path), {field: value})
    config = config_lib.eval_config(
        str(tmp_path), {"eval_crops": 10, "eval_batch_size": 80, "eval_split": "train[:10]"}
    )
    assert (config.eval_crops, config.eval_batch_size, config.eval_split) == (10, 80, "train[:10]")
    assert config.normalization == "mean_std"  # the run's own
    # Hostile pass 3, #37: the training's cadence and length change nothing evaluated: ignored
    # (they were refused as changes "of the model or its preprocessing").
    config = config_lib.eval_config(
        str(tmp_path), {"checkpoint_every_steps": 3, "num_train_steps": 60}
    )
    assert (config.checkpoint_every_steps, config.num_train_steps) == (50, -1)


def test_resume_with_another_variant_is_refused_before_anything_is_built(tmp_path):
    """Traceback case: resuming with another variant (or num_classes) is one ConfigError listing
    the differences, not Orbax's shape error."""
    rundir.save_config(default.get_config(), str(tmp_path))
    config = default.get_config()
    config.variant, config.num_classes = "torchvision", 10
    with pytest.raises(ConfigError, match=r"num_classes: 4 -> 10; variant: 'one_tower'"):
        rundir.check_resume(config, str(tmp_path))
    assert rundir.check_resume(config, str(tmp_path), allow_change=True)


def test_a_changed_dataset_is_refused(tmp_path):
    """Case 8: the data's identity (e.g. an image folder's class names) recorded at a run's first
    start must match on resume: a class folder added would shift every label."""
    workdir = str(tmp_path)
    config = default.get_config()
    old = {"kind": "image_folder", "classes": ["cat", "dog"], "train_files": 10}
    rundir.record_start(config, workdir, step=0, changes=[], dataset=old)
    rundir.check_dataset(workdir, old)  # unchanged: fine
    new = {"kind": "image_folder", "classes": ["ant", "cat", "dog"], "train_files": 15}
    with pytest.raises(DataError, match=r"classes: \['cat', 'dog'\] -> \['ant', 'cat'"):
        rundir.check_dataset(workdir, new)
    rundir.check_dataset(workdir, new, allow_change=True)


def test_resume_after_a_class_folder_was_added_is_refused(dirs, tmp_path):
    """Case 8 end to end: a run on an image folder records its class names; after the class
    folders change (here "dog" becomes "ant": the same pictures now sort first and would get
    label 0; an added folder with num_classes unchanged is refused earlier, by the count), the
    rerun is refused before it trains."""
    from PIL import Image

    root = tmp_path / "folder"
    for split in ("train", "val"):
        for index, name in enumerate(("cat", "dog")):
            (root / split / name).mkdir(parents=True)
            for k in range(4):
                pixels = np.full((40, 40, 3), 60 * index + 10 * k, np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{k}.png")
    workdir = str(tmp_path / "run")
    folder = {"dataset": "image_folder", "image_folder": str(root), "num_classes": 2}
    first = _narrow_main(dirs, workdir, steps=1, env=QUICK_COMPILES, **folder)
    assert first.returncode == 0, first.stderr[-3000:]
    for split in ("train", "val"):
        shutil.move(root / split / "dog", root / split / "ant")  # same pictures, label 0 now
    again = _narrow_main(dirs, workdir, steps=2, **folder)
    assert again.returncode == 2, again.stderr[-3000:]
    (line,) = _error_lines(again.stderr)
    assert "changed since it started" in line
    assert "['cat', 'dog'] -> ['ant', 'cat']" in line


# ---- One writer ---------------------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    """Case 2: while a process holds a workdir, another start is refused with one message naming
    the holder's host and pid (here: a live process of this host)."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder = {"host": socket.gethostname(), "pid": sleeper.pid, "since": "now"}
        holder["started"] = rundir._process_start_time(sleeper.pid)
        with open(tmp_path / rundir.LOCK_FILE, "w") as f:
            json.dump(holder, f)
        refused = pytest.raises(UserError, match=rf"in use by process {sleeper.pid} on host")
        with refused, rundir.exclusive(str(tmp_path)):
            pass
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_lock_of_a_killed_process_is_taken_over_with_a_warning(tmp_path, capsys):
    """Case 2: a lock left by a process killed with SIGKILL is taken over (with a warning) and
    released at the end of the block; a lock holds while the block runs."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / rundir.LOCK_FILE
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "since": "then"}))
    with rundir.exclusive(str(tmp_path)):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        refused = pytest.raises(UserError, match=rf"in use by process {os.getpid()}")
        with refused, rundir.exclusive(str(tmp_path)):
            pass
    assert not lock.exists()
    (warning,) = capsys.readouterr().err.splitlines()
    assert warning.startswith(f"warning: Taking over the lock of {tmp_path}: process ")


def test_train_and_evaluate_takes_the_lock_first(tmp_path):
    """Case 2: a second training run on a workdir in use is refused before it reads or writes
    anything (main.py turns the UserError into one message and exit 2)."""
    from alexnet_jax.train import loop

    holder = {"host": socket.gethostname(), "pid": os.getpid(), "since": "now"}
    holder["started"] = rundir._process_start_time(os.getpid())
    (tmp_path / rundir.LOCK_FILE).write_text(json.dumps(holder))  # this process is "the first"
    with pytest.raises(UserError, match=f"in use by process {os.getpid()} on host"):
        loop.train_and_evaluate(default.get_config(), str(tmp_path))
    assert os.listdir(tmp_path) == [rundir.LOCK_FILE]


# ---- Every stop saves, files survive faults -----------------------------------------------------


def test_append_jsonl_cuts_back_a_failed_write(tmp_path, monkeypatch):
    """A write that fails part-way leaves the file as it was (no half line)."""
    path = str(tmp_path / "m.jsonl")
    rundir.append_jsonl(path, {"step": 1})
    real_write = os.write

    def half_then_fail(fd, data):
        real_write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_fail)
    with pytest.raises(OSError):
        rundir.append_jsonl(path, {"step": 2, "loss": 1.0})
    monkeypatch.setattr(os, "write", real_write)
    with open(path) as f:
        assert f.read() == '{"step": 1}\n'


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    """Traceback case: a latest checkpoint that cannot be read is reported by step and path and
    the previous intact one is restored; when none can be read, one DataError names each."""
    manager = checkpoint.checkpoint_manager(str(tmp_path), keep=3)
    tree = {"w": np.arange(6, dtype=np.float32)}
    for step in (4, 8):
        checkpoint.save(manager, step, {"w": tree["w"] * step}, {"step": step})
    checkpoint.wait(manager)
    manager.close()
    state_dir = os.path.join(rundir.checkpoint_dir(str(tmp_path)), "8", "state")
    for root, _, files in os.walk(state_dir):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")
    target = {"w": jax.ShapeDtypeStruct((6,), np.float32, sharding=_one_device())}
    restored = checkpoint.read_latest_checkpoint(str(tmp_path), target)
    np.testing.assert_array_equal(restored[0]["w"], tree["w"] * 4)
    assert restored[1] == {"step": 4}
    warnings = [w for w in capsys.readouterr().err.splitlines() if w.startswith("warning: ")]
    assert len(warnings) == 2, warnings
    warnings = " ".join(warnings)
    assert "checkpoints/8 cannot be read" in warnings
    assert "previous intact checkpoint, step 4" in warnings

    state_dir = os.path.join(rundir.checkpoint_dir(str(tmp_path)), "4", "state")
    for root, _, files in os.walk(state_dir):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")
    with pytest.raises(DataError, match=r"step 8 .*; step 4 "):
        checkpoint.read_latest_checkpoint(str(tmp_path), target)


def _one_device():
    return jax.sharding.SingleDeviceSharding(jax.devices()[0])


def test_read_only_tools_create_nothing_in_a_run_without_checkpoints(tmp_path):
    """Traceback case: loading a run with no checkpoint (predict, figures, export) is one
    UserError and creates no `checkpoints/` directory."""
    config = default.get_config()
    rundir.save_config(config, str(tmp_path))
    with pytest.raises(UserError, match="No checkpoint in"):
        load.load_run(str(tmp_path))
    assert os.listdir(tmp_path) == [rundir.CONFIG_FILE]


def test_a_damaged_config_json_is_one_message(tmp_path):
    """Traceback case: a corrupt config.json (not JSON, or not a valid config) is one DataError
    naming the file."""
    path = tmp_path / rundir.CONFIG_FILE
    path.write_text('{"variant": "paper", ')
    with pytest.raises(DataError, match=r"config\.json is damaged"):
        config_lib.load_config(str(tmp_path))
    path.write_text(json.dumps({"variant": "paper"}))
    with pytest.raises(DataError, match=r"config.json is not a valid run config: config\.\w+"):
        config_lib.load_config(str(tmp_path))


# ---- Divergence is never silent -----------------------------------------------------------------


def test_skipping_nonfinite_steps_stops_after_too_many_in_a_row(dirs, tmp_path):
    """Case 3: with skip_nonfinite_steps and a huge learning rate the run no longer ends with
    exit 0 and NaN weights: skipped steps are logged as they happen and more than
    max_consecutive_skipped_steps in a row (or a NaN evaluation) stop it with exit 1."""
    workdir = str(tmp_path / "run")
    proc = _narrow_main(
        dirs,
        workdir,
        steps=16,
        env=QUICK_COMPILES,
        learning_rate=1e30,
        skip_nonfinite_steps=True,
        max_consecutive_skipped_steps=2,
        log_every_steps=1,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    (line,) = _error_lines(proc.stderr)
    assert "in a row had a NaN/Inf loss or gradient" in line or "NaN/Inf loss" in line
    assert "update skipped" in proc.stderr


def test_a_nan_evaluation_ends_the_run():
    """Case 3/6: an evaluation whose loss is NaN raises NonFiniteError naming the step."""
    from alexnet_jax.train import loop

    loop._check_finite_eval(8, {"loss": 1.0})
    with pytest.raises(errors.NonFiniteError, match="evaluation at step 8 gave a NaN"):
        loop._check_finite_eval(8, {"loss": float("nan")})


# ---- Every bad input: one message, exit 2 -------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config.nonexistent=1"], "error: no config field 'nonexistent' (every field"),
        (
            ["--config.learning_rat=0.1"],
            "error: no config field 'learning_rat'; did you mean 'learning_rate'? (every field",
        ),
        (["--config.learning_rate.x=1"], "error: no config field 'learning_rate.x' (every"),
        (["--config=/nonexistent/config.py"], "--config could not be loaded"),
        (["--config=" + os.path.join(REPO, "README.md")], "--config could not be loaded"),
        (["--config.batch_size=abc"], "--config.batch_size=abc"),
        (["--nonsense=1"], "Unknown command line flag 'nonsense'"),
        # Hostile pass 18, #57: the last one won, with no word.
        (["--workdir=elsewhere"], "error: --workdir is given twice: give it once."),
        (["--mode=eval", "-mode", "train"], "error: --mode is given twice: give it once."),
        (["--allow_config_change", "--noallow_config_change"], "--allow_config_change is given"),
    ],
)
def test_bad_command_lines_are_one_message_with_exit_code_2(dirs, tmp_path, args, message):
    """Traceback cases: each mistake in main.py's command line is one `error:` line, exit 2."""
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "main.py"), f"--workdir={tmp_path / 'w'}", *args],
        cwd=REPO,
        env=_env(dirs),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    (line,) = _error_lines(proc.stderr)
    assert message in line
    assert "\\" not in line  # no escaped quotes or literal \n from the library's message


def test_main_s_list_of_its_own_flags_names_every_flag_it_defines():
    """main.py refuses each of its flags given twice (hostile pass 18, #57) from a list of their
    names (_OWN_FLAGS: the check runs before the flags are defined); it names every one."""
    import ast

    with open(os.path.join(REPO, "main.py")) as f:
        tree = ast.parse(f.read())
    defined = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", "").startswith("DEFINE_")
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }
    (own,) = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_OWN_FLAGS"
    ]
    assert defined == set(ast.literal_eval(own))


def test_a_workdir_that_is_a_file_is_one_message(tmp_path):
    from alexnet_jax.train import loop

    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(DataError, match="is a file, not a directory"):
        loop.train_and_evaluate(default.get_config(), str(path))


@pytest.mark.parametrize(
    "name", [rundir.CURVES_FILE, rundir.METRICS_FILE, rundir.CONFIG_FILE, rundir.LOCK_FILE]
)
def test_a_directory_named_like_a_runs_file_is_one_message(tmp_path, name):
    """Traceback case: a directory named training_curves.png or metrics.jsonl in the workdir gave
    IsADirectoryError tracebacks (the first after the run trained). Now training and the tools
    refuse it at start, naming the path; a file named like checkpoints/ too."""
    from alexnet_jax.train import loop

    (tmp_path / name).mkdir()
    with pytest.raises(DataError, match=rf"{re.escape(name)} is not a file \(a directory\?\)"):
        loop.train_and_evaluate(default.get_config(), str(tmp_path))
    with pytest.raises(DataError, match=rf"{re.escape(name)} is not a file"):
        load.load_run(str(tmp_path))
    (tmp_path / name).rmdir()
    (tmp_path / rundir.CHECKPOINTS).write_text("x")
    with pytest.raises(DataError, match=r"checkpoints is not a directory"):
        loop.train_and_evaluate(default.get_config(), str(tmp_path))
    # Hostile pass 3, #21, #22: a file named damaged_checkpoints, and a step folder that is a
    # link, failed after the training ("File exists ... Free disk space", "Cannot call rmtree").
    (tmp_path / rundir.CHECKPOINTS).unlink()
    (tmp_path / rundir.DAMAGED_CHECKPOINTS).write_text("x")
    with pytest.raises(DataError, match=r"damaged_checkpoints is not a directory"):
        loop.train_and_evaluate(default.get_config(), str(tmp_path))
    (tmp_path / rundir.DAMAGED_CHECKPOINTS).unlink()
    (tmp_path / rundir.CHECKPOINTS).mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / rundir.CHECKPOINTS / "4").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DataError, match=r"checkpoints/4 is a link, but a run's checkpoint"):
        loop.train_and_evaluate(default.get_config(), str(tmp_path))


def test_a_full_disk_at_start_names_the_file(dirs, tmp_path):
    """A write that fails at start (here a file size limit, EFBIG; a full disk, ENOSPC, takes
    the same path) said `could not write: [Errno 27] File too large` without the file. Now the
    one line names it, and config.json is written before the history that says the run began."""
    workdir = str(tmp_path / "full")
    proc = _narrow_main(dirs, workdir, steps=2, limit_file_bytes=100)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = _error_lines(proc.stderr)
    assert line.startswith(f"error: could not write {workdir}/config.json: File too large"), line
    assert not os.path.exists(os.path.join(workdir, rundir.HISTORY_FILE))


def test_a_workdir_that_cannot_be_created_is_one_message(tmp_path):
    """A name the file system refuses (here too long, ENAMETOOLONG; the same path as a missing
    mount, a read-only disk or no rights) is one message naming --workdir and the reason, before
    anything is built or trained."""
    from alexnet_jax.train import loop

    workdir = tmp_path / ("w" * 300) / "run"
    with pytest.raises(UserError, match=r"--workdir=.* cannot be created \(File name too long"):
        loop.train_and_evaluate(default.get_config(), str(workdir))


def test_eval_uses_the_runs_config_and_prints_the_result_before_a_failed_write(dirs, finished_run):
    """Case 5 end to end, and the unclear case of a read-only run: `--mode=eval` evaluates the
    run with its own config.json (the command line's defaults differ: the run's normalization
    and dataset are used), so it reproduces the run's final evaluation; the result is printed
    before the metrics are written, so a run whose metrics cannot be written (here a file size
    limit at metrics.jsonl's size, EFBIG) still shows it, then one error and exit 2."""
    final = [r for r in rundir.read_metrics(finished_run) if r["split"] == "eval"][-1]
    size = os.path.getsize(rundir.metrics_path(finished_run))
    proc = _narrow_main(dirs, finished_run, steps=8, mode="eval", limit_file_bytes=size)
    assert proc.returncode == 2, proc.stderr[-3000:]
    eval_line = f"eval at step 8: loss {final['loss']:.4f}  top-1 err "
    eval_line += f"{100 * final['top1_error']:.2f}%  top-5 err {100 * final['top5_error']:.2f}%"
    assert eval_line in proc.stdout
    assert len(_error_lines(proc.stderr)) == 1
    assert os.path.getsize(rundir.metrics_path(finished_run)) == size


def test_eval_of_an_evaluated_step_is_one_line_and_a_marked_reeval_row(
    dirs, finished_run, tmp_path
):
    """`--mode=eval` of step 8, which the run evaluated at its end: one eval line on stdout in
    the run's convention (error rates; top-5 too, for 10 classes), nothing on stderr (no Orbax
    warning about the read-only checkpoint directory), and one row appended to metrics.jsonl
    marked "reeval", which every reader leaves out: the run's final and best evaluation
    (report, compare) and its curves stay those of training."""
    from alexnet_jax.runs import plots, report
    from alexnet_jax.tools import compare

    workdir = str(tmp_path / "run")
    shutil.copytree(finished_run, workdir)
    before = rundir.read_metrics(workdir)
    (final,) = [r for r in rundir.run_evals(before) if r["step"] == 8]
    summary = report.summary(workdir, 0, 8, 1.0, 8, num_classes=10)
    compared = compare.summarize_run(workdir, "run", None)
    proc = _narrow_main(dirs, workdir, steps=8, mode="eval")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == ""
    (line,) = [x for x in proc.stdout.splitlines() if "eval at step" in x]
    assert re.fullmatch(r"\d\d:\d\d:\d\d eval at step 8: .*", line)
    assert line.endswith(
        f"eval at step 8: loss {final['loss']:.4f}  top-1 err {100 * final['top1_error']:.2f}%  "
        f"top-5 err {100 * final['top5_error']:.2f}%  (8 examples; a re-evaluation, kept apart "
        "from the run's own)"
    )
    after = rundir.read_metrics(workdir)
    assert after[:-1] == before
    views = {"eval_split": "validation", "eval_crops": 1}  # what was evaluated is recorded
    assert after[-1] == {
        **final, "loss": pytest.approx(final["loss"], rel=1e-6), **views, "reeval": True
    }  # fmt: skip
    # A re-evaluation that differs (other eval_crops, say) changes no reader either.
    rundir.rewrite_jsonl(rundir.metrics_path(workdir), [*before, {**after[-1], "top1_error": 0.0}])
    assert report.final_eval(workdir, 8) == final
    assert report.summary(workdir, 0, 8, 1.0, 8, num_classes=10) == summary
    assert compare.summarize_run(workdir, "run", None) == compared
    assert plots._series(rundir.read_metrics(workdir), "eval", "top1_error") == plots._series(
        before, "eval", "top1_error"
    )
    # Silent-wrong case: an evaluation of another split, of a step the run never evaluated, was
    # an "eval" row like the run's own (and counted as its final evaluation).
    unevaluated = [r for r in before if not (r["split"] == "eval" and r["step"] == 8)]
    rundir.rewrite_jsonl(rundir.metrics_path(workdir), unevaluated)
    proc = _narrow_main(dirs, workdir, steps=8, mode="eval", eval_split="test")
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = rundir.read_metrics(workdir)[-1]
    assert (row["eval_split"], row["reeval"]) == ("test", True)


def test_config_errors_are_config_errors_in_process():
    """Traceback cases, in process: a seed beyond 2**31 (an OverflowError in JAX), a mesh_shape
    of (-1, -1), torch_weights in train mode (silently ignored before)."""
    from alexnet_jax.train import config_lib, loop

    config = default.get_config()
    config.seed = 2**40
    with pytest.raises(ConfigError, match=r"config\.seed"):
        config_lib.validate_config(config)
    config = default.get_config()
    config.mesh_shape = (-1, -1)
    with pytest.raises(ConfigError, match=r"config\.mesh_shape"):
        config_lib.validate_config(config)
    config = default.get_config()
    config.torch_weights = "x.pth"
    with pytest.raises(ConfigError, match=r"config\.torch_weights='x\.pth' is only read by"):
        loop.train_and_evaluate(config, "/nonexistent/never/created")


def test_eval_of_exported_weights_refuses_a_config_that_contradicts_them(run_params, tmp_path):
    """`--mode=eval --config.torch_weights=<a file exported here>` with a config whose
    preprocessing or LRN convention differs from the conventions the file records is one
    ConfigError naming each field (it evaluated them silently on the wrong inputs)."""
    import ml_collections

    from alexnet_jax.interop import weights_io
    from alexnet_jax.train import loop

    config, params = run_params
    path = weights_io.save_weights(params, config, str(tmp_path / "model.npz"))
    evaluated = ml_collections.ConfigDict(config.to_dict())
    evaluated.torch_weights = path
    loop._check_weights_conventions(evaluated)  # the run's own conventions: fine
    evaluated.normalization = "mean"
    with pytest.raises(ConfigError, match="normalization: file 'mean_std', config 'mean'"):
        loop._check_weights_conventions(evaluated)


@pytest.mark.parametrize("variant", ["one_tower", "torchvision"])
def test_eval_of_pytorch_weights_without_conventions_needs_pytorchs(variant, tmp_path):
    """A .pth that records nothing (torchvision's file, or any PyTorch training) is evaluated
    only under PyTorch's conventions: mean/std inputs of 256-resized images and, where the
    variant has LRN, alpha / n (it was evaluated with the config's alpha and 0-255 inputs)."""
    import ml_collections
    import torch

    from alexnet_jax.interop import torch_models
    from alexnet_jax.train import loop

    path = str(tmp_path / "plain.pth")
    torch.save(torch_models.torch_alexnet(variant, num_classes=4).state_dict(), path)
    config = ml_collections.ConfigDict(
        dict(
            torch_weights=path,
            variant=variant,
            resize_size=256,
            normalization="mean_std",
            lrn_convention="cuda_convnet",
        )
    )
    loop._check_weights_conventions(config)  # PyTorch's conventions: fine
    config.normalization, config.lrn_convention = "mean", "paper"
    expected = ["normalization: file 'mean_std', config 'mean'"]
    if variant != "torchvision":
        expected.append("lrn_convention: file 'cuda_convnet', config 'paper'")
    with pytest.raises(ConfigError, match="taken as PyTorch-trained") as error:
        loop._check_weights_conventions(config)
    for difference in expected:
        assert difference in str(error.value)
    assert ("lrn_convention" in str(error.value)) == (variant != "torchvision")


def _synthetic_config(**overrides):
    """A run of seconds, in-process: torchvision at 64 px, 10 classes, synthetic data (64 train and
    8 eval examples), batch 8 (with fc6/fc7 narrowed by the caller: multihost_worker)."""
    config = default.get_config()
    config.update(
        variant="torchvision", input_size=64, num_classes=10, dataset="synthetic",
        synthetic_train_examples=64, synthetic_eval_examples=8, batch_size=8, eval_batch_size=8,
    )  # fmt: skip
    config.update(overrides)
    return config


def test_the_train_loop_keeps_at_most_two_steps_in_flight(tmp_path, monkeypatch):
    """Hostile pass 19, #46: launch with 2 CPU devices per process hung in a train step. The loop
    waited for the device only at a log line (every 100 steps), so up to 100 steps were queued,
    and XLA:CPU deadlocked: one local device's step waited in gloo's all-reduce for the other's,
    whose launch waited on XLA's queue (gdb; docs/gloo_hang_repro.py hangs so, and not with
    2 in flight). The loop now waits, after dispatching step k, for step k - 2."""
    from alexnet_jax.train import loop
    from tests import multihost_worker

    multihost_worker.narrow_fc_layers(monkeypatch.setattr)  # fc6/fc7 at 64 units: quick
    waited = []
    real_wait = jax.block_until_ready
    monkeypatch.setattr(jax, "block_until_ready", lambda x: waited.append(x) or real_wait(x))
    config = _synthetic_config(
        num_train_steps=7, log_every_steps=100, eval_every_steps=100, checkpoint_every_steps=100
    )
    optimizations = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)  # quick compiles (conftest)
    try:
        loop.train_and_evaluate(config, str(tmp_path))
    finally:
        jax.config.update("jax_disable_most_optimizations", optimizations)
    train_waits = [w for w in waited if isinstance(w, dict) and "grad_norm" in w]
    assert len(train_waits) == 7 - loop._IN_FLIGHT  # after steps 3..7: for steps 1..5
    rows = [r for r in rundir.read_metrics(str(tmp_path)) if r["split"] == "train"]
    assert [r["step"] for r in rows] == [7]  # the steps' one row, at the end, as before


def test_a_preemption_at_an_evaluation_step_leaves_the_evaluation_to_the_resumed_run(
    tmp_path, monkeypatch
):
    """SIGTERM agreed on at an evaluation step saves before evaluating (a preemption notice is
    short); the checkpoint says so, and the resumed run evaluates that step first, so its
    metrics equal an uninterrupted run's, evaluation for evaluation (synthetic data, in-process;
    the preemption is the watcher's agreement at step 2, made deterministic here). Hostile pass
    26, #23: a `--mode=eval` of the owed step before the resume is the run's own; the resumed
    run's evaluation of it is then marked a re-evaluation, not a second row of the run's own."""
    from alexnet_jax.train import loop
    from tests import multihost_worker

    multihost_worker.narrow_fc_layers(monkeypatch.setattr)  # fc6/fc7 at 64 units: quick

    def config():
        return _synthetic_config(
            seed=3, num_train_steps=4, eval_every_steps=2, log_every_steps=1,
            checkpoint_every_steps=100,
        )  # fmt: skip

    def evals(workdir):
        rows = rundir.run_evals(rundir.read_metrics(workdir))
        return [(r["step"], r["loss"], r["top1_error"]) for r in rows]

    optimizations = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)  # quick compiles (conftest)
    try:
        _train_cut_and_whole(loop, config, tmp_path, monkeypatch)
    finally:
        jax.config.update("jax_disable_most_optimizations", optimizations)
    assert evals(str(tmp_path / "cut")) == evals(str(tmp_path / "whole"))
    assert [step for step, _, _ in evals(str(tmp_path / "whole"))] == [2, 4]
    with open(rundir.metrics_path(str(tmp_path / "cut"))) as f:  # as written (and in TensorBoard;
        lines = [json.loads(line) for line in f]  # readers mark a second row of a step anyway)
    evals_at_2 = [r.get("reeval") for r in lines if r["split"] == "eval" and r["step"] == 2]
    assert evals_at_2 == [None, True]  # --mode=eval's, then the resumed run's


def _train_cut_and_whole(loop, config, tmp_path, monkeypatch):
    """An uninterrupted run in whole/; in cut/ a run preempted at step 2, then its resume."""
    loop.train_and_evaluate(config(), str(tmp_path / "whole"))
    original = checkpoint.PreemptionWatcher.reached
    monkeypatch.setattr(checkpoint.PreemptionWatcher, "reached", lambda self, step: step == 2)
    assert loop.train_and_evaluate(config(), str(tmp_path / "cut")) == {}  # saved, then exit
    assert rundir.run_evals(rundir.read_metrics(str(tmp_path / "cut"))) == []
    assert os.path.isdir(tmp_path / "cut" / "checkpoints" / "2")
    loop.evaluate_checkpoint(config(), str(tmp_path / "cut"))  # the owed step, by --mode=eval
    monkeypatch.setattr(checkpoint.PreemptionWatcher, "reached", original)
    loop.train_and_evaluate(config(), str(tmp_path / "cut"))


def test_a_run_refused_before_it_wrote_anything_leaves_no_workdir(tmp_path):
    """A new run stopped by its data (here an image folder that does not exist) after taking
    the workdir's lock leaves no empty workdir behind; in an existing workdir nothing is
    removed, and a file keeps its folder."""
    from alexnet_jax.train import loop

    config = default.get_config()
    config.update(dataset="image_folder", image_folder=str(tmp_path / "no_such_folder"))
    workdir = tmp_path / "new" / "run"
    with pytest.raises(UserError):
        loop.train_and_evaluate(config, str(workdir))
    assert not (tmp_path / "new").exists()  # nor the parent folder it made
    kept = tmp_path / "kept"
    (kept / "notes").mkdir(parents=True)
    (kept / "notes" / "readme.txt").write_text("mine")
    with pytest.raises(UserError):
        loop.train_and_evaluate(config, str(kept))
    assert (kept / "notes" / "readme.txt").read_text() == "mine"
    assert not (kept / ".lock").exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"learning_rate": float("inf")}, "learning_rate"),
        ({"num_epochs": float("inf"), "num_train_steps": -1}, "num_epochs"),
        ({"warmup_epochs": float("inf")}, "warmup_epochs"),
        ({"pca_lighting_std": float("inf")}, "pca_lighting_std"),
        ({"weight_decay": float("nan")}, "weight_decay"),
        ({"learning_rate": 1e300}, "learning_rate"),  # inf in float32, on the device
    ],
)
def test_an_infinite_or_nan_number_is_refused_naming_the_field(overrides, field):
    """inf passed the rules (`learning_rate=inf` trained into NaN and blamed the lr; `num_epochs`
    and `warmup_epochs` overflowed into tracebacks later): every number must be finite."""
    config = default.get_config()
    config.update(overrides)
    with pytest.raises(ConfigError, match=rf"config\.{field} must be .*, got (inf|nan|1e\+300)"):
        config_lib.validate_config(config)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"data_dir": ""}, "data_dir"),
        ({"miniature_dir": " "}, "miniature_dir"),
        ({"dataset": "image_folder", "image_folder": "", "num_classes": 3}, "image_folder"),
    ],
)
def test_an_empty_data_path_is_refused_naming_the_field(overrides, field):
    """`--config.data_dir=` built the dataset in the current directory without a word."""
    config = default.get_config()
    config.update(overrides)
    with pytest.raises(ConfigError, match=rf"config\.{field} must be a folder \(not empty\)"):
        config_lib.validate_config(config)


def test_a_diverged_update_saves_no_nan_checkpoint(tmp_path, monkeypatch):
    """learning_rate=3e38 (finite in float32, no warm-up): step 1's loss and gradient are
    finite, its update overflows the parameters to Inf. The save refuses it: the run stops naming
    the step, and no checkpoint of NaN/Inf parameters is written as "the last good one"."""
    from alexnet_jax.core.errors import NonFiniteError
    from alexnet_jax.train import loop
    from tests import multihost_worker

    multihost_worker.narrow_fc_layers(monkeypatch.setattr)
    config = _synthetic_config(
        num_train_steps=3, checkpoint_every_steps=1, learning_rate=3e38, grad_clip_norm=0.0,
        warmup_epochs=0.0,
    )  # fmt: skip
    workdir = tmp_path / "diverged"
    optimizations = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)  # quick compiles (conftest)
    try:
        with pytest.raises(NonFiniteError, match=r"Step 1: the parameters are NaN/Inf") as diverged:
            loop.train_and_evaluate(config, str(workdir))
    finally:
        jax.config.update("jax_disable_most_optimizations", optimizations)
    assert str(diverged.value).endswith(
        "Likely causes in this config: config.learning_rate=3e+38 is high (the paper's: 0.01); "
        "config.weight_decay=0.0005 is large for this learning rate (the paper's: 5e-4 at 0.01); "
        f"no gradient clipping (config.grad_clip_norm=0). {loop.RERUN_CHANGED}"
    )  # (hostile pass 17, #24: the rerun with a lower rate was refused as a config change)
    saved = os.listdir(workdir / "checkpoints") if (workdir / "checkpoints").exists() else []
    assert not [s for s in saved if s.isdigit()]
    assert (workdir / "metrics.jsonl").exists()  # the run's records are kept


def test_the_divergence_message_names_what_the_config_shows():
    """The NaN message blamed the learning rate even when the lighting noise was 500x the
    paper's; it names what the config shows, or says that nothing stands out."""
    from alexnet_jax.train import loop

    config = default.get_config()
    assert loop.likely_causes(config).startswith("Nothing in the config stands out")
    config.pca_lighting_std = 50.0
    assert loop.likely_causes(config) == (
        "Likely causes in this config: config.pca_lighting_std=50 is large (the paper's: 0.1)."
    )


def test_readers_refuse_a_checkpoint_of_nan_parameters(tmp_path, monkeypatch):
    """A checkpoint of NaN parameters written before saves refused them: load_run (predict,
    export, figures) and --mode=eval's reader refuse it in one message naming the step. (fc6/fc7
    narrowed, tests/multihost_worker.py: 3M instead of 57M parameters written and read twice.)"""
    from alexnet_jax.core.errors import NonFiniteError
    from alexnet_jax.train import experiment, sharding
    from tests import multihost_worker
    from tests.conftest import write_tiny_run

    multihost_worker.narrow_fc_layers(monkeypatch.setattr)
    run = write_tiny_run(str(tmp_path))  # a finite checkpoint at step 1
    target = experiment.build(config_lib.load_config(run), sharding.single_device_mesh())
    state, data = checkpoint.read_latest_checkpoint(run, target.abstract_state())
    nan_state = state.replace(params=jax.tree.map(lambda x: x * np.nan, state.params))
    nan_state = nan_state.replace(step=np.int32(2))
    manager = checkpoint.checkpoint_manager(run, keep=2)
    with monkeypatch.context() as m:  # as a run before the guard saved it
        m.setattr(checkpoint, "all_finite", lambda tree: True)
        checkpoint.save(manager, 2, nan_state, data)
        checkpoint.wait(manager)
    manager.close()
    with pytest.raises(NonFiniteError, match=r"checkpoint of step 2 .* holds NaN/Inf parameters"):
        load.load_run(run)


def test_a_run_with_checkpoints_but_no_record_is_refused_unless_continued_on_purpose(
    tmp_path, monkeypatch
):
    """config.json or run.json deleted from a run that has checkpoints: a resume with another
    seed or other data ran without a word. Now each missing record is one message naming it and
    the flag that continues on purpose; an empty or foreign run.json is one message, not a
    JSONDecodeError traceback. (fc6/fc7 narrowed, tests/multihost_worker.py: a smaller
    checkpoint, the same records.)"""
    from tests import multihost_worker
    from tests.conftest import tiny_config, write_tiny_run

    multihost_worker.narrow_fc_layers(monkeypatch.setattr)
    run = write_tiny_run(str(tmp_path))  # config.json and a checkpoint of step 1, no run.json
    config = tiny_config(str(tmp_path), seed=7)
    dataset = {"kind": "miniature", "fingerprint": "abc"}
    with pytest.raises(DataError, match=r"holds checkpoints \(up to step 1\) but no run\.json"):
        rundir.check_dataset(run, dataset)
    rundir.check_dataset(run, dataset, allow_change=True)
    os.remove(rundir.config_path(run))
    with pytest.raises(DataError, match=r"but no config\.json, so this resume cannot be checked"):
        rundir.check_resume(config, run)
    assert rundir.check_resume(config, run, allow_change=True) == []
    for text in ("", "[1, 2]", '{"dataset": 3}'):
        with open(os.path.join(run, rundir.RUN_FILE), "w") as f:
            f.write(text)
        with pytest.raises(DataError, match=r"run\.json is damaged"):
            rundir.check_dataset(run, dataset)


def test_a_damaged_or_uncommitted_latest_step_is_set_aside_and_saved_again(tmp_path, monkeypatch):
    """Silent-wrong/traceback case: after falling back from a damaged latest checkpoint, saving
    that step again raised StepAlreadyExistsError on every rerun; a step folder without Orbax's
    commit marker (a copy) was restored as a checkpoint. Now both are moved to
    damaged_checkpoints/ (named in a warning) and the resumed run saves those steps again. When no
    step can be read (another model's config, say) nothing is moved."""
    from alexnet_jax.train import loop
    from tests import multihost_worker

    multihost_worker.narrow_fc_layers(monkeypatch.setattr)
    workdir = str(tmp_path / "run")
    checkpoints = rundir.checkpoint_dir(workdir)
    optimizations = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)  # quick compiles (conftest)
    try:
        config = _synthetic_config(num_train_steps=2, checkpoint_every_steps=1, keep_checkpoints=3)
        loop.train_and_evaluate(config, workdir)
        for root, _, files in os.walk(os.path.join(checkpoints, "2", "state")):
            for name in files:
                os.truncate(os.path.join(root, name), 10)
        shutil.copytree(os.path.join(checkpoints, "1"), os.path.join(checkpoints, "3"))
        os.remove(os.path.join(checkpoints, "3", rundir.COMMIT_MARKER))
        config = _synthetic_config(num_train_steps=3, checkpoint_every_steps=1, keep_checkpoints=3)
        assert "top1_error" in loop.train_and_evaluate(config, workdir)
    finally:
        jax.config.update("jax_disable_most_optimizations", optimizations)
    assert sorted(os.listdir(os.path.join(workdir, rundir.DAMAGED_CHECKPOINTS))) == ["2", "3"]
    manager = checkpoint.checkpoint_manager(workdir, keep=3)
    assert manager.all_steps() == [1, 2, 3]
    wrong = {"w": jax.ShapeDtypeStruct((6,), np.float32, sharding=_one_device())}  # another model
    with pytest.raises(DataError, match="No checkpoint of this run can be read"):
        checkpoint.restore_latest(manager, wrong, already_abstract=True, set_aside=True)
    assert manager.all_steps() == [1, 2, 3]  # when none can be read, none is moved aside
    manager.close()
