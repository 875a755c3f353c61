"""Hostile pass 23, #51, #54, #59, #60 (and pass 25, #7, #12): image files swapped between class
folders in place, an edited copy of a run's mean image (or of the data's), a folder or a device
given to predict as an image, and a finished run whose checkpoints are gone: each one line saying
what is wrong and what to do."""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from alexnet_jax.core.errors import DataError
from alexnet_jax.data import data_sources, input_pipeline
from alexnet_jax.runs import rundir
from alexnet_jax.tools import load
from alexnet_jax.train import config_lib, loop
from tests import multihost_worker
from tests.conftest import tiny_config, write_tiny_run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bmp_folder(root: str, per_class: int) -> str:
    """root/folder with train/{a,b}/NN.bmp (8x8, each its own colour, all of one size) and one
    val/{a,b}/00.bmp."""
    folder = os.path.join(root, "folder")
    for split, count in (("train", per_class), ("val", 1)):
        for c, name in enumerate(("a", "b")):
            os.makedirs(os.path.join(folder, split, name))
            for k in range(count):
                pixels = np.full((8, 8, 3), (c * 100 + k) % 256, np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, split, name, f"{k:02d}.bmp"))
    return folder


def _swap(folder: str, names) -> None:
    """train/a/<name> and train/b/<name> swapped in place (same names and sizes)."""
    a, b = os.path.join(folder, "train", "a"), os.path.join(folder, "train", "b")
    for name in names:
        os.replace(os.path.join(a, name), os.path.join(folder, "t.bmp"))
        os.replace(os.path.join(b, name), os.path.join(a, name))
        os.replace(os.path.join(folder, "t.bmp"), os.path.join(b, name))


@pytest.mark.parametrize(
    ("per_class", "swapped"),
    [(16, [f"{i:02d}.bmp" for i in range(5, 11)]), (64, ["37.bmp"])],
    ids=["6 of 16 files", "one of 64 files"],
)
def test_files_swapped_between_classes_in_place_refuse_the_resume(tmp_path, per_class, swapped):
    """#59: 6 of 16 BMPs per class swapped between class folders a and b (same names and
    sizes) resumed without a word, training on flipped labels: the fingerprint read only each
    class's first image. It reads up to FINGERPRINT_READS per class now, so this, and one file
    swapped in a class of 64, is the resume's one DataError naming the fingerprint."""
    folder = _bmp_folder(str(tmp_path), per_class)
    config = tiny_config(str(tmp_path), dataset="image_folder", image_folder=folder, num_classes=2)
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    rundir.record_dataset(workdir, data_sources.dataset_identity(config))
    assert rundir.check_dataset(workdir, data_sources.dataset_identity(config)) == []
    _swap(folder, swapped)
    with pytest.raises(DataError, match="changed since it started: files_fingerprint") as error:
        rundir.check_dataset(workdir, data_sources.dataset_identity(config))
    # (a run recorded before the fingerprint read more files is told how to go on)
    assert "if the image folder is unchanged, add --allow_config_change once" in str(error.value)


