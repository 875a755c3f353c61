"""Trains or evaluates AlexNet: `python main.py --config=configs/imagenet.py --workdir=runs/x`
(`--mode=eval` evaluates a run's latest checkpoint, `--mode=prepare` only prepares the data).

All logic lives in alexnet_jax/; this file parses flags, prepares the process and reports errors
the user must fix as one paragraph with exit code 2. Progress and results go to stdout as plain
lines, warnings and errors to stderr (alexnet_jax/core/console.py); the libraries' INFO lines
show only with --verbosity=1 or more.
"""

import os
import re
import sys

from alexnet_jax.core import errors

# Before the slow imports: a Ctrl-C, SIGTERM or SIGHUP at any moment is one line and exit code
# 130, 143 or 129, the lock released (hostile pass 17, #65: a SIGTERM during start-up ended the
# process with no word). Training takes them over to save first (checkpoint.PreemptionWatcher);
# a multi-process run's SIGTERM is JAX's preemption sync's from jax.distributed.initialize on.
errors.exit_on_ctrl_c(sigterm=True)
with errors.reported_as_exit():  # ulimit -v too low, or a python without the requirements
    errors.check_start()  # (/usr/bin/python3 main.py: a traceback, hostile pass 23, #49): one line
    from absl import app, flags
    from ml_collections import config_flags

_HERE = os.path.dirname(os.path.abspath(__file__))


def _usage_error(message: str) -> None:
    errors.tell(errors.noting_missing_cwd(f"error: {message}"))
    sys.exit(2)


def _no_such_field(field: str, suggestion: str | None = None) -> None:
    hint = f"; did you mean {suggestion!r}?" if suggestion else ""
    _usage_error(
        f"no config field {field!r}{hint} (every field is listed, with a comment, in "
        "configs/default.py)"
    )


def _field_error(error: Exception) -> tuple[str, str | None]:
    """The field and ml_collections' suggestion from the error it raises for an unknown
    --config.FIELD (a KeyError whose text is "'field'\nDid you mean "x" instead of ...?", or
    "... Attempting to lookup: a.b" for a field under a plain value), possibly wrapped."""
    while error.args and isinstance(error.args[0], Exception):
        error = error.args[0]
    text = str(error.args[0]) if error.args else str(error)
    lookup = re.search(r"Attempting to lookup: (\S+)", text)
    field = lookup.group(1) if lookup else text.splitlines()[0].strip().strip("\"'")
    suggestion = re.search(r'Did you mean "([^"]+)"', text)
    return field, suggestion.group(1) if suggestion else None


_FIELD_FLAG = re.compile(r"^--?(?:no)?config\.([^=\s]+)")  # --config.F=V, -config.F V, --noconfig.F


def _refuse_repeated_fields(argv: list[str]) -> None:
    """A config field given twice (in any spelling absl takes, or once more in a --flagfile):
    ml_collections joins two tuples into one (lr_drop_epochs (2,) and (3,) became (2, 3)) and
    takes the last of other values; either is a guess."""
    try:
        words = flags.FLAGS.read_flags_from_files(argv[1:], force_gnu=False)
    except flags.Error as e:  # a --flagfile that cannot be read
        _usage_error(f"{str(e).rstrip('.')}.")
    seen, given = set(), set()
    for word in words:
        if word == "--":
            break
        match = _FIELD_FLAG.match(word)
        if re.match(r"^--?(?:no)?config\.(?:$|=|\.)", word) or (match and ".." in match[1]):
            _usage_error(
                f"{word} names no config field: --config.FIELD=VALUE, for example "
                "--config.seed=1 (every field is in configs/default.py)"
            )  # (pass 23, #33)
        if match:
            if match.group(1) in seen:
                _usage_error(f"--config.{match.group(1)} is given twice: give it once.")
            seen.add(match.group(1))
        elif name := _flag_name(word):  # (hostile pass 18, #57: the last one won, no word)
            if name in given:
                _usage_error(f"--{name} is given twice: give it once.")
            given.add(name)


