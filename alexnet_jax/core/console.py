"""What the project tells its user: progress and results as plain lines on stdout, warnings on
stderr, so that `python main.py > log` keeps the run's story and a terminal still shows what
went wrong.

    console.info("step 12  loss 2.3026 ...")  # stdout, flushed, no logging prefix
    console.warning("Step 12: ... skipped")    # stderr: "warning: Step 12: ... skipped"

Both go through the standard logger named "alexnet_jax" with a handler of its own (installed on
first use, not propagated to the root logger, so absl's handler never prints them a second time
with its prefix). Errors the user must fix are no log lines: errors.reported_as_exit prints them
as one `error:` paragraph. A multi-process run shows progress on process 0 only
(`show_progress(False)` on the others: main.py); warnings always show.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import unicodedata
from collections.abc import Iterator

LOGGER_NAME = "alexnet_jax"


class _ConsoleHandler(logging.Handler):
    """INFO to the current sys.stdout as the bare message; WARNING and above to the current
    sys.stderr as "warning: message" (looked up at each line: a test's capture or
    runtime.mute_native_stdout may have replaced them)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno < logging.WARNING:
                out(text)  # `python main.py | head`: the reader left; the run goes on
                return
            if sys.stderr is None:  # started with stderr closed: nowhere to write
                return
            line = f"{record.levelname.lower()}: {text}\n"
            try:
                sys.stderr.write(line)
            except UnicodeEncodeError:  # (as _write_to)
                sys.stderr.write(_escaped(line, sys.stderr))
            sys.stderr.flush()
        except OSError:  # stderr gone too: nothing left to tell
            _discard_the_rest(sys.stderr)
        except Exception:
            self.handleError(record)


def _discard_the_rest(stream) -> None:
    """From now on what goes to `stream`'s file descriptor is dropped (/dev/null behind it), so
    neither these lines nor Python's final flush raise BrokenPipeError again."""
    import os

    with contextlib.suppress(Exception):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def out(text: str, end: str = "\n") -> None:
    """`text` on stdout as it is (a table, a child process's line), flushed; when the reader has
    left (`| head`), the rest is dropped and the caller goes on, as with `info` (on a full disk
    with one warning on stderr); with stdout closed from the start, nothing is written."""
    _write_to(sys.stdout, text + end)


def _write_to(stream, text: str) -> None:
    if stream is None:
        return
    try:
        try:
            stream.write(text)
        except UnicodeEncodeError:  # a stream that cannot show it (PYTHONIOENCODING=ascii and
            # a workdir named "Eü": 116 lines of logging errors): escaped, as stderr does
            stream.write(_escaped(text, stream))
        stream.flush()
    except BrokenPipeError:
        _discard_the_rest(stream)
    except OSError as e:
        _discard_the_rest(stream)
        _said_dropped(e)


def _escaped(text: str, stream) -> str:
    """`text` with what `stream`'s encoding cannot show as backslash escapes (\\xfc)."""
    encoding = getattr(stream, "encoding", None) or "ascii"
    return text.encode(encoding, "backslashreplace").decode(encoding)


class _HelpStdout:
    """sys.stdout while absl parses the flags: its help text goes through `out`'s handling of a
    reader who left, a full disk and a closed stdout (absl's own raised BrokenPipeError, or
    AttributeError on None)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        _write_to(self._stream, text)
        return len(text)

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def flag_help() -> Iterator[None]:
    """Around absl's flag parsing (main.py, errors.parse_flags: every tool and benchmark): a
    help flag (--help, --helpshort, -?, --helpfull, --helpxml), which absl prints on stdout and
    ends with SystemExit(1), ends with exit code 0 as argparse's --help does, also when the
    reader left before the end (`--help | head -1`) or stdout is closed or full."""
    stdout, sys.stdout = sys.stdout, _HelpStdout(sys.stdout)
    try:
        yield
    except SystemExit as e:
        if e.code != 1:  # absl's help flags exit 1; the parser's own errors exit 2
            raise
        raise SystemExit(0) from None
    finally:
        sys.stdout = stdout


def _said_dropped(error: OSError) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.write(
            f"warning: stdout cannot be written ({error.strerror or error}): the rest of the "
            "output is dropped; the files are written as usual.\n"
        )


def _logger() -> logging.Logger:
    """The project's logger, with the console handler installed on first use."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        logger.addHandler(_ConsoleHandler())
        logger.propagate = False
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
    return logger


def info(message: str) -> None:
    """A progress or result line on stdout (flushed)."""
    _logger().info("%s", message)


def warning(message: str) -> None:
    """A warning on stderr, prefixed with `warning: `."""
    _logger().warning("%s", message)


def show_progress(show: bool) -> None:
    """Whether `info` lines are printed (warnings always are): False on the processes of a
    multi-process run other than process 0, unless the user asks for every process's progress."""
    _logger().setLevel(logging.INFO if show else logging.WARNING)


@contextlib.contextmanager
def progress_off() -> Iterator[None]:
    """No `info` lines inside the block (a benchmark that runs the training loop prints its own
    results, not the loop's progress); warnings still show."""
    logger = _logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


# What one name must not hold raw in a line of output: control characters (a newline, a tab, an
# escape sequence), Unicode's line and paragraph separators, and the surrogates that stand for
# bytes a file name could not decode with.
_UNPRINTED = frozenset(("Cc", "Zl", "Zp", "Cs"))


def printable(name: str) -> str:
    """`name` (a file or class name) for one line of output: its control characters escaped as
    repr() writes them (a newline as \\n), so that each name stays on its line; everything else,
    ordinary Unicode included, as it is."""
    return "".join(repr(ch)[1:-1] if unicodedata.category(ch) in _UNPRINTED else ch for ch in name)


def stamped(message: str) -> str:
    """`message` after the wall-clock time, `12:00:17 message`: for step and eval lines."""
    return f"{time.strftime('%H:%M:%S')} {message}"
