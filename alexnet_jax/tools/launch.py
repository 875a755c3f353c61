"""Starts N local processes as one multi-process JAX job: a multi-host run on one machine.

    python -m alexnet_jax.tools.launch --num_processes=2 --devices_per_process=2 -- \\
        main.py --config=configs/default.py --workdir=runs/two_processes

Process i runs the command with `--coordinator_address=localhost:PORT --num_processes=N
--process_id=i` appended (a free port is picked) and sees K CPU devices
(`--xla_force_host_platform_device_count=K`, `JAX_PLATFORMS=cpu`): the same job as N hosts of K
devices each, its collectives over gloo. A command ending in `.py` runs with this Python. Each
process's output goes to the console prefixed with `[i]`, or to `process_<i>.log` files in
`--process_log_dir`.

Stopping. The processes run in sessions of their own, so a terminal's Ctrl-C reaches only the
launcher, which sends every process one SIGTERM (main.py: all save at the same step and exit 0);
a second Ctrl-C (or SIGTERM) kills them (SIGKILL). SIGTERM and SIGHUP to the launcher act like
Ctrl-C. If a process dies (a non-zero exit code or a signal) while the others run, the launcher
says which and stops the others: SIGTERM, then SIGKILL after `--grace_s` (so too, after a Ctrl-C,
the ones still running `--grace_s` after another has exited). Exit code: 130 after a
Ctrl-C; else the dead process's code (128 + N for signal N); else the first non-zero code, or 0.
If the launcher itself is killed (kill -9), each process gets a SIGTERM and kills itself
`--grace_s` later if it is still running (errors.stop_with_the_launcher).
"""

from __future__ import annotations

import sys

if not __package__:  # run by its path, where Python cannot import the package
    sys.exit("error: run it as a module, from the repository: python -m alexnet_jax.tools.launch")

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from alexnet_jax.core import console, errors

_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_POLL_S = 0.05


def free_port() -> int:
    """A TCP port that was free a moment ago (the coordinator binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def process_env(
    devices_per_process: int,
    base: Mapping[str, str] | None = None,
    grace_s: float = errors.DEFAULT_GRACE_S,
) -> dict[str, str]:
    """The environment of one local process: CPU only, with `devices_per_process` devices; and
    the launcher's pid and `grace_s`, by which it stops itself when the launcher is gone."""
    env = dict(os.environ if base is None else base)
    xla_flags = re.sub(rf"{_DEVICE_COUNT_FLAG}=\S+", "", env.get("XLA_FLAGS", "")).strip()
    env["XLA_FLAGS"] = f"{xla_flags} {_DEVICE_COUNT_FLAG}={devices_per_process}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    env[errors.LAUNCHER_PID] = str(os.getpid())  # (errors.stop_with_the_launcher)
    env[errors.LAUNCHER_GRACE_S] = repr(float(grace_s))
    return env


def process_command(command: Sequence[str], num_processes: int, process_id: int, port: int):
    """`command` (a `.py` script runs with this Python) plus the multi-process flags of main.py."""
    command = list(command)
    if command[0].endswith(".py"):
        command = [sys.executable, *command]
    return [
        *command,
        f"--coordinator_address=localhost:{port}",
        f"--num_processes={num_processes}",
        f"--process_id={process_id}",
    ]


def start(
    command: Sequence[str],
    num_processes: int,
    devices_per_process: int,
    *,
    port: int | None = None,
    log_dir: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    grace_s: float = errors.DEFAULT_GRACE_S,
) -> list[subprocess.Popen]:
    """Starts the processes, each in a session of its own (a terminal's Ctrl-C does not reach
    them); with `log_dir` each writes `process_<i>.log` there, else pipes. If one cannot be
    started, the ones already running are killed."""
    if num_processes < 1 or devices_per_process < 1:
        raise ValueError(f"{num_processes=} and {devices_per_process=} must be 1 or more.")
    port = port or free_port()
    procs = []
    try:
        for i in range(num_processes):
            if log_dir:
                os.makedirs(log_dir, exist_ok=True)
                out = open(os.path.join(log_dir, f"process_{i}.log"), "w")  # noqa: SIM115
            else:
                out = subprocess.PIPE
            try:
                procs.append(
                    subprocess.Popen(
                        process_command(command, num_processes, i, port),
                        env=process_env(devices_per_process, env, grace_s),
                        cwd=cwd,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        text=True,
                        start_new_session=True,
                    )
                )
            finally:
                if log_dir:
                    out.close()  # the child holds its own descriptor
    except BaseException:
        for p in procs:
            p.kill()
        raise
    return procs


