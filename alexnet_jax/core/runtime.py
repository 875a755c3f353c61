"""Process-level setup done once by entry points (main.py, the tools, benchmarks), never at import
time: XLA flags, the compilation cache, TensorFlow kept off the accelerators, library log levels,
and multi-host start-up (`initialize_distributed`).

Multi-host. `initialize_distributed` starts JAX's distributed runtime (`jax.distributed`) when this
process is one of several, from main.py's --coordinator_address/--num_processes/--process_id or
from a cluster that jax.distributed detects by itself (SLURM's srun, Open MPI's mpirun). Then
`jax.devices()` lists the devices of all hosts and the train loop's one mesh spans them: each host
feeds its own data shard (input_pipeline) into global arrays (sharding.to_global_batch), process 0
writes the logs, every process writes and restores its part of each Orbax checkpoint, and a SIGTERM
to any process makes all of them save at the same step (checkpoint.PreemptionWatcher).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import math
import os
import re
import socket
import sys
import threading
import types
from collections.abc import Callable, Mapping

import jax

from alexnet_jax.core import console, errors
from alexnet_jax.core.errors import ConfigError, UserError, is_storage_error

# (`~` expanded when used: errors.check_home may have dropped an empty HOME since the import)
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "alexnet_jax", "jax_cache")

# The XLA flags this project sets, each measured on its own workload (benchmarks/RESULTS.md).
# `set_xla_flags` adds them to XLA_FLAGS; a flag the user already set there keeps the user's value.
XLA_FLAGS = (
    # XLA:CPU (jaxlib 0.10) hands convolutions, dots and reductions to YNNPACK by default.
    # Convolutions: YNNPACK's were 2-7x slower than XLA's own (Eigen) ones on AlexNet's weight
    # gradients and on the strided 11x11 conv1, and about even elsewhere; without them the
    # float32 train step ran about 1.35x faster. Reductions: YNNPACK fuses the eval step's
    # log-softmax sums together with fc6-fc8 into one subgraph that ran 4x slower at batch 8
    # (no change at 64). Dots stay with YNNPACK (about 25% faster than Eigen on the FC layers).
    # A CPU compiler option: GPU compilation ignores it.
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-reduce",
)
# The jaxlib releases XLA_FLAGS was measured with: [first, end). XLA aborts the process on a flag
# it does not know, and experimental flags come and go between releases, so outside this range
# the flags are not set (a warning says so); set XLA_FLAGS by hand to try them there.
XLA_FLAGS_JAXLIB = ((0, 10, 2), (0, 11, 0))


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split(".")[:3]:
        digits = "".join(itertools.takewhile(str.isdigit, part))
        parts.append(int(digits or 0))
    return tuple(parts)


def project_xla_flags(jaxlib_version: str | None = None) -> tuple[str, ...]:
    """XLA_FLAGS if the installed jaxlib (or `jaxlib_version`) is in XLA_FLAGS_JAXLIB, else ()."""
    if jaxlib_version is None:
        import jaxlib

        jaxlib_version = jaxlib.__version__
    first, end = XLA_FLAGS_JAXLIB
    if first <= _version_tuple(jaxlib_version) < end:
        return XLA_FLAGS
    console.warning(
        f"Not setting the project's XLA flags {' '.join(XLA_FLAGS)}: they were measured with "
        f"jaxlib {'.'.join(map(str, first))} to <{'.'.join(map(str, end))} and this is jaxlib "
        f"{jaxlib_version}, which may not know them (XLA aborts on unknown flags). To try them, "
        "set XLA_FLAGS yourself."
    )
    return ()


def set_xla_flags(flags: tuple[str, ...] | None = None) -> str:
    """Adds `flags` (default: `project_xla_flags()`) to the XLA_FLAGS environment variable;
    returns its new value.

    XLA reads XLA_FLAGS once, when JAX starts its backends (the first computation or
    `jax.devices()`): call this before, or it raises RuntimeError. A flag whose name is already
    in XLA_FLAGS keeps the value given there.
    """
    from jax._src import xla_bridge  # no public API tells whether the backends have started

    if xla_bridge.backends_are_initialized():
        raise RuntimeError(
            "set_xla_flags() must run before JAX starts its backends (before the first JAX "
            "computation or jax.devices())."
        )
    if flags is None:
        flags = project_xla_flags()
    current = os.environ.get("XLA_FLAGS", "")
    names = {flag.split("=", 1)[0] for flag in xla_flag_words(current)}
    added = [flag for flag in flags if flag.split("=", 1)[0] not in names]
    os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return os.environ["XLA_FLAGS"]


_MAX_CPU_DEVICES = 1024  # fake CPU devices for tests; XLA aborts on counts it cannot make


def xla_flag_words(value: str) -> list[str]:
    """The words of an XLA_FLAGS value as XLA splits it: at spaces, except inside double quotes
    (--xla_dump_to="a b" is one word)."""
    return re.findall(r'(?:[^\s"]+|"[^"]*")+', value)


def check_xla_flags() -> None:
    """UserError for an XLA_FLAGS value with a word that is not a flag (XLA reads such a value
    as a file name and aborts)."""
    words = xla_flag_words(os.environ.get("XLA_FLAGS", ""))
    odd = [w for w in words if not w.startswith("--")]
    if odd:
        raise UserError(
            f"XLA_FLAGS holds {odd[0]!r}, which is not a flag (XLA's flags read "
            "--name=value): fix or unset XLA_FLAGS."
        )
    _probe_xla_flags(words)
    for word in words:  # XLA aborts in C++ on a count that is not a positive integer
        name, _, value = word.partition("=")
        if name == "--xla_dump_to" and value and not value.startswith("sponge"):
            _check_dump_folder(value.replace('"', ""))
        if name == "--xla_force_host_platform_device_count" and not (
            re.fullmatch(r"[0-9]{1,4}", value) and 1 <= int(value) <= _MAX_CPU_DEVICES
        ):
            raise UserError(
                f"XLA_FLAGS holds {word!r}: the number of CPU devices must be an integer from 1 "
                f"to {_MAX_CPU_DEVICES} (e.g. --xla_force_host_platform_device_count=8): fix or "
                "unset XLA_FLAGS."
            )


_CHECKED_XLA_FLAGS = ("--xla_force_host_platform_device_count", "--xla_dump_to")


def _probe_xla_flags(words: list[str]) -> None:
    """UserError when XLA cannot read a flag of XLA_FLAGS (an unknown name, a value of the wrong
    type: --xla_cpu_enable_fast_math=maybe): XLA parses them in C++ when its first backend
    starts and aborts the process with its whole flag list (95 lines). Only the flags this
    project does not set or check itself are tried, in a short process of their own."""
    ours = {flag.split("=", 1)[0] for flag in project_xla_flags()} | set(_CHECKED_XLA_FLAGS)
    others = [w for w in words if w.split("=", 1)[0] not in ours]
    if not others:
        return
    import subprocess

    env = {**os.environ, "XLA_FLAGS": " ".join(others), "JAX_PLATFORMS": "cpu"}
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import jax; jax.devices('cpu')"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return  # no verdict: the run itself will tell
    said = re.findall(r"^[EF]\d{4} [^\]]*\] (.*)$", probe.stderr, re.MULTILINE)
    said = [  # (not a failure of another kind, nor the C++ check that follows a bad value)
        line for line in said if "flag" in line.lower() and not line.startswith("Check failed")
    ]
    if probe.returncode != 0 and said:
        raise UserError(
            f"XLA_FLAGS holds a flag XLA cannot read: {'; '.join(s.rstrip('.') for s in said)} "
            f"(XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}): fix or remove it."
        )


def _check_dump_folder(path: str) -> None:
    """UserError when XLA_FLAGS' --xla_dump_to names a folder that cannot be made or written: XLA
    printed one C++ error line per compiled program (22 for a short run, 130 for predict) and
    dumped nothing."""
    try:
        os.makedirs(path, exist_ok=True)
        writable = os.access(path, os.W_OK | os.X_OK)
        reason = "it is not writable"
    except OSError as e:
        writable, reason = False, f"{e.strerror or e} (errno {e.errno})"
    if not writable:
        raise UserError(
            f"XLA_FLAGS' --xla_dump_to={path} cannot be written: {reason}. Name a folder this "
            "process can write, or remove the flag from XLA_FLAGS."
        )


def check_cpu_device_count() -> None:
    """UserError for JAX_NUM_CPU_DEVICES=0 (or below -1, its "not set"): JAX then failed to start
    its CPU backend with a message that blamed JAX_PLATFORMS. (A value that is no integer is
    refused at JAX's import: errors.import_jax.)"""
    value = os.environ.get("JAX_NUM_CPU_DEVICES", "").strip()
    count = int(value) if re.fullmatch(r"-?[0-9]+", value) else -1
    if not (count == -1 or 1 <= count <= _MAX_CPU_DEVICES):
        raise UserError(
            f"JAX_NUM_CPU_DEVICES={value}: the number of CPU devices must be an integer from 1 "
            f"to {_MAX_CPU_DEVICES}: fix or unset JAX_NUM_CPU_DEVICES."
        )


def _x64_enabled() -> bool:
    """Whether JAX computes in 64 bits (JAX_ENABLE_X64, or its --jax_enable_x64 flag)."""
    return bool(jax.config.jax_enable_x64)


def check_environment() -> None:
    """The checks of what the process inherits that JAX would otherwise answer with a C++ abort
    or a traceback (check_xla_flags, errors.check_start): for main.py and every tool, before
    JAX starts."""
    check_xla_flags()
    check_cpu_device_count()
    errors.check_start()
    check_jax_settings()
    if _x64_enabled():
        console.warning(
            "JAX_ENABLE_X64 is on: JAX computes in 64 bits wherever a value is not typed, so the "
            "numbers differ from the same config without it (the run's config does not record "
            "it). Unset JAX_ENABLE_X64 to compute as this project does."
        )
    limit = errors.address_space_limit()
    if limit is not None and limit < TIGHT_ADDRESS_SPACE:
        console.warning(
            f"the process may use {limit // 2**20} MB of address space (ulimit -v). JAX and "
            "TensorFlow reserve about 3 GB of it before any data, decoding a picture takes about "
            "16 bytes per pixel more, and when it runs out they abort in C++ ('Check failed', "
            "'Cannot allocate memory') where no error can be reported; raise it if that happens "
            "(ulimit -v unlimited)."
        )


# JAX settings (each from its JAX_* environment variable) that this project cannot run under, with
# the values it can (hostile pass 19, #16, #17, #40): another random-number generator or its
# non-partitionable form draw other numbers (a resumed run went on with other randomness, or could
# not restore its key); guarded transfers and rank promotion refused the data's transfer and the
# normalization's broadcast with 30-60-line tracebacks.
_JAX_SETTINGS = {
    "jax_default_prng_impl": ("threefry2x32",),
    "jax_threefry_partitionable": (True,),
    "jax_transfer_guard": (None, "allow", "log", "log_explicit"),
    "jax_transfer_guard_host_to_device": (None, "allow", "log", "log_explicit"),
    "jax_transfer_guard_device_to_host": (None, "allow", "log", "log_explicit"),
    "jax_transfer_guard_device_to_device": (None, "allow", "log", "log_explicit"),
    "jax_numpy_rank_promotion": ("allow",),
}


def check_jax_settings() -> None:
    """UserError naming the JAX_* variable that set a JAX setting this project cannot run under
    (_JAX_SETTINGS): its numbers would differ from the run's, or it fails with a traceback."""
    for name, allowed in _JAX_SETTINGS.items():
        value = getattr(jax.config, name, allowed[0])
        if value not in allowed:
            variable = name.upper()
            raise UserError(
                f"the environment variable {variable}={os.environ.get(variable, value)!r} sets "
                f"{name}={value!r}, under which this project does not run (it draws other random "
                f"numbers, or refuses the data's transfers): unset it (unset {variable})."
            )


check_address_space = errors.check_address_space  # (in errors: the tools check it first)
# Below this address-space limit a run is warned at start: measured here, a training run needed
# 2.5-3 GB of it before reading data, and a 9400 x 9400 PNG in its folder aborted it at 4 GB.
TIGHT_ADDRESS_SPACE = 8 * 2**30


def start_backend() -> None:
    """Starts JAX's backends (after initialize_distributed); UserError naming JAX_PLATFORMS when
    none of the platforms asked for can start (a GPU or TPU this machine or install lacks)."""
    try:
        jax.devices()
    except (RuntimeError, ValueError, AssertionError) as e:  # ValueError: a JAX_* setting it
        # does not know; AssertionError: JAX_PLATFORMS=cuda without a CUDA plugin (jax 0.10.2)
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        if isinstance(e, AssertionError):
            reason = "no backend of it started"
        for variable in ("JAX_PLATFORMS", "JAX_PLATFORM_NAME"):  # (the second: its old name)
            platforms = os.environ.get(variable, "")
            if platforms:
                raise UserError(
                    f"{variable}={platforms!r} asks for a platform that cannot start here "
                    f"({reason}): unset {variable} (JAX then uses what it finds), or install JAX "
                    "for that platform (README, 'Speed')."
                ) from None
        settings = sorted(k for k in os.environ if k.startswith("JAX_") or k == "XLA_FLAGS")
        raise UserError(
            f"JAX could not start here ({reason}): check the settings it starts with "
            f"({', '.join(settings) or 'none is set'}); unset the one the reason names."
        ) from None


_tensorflow_hidden = threading.Event()
_tensorflow_import = threading.RLock()  # TensorFlow's import and its device setup


def hide_accelerators_from_tensorflow() -> None:
    """TensorFlow only feeds data: keep it off the GPUs/TPUs so it takes none of their memory.

    Once per process, before TensorFlow's first op (`load_tensorflow` calls it)."""
    with _tensorflow_import:  # one thread sets it, before any thread's first op
        if _tensorflow_hidden.is_set():
            return
        import tensorflow as tf  # heavy import, only for entry points

        tf.config.set_visible_devices([], "GPU")
        with contextlib.suppress(ValueError, RuntimeError):  # no TPU support in this TF build
            tf.config.set_visible_devices([], "TPU")
        _tensorflow_hidden.set()


class LazyModule(types.ModuleType):
    """Module `name`, imported by `load()` on its first attribute access."""

    def __init__(self, name: str, load: Callable[[], types.ModuleType]):
        super().__init__(name)
        self.__dict__["_load"] = load

    def __getattr__(self, attribute: str):
        module = self.__dict__.get("_module")
        if module is None:  # the first use: import it (load is idempotent and thread-safe)
            module = self.__dict__["_module"] = self._load()
        return getattr(module, attribute)


def load_tensorflow() -> types.ModuleType:
    """TensorFlow, imported quietly and kept off the accelerators (once; what the lazy
    `tensorflow` below does on first use). Entry points that time or use TensorFlow call it
    up front."""
    import_tensorflow_quietly()
    hide_accelerators_from_tensorflow()
    return sys.modules["tensorflow"]


def load_tensorflow_datasets() -> types.ModuleType:
    """tfds, with TensorFlow imported quietly and kept off the accelerators first (call it
    before importing a tfds submodule directly)."""
    load_tensorflow()
    import tensorflow_datasets

    return tensorflow_datasets


# What the data modules use as `tf` and `tfds`: TensorFlow is imported on first use, quietly and
# kept off the accelerators, so runs on synthetic data, runs that stop at a bad config and the
# tools that read a run never pay its ~5 s of CPU.
tensorflow = LazyModule("tensorflow", load_tensorflow)
tensorflow_datasets = LazyModule("tensorflow_datasets", load_tensorflow_datasets)


def enable_compilation_cache(cache_dir: str | None = None) -> str | None:
    """Turns on JAX's persistent compilation cache in a workdir-independent folder.

    The thresholds are lowered so that even small CPU programs are cached (a cached train step
    loads in well under a second instead of compiling for seconds). A folder that cannot be made
    or written (a HOME without rights, a file in the way) only costs the cache: a warning, and
    None.
    """
    cache_dir = cache_dir or os.environ.get("ALEXNET_JAX_CACHE_DIR", DEFAULT_CACHE_DIR)
    cache_dir = os.path.expanduser(cache_dir)
    try:
        if not errors.is_utf8(os.path.abspath(cache_dir)):  # (XLA's options take UTF-8 only:
            # a TypeError traceback at the first compile)
            raise OSError(errno.EINVAL, "its path is not UTF-8", cache_dir)
        os.makedirs(cache_dir, exist_ok=True)
        if not os.access(cache_dir, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), cache_dir)
    except OSError as e:
        console.warning(
            f"No compilation cache: {cache_dir} cannot be used ({e.strerror or e}); every run "
            "compiles afresh. Set ALEXNET_JAX_CACHE_DIR to a writable folder."
        )
        return None
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return cache_dir


