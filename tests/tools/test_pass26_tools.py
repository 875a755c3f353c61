"""Hostile pass 26, the tools' small messages: an empty `export --to=` (#33), a weights file that
is a device, a FIFO or a folder (#34), compare's --out at a device (#35), an empty
`sweep --seeds=` (#37), and figure1 on a missing --sweep_dir or unknown --arms (#44): each one
`error:` line, exit code 2, before any file or folder is made. No training: runs are their
records, written by hand."""

import json
import os

import pytest

from alexnet_jax.core import errors
from alexnet_jax.interop import weights_io
from alexnet_jax.runs import rundir
from alexnet_jax.tools import compare, export, figure1, predict, sweep
from tests.tools.test_sweep import BASE_CONFIG

SWEEP_FILE = """
def get_sweep():
    return {{"config": {config!r}, "arms": {{"a": {{}}}}, "seeds": [0, 1]}}
"""


def _one_line(capsys, call) -> str:
    """The one `error:` line (exit code 2, nothing on stdout) of `call()`."""
    with pytest.raises(SystemExit) as exit_info:
        call()
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("error: ")
    return line


def _reported(function, *args):
    """`function(*args)` as an entry point runs it: a UserError is one line and exit code 2."""

    def call():
        with errors.reported_as_exit():
            function(*args)

    return call


def test_export_to_an_empty_path_says_to_is_empty_with_an_example(tmp_path, capsys):
    """#33: `export --to=` said `error: : unknown weights format ''`. Now it says --to is empty,
    with an example and the formats known; nothing is read or written."""
    line = _one_line(capsys, _reported(export.export_run, str(tmp_path), ""))
    assert line == (
        "error: --to is empty: give the file to write, e.g. --to=model.pth; its suffix picks the "
        "format: .pth, .safetensors, .npz (.pt and .bin write .pth)."
    )
    assert os.listdir(tmp_path) == []


def test_a_weights_file_that_is_a_device_fifo_or_folder_is_not_called_missing(tmp_path, capsys):
    """#34: `predict --weights=/dev/null` (and `--config.torch_weights=/dev/null`, read by the
    same weights_io) said "no such weights file" of a path that exists. Now: not a regular file,
    and what to give; a missing file is still "no such weights file"."""
    fifo = str(tmp_path / "model.pth")
    os.mkfifo(fifo)  # (never opened: reading it would wait for a writer)
    folder = tmp_path / "weights.npz"
    folder.mkdir()
    for path, kind in (
        ("/dev/null", "a device, a FIFO or another special file"),
        (fifo, "a device, a FIFO or another special file"),
        (str(folder), "a folder"),
    ):
        line = _one_line(capsys, _reported(predict.load_model, None, path))
        assert line == (
            f"error: {path} is not a regular file (it is {kind}): give a weights file "
            "(.pth, .safetensors, .npz), e.g. one written by alexnet_jax.tools.export."
        )
        with pytest.raises(weights_io.WeightsFileError, match="is not a regular file"):
            weights_io.load_weights(path, weights_io.DEFAULT_IMPORT_VARIANT)
    missing = str(tmp_path / "missing.pth")
    with pytest.raises(weights_io.WeightsFileError, match="no such weights file"):
        weights_io.read_conventions(missing)


def test_compare_refuses_an_out_that_is_a_device_or_fifo(tmp_path, capsys):
    """#35: `compare RUN --out=/dev/null` exited 0, having written /dev/null.md, .csv and .png
    into /dev. --out is the files' path without extension: an existing device or FIFO there is
    refused in one line before anything is written (a FIFO in tmp_path stands for /dev/null:
    were it not refused, the test would write into /dev)."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    row = {"step": 2, "split": "eval", "top1_error": 0.5, "top5_error": 0.1}
    (workdir / rundir.METRICS_FILE).write_text(json.dumps(row) + "\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    line = _one_line(capsys, lambda: compare.main([str(workdir), f"--out={fifo}"]))
    assert line == (
        f"error: --out={fifo} is a device, a FIFO or another special file, not a regular file: "
        "--out is the path of the files without their extension, in a folder you can write, "
        "e.g. --out=comparison for comparison.md, .csv and .png."
    )
    assert sorted(os.listdir(tmp_path)) == ["fifo", "run"]


def test_sweep_refuses_an_empty_seeds_flag(tmp_path, capsys):
    """#37: `sweep --seeds=` ran the sweep file's seeds, no word. Now one line; nothing made."""
    config = tmp_path / "base.py"
    config.write_text(BASE_CONFIG)
    sweep_file = tmp_path / "s.py"
    sweep_file.write_text(SWEEP_FILE.format(config=str(config)))
    sweep_dir = tmp_path / "S"
    for seeds in ("", " "):
        argv = [f"--sweep={sweep_file}", f"--sweep_dir={sweep_dir}", f"--seeds={seeds}"]
        line = _one_line(capsys, lambda argv=argv: sweep.main([*argv, "--print_commands"]))
        assert line == (
            "error: --seeds is empty: give the seeds to run, e.g. --seeds=0,1,2, or leave "
            "--seeds out for the sweep file's seeds (or each arm once, with its config's seed)."
        )
    assert not sweep_dir.exists()
    assert sweep.make_sweep(str(sweep_file), None, [], None).seeds == (0, 1)  # (no --seeds)


def test_figure1_on_a_missing_sweep_dir_says_so_and_makes_nothing(tmp_path, capsys):
    """#44: `figure1 --sweep_dir=<missing>` made the folder (as --out's) and then said it "holds
    no runs"; with --out elsewhere it made --out's folders. Now one line says it does not exist,
    and nothing is made."""
    missing = tmp_path / "no" / "such_folder"
    for extra in ([], [f"--out={tmp_path / 'new' / 'f.png'}"]):
        line = _one_line(capsys, lambda e=extra: figure1.main([f"--sweep_dir={missing}", *e]))
        assert line == (
            f"error: --sweep_dir={missing} does not exist: give the folder of the sweep's runs, "
            "made by `python -m alexnet_jax.tools.sweep --sweep=sweeps/figure1.py "
            f"--sweep_dir={missing}`."
        )
    assert os.listdir(tmp_path) == []


def test_figure1_with_an_unknown_arm_makes_no_out_folder(tmp_path, capsys):
    """#44: an unknown --arms made --out's folder before saying the sweep has no run of it. Now
    the arms are checked first; an --out that cannot be made is still refused before any work
    (hostile pass 4, #25)."""
    sweep_dir = tmp_path / "figure1"
    run = sweep_dir / "relu"
    run.mkdir(parents=True)
    (run / rundir.CONFIG_FILE).write_text("{}")
    row = {"step": 4, "split": "train", "loss": 1.0, "top1_error": 0.5, "epoch": 1.0}
    (run / rundir.METRICS_FILE).write_text(json.dumps(row) + "\n")
    argv = [f"--sweep_dir={sweep_dir}", "--arms=relu,tanhh"]
    out = tmp_path / "new" / "f.png"
    line = _one_line(capsys, lambda: figure1.main([*argv, f"--out={out}"]))
    assert line.startswith(f"error: {sweep_dir} has no logged run of arm(s) tanhh: ")
    assert sorted(os.listdir(tmp_path)) == ["figure1"]
    (tmp_path / "a file").write_text("in the way")
    blocked = tmp_path / "a file" / "x" / "f.png"
    line = _one_line(capsys, lambda: figure1.main([*argv, f"--out={blocked}"]))
    assert line.startswith(f"error: --out's folder={blocked.parent} cannot be created")