def wait(procs: Sequence[subprocess.Popen], timeout: float | None = None) -> list[int]:
    """Exit codes of all processes; on a timeout, kills the ones still running, then raises."""
    try:
        return [p.wait(timeout=timeout) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                p.kill()
        raise


def exit_code(returncode: int) -> int:
    """A process's exit status as a shell gives it: 128 + N for a process killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def describe_exit(returncode: int) -> str:
    """'exited with code 3' or 'was killed by SIGKILL'."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


class Supervisor:
    """Waits for the processes of one job and stops all of them together: on the launcher's
    first SIGINT/SIGTERM/SIGHUP one SIGTERM each, on the second SIGKILL; when one process dies
    while the others run, SIGTERM to the others and SIGKILL after `grace_s`.

    Signal handlers only record the signal; `run`'s loop acts on it, so each process gets at
    most one SIGTERM.
    """

    def __init__(
        self,
        procs: Sequence[subprocess.Popen],
        grace_s: float = errors.DEFAULT_GRACE_S,
        log_dir: str | None = None,
        say: Callable[[str], None] | None = None,
    ):
        self.procs = list(procs)
        self.grace_s = grace_s
        self.log_dir = log_dir
        self.say = say or (lambda text: console.out(f"[launch] {text}"))
        self.pending: list[int] = []  # signals received, not yet acted on
        self.interrupt: int | None = None  # the first stop signal
        self.dead: int | None = None  # index of the process that died while the others ran
        self.termed: set[int] = set()  # indices sent SIGTERM
        self.kill_at: float | None = None  # when to SIGKILL the ones still running

    def on_signal(self, signum: int, _frame=None) -> None:
        self.pending.append(signum)

    def run(self) -> int:
        """Waits until every process has exited; returns the launcher's exit code."""
        while True:
            while self.pending:
                self._on_stop_signal(self.pending.pop(0))
            codes = [p.poll() for p in self.procs]
            if self.dead is None:
                self._check_for_a_death(codes)
            if all(c is not None for c in codes):
                break
            if (
                self.interrupt is not None
                and self.kill_at is None
                and codes.count(None) < len(codes)
            ):
                # Stopped, and some have exited: the others get --grace_s, then SIGKILL (one
                # still joining the job waited out JAX's 300 s for the one gone: pass 24, #21).
                self.kill_at = time.monotonic() + self.grace_s
            if self.kill_at is not None and time.monotonic() >= self.kill_at:
                self.kill_at = None
                self._kill(f"still running --grace_s={self.grace_s:g} s after SIGTERM")
            time.sleep(_POLL_S)
        codes = [exit_code(p.returncode) for p in self.procs]
        self.say(f"exit codes: {codes}")
        if self.interrupt == signal.SIGINT:  # the processes saved on their SIGTERM, or were killed
            print(f"interrupted: {errors.CTRL_C}", file=sys.stderr, flush=True)
            return 130
        if self.dead is not None:
            return codes[self.dead]
        return next((c for c in codes if c), 0)

    def _on_stop_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.interrupt is None:
            self.interrupt = signum
            self.say(
                f"{name}: asked every process to save and exit (SIGTERM); {name} again kills "
                "them without saving."
            )
            self._terminate()
        else:
            self._kill(f"{name} again, before the processes finished saving")

    def _check_for_a_death(self, codes: Sequence[int | None]) -> None:
        """A process that exited non-zero (unasked) while others run: stop the others."""
        running = [c is None for c in codes]
        for i, code in enumerate(codes):
            if code and i not in self.termed and any(running):
                self.dead = i
                where = (
                    f"Its output: {os.path.join(self.log_dir, f'process_{i}.log')}."
                    if self.log_dir
                    else f"Its output is above, prefixed [{i}]."
                )
                self.say(
                    f"process {i} (pid {self.procs[i].pid}) {describe_exit(code)} while the "
                    f"others ran: stopping the other processes (SIGTERM now, SIGKILL after "
                    f"--grace_s={self.grace_s:g} s). {where}"
                )
                self._terminate()
                self.kill_at = time.monotonic() + self.grace_s
                return

    def _terminate(self) -> None:
        for i, p in enumerate(self.procs):
            if p.poll() is None and i not in self.termed:
                self.termed.add(i)
                p.send_signal(signal.SIGTERM)

    def _kill(self, why: str) -> None:
        """SIGKILL to every process still running, and to the processes it started (its process
        group: a shell's `sleep` kept its output open, and launch waited for it, hostile pass
        25, #23); one line names them and `why`."""
        running = [i for i, p in enumerate(self.procs) if p.poll() is None]
        for i in running:
            kill_group(self.procs[i])
        if running:
            names = ", ".join(f"process {i} (pid {self.procs[i].pid})" for i in running)
            self.say(f"{why}: killed {names} (SIGKILL).")


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL to `proc` and every process of its group (each process is started in a session
    of its own, so the group is its own and its children's)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()  # (one that left its group)


def _echo(proc: subprocess.Popen, prefix: str) -> None:
    for line in proc.stdout:
        console.out(f"{prefix}{line}", end="")


def _checked(
    cast: Callable[[str], Any], ok: Callable[[Any], bool], requirement: str
) -> Callable[[str], Any]:
    """An argparse type: `cast(text)` if that works and passes `ok`, else one error that says
    what the flag must be."""

    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}; got {text!r}")
        return value

    return parse


def _int_at_least(low: int) -> Callable[[str], int]:
    return _checked(int, lambda v: v >= low, f"an integer, {low} or more")


_port = _checked(int, lambda v: 0 <= v <= 65535, "a TCP port in 0..65535 (0: pick a free one)")
_seconds = _checked(float, lambda v: 0 <= v < float("inf"), "a number of seconds, 0 or more")


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = errors.ArgumentParser(
        prog="python -m alexnet_jax.tools.launch", description=(__doc__ or "").split("\n")[0]
    )
    count = _int_at_least(1)
    parser.add_argument("--num_processes", type=count, default=2, help="local processes (hosts)")
    parser.add_argument("--devices_per_process", type=count, default=1, help="CPU devices each")
    parser.add_argument("--port", type=_port, default=0, help="coordinator port (0: a free one)")
    parser.add_argument("--process_log_dir", help="write process_<i>.log here, not to stdout")
    parser.add_argument(
        "--grace_s",
        type=_seconds,
        default=errors.DEFAULT_GRACE_S,
        help="when a process dies (or the launcher, or one exits after a Ctrl-C): seconds the "
        "others get to exit after SIGTERM before SIGKILL",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- main.py [its flags]")
    args = parser.parse_args(argv)
    args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not args.command:
        parser.error("give the command after --, e.g. `-- main.py --workdir=runs/x`")
    tools = [w for w in args.command if w.startswith("alexnet_jax.tools.")]
    if tools:  # they take no --coordinator_address: each worker failed on the unknown flag
        parser.error(
            f"{tools[0]} runs in one process: run it without launch (launch starts the "
            "processes of one multi-process training run, `-- main.py ...`)"
        )
    if args.process_log_dir:
        from alexnet_jax.runs import rundir  # (only here: the launcher stays light)

        try:
            rundir.refuse_inside_checkpoints(args.process_log_dir, "--process_log_dir")
        except errors.UserError as e:
            parser.error(str(e))
        problem = errors.directory_creation_problem(args.process_log_dir)
        if problem:
            parser.error(f"argument --process_log_dir={args.process_log_dir}: {problem}")
    return args


def warn_of_a_replaced_device_count(devices_per_process: int) -> None:
    """A warning when XLA_FLAGS asks for another number of CPU devices than each process gets
    (it was replaced without a word)."""
    asked = re.findall(rf"{_DEVICE_COUNT_FLAG}=(\S+)", os.environ.get("XLA_FLAGS", ""))
    if asked and asked[-1] != str(devices_per_process):
        console.warning(
            f"XLA_FLAGS' {_DEVICE_COUNT_FLAG}={asked[-1]} is replaced by "
            f"--devices_per_process={devices_per_process} (launch sets each process's CPU "
            f"devices): to give each {asked[-1]}, pass --devices_per_process={asked[-1]}."
        )


def refuse_another_python(command: Sequence[str]) -> None:
    """`-- python main.py` ran the first python on PATH, which is not this one (its packages
    missing): each process a ModuleNotFoundError traceback (hostile pass 21, #68), also with a
    path (`-- /usr/bin/python3 ...`) or behind a wrapper (`-- timeout 600 python ...`: pass 22,
    #33-#34). One line, exit 2, naming both, when that python cannot find the project's
    packages; a `.py` runs with this Python."""
    named = next((w for w in command if re.fullmatch(r"python[\d.]*", os.path.basename(w))), "")
    found = shutil.which(named) if named else None
    if not found or os.path.abspath(found) == os.path.abspath(sys.executable):
        return
    probe = "import importlib.util as u, sys; print(all(map(u.find_spec, sys.argv[1:])))"
    try:
        has = subprocess.run(
            [found, "-c", probe, "jax", "flax", "optax", "ml_collections"],
            capture_output=True, text=True, timeout=60,
        ).stdout.strip() == "True"  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return  # (it cannot run at all: said by each process's own error)
    if not has:
        errors.tell(
            f"error: -- {named} runs {found}, not this Python ({sys.executable}), which has "
            f"the project's packages: put {sys.executable} in its place, or give the script "
            "alone (a .py runs with this Python)."
        )
        sys.exit(2)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(sys.argv[1:] if argv is None else argv)
    refuse_another_python(args.command)
    warn_of_a_replaced_device_count(args.devices_per_process)
    supervisor = Supervisor([], args.grace_s, args.process_log_dir)
    for signum in _STOP_SIGNALS:  # before the start: no signal may leave processes orphaned
        signal.signal(signum, supervisor.on_signal)
    try:
        procs = start(
            args.command,
            args.num_processes,
            args.devices_per_process,
            port=args.port,
            log_dir=args.process_log_dir,
            grace_s=args.grace_s,
        )
    except OSError as e:
        print(f"error: could not start {args.command[0]!r}: {e.strerror or e}", file=sys.stderr)
        sys.exit(2)
    supervisor.procs = procs
    echoes = []
    for i, p in enumerate(procs):
        console.out(f"[launch] process {i}: pid {p.pid}")
        if p.stdout is not None:
            echoes.append((p, threading.Thread(target=_echo, args=(p, f"[{i}] "), daemon=True)))
            echoes[-1][1].start()
    try:
        code = supervisor.run()
    finally:
        for p in procs:  # only after an error in the launcher itself
            if p.poll() is None:
                p.kill()
    for _, echo in echoes:
        echo.join(timeout=5)
    for p, echo in echoes:  # an exited process's children that still hold its output open:
        if echo.is_alive():  # killed, else closing it waits for them
            console.warning(f"launch: process pid {p.pid} left processes running: killed.")
            kill_group(p)
            echo.join(timeout=5)
    for p in procs:  # (an unclosed pipe is a ResourceWarning at exit: PYTHONWARNINGS=error)
        if p.stdout is not None:
            with contextlib.suppress(OSError):
                p.stdout.close()
    sys.exit(code)


if __name__ == "__main__":
    main()