def _echoes_a_write_failure(error: BaseException | None) -> bool:  # None: no exception
    """Whether `error` only repeats a failed checkpoint write, which checkpoint.save / close
    report as one DataError: the storage error itself as Orbax's background tasks re-raise and
    log it, or asyncio's "Event loop is closed" from their callbacks that outlive the event loop
    of the failed save (an Orbax/TensorStore shutdown race). Or a failed read of a checkpoint's
    array: when one array of a step fails (the step was replaced while read by a run still
    training, or is damaged), Orbax abandons the reads of the others, whose coroutines raise the
    same where only Python's unraisable hook hears them (dozens of tracebacks); the step itself
    is reported, or read again, by checkpoint.restore_latest."""
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return True
    if type(error) is Exception and str(error).startswith(_ORBAX_READ_FAILED):
        return True
    return is_storage_error(error)


_ORBAX_READ_FAILED = "Encountered error while reading array index"


def _from_library(record: logging.LogRecord) -> bool:
    return any(f"{os.sep}{lib}{os.sep}" in record.pathname for lib in _QUIET_LIBRARIES)


def _is_harmless(record: logging.LogRecord) -> bool:
    return _from_library(record) and any(t in record.getMessage() for t in _HARMLESS_WARNINGS)


class _DropLibraryNoise(logging.Filter):
    """What absl's handler (the libraries' log records) prints at the default verbosity: their
    warnings and errors, less the known-harmless warnings (_HARMLESS_WARNINGS) and the error
    records that repeat a failed checkpoint write (one per array and task). Their INFO and DEBUG
    lines (TensorFlow, Orbax, absl, JAX/XLA: "Unable to initialize backend 'tpu'", file
    renames, ...) only with --verbosity=1 or more, for those who ask. This project's own lines
    never come here (console.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from absl import logging as absl_logging

        if record.exc_info and (
            _from_library(record) or f"{os.sep}asyncio{os.sep}" in record.pathname
        ):
            return not _echoes_a_write_failure(record.exc_info[1])
        if _is_harmless(record):
            return False
        return record.levelno >= logging.WARNING or absl_logging.get_verbosity() >= 1


class _DropHarmlessWarnings(logging.Filter):
    """Drops the libraries' records of _HARMLESS_WARNINGS (see `harmless_warnings_muted`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _is_harmless(record)


