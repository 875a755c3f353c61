"""The local multi-process launcher (alexnet_jax/tools/launch.py) and multi-host start-up
(runtime.initialize_distributed) under misuse: bad flags, Ctrl-C, a worker that dies, a peer that
never arrives.

The workers here are tiny `python -c` scripts that print, sleep, exit or trap signals (the
launcher appends --coordinator_address/--num_processes/--process_id to their argv), so every test
takes seconds; tests/train/test_multihost.py runs main.py itself.
"""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import jax
import pytest

from alexnet_jax.core import errors, runtime
from alexnet_jax.tools import launch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Every worker script starts with this: its process index from the flags the launcher appends.
PRELUDE = (
    "import os, signal, sys, time\n"
    "I = int(next(a for a in sys.argv if a.startswith('--process_id=')).split('=')[1])\n"
)
# Traps SIGTERM (prints "got TERM", then "saves" for 1 s, in which a repeated TERM would print
# again, and exits 0) and SIGINT (prints "got INT", exits 1).
SAVES_ON_TERM = PRELUDE + (
    "termed = []\n"
    "signal.signal(signal.SIGTERM, lambda *_: (print('got TERM', flush=True), termed.append(1)))\n"
    "signal.signal(signal.SIGINT, lambda *_: (print('got INT', flush=True), sys.exit(1)))\n"
    "print('ready', flush=True)\n"
    "deadline = time.monotonic() + 30\n"
    "while not termed and time.monotonic() < deadline:\n"
    "    time.sleep(0.02)\n"
    "time.sleep(1.0)\n"
    "sys.exit(0 if termed else 1)\n"
)


class Launcher:
    """`python -m alexnet_jax.tools.launch FLAGS -- python -c WORKER` in its own session, as a shell
    starts a foreground job; its output is collected by a thread. Worker processes it leaves
    behind are killed by `close`."""

    def __init__(self, *flags: str, worker: str, wrapper: tuple[str, ...] = ()):
        command = [sys.executable, "-m", "alexnet_jax.tools.launch", *flags, "--"]
        command += [*wrapper, sys.executable, "-c", worker]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, count: int = 1, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while sum(text in line for line in self.lines) < count:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"{count} x {text!r} not printed:\n{self.output}")
            time.sleep(0.02)

    def wait(self, timeout: float = 20) -> tuple[int, float]:
        """The launcher's exit code and the seconds it ran."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the launcher ran over {timeout} s:\n{self.output}") from None
        self.reader.join(timeout=5)
        return code, time.monotonic() - self.started

    def interrupt(self, signum: int = signal.SIGINT) -> None:
        """What a terminal does on Ctrl-C: the signal to the whole foreground process group."""
        os.killpg(self.proc.pid, signum)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in re.findall(r"\[launch\] process \d+: pid (\d+)", self.output):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


@pytest.fixture
def start_launcher():
    launchers = []

    def start(*flags: str, worker: str, wrapper: tuple[str, ...] = ()) -> Launcher:
        launchers.append(Launcher(*flags, worker=worker, wrapper=wrapper))
        return launchers[-1]

    yield start
    for launcher in launchers:
        launcher.close()


# ---- 1. Flags out of range --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "allowed"),
    [
        ("--num_processes=0", "1 or more"),
        ("--num_processes=-2", "1 or more"),
        ("--devices_per_process=0", "1 or more"),
        ("--devices_per_process=-1", "1 or more"),
        ("--port=65536", "0..65535"),
        ("--port=-1", "0..65535"),
        ("--grace_s=-1", "0 or more"),
    ],
)
def test_a_flag_out_of_range_is_refused_before_anything_runs(flag, allowed):
    """--num_processes=0 used to run nothing and exit 0, --devices_per_process=0 crashed every
    worker, a port outside 0..65535 reached the workers: each is refused at start with one
    `error:` line naming the flag and its allowed range, exit code 2, and no worker runs."""
    command = [sys.executable, "-m", "alexnet_jax.tools.launch", flag, "--"]
    command += [sys.executable, "-c", "print('worker ran')"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "worker ran" not in result.stdout + result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1, result.stderr
    assert flag.split("=")[0] in error_lines[0]
    assert allowed in error_lines[0]


# ---- 2. Ctrl-C and SIGTERM to the launcher ----------------------------------------------------


@pytest.mark.parametrize(("signum", "expected_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_ctrl_c_reaches_each_worker_as_exactly_one_sigterm(start_launcher, signum, expected_code):
    """Ctrl-C in a terminal signals the launcher's whole process group. The workers run in
    sessions of their own, so they get no SIGINT; the launcher sends each exactly one SIGTERM
    (main.py saves at the next step and exits 0). Exit code 130 after SIGINT; after SIGTERM the
    workers' code (0)."""
    launcher = start_launcher("--num_processes=2", worker=SAVES_ON_TERM)
    launcher.wait_for("] ready", count=2)
    launcher.interrupt(signum)
    code, _ = launcher.wait()
    assert code == expected_code, launcher.output
    for i in range(2):
        assert launcher.lines.count(f"[{i}] got TERM") == 1, launcher.output
    assert "got INT" not in launcher.output
    assert "[launch] exit codes: [0, 0]" in launcher.output
    # Pass 10, #58: after a Ctrl-C the launcher's own last word is the one `interrupted:` line.
    interrupted = [line for line in launcher.lines if line.startswith("interrupted:")]
    assert interrupted == ([f"interrupted: {errors.CTRL_C}"] if signum == signal.SIGINT else [])
    assert launcher.lines[-1] == (interrupted or launcher.lines)[-1]


