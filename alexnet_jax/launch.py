"""Starts N local processes as one multi-process JAX job: a multi-host run on one machine.

    python -m alexnet_jax.launch --num_processes=2 --devices_per_process=2 -- \\
        main.py --config=configs/default.py --workdir=runs/two_processes

Process i runs the command with `--coordinator_address=localhost:PORT --num_processes=N
--process_id=i` appended (a free port is picked) and sees K CPU devices
(`--xla_force_host_platform_device_count=K`, `JAX_PLATFORMS=cpu`): the same job as N hosts of K
devices each, its collectives over gloo. A command ending in `.py` runs with this Python. Each
process's output goes to the console prefixed with `[i]`, or to `process_<i>.log` files in
`--process_log_dir`. SIGINT/SIGTERM to the launcher is passed on to every process (they save at
the same step and exit 0); the launcher exits with the first non-zero exit code, else 0.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence

_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def free_port() -> int:
    """A TCP port that was free a moment ago (the coordinator binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def process_env(devices_per_process: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of one local process: CPU only, with `devices_per_process` devices."""
    env = dict(os.environ if base is None else base)
    xla_flags = re.sub(rf"{_DEVICE_COUNT_FLAG}=\S+", "", env.get("XLA_FLAGS", "")).strip()
    env["XLA_FLAGS"] = f"{xla_flags} {_DEVICE_COUNT_FLAG}={devices_per_process}".strip()
    env["JAX_PLATFORMS"] = "cpu"
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
) -> list[subprocess.Popen]:
    """Starts the processes; with `log_dir` each writes `process_<i>.log` there, else pipes."""
    port = port or free_port()
    procs = []
    for i in range(num_processes):
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
            out = open(os.path.join(log_dir, f"process_{i}.log"), "w")  # noqa: SIM115
        else:
            out = subprocess.PIPE
        procs.append(
            subprocess.Popen(
                process_command(command, num_processes, i, port),
                env=process_env(devices_per_process, env),
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        if log_dir:
            out.close()  # the child holds its own descriptor
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


def _echo(proc: subprocess.Popen, prefix: str) -> None:
    for line in proc.stdout:
        sys.stdout.write(f"{prefix}{line}")
        sys.stdout.flush()


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m alexnet_jax.launch", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--num_processes", type=int, default=2, help="local processes (hosts)")
    parser.add_argument("--devices_per_process", type=int, default=1, help="CPU devices each")
    parser.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
    parser.add_argument("--process_log_dir", help="write process_<i>.log here, not to stdout")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- main.py [its flags]")
    args = parser.parse_args(argv)
    args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not args.command:
        parser.error("give the command after --, e.g. `-- main.py --workdir=runs/x`")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(sys.argv[1:] if argv is None else argv)
    procs = start(
        args.command,
        args.num_processes,
        args.devices_per_process,
        port=args.port,
        log_dir=args.process_log_dir,
    )
    echoes = []
    for i, p in enumerate(procs):
        print(f"[launch] process {i}: pid {p.pid}", flush=True)
        if p.stdout is not None:
            echoes.append(threading.Thread(target=_echo, args=(p, f"[{i}] "), daemon=True))
            echoes[-1].start()

    def forward(signum, _frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = wait(procs)
    for echo in echoes:
        echo.join(timeout=5)
    print(f"[launch] exit codes: {codes}", flush=True)
    sys.exit(next((c for c in codes if c), 0))


if __name__ == "__main__":
    main()