_QUIET_LIBRARIES = ("orbax", "tensorflow_datasets", "jax")
# Warnings that say nothing is wrong. tfds, on every imagenet2012 build: the folder it is about
# to build into has no dataset_info.json yet, and the test archive (never needed) is absent.
# Orbax, whenever a tool (predict, figures, export) opens a run's checkpoints read-only; and when
# a step it listed lost its metadata file before it read it (a run still training replaced the
# step), or found it empty or damaged (it holds only the step's creation time; the arrays are
# checked against their fingerprint): a step that cannot be read is reported by
# checkpoint.restore_latest in its own words.
_HARMLESS_WARNINGS = (
    "has no dataset_info.json",
    "Challenge test split not found",
    "read_only=True, setting save_interval_steps=0",
    "Given directory is read only",
    "Metadata file does not exist",
    "Failed to json parse Metadata file",
)


@contextlib.contextmanager
def harmless_warnings_muted():
    """Inside the block, the libraries' known-harmless warnings (Orbax's about a checkpoint
    directory opened read-only, tfds's about a build) print nowhere: not through absl's handler
    (main.py, the tools) nor through Python's last-resort handler (the Python API: load_run in a
    notebook). They reach Python's logging through absl's logger, where this filter sits."""
    absl_logger, noise = logging.getLogger("absl"), _DropHarmlessWarnings()
    absl_logger.addFilter(noise)
    try:
        yield
    finally:
        absl_logger.removeFilter(noise)


