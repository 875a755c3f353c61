"""The console of the tools and of the Python API a user calls: results on stdout as plain lines,
and nothing on stderr when nothing is wrong (no line from TensorFlow, Orbax, absl or XLA), each
run as a user runs it, in a fresh process on the session's tiny run (tests/conftest.py run_dir).
main.py's own console: tests/train/test_main.py; a benchmark script's: tests/test_benchmarks.py."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from alexnet_jax.runs import rundir


def _run(repo_root, *args):
    """`python *args` in a fresh process as a user starts it (no test flags: one CPU device, the
    default TensorFlow log level): (stdout, stderr); a failure shows both."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL")}
    env["PYTHONPATH"] = repo_root
    proc = subprocess.run(
        [sys.executable, *args], cwd=repo_root, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def exported(run_dir, repo_root, tmp_path_factory):
    """(path, stdout, stderr) of `python -m alexnet_jax.tools.export` of run_dir to a .npz."""
    path = str(tmp_path_factory.mktemp("exported") / "model.npz")
    out, err = _run(
        repo_root, "-m", "alexnet_jax.tools.export", f"--workdir={run_dir}", f"--to={path}"
    )
    return path, out, err


def test_export_says_what_it_wrote_and_nothing_else(exported):
    path, out, err = exported
    assert (out, err) == (f"wrote {path}\n", "")


def test_predict_prints_its_predictions_and_nothing_on_stderr(run_dir, repo_root, tmp_path):
    image = str(tmp_path / "photo.jpg")
    pixels = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    out, err = _run(repo_root, "-m", "alexnet_jax.tools.predict", f"--workdir={run_dir}", image)
    assert err == ""
    lines = out.splitlines()
    assert lines[:2] == ["# cpu device, variant torchvision", image]
    assert len(lines) == 6  # the 4 classes of the miniature dataset
    assert all(line.startswith(f"  {rank}. ") for rank, line in enumerate(lines[2:], start=1))


def test_compare_prints_its_table_and_nothing_on_stderr(run_dir, repo_root, tmp_path):
    """On run_dir's config (4 classes: no top-5 columns) with metrics.jsonl lines."""
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    shutil.copy(rundir.config_path(run_dir), workdir)
    records = [
        {"step": 1, "split": "train", "loss": 1.5, "top1_error": 0.75, "top5_error": 0.0},
        {"step": 1, "split": "eval", "loss": 1.4, "top1_error": 0.5, "top5_error": 0.0},
    ]
    rundir.rewrite_jsonl(rundir.metrics_path(workdir), records)
    out, err = _run(repo_root, "-m", "alexnet_jax.tools.compare", workdir, f"--out={workdir}/c")
    assert err == ""
    lines = out.splitlines()
    assert lines[0].startswith("| arm | runs | state | final top-1 err % | best top-1 err % |")
    assert lines[2].startswith("| run | 1 | unfinished (step 1) | 50.0 | 50.0 | 1 |")
    assert lines[-1] == f"wrote {workdir}/c.md, {workdir}/c.csv, {workdir}/c.png"


def test_the_python_api_loads_a_run_and_an_exported_file_silently(run_dir, exported, repo_root):
    """load.load_run (Orbax opens the run's checkpoints read-only: its warnings about that are
    muted) and torch_models.load_exported, as a user calls them from Python: nothing printed."""
    script = (
        "import sys; from alexnet_jax.tools import load; "
        "from alexnet_jax.interop import torch_models; "
        "config, params = load.load_run(sys.argv[1]); "
        "model, conventions = torch_models.load_exported(sys.argv[2]); "
        "print(config.variant, conventions['variant'])"
    )
    out, err = _run(repo_root, "-c", script, run_dir, exported[0])
    assert (out, err) == ("torchvision torchvision\n", "")


def test_figures_say_where_they_wrote_and_nothing_else(run_dir, repo_root, tmp_path):
    """The figures tool reads the run's data through TensorFlow (Figure 4's neighbours): still
    no TensorFlow, Orbax or XLA line on stderr, and its stdout names the two files."""
    out_dir = str(tmp_path / "figs")
    out, err = _run(
        repo_root,
        "-m",
        "alexnet_jax.tools.figures",
        f"--workdir={run_dir}",
        f"--out={out_dir}",
        "--num_queries=2",
        "--max_train_images=8",
    )
    assert err == ""
    written = sorted(os.listdir(out_dir))
    assert len(written) == 2
    assert all(name.endswith(".png") and name in out for name in written)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "alexnet_jax.tools.predict", "--workdir=runs/x"], "error: no image given"),
        (["-m", "alexnet_jax.tools.export", "--workdir=runs/x"], "Flag --to must have a value"),
        (["-m", "alexnet_jax.tools.figures"], "Flag --workdir must have a value"),
        (["-m", "alexnet_jax.tools.export", "--workdir=x", "--to=y.pth", "--bogus=1"], "Unknown"),
        (["-m", "alexnet_jax.tools.sweep", "--bogus"], "unrecognized arguments: --bogus"),
        (["-m", "alexnet_jax.tools.sweep"], "give --sweep_dir"),
        (["-m", "alexnet_jax.tools.compare"], "arguments are required: DIR"),
        (["-m", "alexnet_jax.tools.figure1"], "arguments are required: --sweep_dir"),
        (["-m", "alexnet_jax.tools.figure1", "--sweep_dir=x", "--threshold=a"], "--threshold"),
        (["-m", "alexnet_jax.tools.launch", "--bogus"], "unrecognized arguments: --bogus"),
        (["-m", "alexnet_jax.tools.launch"], "give the command after --"),
    ],
)
def test_a_missing_or_unknown_argument_is_one_error_line_and_exit_2(repo_root, args, message):
    """predict without an image (absl printed its whole help, exit 1), export without --to (an
    absl FATAL line, exit 1), figures without --workdir, an unknown flag, and the argparse tools'
    mistakes (argparse printed its usage too): one `error:` line naming what is missing, exit 2."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = repo_root
    proc = subprocess.run(
        [sys.executable, *args], cwd=repo_root, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: ")
    assert message in line
    assert proc.stdout == ""
