"""Every entry point (main.py, each `python -m alexnet_jax.tools.<tool>`, each benchmark script)
as a user starts it: its help on stdout with exit code 0, also into a pipe the reader closed
(`--help | head -1`); a module that is no entry point answers with one `error:` line and exit
code 2; a benchmark's --json is checked before measuring and written whole or not at all (hostile
pass 7, #32-#35, #46, #47)."""

import os
import subprocess
import sys

import pytest

from alexnet_jax import tools

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_ARGPARSE_TOOLS = ("compare", "sweep", "figure1", "launch")  # the others parse flags with absl
_BENCHMARK_HELPERS = ("common.py", "torch_models.py")  # modules the scripts import


def _benchmark_scripts():
    names = sorted(os.listdir(os.path.join(REPO, "benchmarks")))
    return [n for n in names if n.endswith(".py") and n not in _BENCHMARK_HELPERS]


def _library_modules():
    """The modules under alexnet_jax/tools/ that are not in tools.TOOLS."""
    names = sorted(os.listdir(os.path.join(REPO, "alexnet_jax", "tools")))
    modules = [n[:-3] for n in names if n.endswith(".py") and not n.startswith("__")]
    assert set(tools.TOOLS) <= set(modules)
    return [m for m in modules if m not in tools.TOOLS]


# (command, the other help flag it takes besides --help)
ENTRY_POINTS = [
    (["main.py"], "--helpfull"),
    *(
        (["-m", f"alexnet_jax.tools.{tool}"], "-h" if tool in _ARGPARSE_TOOLS else "--helpfull")
        for tool in tools.TOOLS
    ),
    *((["benchmarks/" + script], "--helpfull") for script in _benchmark_scripts()),
]
_IDS = [" ".join(command) for command, _ in ENTRY_POINTS]


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL")}
    return {**env, "PYTHONPATH": REPO}


def _run(*args, file_limit: int | None = None, close_stdout: bool = False, **kwargs):
    """`python *args`; `file_limit` caps the size of every file it writes (the full disk of a
    test without root: a write beyond it fails with EFBIG, as one on a full disk with ENOSPC),
    `close_stdout` starts it with stdout closed. Both are set by a launcher that then execs the
    command (a preexec_fn forks this multithreaded process, which may deadlock)."""
    launcher = ["-c", _LAUNCHER, str(file_limit or 0), "1" if close_stdout else "0"]
    kwargs = {"capture_output": not close_stdout, **kwargs}
    return subprocess.run(
        [sys.executable, *launcher, *args], cwd=REPO, env=_env(), text=True, timeout=120, **kwargs
    )


_LAUNCHER = (
    "import os, resource, signal, sys\n"
    "limit, close = int(sys.argv[1]), sys.argv[2] == '1'\n"
    "if limit:\n"
    "    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    "    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
    "if close:\n"
    "    os.close(1)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[3:]])\n"
)


@pytest.mark.parametrize(("command", "other_flag"), ENTRY_POINTS, ids=_IDS)
def test_help_is_printed_on_stdout_with_exit_code_0(command, other_flag):
    """#34: main.py, predict, figures, export and the benchmarks (absl) exited 1 after --help,
    the argparse tools 0."""
    proc = _run(*command, "--help")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert "usage" in proc.stdout.lower() or "flags:" in proc.stdout