def _predict(workdir: str, *images: str) -> subprocess.CompletedProcess:
    """predict --workdir=`workdir` `images` with fc6/fc7 narrowed (tests/multihost_worker.py)."""
    script = (
        "import sys; from tests import multihost_worker; multihost_worker.narrow_fc_layers(); "
        "from absl import app; from alexnet_jax.core.errors import parse_flags; "
        "from alexnet_jax.tools import predict; predict.define_flags(); "
        "app.run(predict.main, flags_parser=parse_flags)"
    )
    return subprocess.run(
        [sys.executable, "-c", script, f"--workdir={workdir}", *images],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""},
    )  # fmt: skip


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def test_predict_refuses_a_run_copy_of_the_mean_image_that_differs_from_the_trained_one(
    tmp_path, monkeypatch
):
    """#60: the run's copy of its mean image (mean_image.npy), edited within 0..255, made
    predict name the wrong class at 100% without a word, while --mode=eval read the data's
    copy. predict compares the run's copy with the data's (when there) and refuses a mismatch."""
    multihost_worker.narrow_fc_layers(monkeypatch.setattr)
    folder = _bmp_folder(str(tmp_path), 2)
    overrides = dict(dataset="image_folder", image_folder=folder, num_classes=2)
    workdir = write_tiny_run(str(tmp_path), normalization="mean_image", **overrides)
    config = tiny_config(str(tmp_path), normalization="mean_image", **overrides)
    source = input_pipeline.mean_image_path(config)  # the data's copy, as prepare writes it
    os.makedirs(os.path.dirname(source))
    mean = np.random.default_rng(0).uniform(0, 255, (72, 72, 3)).astype(np.float32)
    np.save(source, mean)
    rundir.save_mean_image(workdir, source)
    photo = os.path.join(folder, "val", "a", "00.bmp")
    proc = _predict(workdir, photo)
    assert proc.returncode == 0, proc.stderr[-3000:]  # the same mean: predicts
    np.save(os.path.join(workdir, rundir.MEAN_IMAGE_FILE), mean / 2)  # edited, still 0..255
    line = _one_error_line(_predict(workdir, photo))
    own = os.path.join(workdir, rundir.MEAN_IMAGE_FILE)
    assert f"The data build's mean image {source} differs from the run's copy {own}" in line
    assert "if the run's, copy the data's over it." in line
    # Pass 24, #55: with the image folder gone, predict said "has no train/ directory ... Set
    # --config.image_folder", a flag predict has not; the run's copy alone is used.
    os.rename(os.path.join(workdir, rundir.MEAN_IMAGE_FILE), str(tmp_path / "edited.npy"))
    rundir.save_mean_image(workdir, source)
    os.rename(folder, folder + "_away")
    photo = os.path.join(folder + "_away", "val", "a", "00.bmp")
    proc = _predict(workdir, photo)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _mean_image_run(tmp_path, monkeypatch):
    """(workdir, config, its evaluation, the data's mean image) of a tiny image-folder run with
    normalization "mean_image" (fc6/fc7 narrowed), evaluated once (which computes the mean)."""
    multihost_worker.narrow_fc_layers(monkeypatch.setattr)
    folder = _bmp_folder(str(tmp_path), 4)
    overrides = dict(dataset="image_folder", image_folder=folder, num_classes=2)
    workdir = write_tiny_run(str(tmp_path), normalization="mean_image", **overrides)
    config = config_lib.load_config(workdir)
    before = loop.evaluate_checkpoint(config, workdir)
    return workdir, config, before, input_pipeline.mean_image_path(config)


def test_eval_and_a_resume_refuse_a_data_mean_image_other_than_the_runs(tmp_path, monkeypatch):
    """Pass 25, #12: `--mode=eval` with the data build's mean image edited (same shape) gave
    other numbers without a word (predict refused the same), and a resume would train on with it
    and copy it over the run's. Both compare it with the run's copy and refuse a mismatch; #7: a
    data copy of another shape is named as the damaged one (predict blamed the run's)."""
    workdir, config, before, source = _mean_image_run(tmp_path, monkeypatch)
    rundir.save_mean_image(workdir, source)  # the copy a run keeps from its start, and its data
    rundir.record_dataset(workdir, data_sources.dataset_identity(config))
    assert loop.evaluate_checkpoint(config, workdir) == before  # the same mean: evaluates
    mean = np.load(source)
    np.save(source, mean / 2)  # edited, still 0..255
    own = os.path.join(workdir, rundir.MEAN_IMAGE_FILE)
    want = f"The data build's mean image {source} differs from the run's copy {own}"
    with pytest.raises(DataError, match=re.escape(want)):
        loop.evaluate_checkpoint(config, workdir)
    with pytest.raises(DataError, match=re.escape(want)):
        loop.train_and_evaluate(config, workdir)  # before anything is restored or written
    assert np.array_equal(np.load(own), mean)  # the run's copy not overwritten
    np.save(source, mean[:50])  # another shape: the data's copy is the damaged one
    with pytest.raises(DataError, match=re.escape(f"{source} (the data build's mean image) is")):
        loop.evaluate_checkpoint(config, workdir)
    os.remove(source)  # the remedy: computed again, equal to the run's copy
    assert loop.evaluate_checkpoint(config, workdir) == before