def quiet_native_logs() -> None:
    """Turns off the INFO lines of TensorFlow's and XLA's C++ code (Gloo's connection lines and
    the like; their warnings and errors still print). Call it before JAX starts its backends; a
    TF_CPP_MIN_LOG_LEVEL the user set wins."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with its C++ stderr muted: TensorFlow 2.21 prints its oneDNN notice and
    absl's "before absl::InitializeLog()" warning at import whatever TF_CPP_MIN_LOG_LEVEL says.
    A failed import still raises, with its traceback. Call it before anything else imports
    TensorFlow (`load_tensorflow` calls it)."""
    with _tensorflow_import:
        if "tensorflow" in sys.modules:
            return
        check_address_space_for_tensorflow()
        try:
            with native_stderr_muted():
                import tensorflow  # noqa: F401  (its import-time notices go to /dev/null)
        except (MemoryError, ImportError, SystemError) as e:
            if not _out_of_memory(e):
                raise
            raise UserError(
                "out of memory while loading TensorFlow (it reads the data): free memory, or "
                f"raise the process's limit{_address_space_now()} (ulimit -v unlimited)."
            ) from None


_stderr_swap = threading.RLock()  # re-entered: a muted block may import TensorFlow


@contextlib.contextmanager
def native_stderr_muted():
    """What is written to stderr's file descriptor (fd 2) inside the block goes to /dev/null: a
    C++ library's log line no level turns off. Python's own stderr too, so keep the block short;
    one thread at a time swaps fd 2."""
    with _stderr_swap:
        sys.stderr.flush()
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(null)


