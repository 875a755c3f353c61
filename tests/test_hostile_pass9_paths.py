"""Hostile pass 9 (docs/RELIABILITY.md): paths and names. A workdir or cache inside the image
folder (#70-#72), a deleted current directory (#52, #53), a non-UTF-8 file-system encoding
(#55, #56), two class folders that are one folder (#37), names with control characters in
predict's output (#35, #36), and a reused resize cache that left files out (#11)."""

import os
import subprocess
import sys

import pytest

from alexnet_jax.core.errors import ConfigError, DataError
from alexnet_jax.data import input_pipeline, recipe
from configs import default

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _folder_config(root: str, **overrides):
    config = default.get_config()
    config.dataset, config.image_folder, config.num_classes = "image_folder", root, 2
    config.eval_split, config.shuffle_buffer_size = "validation", 16
    for field, value in overrides.items():
        config[field] = value
    return config


def _tree(root: str) -> list[str]:
    found = [os.path.join(d, n) for d, ds, fs in os.walk(root) for n in ds + fs]
    return sorted(os.path.relpath(path, root) for path in found)


# ---- #70, #71, #72: a workdir or cache inside the image folder ---------------------------------


@pytest.mark.parametrize("inside", ["train/ant", "val/bee", "train/zz", "val/zz/deeper", "."])
def test_a_workdir_inside_the_image_folder_is_refused_before_anything_is_made(
    folder, tmp_path, inside
):
    """#71: an existing class folder was taken as a new workdir, and its training_curves.png
    became a training image; #70: a new one was blamed on the data. Also through a link."""
    from alexnet_jax.train import loop

    before = _tree(folder)
    os.symlink(folder, tmp_path / "link")
    for workdir in (os.path.join(folder, inside), os.path.join(tmp_path, "link", inside)):
        with pytest.raises(ConfigError) as e:
            loop.train_and_evaluate(_folder_config(folder), workdir)
        message = str(e.value)
        assert f"--workdir={workdir} lies inside the image folder {folder}" in message, message
        assert "choose a workdir outside it" in message
        assert "\n" not in message
        assert _tree(folder) == before  # nothing made, nothing written
        with pytest.raises(ConfigError, match="lies inside the image folder"):
            loop.evaluate_checkpoint(_folder_config(folder, torch_weights="w.pth"), workdir)
        assert _tree(folder) == before


@pytest.mark.parametrize("field", ["resized_cache_dir", "image_store_dir", "data_dir"])
def test_a_cache_inside_the_image_folder_is_refused_and_leaves_no_folder(folder, field):
    """#72: the refused cache's empty folder stayed, a class without images for every later run.
    Pass 26, #68: a data_dir there (the mean image's) was "errno 2 ... check the path", and left a
    `tfds` class folder in the dataset."""
    before = _tree(folder)
    config = _folder_config(folder, **{field: os.path.join(folder, "train", "cache")})
    if field == "image_store_dir":
        config.augment_on = "device"
    with pytest.raises(ConfigError) as e:
        input_pipeline.prepare(config)
    assert f"--config.{field}={folder}/train/cache lies inside the image folder" in str(e.value)
    assert f"choose a config.{field} outside it" in str(e.value)
    assert _tree(folder) == before
    input_pipeline.prepare(_folder_config(folder))  # the folder still trains


def test_a_sweep_dir_inside_the_image_folder_is_refused_before_it_is_made(folder):
    """The sweep made its folder (an empty class) before each arm's main.py refused it."""
    from alexnet_jax.tools import sweep

    fields = f"dataset=image_folder,image_folder={folder},num_classes=2,normalization=mean_std"
    config = os.path.join(REPO, "configs", "figure1.py")
    plan = sweep.make_sweep(None, config, [f"a:{fields}"], None)
    with pytest.raises(ConfigError, match=r"^--sweep_dir=.*/train/sw lies inside the image folder"):
        sweep.plan_runs(plan, os.path.join(folder, "train", "sw"))
    assert not os.path.exists(os.path.join(folder, "train", "sw"))


def test_an_image_folder_inside_the_workdir_and_caches_beside_it_are_fine(folder, tmp_path):
    config = _folder_config(folder, resized_cache_dir=str(tmp_path / "images-cache"))
    recipe.check_outside_image_folder(config, str(tmp_path))  # the folder is inside it
    recipe.check_outside_image_folder(config, str(tmp_path / "images2"))  # a prefix only


# ---- #52, #53: the current directory was deleted -----------------------------------------------

_MISSING_CWD = (
    "error: the current directory no longer exists (deleted or unmounted): cd to an existing "
    "folder, or give absolute paths."
)


@pytest.fixture
def deleted_cwd(tmp_path, monkeypatch):
    """The test's current directory, deleted (monkeypatch returns to the old one after)."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    return str(gone)


def test_a_relative_path_in_a_deleted_current_directory_is_one_line(deleted_cwd, capsys):
    """#53: compare's os.path.realpath ended in a FileNotFoundError traceback."""
    from alexnet_jax.tools import compare, figure1

    with pytest.raises(SystemExit) as e:
        compare.main(["rel"])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines() == [_MISSING_CWD]
    with pytest.raises(SystemExit) as e:
        figure1.main(["--sweep_dir=rel"])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines() == [_MISSING_CWD]