@pytest.mark.parametrize("what", ["a folder", "a link to /dev/zero"])
def test_predict_of_a_folder_or_a_device_says_what_it_is(run_dir, tmp_path, what):
    """#51: a folder, or a .jpg linked to /dev/zero, was `No such image file(s)`: it exists.
    One line now says what it is and what to give instead."""
    path = str(tmp_path / "photos")
    if what == "a folder":
        os.makedirs(path)
        want = f"{path} is a folder, not an image: name the image files in it."
    else:
        path += ".jpg"
        os.symlink("/dev/zero", path)
        want = f"{path} is not a regular file (a device or a FIFO, or a link to one)"
    proc = subprocess.run(
        [sys.executable, "-m", "alexnet_jax.tools.predict", f"--workdir={run_dir}", path],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""},
    )  # fmt: skip
    assert want in _one_error_line(proc)


def test_a_finished_run_without_checkpoints_says_to_restore_them(tmp_path, monkeypatch):
    """#54: predict (and figures: load.py) on a finished run whose checkpoints/ is gone said
    `train first`, which training then refused (it would start over and overwrite the run's
    metrics). The history shows the run trained: restore the checkpoints from a copy."""
    multihost_worker.narrow_fc_layers(monkeypatch.setattr)
    workdir = write_tiny_run(str(tmp_path))
    rundir.record_finished(workdir, 1)
    shutil.rmtree(rundir.checkpoint_dir(workdir))
    with pytest.raises(DataError, match=r"reached step 1 .* restore that folder from a copy"):
        load.load_run(workdir)
    os.remove(os.path.join(workdir, rundir.HISTORY_FILE))  # never trained: train first
    with pytest.raises(Exception, match="train first"):
        load.load_run(workdir)


def test_a_data_mean_image_edited_after_the_run_started_is_refused_without_the_runs_copy(
    tmp_path, monkeypatch
):
    """Pass 26, #12-#15: with the run's copy deleted, or edited the same way, eval, a resume and
    figures took an edited data mean image without a word (25.00% instead of 0.00%). The run's
    start records its copy's digest: the data's must match it, or the run's copy as it started."""
    from alexnet_jax.tools import figures

    workdir, config, before, source = _mean_image_run(tmp_path, monkeypatch)
    digest = rundir.save_mean_image(workdir, source)  # as a run's start keeps it
    rundir.record_start(config, workdir, 1, [], mean_image_digest=digest)
    rundir.record_dataset(workdir, data_sources.dataset_identity(config))
    own, mean = os.path.join(workdir, rundir.MEAN_IMAGE_FILE), np.load(source)
    os.remove(own)  # the run's copy gone: the digest alone tells
    assert loop.evaluate_checkpoint(config, workdir) == before
    np.save(source, mean / 2)
    want = re.escape(f"The data build's mean image {source} is not the one this run started with")
    for edit_own in (False, True):  # the run's copy gone, or edited the same way
        if edit_own:
            shutil.copyfile(source, own)
        with pytest.raises(DataError, match=want):
            loop.evaluate_checkpoint(config, workdir)
        with pytest.raises(DataError, match=want):
            loop.train_and_evaluate(config, workdir)
        with pytest.raises(DataError, match=want):  # (pass 27: an allowed config change is no
            loop.train_and_evaluate(config, workdir, allow_config_change=True)  # leave for it)
        with pytest.raises(DataError, match=want):
            figures.make_figures(workdir, str(tmp_path / "figures"))
    assert not os.path.exists(tmp_path / "figures")


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda m: m[:16, :16], r"is damaged: float32 of shape \(16, 16, 3\), not \[72, 72, 3\]"),
        (lambda m: b"text", r"cannot be read \(not a whole NumPy array file\)"),
        (lambda m: np.where(m > 100, np.nan, m), "its values are not all numbers in 0..255"),
        (lambda m: m - 1000, "its values are not all numbers in 0..255"),
    ],
    ids=["another shape", "text", "NaN", "below 0"],
)
def test_a_damaged_data_mean_image_is_named_when_any_run_reads_it(tmp_path, damage, said):
    """Pass 26, #8-#11: a new run read a data mean image of another shape (a 109-line
    TensorFlow traceback), a text file (NumPy's advice to load it unsafely), NaN (a divergence
    blamed on the learning rate) or values below 0 (trained on, no word). Every read checks it."""
    config = tiny_config(str(tmp_path), normalization="mean_image", dataset="image_folder")
    config.image_folder = _bmp_folder(str(tmp_path), 1)
    path = input_pipeline.mean_image_path(config)
    os.makedirs(os.path.dirname(path))
    mean = np.random.default_rng(0).uniform(0, 255, (72, 72, 3)).astype(np.float32)
    damaged = damage(mean)
    if isinstance(damaged, bytes):
        with open(path, "wb") as f:
            f.write(damaged)
    else:
        np.save(path, damaged)
    with pytest.raises(DataError, match=re.escape(path) + r" \(the data build's mean image\) "):
        input_pipeline.load_mean_image(config)
    with pytest.raises(DataError, match=said):
        input_pipeline.load_mean_image(config)


