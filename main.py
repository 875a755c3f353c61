"""Trains or evaluates AlexNet: `python main.py --config=configs/imagenet.py --workdir=runs/x`.

All logic lives in alexnet_jax/; this file parses flags, prepares the process and reports errors
the user must fix as one paragraph with exit code 2.
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

_HERE = os.path.dirname(os.path.abspath(__file__))

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    os.path.join(_HERE, "configs", "default.py"),
    "Config file; fields can be overridden with --config.field=value.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints and metrics (default: runs/<config name>)."
)
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (and resume), or evaluate.")
# Multi-process runs (README "Multiple hosts"); unset: SLURM/Open MPI detected, else one process.
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (jax.distributed coordinator)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (hosts).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1.")
_PROJECT_XLA_FLAGS = flags.DEFINE_bool(
    "project_xla_flags",
    True,
    "Add the XLA flags measured for this project (alexnet_jax/runtime.py) to XLA_FLAGS; "
    "flags already in XLA_FLAGS keep their values.",
)


def _default_workdir() -> str:
    filename = config_flags.get_config_filename(flags.FLAGS["config"])
    name = os.path.splitext(os.path.basename(filename))[0]
    return os.path.join("runs", name)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from alexnet_jax import runtime, train  # after absl parsed the flags
    from alexnet_jax.errors import reported_as_exit

    if _PROJECT_XLA_FLAGS.value:
        runtime.set_xla_flags()  # before anything starts JAX's backends
    runtime.hide_accelerators_from_tensorflow()
    runtime.enable_compilation_cache()
    runtime.quiet_library_logs()
    workdir = _WORKDIR.value or _default_workdir()
    logging.info("workdir: %s", workdir)
    logging.info("XLA_FLAGS: %s", os.environ.get("XLA_FLAGS", ""))
    with reported_as_exit(
        "Free disk space (or fix the permissions) or choose another --workdir / "
        "--config.data_dir, then rerun the same command: training resumes from the last "
        "complete checkpoint."
    ):
        runtime.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
        if _MODE.value == "train":
            train.train_and_evaluate(_CONFIG.value, workdir)
        else:
            train.evaluate_checkpoint(_CONFIG.value, workdir)


if __name__ == "__main__":
    app.run(main)