def _flag_name(word: str) -> str | None:
    """The name of this file's flag that a command-line word sets (`--workdir=x`, `-mode eval`,
    `--noallow_config_change`), or None."""
    match = re.match(r"^--?([A-Za-z_]\w*)(?:=|$)", word)
    if not match:
        return None
    name = match.group(1)
    if name.startswith("no") and name[2:] in _OWN_FLAGS and name not in _OWN_FLAGS:
        name = name[2:]
    return name if name in _OWN_FLAGS else None


# main.py's own flags, each given at most once (config fields: _refuse_repeated_fields); the
# check runs before they are defined, so they are named here (a test keeps the two in step).
_OWN_FLAGS = (
    "config", "workdir", "mode", "coordinator_address", "num_processes", "process_id",
    "allow_config_change", "log_all_processes", "project_xla_flags",
)  # fmt: skip


try:  # a --flagfile that includes itself (absl would warn and go on without it)
    errors.refuse_undecodable_arguments(sys.argv[1:])
    errors.refuse_circular_flagfiles(sys.argv)
except errors.UserError as e:
    _usage_error(str(e))
_refuse_repeated_fields(sys.argv)
try:  # ml_collections reads the --config.FIELD overrides of sys.argv already here
    with errors.config_loading_warnings_ignored():  # (the default config is loaded here)
        _CONFIG = config_flags.DEFINE_config_file(
            "config",
            os.path.join(_HERE, "configs", "default.py"),
            "Config file; fields can be overridden with --config.field=value.",
            lock_config=True,
        )
except (AttributeError, KeyError) as e:
    _no_such_field(*_field_error(e))
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints and metrics (default: runs/<config name>)."
)
_MODE = flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "eval", "prepare"],
    "Train (and resume), evaluate, or only prepare the data (the tfds build, the pre-resize "
    "cache, the image store, the mean image) and exit.",
)
# Multi-process runs (README "Multiple hosts"); unset: SLURM/Open MPI detected, else one process.
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (jax.distributed coordinator)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (hosts).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change",
    False,
    "Resume a run with a config (or data) that differs from the one it started with, on purpose; "
    "the changes are recorded in its config_history.jsonl. Without it such a resume is refused.",
)
_LOG_ALL_PROCESSES = flags.DEFINE_bool(
    "log_all_processes",
    False,
    "Every process of a multi-process run prints its progress (default: process 0 only; the "
    "others print warnings and errors).",
)
_PROJECT_XLA_FLAGS = flags.DEFINE_bool(
    "project_xla_flags",
    True,
    "Add the XLA flags measured for this project (alexnet_jax/core/runtime.py) to XLA_FLAGS; "
    "flags already in XLA_FLAGS keep their values.",
)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with every mistake in the command line (an unknown or malformed
    --config.FIELD, a --config file that is missing or not a Python config) reported as one
    `error:` line and exit code 2 instead of a traceback."""
    from absl import logging as absl_logging

    from alexnet_jax.core import console

    absl_logging.set_verbosity(absl_logging.ERROR)  # no absl chatter about a broken config file
    try:
        with console.flag_help(), errors.config_loading_warnings_ignored():  # --help: exit 0
            rest = flags.FLAGS(argv)
            _CONFIG.value.keys()  # a config file that failed to load raises here
    except flags.UnrecognizedFlagError as e:
        name = str(e.flagname)
        if not name.startswith("config."):
            _usage_error(f"{e}: see `python main.py --helpshort`.")
        _no_such_field(name.removeprefix("config."))
    except flags.Error as e:
        text = str(e)
        if "Unexpected None value for flag config" in text:
            text = (
                "--config: its get_config() returned None; it must return an "
                "ml_collections.ConfigDict (see configs/default.py)"
            )
        if "Error whilst parsing config file" in text:  # get_config raised: its last line says why
            lines = [line.strip() for line in text.splitlines() if line.strip(" .")]
            text = f"{text.split(': Error whilst', 1)[0]}: {lines[-1]}"
        if "get_config() takes 0 positional arguments" in text:  # --config=FILE:ARGUMENT
            text += (
                ". That config file takes no argument after ':' (configs/run.py does: "
                "--config=configs/run.py:<run directory>); remove it"
            )
        _usage_error(f"{text.rstrip('.')}.")
    except errors.UserError as e:  # configs/run.py: the run's config.json is missing or damaged
        _usage_error(str(e))
    except Exception as e:  # the config file could not be loaded
        if isinstance(e, AttributeError | KeyError):  # or an override names no field of it
            field, suggestion = _field_error(e)
            given = [m.group(1) for m in map(_FIELD_FLAG.match, argv) if m]
            named = [g for g in given if field in g.split(".")]
            if named:  # (hostile pass 16, #62: blamed on the config file, which was fine)
                _no_such_field(named[0], suggestion)
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        what = f"{type(e).__name__}: {'; '.join(lines[:4]) or type(e).__name__}"
        _usage_error(
            f"--config could not be loaded ({what}). It must be a Python file with a "
            "get_config() function, e.g. --config=configs/imagenet.py."
        )
    absl_logging.set_verbosity(flags.FLAGS.verbosity)  # what --verbosity says (default: WARNING)
    return rest


def _default_workdir() -> str:
    """runs/<config name>; with configs/run.py:<run directory>, that run's directory."""
    filename, _, argument = config_flags.get_config_filename(flags.FLAGS["config"]).partition(":")
    name = os.path.splitext(os.path.basename(filename))[0]
    return argument if name == "run" and argument else os.path.join("runs", name)