def test_main_with_a_relative_workdir_in_a_deleted_current_directory_is_one_line(deleted_cwd):
    """#52: a 31-line traceback from run.py's os.path.abspath; an absolute path works (#51)."""
    command = [
        sys.executable,
        os.path.join(REPO, "main.py"),
        f"--config={os.path.join(REPO, 'configs', 'figure1.py')}",
        "--config.dataset=synthetic",
        "--config.normalization=mean_std",
        "--workdir=relw",
    ]
    env = {**os.environ, "XLA_FLAGS": ""}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [_MISSING_CWD]


# ---- #55, #56: a file-system encoding that is not UTF-8 ---------------------------------------


def test_a_file_system_encoding_that_is_not_utf8_is_refused_at_start(tmp_path):
    """#55, #56: non-ASCII names crashed matplotlib (compare) and TensorFlow (training) mid-run
    under LC_ALL=POSIX PYTHONUTF8=0; every entry point now refuses it first, in one line."""
    env = {**os.environ, "LC_ALL": "POSIX", "LANG": "C", "PYTHONUTF8": "0", "PYTHONPATH": REPO}
    for command in (["-m", "alexnet_jax.tools.compare", str(tmp_path)], [f"{REPO}/main.py"]):
        done = subprocess.run(
            [sys.executable, *command], capture_output=True, text=True, env=env, timeout=120
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.splitlines() == [
            "error: Python's file-system encoding is 'ascii' (locale 'POSIX', PYTHONUTF8=0), in "
            "which file names that are not ASCII cannot be read or written: set PYTHONUTF8=1, or "
            "a UTF-8 locale such as LC_ALL=C.UTF-8."
        ]
    env["PYTHONUTF8"] = "1"  # the remedy
    done = subprocess.run(
        [sys.executable, "-m", "alexnet_jax.tools.compare", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert "file-system encoding" not in done.stderr, done.stderr


def test_the_encoding_check_is_part_of_the_environment_check(monkeypatch):
    from alexnet_jax.core import errors, runtime

    errors.check_start()  # the test suite's own UTF-8 passes
    monkeypatch.setattr(sys, "getfilesystemencoding", lambda: "latin-1")
    with pytest.raises(errors.UserError, match="file-system encoding is 'latin-1'"):
        runtime.check_environment()


# ---- #37: two class folders that are one folder -------------------------------------------------


@pytest.mark.parametrize("split", ["train", "val"])
def test_two_class_folders_that_are_one_folder_are_refused_by_name(folder, tmp_path, split):
    """#37: train/a and train/b, links to one folder, trained every image under both labels."""
    os.rename(os.path.join(folder, split, "bee"), tmp_path / "bee")
    os.symlink(os.path.join(folder, split, "ant"), os.path.join(folder, split, "bee"))
    with pytest.raises(DataError) as e:
        input_pipeline.prepare(_folder_config(folder))
    real = os.path.join(folder, split, "ant")
    assert str(e.value) == (
        f"The image folder {folder!r} has class folders {split}/ant/ and {split}/bee/ that are "
        f"one folder ({real}), so each of its images would be trained under 2 labels: make each "
        "class a folder of its own (copy it, or remove the extra link)."
    )
    os.remove(os.path.join(folder, split, "bee"))  # the remedy: a folder of its own
    os.symlink(tmp_path / "bee", os.path.join(folder, split, "bee"))
    input_pipeline.prepare(_folder_config(folder))


# ---- #35, #36: names with control characters in predict's output ------------------------------


def test_predict_prints_each_file_and_class_name_on_its_own_line():
    """#35, #36: a file or class name holding a newline was printed raw, over two lines."""
    from alexnet_jax.tools.predict import Prediction, format_predictions

    predictions = [Prediction(0, None, "x\ny", 0.5), Prediction(1, "n01\t2", "ünï 🐜 a\\b", 0.25)]
    assert format_predictions("/w/n\nl\x1b[31m.png", predictions).splitlines() == [
        "/w/n\\nl\\x1b[31m.png",
        "  1.  50.00%  -           x\\ny",
        "  2.  25.00%  n01\\t2      ünï 🐜 a\\b",  # ordinary Unicode as it is
    ]


# ---- #11: a reused cache says what its build left out -------------------------------------------


_CACHES = [("resized_cache_dir", "pre-resize cache"), ("image_store_dir", "image store")]


@pytest.mark.parametrize(("field", "what"), _CACHES)
def test_a_reused_cache_repeats_which_undecodable_files_it_left_out(
    folder, tmp_path, capsys, field, what
):
    """#11: only the run that built the cache was told its training set lacks those files."""
    with open(os.path.join(folder, "train", "ant", "bad.png"), "w") as f:
        f.write("not a png")
    config = _folder_config(folder, **{field: str(tmp_path / "cache")})
    if field == "image_store_dir":
        config.augment_on = "device"
    warning = f"warning: The {what} left out 1 undecodable image(s): train/ant/bad.png"
    for _ in ("build", "reuse"):
        capsys.readouterr()
        input_pipeline.prepare(config)
        said = [line for line in capsys.readouterr().err.splitlines() if "left out" in line]
        assert said == [warning]
