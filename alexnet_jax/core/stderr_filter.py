"""The stderr of a multi-process run's process, passed on line by line by a small child process
(runtime.filter_native_stderr starts it: `python -I -S stderr_filter.py MARK LINE`). It exists
for one failure Python cannot report: when another process of the job dies (the coordinator,
process 0, above all), JAX's distributed client ends this process in C++ (`LOG(FATAL)` in its
error-polling thread: "Terminating process because the JAX distributed service detected fatal
errors", a C++ stack, then Python's fault handler's thread dump) before any Python code runs
again. The filter turns that block into LINE, the one `error:` line of a lost peer (none if a
line holding MARK, Python's own report of the lost peer, came first), and drops the C++ log
lines (glog format: `E1205 16:31:05.948 23586 file.cc:289] ...`) that led up to it. Native log
lines are held back HOLD_S seconds to see whether the fatal line follows; anything else passes
at once, in order. It ends when every writer has closed the pipe (the process has ended).

Standard library only, run with -I -S: it starts in milliseconds and imports nothing of the
project (a pipe's reader must not fail).
"""

import os
import re
import select
import signal
import sys
import time

NATIVE = re.compile(rb"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ [\w.+-]+:\d+\] ")
FATAL = b"Terminating process because the JAX distributed service detected fatal errors"
# Native lines that say nothing the run does not say itself: JAX's preemption notifier on every
# SIGTERM (the run then prints "Preemption signal: saving step N and exiting").
DROPPED = (re.compile(rb"preemption_notifier\.cc:\d+\] SIGTERM caught"),)
HOLD_S = 0.5


def run(mark: bytes, told: bytes, source: int = 0, sink: int = 1) -> None:
    """Copies `source` to `sink` as described above (`mark`, `told`: MARK and LINE)."""
    held: list[bytes] = []  # native log lines (and what followed them), not passed on yet
    since = 0.0
    partial = b""
    told_already = False  # Python reported the lost peer itself (the C++ abort came after)

    def write(data: bytes) -> None:
        try:
            while data:
                data = data[os.write(sink, data) :]
        except OSError:  # the reader is gone: nothing left to tell
            pass

    while True:
        timeout = max(0.0, since + HOLD_S - time.monotonic()) if held else None
        if not select.select([source], [], [], timeout)[0]:  # held long enough: not the abort
            write(b"".join(held))
            held = []
            continue
        chunk = os.read(source, 65536)
        if not chunk:
            break
        *lines, partial = (partial + chunk).split(b"\n")
        for line in lines:
            native = NATIVE.match(line) is not None  # (a Python line may quote any text)
            if native and FATAL in line:  # the process is aborting: one line for the lot
                if not told_already:
                    write(told + b"\n")
                while os.read(source, 65536):  # the C++ stack and thread dump that follow
                    pass
                return
            told_already = told_already or mark in line
            if native and any(p.search(line) for p in DROPPED):
                continue
            if native and not held:
                since = time.monotonic()
            if held or native:
                held.append(line + b"\n")
            else:
                write(line + b"\n")
    write(b"".join(held) + partial)


if __name__ == "__main__":
    for each in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # it ends at end of input
        signal.signal(each, signal.SIG_IGN)
    run(os.fsencode(sys.argv[1]), os.fsencode(sys.argv[2]))