def main(argv):
    if len(argv) > 1:  # (absl's UsageError would print the whole flag help)
        _usage_error(
            f"unexpected arguments {argv[1:]}: main.py takes only flags (--name=value), none "
            "after a bare --."
        )
    with errors.reported_as_exit():  # JAX_ENABLE_X64=maybe: one line
        errors.import_jax()
    import jax

    from alexnet_jax.core import console, runtime  # after absl parsed the flags
    from alexnet_jax.core.errors import reported_as_exit
    from alexnet_jax.train import config_lib

    if _WORKDIR.value is not None and not _WORKDIR.value.strip():  # an unset shell variable
        _usage_error("--workdir is empty: name a directory, or leave the flag out (runs/<config>).")
    workdir = os.path.expanduser(_WORKDIR.value) if _WORKDIR.value else _default_workdir()
    runtime.quiet_native_logs()
    with reported_as_exit():
        runtime.check_environment()
    if _PROJECT_XLA_FLAGS.value:
        runtime.set_xla_flags()  # before anything starts JAX's backends
    runtime.enable_compilation_cache()
    runtime.quiet_library_logs()
    with reported_as_exit(
        "Free disk space (or fix the permissions) or choose another --workdir / "
        "--config.data_dir, then rerun the same command: training resumes from the last "
        "complete checkpoint."
    ):
        config_lib.absolute_paths(_CONFIG.value)  # --config.image_folder=~/photos, or imgs
        errors.refuse_a_path_not_utf8(workdir, "--workdir")  # (a cwd whose name is not UTF-8)
        for field in config_lib.PATH_FIELDS:
            if isinstance(_CONFIG.value.get(field), str):
                errors.refuse_a_path_not_utf8(_CONFIG.value[field], f"--config.{field}")
        if _MODE.value in ("train", "prepare"):
            config_lib.validate_config(_CONFIG.value)  # a wrong value fails before the slow imports
        # TensorFlow is imported where the data is first read (runtime.tensorflow).
        if _MODE.value == "prepare":
            from alexnet_jax.data import input_pipeline

            input_pipeline.describe_prepared(_CONFIG.value, input_pipeline.prepare(_CONFIG.value))
            return
        from alexnet_jax.train import loop

        runtime.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
        runtime.start_backend()  # JAX_PLATFORMS naming a platform this machine lacks: one line
        if jax.process_index() != 0 and not _LOG_ALL_PROCESSES.value:
            console.show_progress(False)  # process 0 tells the progress
        console.info(f"workdir: {workdir}")
        console.info(f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '')}")
        if _MODE.value == "train":
            loop.train_and_evaluate(_CONFIG.value, workdir, _ALLOW_CONFIG_CHANGE.value)
        else:
            overrides = config_flags.get_override_values(flags.FLAGS["config"])
            for field in set(overrides) & set(config_lib.PATH_FIELDS):  # as the config's own
                overrides[field] = _CONFIG.value[field]
            loop.evaluate_checkpoint(_CONFIG.value, workdir, overrides)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