# The address space (ulimit -v) a run that reads data through TensorFlow needs. Measured here (a
# 4-step image-folder run of 40x50 PNGs, jaxlib 0.10.2, TensorFlow 2.21): at 2441-2734 MB it
# failed every time (a MemoryError in the import, a C++ abort as TensorFlow started its threads),
# at 2832 MB 4 times of 5; at 2930-3125 MB it ran every time. JAX alone starts at 2048 MB
# (errors.check_address_space). The need, with a margin:
TENSORFLOW_ADDRESS_SPACE = 3200 * 2**20


def check_address_space_for_tensorflow() -> None:
    """UserError when the address-space limit (ulimit -v) is too small for TensorFlow to load
    next to JAX: below it the import fails, or TensorFlow aborts in C++ where nothing can be
    reported. Runs on synthetic data never load TensorFlow and start with less."""
    limit = errors.address_space_limit()
    if limit is not None and limit < TENSORFLOW_ADDRESS_SPACE:
        raise UserError(
            f"the process may use {limit // 2**20} MB of address space (ulimit -v), too little "
            f"for TensorFlow, which reads the data, to start beside JAX (it needs about "
            f"{TENSORFLOW_ADDRESS_SPACE // 2**20} MB): raise it, e.g. ulimit -v unlimited."
        )