def test_an_evaluation_of_the_runs_data_changed_in_place_is_kept_apart(
    tmp_path, monkeypatch, capsys
):
    """Pass 26, #60: validation images replaced in place (same names, same count) and then an
    evaluation of the run's own data: recorded as the run's own result (compare showed it as
    final), though a resume refuses that data. It is kept apart, with a warning naming what
    changed."""
    multihost_worker.narrow_fc_layers(monkeypatch.setattr)
    folder = _bmp_folder(str(tmp_path), 4)
    overrides = dict(dataset="image_folder", image_folder=folder, num_classes=2)
    workdir = write_tiny_run(str(tmp_path), **overrides)
    config = config_lib.load_config(workdir)
    rundir.record_dataset(workdir, data_sources.dataset_identity(config))
    a, b = (os.path.join(folder, "val", c, "00.bmp") for c in ("a", "b"))
    os.replace(a, a + ".t"), os.replace(b, a), os.replace(a + ".t", b)
    loop.evaluate_checkpoint(config, workdir)
    err = capsys.readouterr().err
    assert "The data changed since the run recorded it (files_fingerprint)" in err
    (row,) = rundir.read_metrics(workdir)
    assert (row["reeval"], row["dataset_changed"]) == (True, ["files_fingerprint"])
    assert rundir.run_evals(rundir.read_metrics(workdir)) == []


def test_an_evaluation_of_validation_for_a_run_of_val_is_the_runs_own(
    tmp_path, monkeypatch, capsys
):
    """Pass 26, #79: `--config.eval_split=validation` of an image-folder run whose eval_split is
    `val` (one folder: 'validation' means val/) was kept apart as a re-evaluation of other data."""
    multihost_worker.narrow_fc_layers(monkeypatch.setattr)
    folder = _bmp_folder(str(tmp_path), 4)
    overrides = dict(dataset="image_folder", image_folder=folder, num_classes=2, eval_split="val")
    workdir = write_tiny_run(str(tmp_path), **overrides)
    config = config_lib.load_config(workdir)
    rundir.record_dataset(workdir, data_sources.dataset_identity(config))
    loop.evaluate_checkpoint(config, workdir, {"eval_split": "validation"})
    out, err = capsys.readouterr()  # (pass 27: the split's other name was taken for changed data)
    assert "kept apart" not in out
    assert "warning" not in err
    (own,) = rundir.run_evals(rundir.read_metrics(workdir))
    assert (own["step"], own.get("reeval"), own["eval_split"]) == (1, None, "val")