@pytest.mark.parametrize(("command", "other_flag"), ENTRY_POINTS, ids=_IDS)
def test_help_into_a_closed_pipe_ends_quietly_with_exit_code_0(command, other_flag):
    """#32 / #33: `--help | head -1` gave a BrokenPipeError traceback (absl's help printer), and
    main.py blamed --config for it. Here the reader has left before the first line: no word on
    stderr, exit code 0 (with --helpfull for absl, -h for argparse: their exit codes too)."""
    proc = subprocess.Popen(
        [sys.executable, *command, other_flag],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # long before the interpreter has started
    err = proc.stderr.read()
    assert (proc.wait(timeout=120), err) == (0, "")


@pytest.mark.parametrize("stdout", ["closed", "full"])
@pytest.mark.parametrize("command", [["main.py"], ["-m", "alexnet_jax.tools.export"]])
def test_help_to_a_closed_or_full_stdout_ends_with_exit_code_0(command, stdout):
    """absl wrote its help to None (AttributeError: main.py blamed --config, export a traceback)
    or raised on a full disk. Now as console.out: nothing with stdout closed, one warning when it
    is full."""
    if stdout == "closed":
        proc = _run(*command, "--help", close_stdout=True, stderr=subprocess.PIPE)
        assert (proc.returncode, proc.stderr) == (0, "")
        return
    with open("/dev/full", "w") as full:
        proc = _run(*command, "--help", stdout=full, capture_output=False, stderr=subprocess.PIPE)
    assert proc.returncode == 0
    assert proc.stderr.startswith("warning: stdout cannot be written (No space left on device)")


@pytest.mark.parametrize("module", [f"alexnet_jax.tools.{m}" for m in _library_modules()])
def test_a_module_of_the_tools_that_is_no_tool_is_one_error_line_naming_the_tools(module):
    """#35: `python -m alexnet_jax.tools.load --bogus=1` did nothing and exited 0."""
    proc = _run("-m", module, "--bogus=1")
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"error: {module} is a library module of the tools, not a tool: run ")
    assert "`python -m alexnet_jax.tools.<tool> --help`" in line
    assert all(tool in line for tool in tools.TOOLS)


@pytest.mark.parametrize("helper", _BENCHMARK_HELPERS)
def test_a_benchmark_helper_run_directly_is_one_error_line(helper):
    """#46: `python benchmarks/torch_models.py` was a ModuleNotFoundError traceback (common.py did
    nothing and exited 0)."""
    proc = _run(os.path.join("benchmarks", helper), "--bogus")
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"error: benchmarks/{helper} is ")
    assert "helper module" in line
    assert "not a benchmark: run " in line


def test_a_json_folder_that_cannot_be_written_is_one_line_before_measuring(tmp_path):
    """#47: on a full disk a benchmark measured first, then said "could not write: No space left"
    without the file, and left it empty. Now a trial write at start: one line naming --json."""
    path = tmp_path / "b.json"
    proc = _run(
        "benchmarks/lrn.py",
        "--layers=conv2",
        "--batch_size=1",
        f"--json={path}",
        file_limit=1000,
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line == (
        f"error: --json: the folder {tmp_path} cannot be written (File too large, errno 27): "
        "choose another."
    )
    assert (proc.stdout, os.listdir(tmp_path)) == ("", [])


def test_the_json_results_are_written_whole_or_not_at_all_and_a_failure_names_the_file(tmp_path):
    """#47: write_json wrote in place: a failed write left a truncated (0-byte) file where the
    earlier results were, and its error named no file. Now the earlier file stays whole, no
    temporary file is left, and the OSError names the path (common.run's one `error:` line)."""
    path = tmp_path / "b.json"
    path.write_text('{"earlier": true}\n')
    script = (
        "import sys; sys.path.insert(0, 'benchmarks'); import common\n"
        "try:\n"
        "    common.write_json(sys.argv[1], {'rows': ['x' * 100] * 100})\n"
        "except OSError as e:\n"
        "    print(e.filename, e.errno)\n"
    )
    proc = _run("-c", script, str(path), file_limit=2000)
    assert (proc.returncode, proc.stdout) == (0, f"{path} 27\n"), proc.stderr
    assert path.read_text() == '{"earlier": true}\n'
    assert os.listdir(tmp_path) == ["b.json"]


def test_an_output_folder_inside_a_runs_checkpoints_is_refused_before_measuring(tmp_path):
    """Pass 8, #48: `benchmarks/accelerator.py --out_dir=<run>/checkpoints/4/res` was written
    there, and the run's next save deleted it with step 4 (--json was guarded, --out_dir not)."""
    from alexnet_jax.runs import rundir

    step = tmp_path / "run" / "checkpoints" / "4"
    step.mkdir(parents=True)
    (step / rundir.COMMIT_MARKER).touch()
    proc = _run("benchmarks/accelerator.py", "--smoke", f"--out_dir={step / 'res'}")
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: --out_dir=")
    assert "checkpoints" in line
    assert sorted(os.listdir(step)) == [rundir.COMMIT_MARKER]
