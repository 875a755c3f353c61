"""Process-level setup done once by entry points (main.py, benchmarks), never at import time."""

from __future__ import annotations

import contextlib
import logging
import os

import jax

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "alexnet_jax", "jax_cache")


def hide_accelerators_from_tensorflow() -> None:
    """TensorFlow only feeds data: keep it off the GPUs/TPUs so it takes none of their memory."""
    import tensorflow as tf  # heavy import, only for entry points

    tf.config.set_visible_devices([], "GPU")
    with contextlib.suppress(ValueError, RuntimeError):  # no TPU support in this TF build
        tf.config.set_visible_devices([], "TPU")


def enable_compilation_cache(cache_dir: str | None = None) -> str:
    """Turns on JAX's persistent compilation cache in a workdir-independent folder.

    The thresholds are lowered so that even small CPU programs are cached (a cached train step
    loads in well under a second instead of compiling for seconds).
    """
    cache_dir = cache_dir or os.environ.get("ALEXNET_JAX_CACHE_DIR", DEFAULT_CACHE_DIR)
    os.makedirs(cache_dir, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return cache_dir


class _DropLibraryInfo(logging.Filter):
    """Drops INFO-level records of chatty libraries (Orbax logs every file it renames)."""

    def filter(self, record: logging.LogRecord) -> bool:
        noisy = any(f"{os.sep}{lib}{os.sep}" in record.pathname for lib in _QUIET_LIBRARIES)
        return record.levelno >= logging.WARNING or not noisy


_QUIET_LIBRARIES = ("orbax", "tensorflow_datasets", "jax")


def quiet_library_logs() -> None:
    """Keeps the console to this project's progress lines plus every library warning."""
    from absl import logging as absl_logging  # absl's handler is what prints the records

    absl_logging.get_absl_handler().addFilter(_DropLibraryInfo())