def _address_space_now() -> str:
    limit = errors.address_space_limit()
    return f" (ulimit -v: {limit // 2**20} MB)" if limit is not None else ""


def _out_of_memory(error: BaseException | None) -> bool:
    """Whether a failed import ran out of memory: a MemoryError in its chain, or the loader's
    or Python's words for one (an ImportError's message can hold the traceback of a MemoryError
    raised while a C extension initialised)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = str(error)
        if isinstance(error, MemoryError) or any(
            words in text
            for words in ("MemoryError", "Cannot allocate memory", "failed to map segment")
        ):
            return True
        error = error.__cause__ or error.__context__
    return False


def quiet_library_logs() -> None:
    """Keeps the console to this project's progress lines (console.py), the libraries' warnings
    (less the harmless ones) and one message per error (see `_echoes_a_write_failure`): no
    library INFO line unless --verbosity is 1 or more. For entry points, after absl parsed the
    flags (absl's handler prints the libraries' records)."""
    from absl import logging as absl_logging  # absl's handler is what prints the records

    absl_logging.get_absl_handler().addFilter(_DropLibraryNoise())
    previous_hook = sys.unraisablehook  # errors in TensorStore's callbacks are reported here

    def unraisablehook(unraisable):
        if not _echoes_a_write_failure(unraisable.exc_value):
            previous_hook(unraisable)

    sys.unraisablehook = unraisablehook


# ---- Multi-host start-up ----------------------------------------------------------------------


def _cluster_process_count(env: Mapping[str, str]) -> int:
    """Processes in this SLURM step (srun) or Open MPI job (mpirun); 1 outside of both."""
    if "SLURM_STEP_NODELIST" in env and "SLURM_NTASKS" in env:
        return int(env["SLURM_NTASKS"])
    if "OMPI_MCA_orte_hnp_uri" in env and "OMPI_COMM_WORLD_SIZE" in env:
        return int(env["OMPI_COMM_WORLD_SIZE"])
    return 1


DEFAULT_DISTRIBUTED_TIMEOUT_S = 300.0  # jax.distributed's own default wait for all processes
MAX_DISTRIBUTED_TIMEOUT_S = 7 * 24 * 3600.0  # a week
# jax.distributed aborts the process (a C++ check failure, no Python exception) when its
# initialization_timeout passes, so it gets this much longer than timeout_s: the watchdog of
# `_start_jax_distributed` ends the process first, with a message that says what to check.
JAX_ABORT_MARGIN_S = 30


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
) -> bool:
    """Starts jax.distributed if this is one of several processes; returns whether it did.

    Explicit arguments win; `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`
    fill those left out; with none at all, a SLURM or Open MPI job of more than one process is
    detected and jax.distributed finds its own parameters. A single process is a no-op (it catches
    SIGTERM itself). Must run before anything initializes a JAX backend.

    timeout_s: how long to wait for every process to join (default: `JAX_DISTRIBUTED_TIMEOUT_S`,
    else 300). When it passes, the process prints one `error:` paragraph and exits with code 2:
    jax's wait cannot be interrupted from Python (it would abort the process with a C++ stack).
    """
    env = os.environ if env is None else env
    errors.stop_with_the_launcher(env)
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    explicit = (coordinator_address, num_processes, process_id)
    if all(v is None for v in explicit):
        if _cluster_process_count(env) <= 1:
            return False
        # SLURM / Open MPI: parameters detected by jax
        job = "this process of the SLURM / Open MPI job waited for the others"
        _start_jax_distributed(_distributed_timeout_s(timeout_s, env), job)
        return True
    if num_processes == 1 and coordinator_address is None:
        return False
    if None in explicit:
        raise ConfigError(
            "A multi-process run needs --coordinator_address (host:port of process 0), "
            "--num_processes and --process_id together; got "
            f"coordinator_address={coordinator_address!r}, num_processes={num_processes!r}, "
            f"process_id={process_id!r}."
        )
    if not 0 <= process_id < num_processes:
        raise ConfigError(
            f"--process_id={process_id} must be in [0, --num_processes={num_processes})."
        )
    timeout_s = _distributed_timeout_s(timeout_s, env)
    port = _coordinator_port(coordinator_address)
    if process_id == 0:  # jax.distributed crashes (segfault) if it cannot bind the port
        _check_port_free(coordinator_address, port)
    job = (
        f"process {process_id} of {num_processes} processes waited for the others at the "
        f"coordinator {coordinator_address}"
    )
    _start_jax_distributed(timeout_s, job, coordinator_address, num_processes, process_id)
    return True


def _distributed_timeout_s(timeout_s: float | None, env: Mapping[str, str]) -> float:
    """`timeout_s`, else JAX_DISTRIBUTED_TIMEOUT_S, else the default; a positive number."""
    name = "timeout_s"
    if timeout_s is None and env.get("JAX_DISTRIBUTED_TIMEOUT_S"):
        name, timeout_s = "JAX_DISTRIBUTED_TIMEOUT_S", env["JAX_DISTRIBUTED_TIMEOUT_S"]
    if timeout_s is None:
        return DEFAULT_DISTRIBUTED_TIMEOUT_S
    try:
        value = float(timeout_s)
    except ValueError:
        value = 0.0
    if not 0 < value <= MAX_DISTRIBUTED_TIMEOUT_S:  # (1e20: an OverflowError in JAX, pass 19 #33)
        raise ConfigError(
            f"{name}={timeout_s!r}: the seconds to wait for all processes to join must be a "
            f"positive number, at most {MAX_DISTRIBUTED_TIMEOUT_S:.0f} (a week)."
        )
    return value


def _coordinator_port(coordinator_address: str) -> int:
    """The port of `host:port`; a ConfigError unless it is one in 1..65535."""
    _, _, port = coordinator_address.rpartition(":")
    if not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ConfigError(
            f"--coordinator_address={coordinator_address} must be host:port with a port in "
            "1..65535 (process 0 listens there), e.g. host0:8476."
        )
    return int(port)


def _check_port_free(coordinator_address: str, port: int) -> None:
    """A ConfigError if another program holds `port`, which process 0's coordinator binds on
    every address of this host."""
    family, everywhere = (socket.AF_INET6, "::") if socket.has_ipv6 else (socket.AF_INET, "")
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((everywhere, port))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"Port {port} of --coordinator_address={coordinator_address} is in use on this "
                "host (process 0 runs the coordinator there): stop what holds it, or start every "
                "process with another free port."
            ) from e
        # Anything else (no IPv6 on this host, say): jax.distributed reports it itself.


def mute_native_stdout() -> None:
    """Sends what C++ code writes to stdout (fd 1) to /dev/null for the rest of the process,
    while Python's sys.stdout keeps writing where stdout went. Gloo, the CPU collectives of a
    multi-process job, prints "[Gloo] Rank i is connected to n peer ranks" with printf on every
    connection, at start-up and at the first collectives; no log level turns that off. Call it
    only in multi-process runs, whose every useful line comes from Python."""
    sys.stdout.flush()
    python_stdout = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    # (closefd=False: the descriptor lives as long as the process; an owning file object left
    # unclosed at exit was a ResourceWarning, an error under PYTHONWARNINGS=error)
    sys.stdout = os.fdopen(python_stdout, "w", buffering=1, closefd=False)


_stderr_filter: list = []  # its Popen, kept for the life of the process


def filter_native_stderr() -> None:
    """From now on this process's stderr (fd 2, Python's and C++'s) reaches the real one through
    a child process, core/stderr_filter.py: when another process of the job dies, JAX's client
    ends this one in C++ (a fatal log line, a C++ stack, a thread dump) before Python can speak;
    the filter prints the lost peer's one `error:` line instead. Multi-process runs only."""
    import subprocess

    mark = f"error: {errors.LOST_PEER}"
    line = f"{mark} (JAX's distributed service ended this process)."
    sys.stderr.flush()
    read, write = os.pipe()
    try:
        _stderr_filter.append(subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.join(os.path.dirname(__file__),
             "stderr_filter.py"), mark, line],
            stdin=read, stdout=2, stderr=subprocess.DEVNULL, start_new_session=True,
        ))  # fmt: skip
        os.dup2(write, 2)
    finally:
        os.close(read)
        os.close(write)


def _start_jax_distributed(timeout_s: float, job: str, *args) -> None:
    """jax.distributed.initialize(*args); if not every process joined within `timeout_s`, one
    `error:` paragraph with `job` (who waited where) and exit code 2. jax's wait releases the GIL
    but cannot be interrupted (at its own deadline it aborts the process): a thread ends it.
    Gloo's connection lines are muted first (mute_native_stdout), and stderr goes through
    filter_native_stderr."""
    mute_native_stdout()
    filter_native_stderr()

    def give_up() -> None:
        print(
            f"error: the multi-process job did not start within {timeout_s:g} s: {job}. "
            "Start every process with the same --coordinator_address "
            "(process 0's host:port) and --num_processes, each with its own --process_id; "
            "process 0 must be running and its port reachable from every host (no firewall in "
            "between). To wait longer, set JAX_DISTRIBUTED_TIMEOUT_S (seconds).",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        os._exit(2)  # no exception can reach the main thread, blocked inside jax

    watchdog = threading.Timer(timeout_s, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        jax_timeout = math.ceil(timeout_s) + JAX_ABORT_MARGIN_S
        jax.distributed.initialize(*args, initialization_timeout=jax_timeout)
    finally:
        watchdog.cancel()