def test_a_second_ctrl_c_kills_the_workers(start_launcher):
    """A second Ctrl-C while the workers are still saving kills them (SIGKILL), says so in one
    line, and the launcher exits 130 at once."""
    ignores_term = PRELUDE + (
        "signal.signal(signal.SIGTERM, lambda *_: print('got TERM', flush=True))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    launcher = start_launcher("--num_processes=2", worker=ignores_term)
    launcher.wait_for("] ready", count=2)
    launcher.interrupt()
    launcher.wait_for("got TERM", count=2)
    launcher.interrupt()
    code, seconds = launcher.wait()
    assert code == 130
    assert seconds < 15
    assert sum("SIGKILL" in line for line in launcher.lines) == 1, launcher.output
    assert launcher.output.count("got TERM") == 2


# ---- 3. A worker dies while the others run ----------------------------------------------------


@pytest.mark.parametrize(
    ("death", "expected_code", "described"),
    [
        ("sys.exit(3)", 3, "exited with code 3"),
        ("os.kill(os.getpid(), signal.SIGKILL)", 128 + 9, "was killed by SIGKILL"),
    ],
)
def test_a_dead_worker_stops_the_others(start_launcher, tmp_path, death, expected_code, described):
    """Process 1 exits with code 3 (or is killed by SIGKILL) after 0.5 s while process 0 would
    sleep for 60 s: the launcher stops process 0 at once, prints one paragraph naming the dead
    process, its pid, its exit code or signal and its log file, and exits with the dead process's
    code (128 + the signal's number) within seconds."""
    worker = PRELUDE + "if I == 1:\n    time.sleep(0.5)\n" + f"    {death}\n" + "time.sleep(60)\n"
    log_dir = str(tmp_path / "logs")
    launcher = start_launcher("--num_processes=2", f"--process_log_dir={log_dir}", worker=worker)
    code, seconds = launcher.wait()
    assert code == expected_code, launcher.output
    assert seconds < 10
    pid = re.search(r"\[launch\] process 1: pid (\d+)", launcher.output).group(1)
    paragraph = next(line for line in launcher.lines if f"process 1 (pid {pid})" in line)
    assert f"process 1 (pid {pid}) {described}" in paragraph
    assert "stopping the other processes" in paragraph
    assert os.path.join(log_dir, "process_1.log") in paragraph


def test_a_worker_that_ignores_sigterm_is_killed_after_grace_s(start_launcher):
    """Process 1 exits with code 3; process 0 ignores the SIGTERM that should stop it: after
    --grace_s it is killed (SIGKILL, said in one line) and the launcher exits 3. Hostile pass
    25, #23: a process it started (a shell's `sleep`) kept its output open and launch returned
    only when that ended: the killed process's group is killed with it."""
    worker = PRELUDE + (
        "import subprocess\n"
        "if I == 0:\n"
        "    subprocess.Popen(['sleep', '60'])\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "if I == 1:\n"
        "    time.sleep(0.5)\n"
        "    sys.exit(3)\n"
        "time.sleep(60)\n"
    )
    launcher = start_launcher("--num_processes=2", "--grace_s=1", worker=worker)
    code, seconds = launcher.wait()
    assert code == 3, launcher.output
    assert 1.5 <= seconds < 10
    assert "process 1 (pid" in launcher.output
    killed = [line for line in launcher.lines if "SIGKILL" in line and "process 0" in line]
    assert len(killed) == 1, launcher.output


def test_processes_a_finished_worker_left_holding_its_output_are_killed_with_a_warning(
    start_launcher,
):
    """Hostile pass 25, #23: a process that exits 0 but leaves a child holding its output open
    kept launch waiting for that child; launch kills what it left (one warning) and exits 0."""
    worker = PRELUDE + "import subprocess\nsubprocess.Popen(['sleep', '60'])\n"
    launcher = start_launcher("--num_processes=1", worker=worker)
    code, seconds = launcher.wait()
    assert code == 0, launcher.output
    assert seconds < 15, launcher.output
    assert "left processes running: killed." in launcher.output


def test_after_a_ctrl_c_a_worker_still_running_when_another_exited_is_killed_after_grace_s(
    start_launcher,
):
    """Hostile pass 24, #21: a SIGTERM to launch as it started the processes: process 1 exited,
    process 0, waiting in JAX's start-up for it (which no SIGTERM interrupts), waited out the
    whole 300 s. After a stop, the ones still running --grace_s after another exited are killed."""
    worker = PRELUDE + (
        "signal.signal(signal.SIGTERM, signal.SIG_IGN if I == 0 else signal.SIG_DFL)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    launcher = start_launcher("--num_processes=2", "--grace_s=1", worker=worker)
    launcher.wait_for("] ready", count=2)
    launcher.interrupt(signal.SIGINT)
    code, seconds = launcher.wait()
    assert code == 130, launcher.output
    assert seconds < 20, launcher.output
    killed = [line for line in launcher.lines if "SIGKILL" in line and "process 0" in line]
    assert len(killed) == 1, launcher.output


# ---- 4. A peer that never arrives -------------------------------------------------------------


@pytest.mark.parametrize("process_id", [0, 1])
def test_a_peer_that_never_arrives_is_one_error_after_the_timeout(process_id):
    """One process of a 2-process job, started alone: jax.distributed used to wait 5 minutes,
    then abort with a C++ stack trace. With timeout_s=3 the process exits with code 2 and one
    `error:` paragraph naming the coordinator, the process count, this process's id, the timeout
    and what to check; process 0 (the coordinator) and process 1 (which cannot reach it) alike."""
    address = f"localhost:{launch.free_port()}"
    script = (
        "from alexnet_jax.core import errors, runtime\n"
        "with errors.reported_as_exit():\n"
        f"    runtime.initialize_distributed({address!r}, 2, {process_id}, timeout_s=3)\n"
        "print('initialized')\n"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert time.monotonic() - started < 30
    error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1, result.stderr
    assert error_lines[0].startswith("error: ")
    for text in (address, "2 processes", f"process {process_id}", "3 s", "--coordinator_address"):
        assert text in error_lines[0]
    assert "Check failure" not in result.stderr
    assert "initialized" not in result.stdout


def test_the_coordinator_port_in_use_is_a_user_error(monkeypatch):
    """Process 0 binds the coordinator's port; if something else holds it, jax.distributed
    crashes (segfault): a UserError naming the address comes first."""
    monkeypatch.setattr(jax.distributed, "initialize", pytest.fail)  # never reached
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        address = f"localhost:{taken.getsockname()[1]}"
        with pytest.raises(errors.ConfigError, match=rf"{address} is in use"):
            runtime.initialize_distributed(address, 2, 0, env={})


def test_timeout_from_the_argument_or_jax_distributed_timeout_s(monkeypatch):
    """timeout_s, else JAX_DISTRIBUTED_TIMEOUT_S, else 300 s; jax's own initialization_timeout
    is set later than the timeout_s watchdog (jax aborts the process at its deadline). A bad
    value or a coordinator address without a port is a ConfigError naming it."""
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append(k))
    runtime.initialize_distributed("host0:1234", 2, 1, timeout_s=7, env={})
    runtime.initialize_distributed("host0:1234", 2, 1, env={"JAX_DISTRIBUTED_TIMEOUT_S": "9"})
    runtime.initialize_distributed("host0:1234", 2, 1, env={})
    timeouts = [k["initialization_timeout"] for k in calls]
    assert timeouts == [
        7 + runtime.JAX_ABORT_MARGIN_S,
        9 + runtime.JAX_ABORT_MARGIN_S,
        300 + runtime.JAX_ABORT_MARGIN_S,
    ]
    with pytest.raises(errors.ConfigError, match="JAX_DISTRIBUTED_TIMEOUT_S='soon'"):
        runtime.initialize_distributed(
            "host0:1234", 2, 1, env={"JAX_DISTRIBUTED_TIMEOUT_S": "soon"}
        )
    with pytest.raises(errors.ConfigError, match="timeout_s=0"):
        runtime.initialize_distributed("host0:1234", 2, 1, timeout_s=0, env={})
    for address in ("host0", "host0:0", "host0:70000", "host0:http"):
        with pytest.raises(errors.ConfigError, match=f"--coordinator_address={address}"):
            runtime.initialize_distributed(address, 2, 1, env={})


_OUTLIVES = """
import sys, time
from alexnet_jax.core import errors
errors.stop_with_the_launcher()
print("watching", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("wrapper", [(), ("timeout", "120")])
def test_the_processes_of_a_killed_launcher_stop(start_launcher, wrapper):
    """Hostile pass 13, #24 (docs/RELIABILITY.md): kill -9 of launch left both training
    processes running (step 290 -> 490), unwatched, their output going nowhere; a rerun then
    hung 30 s on the lock and a dead peer.
    Each process launch starts gets SIGTERM when the launcher dies (Linux's parent-death
    signal, errors.stop_with_the_launcher): a training run saves and exits as on a preemption.
    Pass 15, #31: through a wrapper (`-- timeout 600 python main.py`) the parent is the
    wrapper, which outlives the launcher: such a process watches the launcher itself."""
    launcher = start_launcher("--num_processes=2", worker=_OUTLIVES, wrapper=wrapper)
    assert _all_stop_once_the_launcher_is_killed(launcher, within_s=10)


def _all_stop_once_the_launcher_is_killed(launcher, within_s: float) -> bool:
    """Kills the launcher (SIGKILL) once its processes print "watching"; whether all of them
    are gone within `within_s` seconds."""
    launcher.wait_for("watching", count=2)
    pids = [int(p) for p in re.findall(r"\[launch\] process \d+: pid (\d+)", launcher.output)]
    os.kill(launcher.proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    return not any(_alive(pid) for pid in pids)


_HUNG = """
import signal, sys, time
from alexnet_jax.core import errors
signal.signal(signal.SIGTERM, lambda *_: None)  # only noted (as JAX does): it runs on
errors.stop_with_the_launcher()
print("watching", flush=True)
time.sleep(60)  # (a wait in a collective that never ends)
"""


@pytest.mark.parametrize("wrapper", [(), ("timeout", "120")])
def test_the_hung_processes_of_a_killed_launcher_kill_themselves_after_grace_s(
    start_launcher, wrapper
):
    """Hostile pass 19, #46 (docs/RELIABILITY.md): the processes of a launcher killed by
    `timeout -s KILL` hung in a collective (2 CPU devices per process over gloo) and ran on:
    their SIGTERM only sets the flag that the next step reads, and that step never came.
    Each now kills itself --grace_s after the launcher is gone (a line in its log says so)."""
    launcher = start_launcher("--num_processes=2", "--grace_s=1", worker=_HUNG, wrapper=wrapper)
    assert _all_stop_once_the_launcher_is_killed(launcher, within_s=15)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (killed, not yet reaped) is gone
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_no_resource_warning_under_pythonwarnings_error():
    """Hostile pass 13, #29: with PYTHONWARNINGS=error, a launch ended with `Exception ignored
    in: <_io.FileIO name=4 ...>` / `ResourceWarning: unclosed file` lines (the launcher's pipes)
    and two more per process (the stdout that mute_native_stdout keeps)."""
    worker = "from alexnet_jax.core import runtime\nruntime.mute_native_stdout()\nprint('hi')\n"
    command = [sys.executable, "-m", "alexnet_jax.tools.launch", "--num_processes=2", "--"]
    proc = subprocess.run(
        [*command, sys.executable, "-c", worker], cwd=REPO, capture_output=True, text=True,
        timeout=120, env={**os.environ, "PYTHONWARNINGS": "error"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ResourceWarning" not in proc.stdout + proc.stderr
    assert "Exception ignored" not in proc.stdout + proc.stderr
    assert proc.stdout.count("] hi") == 2


# A process that watches the launcher named in its environment, then says it runs.
_WATCHING = (
    "import sys; sys.path.insert(0, sys.argv[1])\n"
    "from alexnet_jax.core import errors\n"
    "errors.stop_with_the_launcher()\n"
    "print('running', flush=True)\n"
)


def test_a_wrapped_process_of_a_live_launcher_keeps_running():
    """A process launch starts through a wrapper (`-- timeout 3600 python main.py`) has the
    wrapper for its parent, not launch: it must not take that for the launcher's death (it
    stopped itself at start, exit codes [143, 143]); a launcher that is really gone stops it."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that was a process and is no more
    for launcher, expected in ((os.getpid(), 0), (gone.pid, -signal.SIGTERM)):
        env = {**os.environ, errors.LAUNCHER_PID: str(launcher)}
        proc = subprocess.run(
            ["sh", "-c", '"$0" -c "$1" "$2"; exit $?', sys.executable, _WATCHING, REPO],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode in (expected, 128 - expected), proc.stderr
        assert ("running" in proc.stdout) == (expected == 0)


def test_a_stray_launcher_pid_is_named_not_a_silent_sigterm():
    """Hostile pass 22, #35: main.py with a stray ALEXNET_JAX_LAUNCHER_PID (a shell's export) of
    a dead pid ended at start with `terminated: stopped by SIGTERM`, nothing saying why; one of
    a live process it does not run under would have stopped it when that process ended."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with subprocess.Popen(["sleep", "60"]) as unrelated:
        for pid, code, said in (
            (gone.pid, 143, f"terminated: {errors.LAUNCHER_PID}={gone.pid} names the launcher"),
            (unrelated.pid, 0, f"warning: {errors.LAUNCHER_PID}={unrelated.pid} names no process"),
        ):
            proc = subprocess.run(
                [sys.executable, "-c", _WATCHING, REPO], capture_output=True, text=True, timeout=60,
                env={**os.environ, errors.LAUNCHER_PID: str(pid)},
            )  # fmt: skip
            assert proc.returncode == code, proc.stderr
            (line,) = proc.stderr.splitlines()
            assert line.startswith(said), line
            assert ("running" in proc.stdout) == (code == 0)
        unrelated.kill()


def test_a_python_by_path_or_behind_a_wrapper_is_checked_too(tmp_path):
    """Hostile pass 22, #33-#34: `-- /usr/bin/python3 main.py` and `-- timeout 600 python main.py`
    ran a python without the project's packages (ModuleNotFoundError tracebacks): the check saw
    only a bare `python` first. Each is refused in one line; this Python by its path runs."""
    other = tmp_path / "python3"
    other.write_text("#!/bin/sh\necho other python ran\n")
    other.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "XLA_FLAGS": ""}
    command = [sys.executable, "-m", "alexnet_jax.tools.launch", "--num_processes=1", "--"]
    for given in ([str(other), "main.py"], ["timeout", "600", "python3", "main.py"]):
        proc = subprocess.run(
            [*command, *given], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "other python ran" not in proc.stdout
        (line,) = proc.stderr.splitlines()
        assert line.startswith(f"error: -- {given[-2]} runs {other}, not this Python"), line
    proc = subprocess.run(
        [*command, "timeout", "60", sys.executable, "-c", "print('ran')"], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[0] ran" in proc.stdout


def test_a_python_on_path_that_is_not_this_one_is_refused_in_one_line(tmp_path):
    """Hostile pass 21, #68: `launch -- python main.py` ran the first python on PATH (without
    the project's packages): each process a 5-line ModuleNotFoundError traceback, exit codes
    [1, 1]. Refused before anything runs, naming both pythons; this Python itself is taken."""
    other = tmp_path / "python"
    other.write_text("#!/bin/sh\necho other python ran\n")
    other.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "XLA_FLAGS": ""}
    command = [sys.executable, "-m", "alexnet_jax.tools.launch", "--num_processes=1", "--"]
    proc = subprocess.run(
        [*command, "python", "main.py"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "other python ran" not in proc.stdout
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"error: -- python runs {other}, not this Python ({sys.executable})")
    (tmp_path / "bin").mkdir()  # another python that finds the packages (this one): runs
    (tmp_path / "bin" / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (tmp_path / "bin" / "python3").chmod(0o755)
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"
    proc = subprocess.run(
        [*command, "python3", "-c", "print('ran')"], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[0] ran" in proc.stdout
